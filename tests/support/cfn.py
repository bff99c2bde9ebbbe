"""Pure helpers over CloudFormation templates (plain or SAM, as parsed documents with long-form intrinsics).

* ``dependencies`` / ``find_cycle``: the resource graph CloudFormation builds from ``Ref``, ``Fn::GetAtt``,
  ``Fn::Sub`` references and ``DependsOn``, and a cycle in it (linters do not report those; deploys fail).
* ``Stack``: a pretend deployment that evaluates intrinsics (parameters, pseudo parameters, conditions,
  physical names and ARNs of resources) so policies and environment variables can be read as strings.
* ``Statement`` / ``allowed``: enough of IAM policy evaluation to ask "may this role do ACTION on ARN"
  (wildcards in actions and resources, StringLike/StringEquals conditions, explicit Deny wins).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "fave-test",
    "AWS::StackId": (
        "arn:aws:cloudformation:us-east-1:123456789012:stack/fave-test/51af3dc0-da77-11e4-872e-1234567db123"
    ),
}
NO_VALUE = {"Ref": "AWS::NoValue"}
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")

# ---------------------------------------------------------------------------------------------------------
# Dependencies and cycles


def _references(value: Any) -> Iterator[str]:
    """Logical names a value refers to (resources, parameters and pseudo parameters alike)."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str):
                yield arg
                return
            if key == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else str(arg).partition(".")[0]
                yield str(target)
                return
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                for name in _SUB_VAR.findall(text):
                    if name not in variables:
                        yield name.partition(".")[0]
                yield from _references(variables)
                return
        for item in value.values():
            yield from _references(item)


def dependencies(template: Mapping[str, Any]) -> dict[str, set[str]]:
    """``{resource: resources it depends on}`` for every resource of ``template``."""
    resources: Mapping[str, Any] = template.get("Resources") or {}
    graph: dict[str, set[str]] = {}
    for lid, res in resources.items():
        depends_on = res.get("DependsOn") or []
        depends = {depends_on} if isinstance(depends_on, str) else set(depends_on)
        body = {k: v for k, v in res.items() if k != "DependsOn"}
        depends |= {name for name in _references(body) if name in resources}
        depends.discard(lid)
        graph[lid] = depends
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One dependency cycle as ``[a, b, ..., a]``, or None if the graph has none (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[str] = [start]
        stack: list[Iterator[str]] = [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


# ---------------------------------------------------------------------------------------------------------
# A pretend deployment


class Stack:
    """Evaluates intrinsics the way CloudFormation would for one made-up deployment of ``template``."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.resources: Mapping[str, Any] = template.get("Resources") or {}
        self.conditions: Mapping[str, Any] = template.get("Conditions") or {}
        self.parameters: dict[str, Any] = {
            name: decl["Default"]
            for name, decl in (template.get("Parameters") or {}).items()
            if isinstance(decl, dict) and "Default" in decl
        }
        self.parameters.update(parameters or {})
        self._resolving: set[str] = set()

    # -- names -------------------------------------------------------------------------------------------

    def properties(self, lid: str) -> Mapping[str, Any]:
        return self.resources[lid].get("Properties") or {}

    def type_of(self, lid: str) -> str:
        return str(self.resources[lid]["Type"])

    def physical_id(self, lid: str) -> str:
        """What ``!Ref`` of a resource gives: its explicit name if it has one, else a generated one."""
        name_property = {
            "AWS::S3::Bucket": "BucketName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::Serverless::Function": "FunctionName",
            "AWS::IAM::Role": "RoleName",
            "AWS::SQS::Queue": "QueueName",
        }.get(self.type_of(lid))
        if name_property and name_property in self.properties(lid) and lid not in self._resolving:
            self._resolving.add(lid)
            try:
                return str(self.resolve(self.properties(lid)[name_property]))
            finally:
                self._resolving.discard(lid)
        generated = f"{PSEUDO['AWS::StackName']}-{lid}-1A2B3C4D"
        return generated.lower() if self.type_of(lid) == "AWS::S3::Bucket" else generated

    def arn(self, lid: str) -> str:
        region, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
        kind = self.type_of(lid)
        name = self.physical_id(lid)
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{name}"
        if kind in ("AWS::Lambda::Function", "AWS::Serverless::Function"):
            return f"arn:aws:lambda:{region}:{account}:function:{name}"
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{account}:role/{name}"
        if kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{region}:{account}:{name}"
        return f"arn:aws:{kind.split('::')[1].lower()}:{region}:{account}:{lid}"

    def queue_url(self, lid: str) -> str:
        """What ``!Ref`` of an ``AWS::SQS::Queue`` gives: its URL."""
        return f"https://sqs.{PSEUDO['AWS::Region']}.amazonaws.com/{PSEUDO['AWS::AccountId']}/{self.physical_id(lid)}"

    def getatt(self, lid: str, attribute: str) -> str:
        if lid not in self.resources:
            raise KeyError(f"Fn::GetAtt of unknown resource {lid}")
        if attribute == "Arn":
            return self.arn(lid)
        if attribute == "QueueName" and self.type_of(lid) == "AWS::SQS::Queue":
            return self.physical_id(lid)
        return f"{self.physical_id(lid)}.{attribute}"

    def ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources and self.type_of(name) == "AWS::SQS::Queue":
            return self.queue_url(name)
        if name in self.resources:
            return self.physical_id(name)
        raise KeyError(f"Ref to unknown name {name}")

    # -- conditions and values -------------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.conditions[name]))

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic evaluated (``AWS::NoValue`` entries dropped)."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value if v != NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        return {k: self.resolve(v) for k, v in value.items() if v != NO_VALUE}

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            lid, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.getatt(lid, attribute)
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            values = {k: self.resolve(v) for k, v in variables.items()}

            def replace(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in values:
                    return str(values[name])
                if "." in name and name.split(".", 1)[0] in self.resources:
                    return self.getatt(*name.split(".", 1))
                return str(self.ref(name))

            return _SUB_VAR.sub(replace, text).replace("${!", "${")
        if key == "Fn::Join":
            return str(self.resolve(arg[0])).join(str(v) for v in self.resolve(arg[1]))
        if key == "Fn::Split":
            return str(self.resolve(arg[1])).split(str(self.resolve(arg[0])))
        if key == "Fn::Select":
            return self.resolve(arg[1])[int(self.resolve(arg[0]))]
        if key == "Fn::If":
            return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        if key == "Fn::Equals":
            return self.resolve(arg[0]) == self.resolve(arg[1])
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(a) for a in arg)
        if key == "Fn::Or":
            return any(self.resolve(a) for a in arg)
        raise NotImplementedError(f"{key} is not evaluated by this test helper")


# ---------------------------------------------------------------------------------------------------------
# IAM


def _as_tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value if isinstance(value, list) else [value]))


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.IGNORECASE if ignore_case else 0) is not None


@dataclass(frozen=True)
class Statement:
    """One resolved IAM policy statement (Action/Resource as tuples; NotAction etc. are not supported)."""

    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def parse(cls, raw: Mapping[str, Any], source: str = "") -> Statement:
        unsupported = {"NotAction", "NotResource", "NotPrincipal"} & set(raw)
        if unsupported:
            raise NotImplementedError(f"{source}: {sorted(unsupported)} are not evaluated by this test helper")
        return cls(
            effect=str(raw["Effect"]),
            actions=_as_tuple(raw["Action"]),
            resources=_as_tuple(raw.get("Resource", "*")),
            conditions=raw.get("Condition") or {},
            source=source,
        )

    def matches(self, action: str, resource: str, context: Mapping[str, str]) -> bool:
        if not any(_wildcard(a, action, ignore_case=True) for a in self.actions):
            return False
        if not any(_wildcard(r, resource) for r in self.resources):
            return False
        for operator, tests in self.conditions.items():
            for key, expected in tests.items():
                actual = context.get(key)
                if actual is None:
                    return False
                if operator == "StringLike":
                    ok = any(_wildcard(str(e), actual) for e in _as_tuple(expected))
                elif operator in ("StringEquals", "Bool"):
                    ok = actual in _as_tuple(expected)
                else:
                    raise NotImplementedError(f"{self.source}: condition operator {operator}")
                if not ok:
                    return False
        return True


def allowed(
    statements: Iterable[Statement], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    """Whether ``statements`` allow ``action`` on ``resource`` (an explicit Deny wins)."""
    context = context or {}
    verdict = False
    for statement in statements:
        if statement.matches(action, resource, context):
            if statement.effect == "Deny":
                return False
            verdict = True
    return verdict


@dataclass(frozen=True)
class RolePolicies:
    """A function's execution role: its inline statements (resolved) and managed policy ARNs."""

    statements: tuple[Statement, ...]
    managed: tuple[str, ...]


def function_role(stack: Stack, function: str) -> RolePolicies:
    """The policies of a (translated) ``AWS::Lambda::Function``'s role."""
    role_ref = stack.properties(function)["Role"]
    role_id = role_ref["Fn::GetAtt"][0]
    role = stack.properties(role_id)
    statements = []
    for policy in role.get("Policies") or []:
        document = stack.resolve(policy["PolicyDocument"])
        raw_statements = document["Statement"]
        for raw in raw_statements if isinstance(raw_statements, list) else [raw_statements]:
            statements.append(Statement.parse(raw, f"{role_id}/{policy['PolicyName']}"))
    managed = tuple(str(a) for a in stack.resolve(role.get("ManagedPolicyArns") or []))
    return RolePolicies(tuple(statements), managed)
