"""template.yaml against pipeline.yaml and the code: each check returns a list of problems (empty = fine).

What a function must be allowed to do is derived, not copied:

* stage functions: the stage SDK's ``artifact_prefix`` (outputs, large payloads, ``ctx.put_bytes``), the
  request-level folders the function's own code builds keys in (``f"{ctx.request_prefix}clips/..."``, found
  by reading its source with ``ast``) and whether that code lists or deletes (``ctx.store.list/delete``);
  reads: its own inputs and whatever the stages it needs (transitively) wrote; a first stage reads the
  request's source, under any prefix the orchestrator accepts (``fave.app.settings``: ``FAVE_INPUT_PREFIXES``
  and ``FAVE_UPLOAD_PREFIX``; ``check_source_reads``: exactly those);
* the orchestrator: ``fave.persistence`` keys (state, shards, final, index), the payloads the service parks
  under ``artifact_prefix``, the entry points' own prefixes (``fave.app``: idempotency records, active
  markers, uploads), the lease and mailbox keys (``fave.app.exclusive.lease_key`` / ``inbox_prefix``, deleted
  when the code that writes them deletes) and ``lambda:InvokeFunction`` on every pipeline function;
* completions (issue 10): an asynchronous stage's destination is ``CompletionsQueue``, so its role must be
  allowed ``sqs:SendMessage`` there (Lambda delivers a destination record with the stage's role) and nothing
  on the orchestrator; the orchestrator consumes the queue through an event source mapping, whose pollers
  receive and delete with the orchestrator's role.

Each check also asserts what must *not* be allowed (another stage's prefix, reads outside requests/ and the
sources, deleting results or records, other functions, invoking the orchestrator, consuming completions).

Managed policies are evaluated too, with AWS's documents as moto ships them
(``moto.iam.aws_managed_policies``), so a grant that only a managed policy makes is seen.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import fave.persistence
from fave.core.dag import Pipeline
from fave.inputs import upload_field
from fave.keys import INDEX_PREFIX, final_key, shard_key, state_key
from fave.local.template import Template
from fave_shared.stage import artifact_prefix

from support.cfn import RolePolicies, Stack, Statement, allowed, function_role

ORCHESTRATOR = "OrchestratorFunction"
#: The asynchronous stages' destination, consumed by the orchestrator in batches (template.yaml).
COMPLETIONS = "CompletionsQueue"
REQUEST_ID = "01JD2ZK0000000000000000000"
#: AWS-managed policies SAM attaches to every role (logs; X-Ray for Tracing: Active).
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
#: What SAM attaches to the role of a function with an SQS event: the event source mapping's pollers receive,
#: delete and read the queue's attributes with the function's role. Its Resource is "*" (every queue of the
#: account); SAM has no narrower form short of writing the role by hand, so it is allowed, but only on a role
#: whose function has an SQS event source mapping (the orchestrator).
SQS_POLLER_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"
#: What the event source mapping's pollers do with the function's role (CreateEventSourceMapping checks them).
SQS_POLLER_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")


@dataclass(frozen=True)
class Access:
    """One API call a function makes: action, resource ARN, request context (s3:prefix), and why."""

    action: str
    resource: str
    why: str
    context: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        extra = f" with {dict(self.context)}" if self.context else ""
        return f"{self.action} on {self.resource}{extra} ({self.why})"


# ---------------------------------------------------------------------------------------------------------
# What the code does


@dataclass(frozen=True)
class CodeFacts:
    """What a function folder's source does with the store beyond the stage SDK."""

    request_folders: frozenset[str]  # "clips/" for f"{ctx.request_prefix}clips/{i}.mp4"
    lists: bool
    deletes: bool


def code_facts(folder: Path) -> CodeFacts:
    """Read ``folder/*.py`` (or one file) with ``ast``: request-level key folders and store list/delete calls."""
    folders: set[str] = set()
    lists = deletes = False
    for source in sorted(folder.glob("*.py")) if folder.is_dir() else [folder]:
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and len(node.values) >= 2:
                first, second = node.values[0], node.values[1]
                if (
                    isinstance(first, ast.FormattedValue)
                    and isinstance(first.value, ast.Attribute)
                    and first.value.attr == "request_prefix"
                    and isinstance(second, ast.Constant)
                    and isinstance(second.value, str)
                    and "/" in second.value
                ):
                    folders.add(second.value.split("/", 1)[0] + "/")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "store"
            ):
                lists |= node.func.attr == "list"
                deletes |= node.func.attr == "delete"
    return CodeFacts(frozenset(folders), lists, deletes)


def _upstream(pipeline: Pipeline, stage: str) -> set[str]:
    seen: set[str] = set()
    todo = list(pipeline.stages[stage].needs)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(pipeline.stages[name].needs)
    return seen


def _stage_writes(pipeline: Pipeline, template: Template, stage: str, bucket: str) -> list[Access]:
    """Object writes of one stage: SDK artifacts and outputs, plus its code's request-level folders."""
    spec = pipeline.stages[stage]
    items: list[int | None] = [None] if spec.for_each is None else [0, 42]
    writes = [
        Access("s3:PutObject", f"arn:aws:s3:::{bucket}/{artifact_prefix(REQUEST_ID, stage, item)}{name}", why)
        for item in items
        for name, why in (("output-1.json", "large output by reference"), ("keyframes/0001.jpg", "ctx.put_bytes"))
    ]
    facts = code_facts(template.function(spec.function).code_uri)
    for folder in sorted(facts.request_folders):
        key = f"arn:aws:s3:::{bucket}/requests/{REQUEST_ID}/{folder}00001.mp4"
        writes.append(Access("s3:PutObject", key, f"its code writes requests/{{id}}/{folder}"))
    return writes


def stage_requirements(
    pipeline: Pipeline, template: Template, stage: str, bucket: str, source_prefixes: Sequence[str]
) -> list[Access]:
    """Everything the function of ``stage`` must be allowed to do (a first stage reads the request's source,
    which may be under any of ``source_prefixes``)."""
    spec = pipeline.stages[stage]
    item = None if spec.for_each is None else 3
    needed = _stage_writes(pipeline, template, stage, bucket)
    needed.append(
        Access("s3:GetObject", f"arn:aws:s3:::{bucket}/{artifact_prefix(REQUEST_ID, stage, item)}input-1.json", "input")
    )
    for upstream in sorted(_upstream(pipeline, stage)):
        for write in _stage_writes(pipeline, template, upstream, bucket):
            needed.append(Access("s3:GetObject", write.resource, f"reads what {upstream} wrote"))
    if not spec.needs:
        needed += [
            Access("s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}video.mp4", f"a source under {prefix}")
            for prefix in source_prefixes
        ]
    facts = code_facts(template.function(spec.function).code_uri)
    for folder in sorted(facts.request_folders):
        prefix = f"requests/{REQUEST_ID}/{folder}"
        if facts.lists:
            needed.append(
                Access("s3:ListBucket", f"arn:aws:s3:::{bucket}", f"lists {folder}", context={"s3:prefix": prefix})
            )
        if facts.deletes:
            needed.append(Access("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{prefix}00001.mp4", f"deletes in {folder}"))
    return needed


def stage_forbidden(
    pipeline: Pipeline,
    template: Template,
    stage: str,
    bucket: str,
    stack: Stack,
    *,
    source_prefixes: Sequence[str],
    reads_sources: bool = True,
) -> list[Access]:
    """What the function of ``stage`` must not be able to do: write outside its own prefixes, or read outside
    requests/ (and, for a first stage of a pipeline with an upload trigger, ``reads_sources``, the source
    prefixes: without one a request names no source, so no stage reads there)."""
    obj = f"arn:aws:s3:::{bucket}/"
    forbidden = [
        Access("s3:GetObject", f"{obj}{INDEX_PREFIX}{REQUEST_ID}", "the request index"),
        Access("s3:GetObject", f"{obj}idempotency/{'0' * 64}.json", "idempotency records"),
        Access("s3:GetObject", f"{obj}elsewhere/video.mp4", "objects outside requests/ and the source prefixes"),
        Access("s3:PutObject", f"arn:aws:s3:::{bucket}/{state_key(REQUEST_ID)}", "the orchestrator's state"),
        Access("s3:PutObject", f"arn:aws:s3:::{bucket}/{INDEX_PREFIX}{REQUEST_ID}", "the request index"),
        Access("s3:PutObject", f"arn:aws:s3:::{bucket}/uploads/video.mp4", "uploads"),
        Access("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{state_key(REQUEST_ID)}", "the orchestrator's state"),
        Access(
            "s3:PutObject", f"arn:aws:s3:::other-bucket/{artifact_prefix(REQUEST_ID, stage, None)}x", "other bucket"
        ),
    ]
    if pipeline.stages[stage].needs or not reads_sources:  # only a first stage reads the request's source
        forbidden += [Access("s3:GetObject", f"{obj}{p}video.mp4", f"sources under {p}") for p in source_prefixes]
    own = {a.resource for a in _stage_writes(pipeline, template, stage, bucket)}
    for other in pipeline.stages:
        if other != stage:
            forbidden += [
                Access("s3:PutObject", w.resource, f"{other}'s artifacts")
                for w in _stage_writes(pipeline, template, other, bucket)
                if w.resource not in own
            ]
    for lid in stack.resources:
        if stack.type_of(lid) == "AWS::Lambda::Function":
            why = "its completions go through CompletionsQueue" if lid == ORCHESTRATOR else f"invoke {lid}"
            forbidden.append(Access("lambda:InvokeFunction", stack.arn(lid), why))
    if COMPLETIONS in stack.resources:
        queue = stack.arn(COMPLETIONS)
        forbidden += [
            Access(action, queue, "consuming completions is the orchestrator's") for action in SQS_POLLER_ACTIONS
        ]
        if pipeline.stages[stage].mode == "sync":
            forbidden.append(Access("sqs:SendMessage", queue, "a sync stage has no destination"))
    return forbidden


def _shard_key(stage: str) -> str:
    if "token" in inspect.signature(shard_key).parameters:  # versioned shard objects
        return str(shard_key(REQUEST_ID, stage, 0, "0a1b2c"))  # type: ignore[call-arg,unused-ignore]
    return str(shard_key(REQUEST_ID, stage, 0))  # type: ignore[call-arg,unused-ignore]


def _app_constant(module: str, name: str) -> Any:
    """A constant of the orchestrator's entry points (fave.app), or None while that package is absent."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def orchestrator_requirements(
    pipeline: Pipeline, bucket: str, stack: Stack, upload_prefix: str, sources: tuple[str, ...] = ()
) -> list[Access]:
    """Everything the orchestrator function must be allowed to do."""
    obj = f"arn:aws:s3:::{bucket}/"
    read_write = [
        (state_key(REQUEST_ID), "state"),
        (final_key(REQUEST_ID), "final.json"),
        (f"{INDEX_PREFIX}{REQUEST_ID}", "request index"),
    ]
    for stage, spec in pipeline.stages.items():
        read_write.append((_shard_key(stage), f"{stage} task shard"))
        item = None if spec.for_each is None else 9
        read_write.append((f"{artifact_prefix(REQUEST_ID, stage, item)}input-1.json", "large input by reference"))
        read_write.append((f"{artifact_prefix(REQUEST_ID, stage, item)}output-1.json", "large output parked"))
    if code_facts(Path(fave.persistence.__file__)).deletes:  # superseded shard versions are removed
        needed_deletes = [(_shard_key(stage), "superseded shard") for stage in pipeline.stages]
    else:
        needed_deletes = []
    idempotency = _app_constant("fave.keys", "IDEMPOTENCY_PREFIX")
    if idempotency:
        read_write.append((f"{idempotency}{'0' * 64}.json", "idempotency record"))
    needed = [Access(action, obj + key, why) for key, why in read_write for action in ("s3:GetObject", "s3:PutObject")]
    needed += [Access("s3:DeleteObject", obj + key, why) for key, why in needed_deletes]
    active = _app_constant("fave.keys", "ACTIVE_PREFIX")
    if active:
        needed += [
            Access("s3:PutObject", f"{obj}{active}{REQUEST_ID}", "active marker"),
            Access("s3:DeleteObject", f"{obj}{active}{REQUEST_ID}", "active marker done"),
            Access("s3:ListBucket", f"arn:aws:s3:::{bucket}", "tick lists active markers", {"s3:prefix": active}),
        ]
    needed += _lease_and_mailbox(bucket)
    if upload_field(pipeline) is not None:  # the upload trigger reads the object's sidecar (and heads the object)
        needed += [
            Access("s3:GetObject", f"{obj}{upload_prefix}video.mp4", "the upload"),
            Access("s3:GetObject", f"{obj}{upload_prefix}video.mp4.json", "the upload's sidecar"),
        ]
    needed += [
        # No s3:prefix in the context: what S3 checks to answer 404 (not 403) for a missing key.
        Access("s3:ListBucket", f"arn:aws:s3:::{bucket}", "404 for missing keys (conditional writes, heads)"),
    ]
    for spec in pipeline.stages.values():
        needed.append(Access("lambda:InvokeFunction", stack.arn(spec.function), f"invoke {spec.function}"))
        # The deployed code's digest (LambdaInvoker.code_digest): the result cache's keys, rerun's fingerprints.
        needed.append(
            Access("lambda:GetFunctionConfiguration", stack.arn(spec.function), f"code digest of {spec.function}")
        )
    if _keys_the_source(pipeline):  # the cache keys the request's source by its content: its ETag
        needed += [Access("s3:GetObject", f"{obj}{prefix}video.mp4", "the source's ETag") for prefix in sources]
    if _app_constant("fave.app.context", "SELF_FUNCTION") == ORCHESTRATOR:
        needed.append(Access("lambda:InvokeFunction", stack.arn(ORCHESTRATOR), "its own step invocations"))
    if COMPLETIONS in stack.resources:
        needed += [
            Access(action, stack.arn(COMPLETIONS), "the event source mapping polls completions with its role")
            for action in SQS_POLLER_ACTIONS
        ]
    return needed


def _keys_the_source(pipeline: Pipeline) -> bool:
    """Whether a cached stage's key takes the request's source field, which the orchestrator then keys by
    the source object's ETag (``fave.source_digest``), wherever the source is."""
    source_field = upload_field(pipeline)
    return source_field is not None and any(
        spec.cache and (spec.cache_request is None or source_field in spec.cache_request)
        for spec in pipeline.stages.values()
    )


def _lease_and_mailbox(bucket: str) -> list[Access]:
    """One writer per request (``fave.lease``) and the mailbox (``fave.app.exclusive``), with the keys the code
    builds (``fave.keys``: ``lease_key``, ``inbox_prefix``); each is deleted if the module that writes it deletes."""
    lease_key = _app_constant("fave.keys", "lease_key")
    inbox_prefix = _app_constant("fave.keys", "inbox_prefix")
    lease_module = importlib.import_module("fave.lease")
    mailbox_module = importlib.import_module("fave.app.exclusive")
    obj = f"arn:aws:s3:::{bucket}/"
    needed: list[Access] = []
    if lease_key is not None:
        lease = obj + lease_key(REQUEST_ID)
        needed += [Access(action, lease, "the request's lease") for action in ("s3:GetObject", "s3:PutObject")]
        if code_facts(Path(inspect.getfile(lease_module))).deletes:
            needed.append(Access("s3:DeleteObject", lease, "a lease is released by deleting it"))
    if inbox_prefix is not None:
        prefix = inbox_prefix(REQUEST_ID)
        message = f"{obj}{prefix}00000000000000000001-0a1b2c3d4e5f.json"
        needed += [Access(action, message, "a mailbox message") for action in ("s3:GetObject", "s3:PutObject")]
        needed.append(
            Access(
                "s3:ListBucket", f"arn:aws:s3:::{bucket}", "the lease holder lists the mailbox", {"s3:prefix": prefix}
            )
        )
        if code_facts(Path(inspect.getfile(mailbox_module))).deletes:
            needed.append(Access("s3:DeleteObject", message, "an applied message is removed"))
    return needed


def orchestrator_forbidden(
    pipeline: Pipeline, bucket: str, stack: Stack, upload_prefix: str, sources: Sequence[str] = ()
) -> list[Access]:
    """What the orchestrator must not be able to do; ``sources``: the prefixes its settings accept a source
    under, which it must not read when the pipeline has no upload trigger (no request names a source)."""
    obj = f"arn:aws:s3:::{bucket}/"
    forbidden = [
        Access("s3:PutObject", f"{obj}{upload_prefix}video.mp4", "uploads are the users'"),
        Access("s3:DeleteObject", f"{obj}{upload_prefix}video.mp4", "uploads are the users'"),
        Access("s3:DeleteObject", f"{obj}{state_key(REQUEST_ID)}", "state is never deleted"),
        Access("s3:DeleteObject", f"{obj}{final_key(REQUEST_ID)}", "results are never deleted"),
        Access("s3:DeleteObject", f"{obj}{INDEX_PREFIX}{REQUEST_ID}", "the request index is never deleted"),
        Access("s3:DeleteObject", f"{obj}idempotency/{'0' * 64}.json", "idempotency records expire by lifecycle"),
        Access(
            "s3:DeleteObject",
            f"{obj}{artifact_prefix(REQUEST_ID, next(iter(pipeline.stages)), None)}output-1.json",
            "stage artifacts are never deleted",
        ),
        Access("s3:GetObject", f"arn:aws:s3:::other-bucket/{state_key(REQUEST_ID)}", "other bucket"),
    ]
    if upload_field(pipeline) is None:
        forbidden += [
            Access("s3:GetObject", f"{obj}{prefix}video.mp4", "no upload trigger: no request names a source")
            for prefix in dict.fromkeys((*sources, upload_prefix))
        ]
    elif not _keys_the_source(pipeline):  # it reads a source only for its ETag; an upload for its sidecar
        forbidden += [
            Access("s3:GetObject", f"{obj}{prefix}video.mp4", "no cache key takes the source: only stages read it")
            for prefix in sources
            if prefix != upload_prefix
        ]
    functions = {spec.function for spec in pipeline.stages.values()} | {ORCHESTRATOR}
    for lid in stack.resources:
        if stack.type_of(lid) == "AWS::Lambda::Function" and lid not in functions:
            forbidden.append(Access("lambda:InvokeFunction", stack.arn(lid), f"invoke {lid}"))
    if COMPLETIONS in stack.resources:
        forbidden.append(Access("sqs:SendMessage", stack.arn(COMPLETIONS), "completions come from the stages"))
    return forbidden


# ---------------------------------------------------------------------------------------------------------
# The checks


def _functions(stack: Stack) -> Iterator[str]:
    return (lid for lid in stack.resources if stack.type_of(lid) == "AWS::Lambda::Function")


@functools.cache
def _aws_managed_documents() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    documents: dict[str, Any] = json.loads(aws_managed_policies_data)
    return documents


def managed_statements(arn: str) -> tuple[Statement, ...]:
    """The statements of an AWS-managed policy (AWS's document as moto ships it; none for another ARN)."""
    entry = _aws_managed_documents().get(arn.rsplit("/", 1)[-1]) if arn.startswith("arn:aws:iam::aws:") else None
    if entry is None:
        return ()
    raw = entry["Document"]["Statement"]
    return tuple(Statement.parse(item, arn) for item in (raw if isinstance(raw, list) else [raw]))


def role_statements(role: RolePolicies) -> tuple[Statement, ...]:
    """Everything a role grants: its inline statements and those of its AWS-managed policies."""
    return role.statements + tuple(s for arn in role.managed for s in managed_statements(arn))


def event_source_mappings(stack: Stack) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(mapping logical id, function logical id, resolved properties)`` of every event source mapping."""
    found = []
    for lid in stack.resources:
        if stack.type_of(lid) == "AWS::Lambda::EventSourceMapping":
            props = stack.properties(lid)
            function = props["FunctionName"]
            function = function["Ref"] if isinstance(function, dict) and "Ref" in function else str(function)
            found.append((lid, str(function), stack.resolve(props)))
    return found


def _sqs_consumers(stack: Stack) -> set[str]:
    """The functions an event source mapping feeds from an SQS queue."""
    return {
        function
        for _, function, props in event_source_mappings(stack)
        if str(props.get("EventSourceArn", "")).startswith("arn:aws:sqs:")
    }


def check_no_wildcard_actions(stack: Stack) -> list[str]:
    """No Allow with a wildcard action in any function's role, and no managed policy beyond logs and X-Ray
    (plus SQS polling for a function that consumes a queue)."""
    problems = []
    consumers = _sqs_consumers(stack)
    for lid in _functions(stack):
        role = function_role(stack, lid)
        for statement in role.statements:
            if statement.effect == "Allow":
                problems += [f"{statement.source}: wildcard action {a}" for a in statement.actions if "*" in a]
        may = ALLOWED_MANAGED_POLICIES | ({SQS_POLLER_POLICY} if lid in consumers else set())
        problems += [f"{lid}: managed policy {arn}" for arn in role.managed if arn not in may]
    return problems


def _check_role(lid: str, role: RolePolicies, needed: list[Access], forbidden: list[Access]) -> list[str]:
    statements = role_statements(role)
    problems = [
        f"{lid} may not {a.describe()}" for a in needed if not allowed(statements, a.action, a.resource, a.context)
    ]
    problems += [f"{lid} may {a.describe()}" for a in forbidden if allowed(statements, a.action, a.resource, a.context)]
    return problems


def orchestrator_env(stack: Stack) -> dict[str, str]:
    env = stack.resolve(stack.properties(ORCHESTRATOR).get("Environment", {})).get("Variables", {})
    return {str(k): str(v) for k, v in env.items()}


def source_prefixes(stack: Stack) -> tuple[str, ...]:
    """Where a request's source may be: what the orchestrator's settings make of its environment
    (``FAVE_INPUT_PREFIXES`` and the upload prefix), as ``fave.app`` reads it."""
    from fave.app.settings import Settings

    prefixes: tuple[str, ...] = Settings.from_env(orchestrator_env(stack)).source_prefixes
    return prefixes


def upload_prefix(stack: Stack) -> str:
    """The orchestrator's upload prefix, as ``fave.app`` reads it (``FAVE_UPLOAD_PREFIX``, else its default)."""
    from fave.app.settings import Settings

    prefix: str = Settings.from_env(orchestrator_env(stack)).upload_prefix
    return prefix


def read_sources(stack: Stack, pipeline: Pipeline) -> tuple[str, ...]:
    """The prefixes a first stage reads the request's source under: ``source_prefixes`` for a pipeline with
    an upload trigger (``fave.inputs.upload_field``); none without one, since then no field of a request
    names a source (the API checks none, the upload handler refuses every object)."""
    return source_prefixes(stack) if upload_field(pipeline) is not None else ()


def check_source_reads(translated: Mapping[str, Any], pipeline: Pipeline) -> list[str]:
    """A first stage's role reads objects outside requests/ exactly under the source prefixes: the keys its
    GetObject statements allow there, as prefixes, equal ``source_prefixes`` (no more, no fewer)."""
    stack = Stack(translated)
    bucket_objects = f"arn:aws:s3:::{stack.physical_id('ArtifactsBucket')}/"
    expected = sorted(read_sources(stack, pipeline))
    problems = []
    for stage, spec in pipeline.stages.items():
        if spec.needs or spec.function not in stack.resources:
            continue
        reads = set()
        for statement in function_role(stack, spec.function).statements:
            unconditional = replace(statement, conditions={})
            for resource in statement.resources:
                if statement.effect != "Allow" or not unconditional.matches("s3:GetObject", resource, {}):
                    continue
                pattern = resource.removeprefix(bucket_objects) if resource.startswith(bucket_objects) else resource
                if not pattern.startswith("requests/"):
                    reads.add(pattern.removesuffix("*"))
        if sorted(reads) != expected:
            problems.append(
                f"stage {stage} ({spec.function}) reads sources under {sorted(reads)}, "
                f"the orchestrator accepts them under {expected} (FAVE_INPUT_PREFIXES and FAVE_UPLOAD_PREFIX)"
            )
    return problems


def check_iam(translated: Mapping[str, Any], pipeline: Pipeline, template: Template) -> list[str]:
    """Every function's role covers what its code does, and no more (see the module docstring)."""
    stack = Stack(translated)
    bucket = stack.physical_id("ArtifactsBucket")
    uploads = upload_prefix(stack)
    accepted = source_prefixes(stack)
    sources = read_sources(stack, pipeline)
    problems = check_no_wildcard_actions(stack)
    for stage, spec in pipeline.stages.items():
        if spec.function not in stack.resources:
            problems.append(f"stage {stage}: no function {spec.function} in the translated template")
            continue
        role = function_role(stack, spec.function)
        needed = stage_requirements(pipeline, template, stage, bucket, sources)
        if spec.mode == "async" and COMPLETIONS in stack.resources:
            needed.append(Access("sqs:SendMessage", stack.arn(COMPLETIONS), "its destination records"))
        forbidden = stage_forbidden(
            pipeline, template, stage, bucket, stack, source_prefixes=accepted, reads_sources=bool(sources)
        )
        problems += _check_role(spec.function, role, needed, forbidden)
    problems += _check_role(
        ORCHESTRATOR,
        function_role(stack, ORCHESTRATOR),
        orchestrator_requirements(pipeline, bucket, stack, uploads, sources),
        orchestrator_forbidden(pipeline, bucket, stack, uploads, accepted),
    )
    return problems


def _invoke_configs(stack: Stack) -> dict[str, Mapping[str, Any]]:
    """``{function logical id: its resolved AWS::Lambda::EventInvokeConfig properties}``."""
    configs = {}
    for lid in stack.resources:
        if stack.type_of(lid) == "AWS::Lambda::EventInvokeConfig":
            props = stack.properties(lid)
            function = props["FunctionName"]["Ref"]
            configs[function] = stack.resolve(props)
    return configs


def check_wiring(translated: Mapping[str, Any], pipeline: Pipeline) -> list[str]:
    """Functions exist, async stages deliver to CompletionsQueue, the orchestrator consumes it in batches
    (``check_completions``) and knows every function."""
    problems = []
    stack = Stack(translated)
    env = orchestrator_env(stack)
    configs = _invoke_configs(stack)
    queue_arn = stack.arn(COMPLETIONS) if COMPLETIONS in stack.resources else None
    for stage, spec in pipeline.stages.items():
        where = f"stage {stage} ({spec.function})"
        if spec.function not in stack.resources or stack.type_of(spec.function) != "AWS::Lambda::Function":
            problems.append(f"{where}: no function {spec.function} in template.yaml")
            continue
        name = env.get(f"FAVE_FUNCTION_{spec.function}")
        if name != stack.physical_id(spec.function):
            problems.append(
                f"{where}: the orchestrator's FAVE_FUNCTION_{spec.function} is {name!r}, "
                f"the function is named {stack.physical_id(spec.function)!r}"
            )
        config = configs.get(spec.function)
        if spec.mode == "async":
            if config is None:
                problems.append(f"{where}: no EventInvokeConfig")
                continue
            if config.get("MaximumRetryAttempts") != 0:
                problems.append(
                    f"{where}: MaximumRetryAttempts is {config.get('MaximumRetryAttempts')!r}, not 0 "
                    "(the engine owns retries)"
                )
            if not config.get("MaximumEventAgeInSeconds"):
                problems.append(f"{where}: EventInvokeConfig.MaximumEventAgeInSeconds is not set")
            destinations = config.get("DestinationConfig") or {}
            for condition in ("OnSuccess", "OnFailure"):
                target = (destinations.get(condition) or {}).get("Destination")
                if target is None or target != queue_arn:
                    problems.append(f"{where}: {condition} destination is {target!r}, not {COMPLETIONS}")
        elif config is not None and config.get("DestinationConfig"):
            problems.append(f"{where}: a sync stage with destinations (its result comes back in the response)")
    store = env.get("FAVE_STORE")
    if store != f"s3://{stack.physical_id('ArtifactsBucket')}":
        problems.append(f"the orchestrator's FAVE_STORE {store!r} is not the artifacts bucket")
    return problems + check_completions(stack)


def check_completions(stack: Stack) -> list[str]:
    """CompletionsQueue has a dead-letter queue, and the orchestrator (alone) consumes it through an event
    source mapping that reports partial batch failures and waits for a batch (what makes one invocation apply
    many completions). Also what CloudFormation would refuse at deploy: a visibility timeout shorter than the
    function's timeout, a batch over 10 without a batching window."""
    if COMPLETIONS not in stack.resources or stack.type_of(COMPLETIONS) != "AWS::SQS::Queue":
        return [f"no {COMPLETIONS} (AWS::SQS::Queue): the asynchronous stages' destination"]
    problems = []
    queue = stack.resolve(stack.properties(COMPLETIONS))
    redrive = queue.get("RedrivePolicy") or {}
    target = str(redrive.get("deadLetterTargetArn", ""))
    queues = {stack.arn(lid) for lid in stack.resources if stack.type_of(lid) == "AWS::SQS::Queue"}
    if target not in queues - {stack.arn(COMPLETIONS)} or not int(redrive.get("maxReceiveCount") or 0) >= 1:
        written = f" (it has {redrive!r})" if redrive else ""
        problems.append(
            f"{COMPLETIONS}: no RedrivePolicy to another queue of the stack{written}: a completion that keeps "
            "failing would be redelivered until it expires, then lost"
        )
    mappings = [
        (lid, function, props)
        for lid, function, props in event_source_mappings(stack)
        if props.get("EventSourceArn") == stack.arn(COMPLETIONS)
    ]
    problems += [
        f"{function} consumes {COMPLETIONS} ({lid}): only {ORCHESTRATOR} may"
        for lid, function, _ in mappings
        if function != ORCHESTRATOR
    ]
    ours = [(lid, props) for lid, function, props in mappings if function == ORCHESTRATOR]
    if len(ours) != 1:
        problems.append(f"{ORCHESTRATOR} consumes {COMPLETIONS} through {len(ours)} event source mappings, not 1")
        return problems
    lid, props = ours[0]
    if "ReportBatchItemFailures" not in (props.get("FunctionResponseTypes") or []):
        problems.append(
            f"{lid}: no ReportBatchItemFailures in FunctionResponseTypes (a request whose completions fail would "
            "have the whole batch redelivered)"
        )
    window = int(props.get("MaximumBatchingWindowInSeconds") or 0)
    if window < 1:
        problems.append(f"{lid}: no batching window (MaximumBatchingWindowInSeconds {window}): batches of one")
    if props.get("Enabled") is False:
        problems.append(f"{lid}: disabled")
    visibility = int(queue.get("VisibilityTimeout", 30))
    timeout = int(stack.properties(ORCHESTRATOR).get("Timeout", 3))
    if visibility < timeout:
        problems.append(
            f"{COMPLETIONS}: VisibilityTimeout {visibility} s is shorter than {ORCHESTRATOR}'s timeout {timeout} s "
            "(Lambda refuses the event source mapping)"
        )
    return problems


def check_upload_trigger(translated: Mapping[str, Any], pipeline: Pipeline) -> list[str]:
    """A pipeline with an upload trigger (``fave.inputs.upload_field``) is started by its bucket: one
    notification of the orchestrator for objects created under its upload prefix (``FAVE_UPLOAD_PREFIX``, as
    ``fave.app`` reads it). A pipeline without one has no such notification: the orchestrator would refuse
    every object it named."""
    stack = Stack(translated)
    bucket = stack.resolve(stack.properties("ArtifactsBucket"))
    notifications = [
        config
        for config in (bucket.get("NotificationConfiguration") or {}).get("LambdaConfigurations", [])
        if config.get("Function") == stack.arn(ORCHESTRATOR)
    ]
    if upload_field(pipeline) is None:
        return [
            f"no upload trigger in the pipeline, but the bucket notifies {ORCHESTRATOR} of {n}" for n in notifications
        ]
    prefix = upload_prefix(stack)
    expected = {"Event": "s3:ObjectCreated:*", "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": prefix}]}}}
    found = [{k: v for k, v in n.items() if k != "Function"} for n in notifications]
    if found != [expected]:
        return [f"the upload trigger: the bucket notifies {ORCHESTRATOR} of {found}, not of {expected} (one)"]
    return []
