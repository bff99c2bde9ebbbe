"""A pipeline as an Amazon States Language state machine (``fave export --format asl``). Pure: Pipeline -> dict.

The machine calls the SAME stage functions with the same event as fave (docs/stages.md), each through
``arn:aws:states:::lambda:invoke``, so it runs on Step Functions without a line of stage code changed.

Execution input: ``{"request": {...the request as fave passes it, with its profile}, "store": "s3://bucket",
"functions": {"WordsFunction": "arn:aws:lambda:...", ...}}``. With ``arns="substitutions"`` (``--sam``) the
function ARNs and the store are ``${LogicalIdArn}`` / ``${FaveStore}`` DefinitionSubstitutions instead, and the
input is just ``{"request": {...}}``. The execution's name is the request id the stages see (``task.request_id``);
its output is the final stage's output (fave's final.json).

The state document while it runs: ``request``, ``store``, ``functions``, ``request_id``, ``configs`` (each stage's
config for the request's profile, chosen by a Choice state at the start), ``results`` (a Task's ``{"output": ...}``
by stage name, a Map's list, a chained group's ``{stage: list}`` under one key), ``raw`` and ``count`` (scratch:
a chained group's per-item results, and list lengths for Choice states).

Shape: single-task stages are Task states; per-item stages over one list that join item by item form one Map
whose ItemProcessor runs them for each item (series and parallel again, over ``item_needs``); the graph of those
units is split into series and parallel parts (Parallel branches); a part that is not series-parallel runs in a
topological order (``notes`` says so).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fave.core.dag import Pipeline, RetryPolicy, Stage
from fave.export.mapping import Row

__all__ = ["AslExport", "AslOptions", "export_asl", "function_arn_parameter"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class AslOptions:
    arns: Literal["input", "substitutions"] = "input"
    """Where the function ARNs (and the store) come from: the execution input, or DefinitionSubstitutions."""
    distributed: bool = False
    """Every fan-out as a DISTRIBUTED Map (child executions, tolerated failures) instead of INLINE."""
    distributed_above: int | None = None
    """A fan-out over more items than this runs as a DISTRIBUTED Map, a smaller one INLINE (both are in the
    machine; a Choice on the list's length picks one)."""
    results: tuple[str, str] | None = None
    """(bucket, key prefix) for DISTRIBUTED Maps' ResultWriter, known at export time (``--result-writer``);
    with ``arns="substitutions"`` and none given: the stack's bucket (``RESULTS_BUCKET``)."""


_SAFE_PREFIX = re.compile(r"[A-Za-z0-9!_.*()/-]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def result_location(uri: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` as (bucket, prefix ending in '/' or empty); ValueError saying what is wrong. The
    prefix goes into a ``States.Format`` template: S3's safe characters only (no braces, quotes, backslashes)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"expected s3://bucket[/prefix], got {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    if not _SAFE_PREFIX.fullmatch(prefix):
        raise ValueError(f"the prefix {prefix!r} may hold only letters, digits and !_.*()/-")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@dataclass(frozen=True, slots=True)
class AslExport:
    definition: dict[str, Any]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    substitutions: Mapping[str, str] = field(default_factory=dict)
    """``${Name}`` placeholder -> the function logical id (or ``FaveStore``) it stands for."""


def function_arn_parameter(function: str) -> str:
    """The DefinitionSubstitutions name for a function's ARN."""
    return f"{function}Arn"


def _key(path: str, name: str) -> str:
    """``path.name`` in JSONPath, bracketed when the name is not an identifier (stage names may hold '-')."""
    return f"{path}.{name}" if _IDENTIFIER.fullmatch(name) else f"{path}['{name}']"


# ---- units: a single-task stage, or a group of per-item stages over one list ---------------------------


@dataclass(frozen=True, slots=True)
class _Unit:
    name: str  # the single stage's name, or the group's result key
    stages: tuple[str, ...]  # in topological order
    per_item: bool


def _units(p: Pipeline, *, grouped: bool = True) -> tuple[list[_Unit], dict[str, str]]:
    """The units and the unit of each stage. Per-item stages joined item by item (over the same list) are one
    group: union-find over ``item_needs`` (``grouped=False``: every stage a unit of its own)."""
    parent = {n: n for n in p.order}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for name, s in p.stages.items():
        for dep in s.item_needs if grouped else ():
            parent[find(name)] = find(dep)
    members: dict[str, list[str]] = {}
    for name in p.order:
        members.setdefault(find(name), []).append(name)
    units: list[_Unit] = []
    unit_of: dict[str, str] = {}
    taken = set(p.stages)
    for name in p.order:
        group = members[find(name)]
        if group[0] != name:
            continue
        per_item = p.stages[name].fanned_out
        if per_item and len(group) > 1:
            key = f"{group[0]}_items"
            while key in taken:  # never the name of a stage: both live in `results`
                key += "_"
            taken.add(key)
        else:
            key = name
        units.append(_Unit(key, tuple(group), per_item))
        for member in group:
            unit_of[member] = key
    return units, unit_of


def _unit_deps(p: Pipeline, units: Sequence[_Unit], unit_of: Mapping[str, str]) -> dict[str, set[str]]:
    deps: dict[str, set[str]] = {}
    for u in units:
        wanted: set[str] = set()
        for name in u.stages:
            s = p.stages[name]
            wanted.update(unit_of[d] for d in s.needs)
            if s.for_each is not None:
                wanted.add(unit_of[s.for_each.source])
        wanted.discard(u.name)
        deps[u.name] = wanted
    return deps


def _ordered(units: Sequence[_Unit], deps: Mapping[str, set[str]]) -> list[_Unit] | None:
    """``units`` in a topological order of ``deps`` (stable), or None when they have a cycle."""
    by_name = {u.name: u for u in units}
    state: dict[str, int] = {}
    out: list[_Unit] = []

    def visit(name: str) -> bool:
        if state.get(name) == 2:
            return True
        if state.get(name) == 1:
            return False
        state[name] = 1
        if not all(visit(d) for d in sorted(deps[name], key=list(by_name).index)):
            return False
        state[name] = 2
        out.append(by_name[name])
        return True

    return out if all(visit(u.name) for u in units) else None


def _planned_units(p: Pipeline, notes: list[str]) -> tuple[list[_Unit], dict[str, str], dict[str, set[str]]]:
    """The units in a topological order, their deps, and the unit of each stage. A group of per-item stages
    that a single-task stage sits in the middle of (c needs a item by item and b, b needs all of a) cannot be
    one Map: then every per-item stage is a Map of its own, taking its per-item needs by index."""
    units, unit_of = _units(p)
    deps = _unit_deps(p, units, unit_of)
    ordered = _ordered(units, deps)
    if ordered is None:
        units, unit_of = _units(p, grouped=False)
        deps = _unit_deps(p, units, unit_of)
        ordered = _ordered(units, deps)
        assert ordered is not None  # the pipeline's own DAG has no cycle
        notes.append(
            "per-item stages chained item by item with a single-task stage between them: each is a Map of its "
            "own (the later one waits for the whole earlier one anyway, through the single-task stage)"
        )
    return ordered, unit_of, deps


# ---- series-parallel plan ----------------------------------------------------------------------------

_Step = tuple[str, Any]  # ("unit", name) | ("seq", [steps]) | ("par", [steps])
_Leaf = Callable[[str, dict[str, Any]], tuple[str, list[dict[str, Any]]]]


def _closure(names: Sequence[str], deps: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Ancestors of each name, within ``names``."""
    inside = set(names)
    up: dict[str, set[str]] = {}
    for n in names:  # topological order: a unit's deps come before it
        acc: set[str] = set()
        for d in deps[n] & inside:
            acc.add(d)
            acc |= up[d]
        up[n] = acc
    return up


def _components(names: Sequence[str], deps: Mapping[str, set[str]]) -> list[list[str]]:
    inside = set(names)
    parent = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for n in names:
        for d in deps[n] & inside:
            parent[find(n)] = find(d)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(find(n), []).append(n)
    return list(groups.values())


def _plan(names: Sequence[str], deps: Mapping[str, set[str]], notes: list[str]) -> _Step:
    """``names`` (topologically ordered) as series and parallel steps."""
    if len(names) == 1:
        return ("unit", names[0])
    components = _components(names, deps)
    if len(components) > 1:
        return ("par", [_plan(c, deps, notes) for c in components])
    up = _closure(names, deps)
    down: dict[str, set[str]] = {n: set() for n in names}
    for n in names:
        for a in up[n]:
            down[a].add(n)
    cuts = [n for n in names if len(up[n]) + len(down[n]) == len(names) - 1]
    if not cuts:
        notes.append(
            f"stages {', '.join(names)} are not series-parallel: they run one after another in a topological "
            "order (a stage may wait for one it does not need)"
        )
        return ("seq", [("unit", n) for n in names])
    steps: list[_Step] = []
    rest = list(names)
    for cut in cuts:
        before = [n for n in rest if n in up[cut]]
        if before:
            steps.append(_plan(before, deps, notes))
        steps.append(("unit", cut))
        rest = [n for n in rest if n not in up[cut] and n != cut]
    if rest:
        steps.append(_plan(rest, deps, notes))
    return ("seq", steps)


# ---- states --------------------------------------------------------------------------------------------


def _state_name(text: str, limit: int = 80) -> str:
    """ASL state names have 80 characters at most."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _link(exits: Sequence[dict[str, Any]], name: str) -> None:
    """Point the states that end a part at ``name``: a Choice by its Default, any other by Next."""
    for state in exits:
        state["Default" if state["Type"] == "Choice" else "Next"] = name


def _seconds(value: float) -> int:
    """ASL takes whole seconds (at least 1): round up, so a wait or a timeout is never shorter than fave's."""
    return max(1, math.ceil(value))


def retriers(policy: RetryPolicy) -> list[dict[str, Any]]:
    """fave's ``retry`` as ASL Retriers: the non-retryable types first (MaxAttempts 0), then every error."""
    out: list[dict[str, Any]] = []
    if policy.non_retryable:
        out.append({"ErrorEquals": list(policy.non_retryable), "MaxAttempts": 0})
    if policy.max_attempts == 0:
        return out
    every: dict[str, Any] = {
        "ErrorEquals": ["States.ALL"],
        "IntervalSeconds": _seconds(policy.interval_s),
        "MaxAttempts": policy.max_attempts,
        "BackoffRate": policy.backoff_rate,
        "JitterStrategy": "FULL" if policy.jitter == "full" else "NONE",
    }
    if policy.max_delay_s is not None:
        every["MaxDelaySeconds"] = _seconds(policy.max_delay_s)
    out.append(every)
    return out


@dataclass
class _Builder:
    p: Pipeline
    options: AslOptions
    unit_of: Mapping[str, str]
    units: Mapping[str, _Unit]
    notes: list[str]
    substitutions: dict[str, str] = field(default_factory=dict)
    parallels: int = 0
    s3: bool = False
    """Whether a DISTRIBUTED Map keeps its items (and results) on S3: the store's bucket and prefix are needed."""
    tag: str = ""
    """Appended to the names of the states being made (the DISTRIBUTED copy of a Map)."""
    result_writers: int = 0
    """DISTRIBUTED Maps given a ResultWriter so far."""

    # -- where things are in the state document --

    def outer_path(self, stage: str) -> str:
        """Where ``stage``'s output is, outside a Map: a Task's result keeps the invoke's Payload under
        ``output``; a Map's result is the list itself (a group's: one list per stage)."""
        unit = self.units[self.unit_of[stage]]
        if not unit.per_item:
            return _key(_key("$.results", stage), "output")
        if len(unit.stages) > 1:
            return _key(_key("$.results", unit.name), stage)
        return _key("$.results", stage)

    def function_ref(self, function: str) -> dict[str, str]:
        if self.options.arns == "substitutions":
            name = function_arn_parameter(function)
            self.substitutions[name] = function
            return {"FunctionName": "${" + name + "}"}
        return {"FunctionName.$": _key("$.functions", function)}

    def caught(self, states: dict[str, Any], what: str, *, cause: str | None = None) -> list[dict[str, Any]]:
        """A Catch of every error to a Fail state naming ``what``, which keeps the error's name and says
        which stage it came from in the cause (``cause``; None: the cause as it is, already saying so)."""
        name = _state_name(f"{what} failed")
        path = f"States.Format('{cause} failed: {{}}', $.error.Cause)" if cause else "$.error.Cause"
        states[name] = {"Type": "Fail", "Comment": f"{what} failed", "ErrorPath": "$.error.Error", "CausePath": path}
        return [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": name}]

    def terminal_check(self, s: Stage, states: dict[str, Any], output: str) -> dict[str, Any]:
        """A Choice after a stage's Task: a terminal error result (``{"$fave_error": ...}``, docs/stages.md) is
        a successful invoke for Step Functions; fave fails the task at once, without retrying, and so does
        this."""
        error = _key(output, "$fave_error")
        fail = f"{s.name}{self.tag}: terminal error"
        states[fail] = {
            "Type": "Fail",
            "Comment": "the stage returned a terminal error result",
            "ErrorPath": f"{error}.errorType",
            "CausePath": f"States.Format('stage {s.name} failed: {{}}', {error}.errorMessage)",
        }
        choice = {"Type": "Choice", "Choices": [{"Variable": error, "IsPresent": True, "Next": fail}]}
        states[f"{s.name}{self.tag}: terminal check"] = choice
        return choice

    # -- one stage --

    def task(self, s: Stage, states: dict[str, Any], paths: Mapping[str, str], per_item: bool) -> dict[str, Any]:
        needs: dict[str, Any] = {}
        for need in s.needs:
            if s.for_each is not None and need == s.for_each.source:
                continue  # a per-item task gets its element, not the list it came from (fave.core.engine)
            needs[f"{need}.$"] = paths[need]
        inp: dict[str, Any] = {"request.$": "$.request", "needs": needs, "config.$": _key("$.configs", s.name)}
        if per_item:
            inp["item.$"] = "$.item"
            inp["index.$"] = "$.index"
        task: dict[str, Any] = {"request_id.$": "$.request_id", "stage": s.name}
        task["item.$" if per_item else "item"] = "$.index" if per_item else None
        task["attempt.$"] = "States.MathAdd($$.State.RetryCount, 1)"
        state: dict[str, Any] = {
            "Type": "Task",
            "Comment": f"stage '{s.name}' ({s.mode} in fave): function {s.function}",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                **self.function_ref(s.function),
                "Payload": {"fave": 1, "task": task, "mode": "sync", "store.$": "$.store", "input": inp},
            },
            "ResultSelector": {"output.$": "$.Payload"},
            "ResultPath": _key("$.results", s.name),
            "TimeoutSeconds": _seconds(s.timeout_s),
        }
        retry = retriers(s.retry)
        if retry:
            state["Retry"] = retry
        state["Catch"] = self.caught(states, s.name + self.tag, cause=f"stage {s.name}")
        states[s.name + self.tag] = state
        check = self.terminal_check(s, states, paths[s.name])
        state["Next"] = f"{s.name}{self.tag}: terminal check"
        return check

    def single(self, s: Stage, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        paths = {n: self.outer_path(n) for n in self.p.stages}
        return s.name, [self.task(s, states, paths, per_item=False)]

    # -- a per-item group --

    def fan_out(self, unit: _Unit, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """The Map(s) of a unit, then (a chained group) the states making one list per stage of its results."""
        start, exits, done = self.maps(unit, states)
        if len(unit.stages) == 1 or not exits:
            return start, exits + done
        first, ends = self.collect(unit, states)
        _link(exits, first)
        return start, ends + done

    def collect(self, unit: _Unit, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """A chained group's Map gives a list of ``{stage: {"output": ...}}``, one per item; downstream stages
        want one list per stage. ``$[*].stage.output`` is that list, but an interpreter may unwrap a single
        match to its value (moto's does): so the length picks ``[]``, ``States.Array(...[0]...)`` or the
        wildcard, which agree on every engine."""
        raw = _key("$.raw", unit.name)
        target = _key("$.results", unit.name)
        count, choose = _state_name(f"{unit.name}: count results"), _state_name(f"{unit.name}: one list per stage")
        none, one, many = (_state_name(f"{unit.name}: {k}") for k in ("no item", "one item", "items"))
        states[count] = {
            "Type": "Pass",
            "Parameters": {"n.$": f"States.ArrayLength({raw})"},
            "ResultPath": "$.count",
            "Next": choose,
        }
        states[choose] = {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.count.n", "NumericEquals": 0, "Next": none},
                {"Variable": "$.count.n", "NumericEquals": 1, "Next": one},
            ],
            "Default": many,
        }
        stages = unit.stages
        states[none] = {"Type": "Pass", "Result": {n: [] for n in stages}, "ResultPath": target}
        states[one] = {
            "Type": "Pass",
            "Parameters": {f"{n}.$": f"States.Array({_key(_key(f'{raw}[0]', n), 'output')})" for n in stages},
            "ResultPath": target,
        }
        states[many] = {
            "Type": "Pass",
            "Parameters": {f"{n}.$": _key(_key(f"{raw}[*]", n), "output") for n in stages},
            "ResultPath": target,
        }
        return count, [states[none], states[one], states[many]]

    def maps(self, unit: _Unit, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        """A Map, INLINE or DISTRIBUTED as the options say; with ``distributed_above``, both, and a Choice on
        the list's length (``States.ArrayLength``) between them. Its first state, the states whose results a
        chained group must still ``collect``, and those that end with the results in place (a DISTRIBUTED Map
        whose outputs went to S3)."""
        above = self.options.distributed_above
        if not self.options.distributed and above is None:
            return *self.map_state(unit, states, distributed=False), []
        if self.options.distributed:
            start, exits = self.map_state(unit, states, distributed=True)
            return (start, [], exits) if self.offloaded(unit) else (start, exits, [])
        inline, exits = self.map_state(unit, states, distributed=False)
        self.tag = " (distributed)"  # state names are unique in the whole machine: the second copy's differ
        try:
            distributed, more = self.map_state(unit, states, distributed=True)
        finally:
            self.tag = ""
        fe = self.p.stages[unit.stages[0]].for_each
        assert fe is not None
        count, choose = _state_name(f"{unit.name}: count items"), _state_name(f"{unit.name}: inline or distributed")
        states[count] = {
            "Type": "Pass",
            "Parameters": {"n.$": f"States.ArrayLength({self.items_path(fe.source, fe.path)})"},
            "ResultPath": "$.count",
            "Next": choose,
        }
        states[choose] = {
            "Type": "Choice",
            "Comment": f"more than {above} items: a DISTRIBUTED Map",
            "Choices": [{"Variable": "$.count.n", "NumericGreaterThan": above, "Next": distributed}],
            "Default": inline,
        }
        return (count, exits, more) if self.offloaded(unit) else (count, exits + more, [])

    def map_state(self, unit: _Unit, states: dict[str, Any], *, distributed: bool) -> tuple[str, list[dict[str, Any]]]:
        first = self.p.stages[unit.stages[0]]
        assert first.for_each is not None
        fe = first.for_each
        outer: dict[str, str] = {}
        for name in unit.stages:
            s = self.p.stages[name]
            for need in s.whole_needs:
                if need != fe.source:
                    outer[need] = self.outer_path(need)
            for need in s.item_needs:
                if need not in unit.stages:  # a per-item need in a Map of its own: this item's entry
                    outer[need] = f"States.ArrayGetItem({self.outer_path(need)}, $$.Map.Item.Index)"
        selector: dict[str, Any] = {
            "item.$": "$$.Map.Item.Value",
            "index.$": "$$.Map.Item.Index",
            "request.$": "$.request",
            "request_id.$": "$.request_id",
            "store.$": "$.store",
            "configs": {f"{n}.$": _key("$.configs", n) for n in unit.stages},
            "outer": {f"{n}.$": path for n, path in outer.items()},
            "results": {},
        }
        if self.options.arns == "input":
            selector["functions.$"] = "$.functions"
        offload = distributed and self.offloaded(unit)
        if offload:
            selector["s3.$"] = "$.s3"
        inner_paths = {n: _key("$.outer", n) for n in outer}
        inner_paths.update({n: _key(_key("$.results", n), "output") for n in unit.stages})
        inner: dict[str, Any] = {}

        def leaf(name: str, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
            return name + self.tag, [self.task(self.p.stages[name], states, inner_paths, per_item=True)]

        # Within an item, the group's stages are a DAG of their own (item_needs): series and parallel again.
        item_deps = {n: set(self.p.stages[n].item_needs) for n in unit.stages}
        plan = _plan(list(unit.stages), item_deps, self.notes)
        start, exits = self.emit(plan, inner, [], leaf)
        single = len(unit.stages) == 1
        done = _state_name(f"{unit.name}{self.tag}: item done")
        if offload:
            # Each output to its own object, by index: the parent passes them on as one list marker (``offload``).
            inner[done] = {"Type": "Pass", "Result": {}, "End": True}
            outputs = {n: inner_paths[n] for n in unit.stages}
            _link(exits, self.keep_outputs(unit, inner, done, outputs, f"{unit.name}{self.tag}: keep"))
        else:
            inner[done] = {
                "Type": "Pass",
                "OutputPath": inner_paths[unit.stages[0]] if single else "$.results",
                "End": True,
            }
            _link(exits, done)
        caps = [self.p.stages[n].max_concurrency for n in unit.stages]
        given = [c for c in caps if c is not None]
        mode = "DISTRIBUTED" if distributed else "INLINE"
        config: dict[str, Any] = {"Mode": mode}
        if mode == "DISTRIBUTED":
            config["ExecutionType"] = "STANDARD"
        label = _state_name(f"each {fe} ({', '.join(unit.stages)})", 72 - len(self.tag)) + self.tag
        items = self.items_path(str(fe.source), fe.path)
        state: dict[str, Any] = {
            "Type": "Map",
            "Comment": f"per item of {fe}: " + ", then ".join(unit.stages),
            "ItemsPath": items,
            "ItemSelector": selector,
            "ItemProcessor": {"ProcessorConfig": config, "StartAt": start, "States": inner},
            "ResultPath": _key("$.results", unit.name),
        }
        if given:
            state["MaxConcurrency"] = min(given)
            if len(set(caps)) > 1 and not self.tag:
                self.notes.append(f"{label}: MaxConcurrency {min(given)} is the smallest of the stages' caps")
        if not single:  # the items' {stage: {"output": ...}}, made into one list per stage by `collect`
            state["ResultPath"] = _key("$.raw", unit.name)
        tolerated = [self.p.stages[n].completion for n in unit.stages if self.p.stages[n].completion.tolerates_any]
        if tolerated and mode == "DISTRIBUTED":
            policy = tolerated[0]
            if policy.percent is not None:
                state["ToleratedFailurePercentage"] = policy.percent
            else:
                state["ToleratedFailureCount"] = policy.count
            if len(tolerated) > 1 and not self.tag:
                self.notes.append(f"{label}: one tolerated_failures for the group (the first stage's)")
        # An item's failure already names its stage (the Fail states inside); a tolerated-failure threshold
        # (States.ExceedToleratedFailureThreshold) names the Map.
        state["Catch"] = self.caught(states, label)
        states[label] = state
        if not distributed:
            return label, [state]
        if tolerated and offload:
            # A failed item's outputs are null, as fave passes them downstream: every Fail state of the item
            # first writes null for each stage of the group (the state keeps the name the Catches point to).
            for name in [n for n, st in inner.items() if st["Type"] == "Fail"]:
                moved = _state_name(f"{name}, after nulls")
                inner[moved] = inner.pop(name)
                head = self.keep_outputs(unit, inner, moved, dict.fromkeys(unit.stages), f"{name}: null")
                inner[name] = inner.pop(head)
        return self.offload(unit, states, label, state, items=items, offload=offload)

    # -- a DISTRIBUTED Map's items and results on S3 --

    def offloaded(self, unit: _Unit) -> bool:
        """Whether a DISTRIBUTED Map of ``unit`` leaves its outputs on S3 (downstream stages get a ``$ref``
        marker, which the stage SDK resolves): not when the machine itself reads the list (another Map's
        items, a per-item need taken by index; the final stage is never per-item)."""
        inside = set(unit.stages)
        wanted: set[str] = set()
        for s in self.p.stages.values():
            if s.for_each is not None:
                wanted.add(str(s.for_each.source))
            wanted.update(n for n in s.item_needs if self.unit_of[n] != self.unit_of[s.name])
        return not inside & wanted

    def s3_key(self, unit: _Unit, tail: str, *args: str, absolute: bool = True) -> str:
        """``States.Format`` of a key under the request's export folder for ``unit``:
        ``{prefix}requests/{request_id}/export/{unit}/{tail}`` (``tail`` holds ``{}`` for ``args``);
        without the store's prefix (``absolute=False``) for a ``$ref`` marker, which names a key in the store."""
        text = f"requests/{{}}/export/{unit.name}/{tail}"
        head = ["$.s3.prefix"] if absolute else []
        return f"States.Format('{'{}' if absolute else ''}{text}', {', '.join([*head, '$.request_id', *args])})"

    def put(self, key: str, body: str | None, then: str, comment: str) -> dict[str, Any]:
        """A Task writing ``body`` (a path or an intrinsic giving a JSON value; None: JSON null) at ``key``."""
        return {
            "Type": "Task",
            "Comment": comment,
            "Resource": "arn:aws:states:::aws-sdk:s3:putObject",
            "Parameters": {
                "Bucket.$": "$.s3.bucket",
                "Key.$": key,
                **({"Body": "null"} if body is None else {"Body.$": f"States.JsonToString({body})"}),
            },
            "ResultPath": None,
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2}],
            "Next": then,
        }

    def keep_outputs(
        self, unit: _Unit, inner: dict[str, Any], then: str, outputs: Mapping[str, str | None], label: str
    ) -> str:
        """In a DISTRIBUTED Map's item: a Task per stage writing its output (None: null) to
        ``.../export/{unit}/{stage}/{index}.json``, chained to ``then``; the first one's name."""
        nxt = then
        for stage in reversed(unit.stages):
            name = _state_name(f"{label} {stage}")
            key = self.s3_key(unit, f"{stage}/{{}}.json", "$.index")
            inner[name] = self.put(key, outputs[stage], nxt, f"item's {stage} output to the store")
            nxt = name
        return nxt

    def offload(
        self, unit: _Unit, states: dict[str, Any], label: str, state: dict[str, Any], *, items: str, offload: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        """A DISTRIBUTED Map reads its items from S3 (a Task writes them first: ``ItemReader``); when
        ``offload``, its items wrote their outputs there, and the results hold, for each stage, one list marker
        ``{"$ref": ".../{stage}/[0:N].json"}`` to them (fave_shared.refs): O(1) in the state whatever N."""
        self.s3 = True
        del state["ItemsPath"]
        state["ItemReader"] = {
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSON"},
            "Parameters": {"Bucket.$": "$.s3.bucket", "Key.$": self.s3_key(unit, "items.json")},
        }
        head = _state_name(f"{unit.name}{self.tag}: items to the store")
        states[head] = self.put(self.s3_key(unit, "items.json"), items, label, "the Map's items, for its ItemReader")
        if not offload:
            return head, [state]
        # Each item writes its own outputs (keep_outputs) and returns {}: the Map's result is dropped here.
        state["ResultPath"] = None
        writer = self.result_writer(unit)
        if writer is not None:
            state["ResultWriter"] = writer
            self.result_writers += 1
        done = _state_name(f"{unit.name}{self.tag}: outputs by reference")
        state["Next"] = done
        count = f"States.ArrayLength({items})"
        refs = {n: {"$ref.$": self.s3_key(unit, f"{n}/[0:{{}}].json", count, absolute=False)} for n in unit.stages}
        states[done] = {
            "Type": "Pass",
            "Comment": "downstream stages get each stage's outputs as one list marker, {'$ref': '.../[0:N].json'}"
            " (the stage SDK resolves it to the list of the items' objects, in order)",
            "Parameters": refs[unit.stages[0]] if len(unit.stages) == 1 else refs,
            "ResultPath": _key("$.results", unit.name),
        }
        return head, [states[done]]

    def result_writer(self, unit: _Unit) -> dict[str, Any] | None:
        """The Map run's manifest and result files (each child's input and output, by status: for inspection
        and redrive) under ``requests/{request_id}/export/{unit}/results/``, when the bucket is known before
        the run: a DefinitionSubstitution (``--sam``). Its Parameters take no path into the state: Step
        Functions reads such paths from the Map's input, moto from its results; the context object
        (``$$.Execution.Name``) is the same on both. The store's bucket and prefix from the execution input
        (no ``--sam``) are only known at run time: no ResultWriter then (the table says so)."""
        if self.options.results is not None:
            bucket, prefix = self.options.results
        elif self.options.arns == "substitutions":
            self.substitutions[RESULTS_BUCKET] = RESULTS_BUCKET
            bucket, prefix = "${" + RESULTS_BUCKET + "}", ""
        else:
            return None
        return {
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {
                "Bucket": bucket,
                "Prefix.$": f"States.Format('{prefix}requests/{{}}/export/{unit.name}/results', $$.Execution.Name)",
            },
        }

    def items_path(self, source: str, path: Sequence[str]) -> str:
        out = self.outer_path(source)
        for part in path:
            out = _key(out, part)
        return out

    # -- series and parallel --

    def unit(self, name: str, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        unit = self.units[name]
        return self.fan_out(unit, states) if unit.per_item else self.single(self.p.stages[unit.stages[0]], states)

    def emit(
        self, step: _Step, states: dict[str, Any], done: list[str], leaf: _Leaf
    ) -> tuple[str, list[dict[str, Any]]]:
        """Add ``step``'s states (a leaf's by ``leaf``); return its first state's name and the states that still
        need a Next. ``done``: the result keys written so far (grows)."""
        kind, value = step
        if kind == "unit":
            done.append(value)
            return leaf(value, states)
        if kind == "seq":
            start = ""
            exits: list[dict[str, Any]] = []
            for sub in value:
                first, ends = self.emit(sub, states, done, leaf)
                _link(exits, first)
                start = start or first
                exits = ends
            return start, exits
        before = list(done)
        branches = []
        selector: dict[str, str] = {}
        self.parallels += 1
        name = f"parallel {self.parallels}"
        for index, sub in enumerate(value):
            inner: dict[str, Any] = {}
            mine = list(before)  # a branch gets the whole state: what it passes on includes these
            first, ends = self.emit(sub, inner, mine, leaf)
            end = f"{name} branch {index + 1} done"
            inner[end] = {"Type": "Pass", "End": True}
            _link(ends, end)
            branches.append({"StartAt": first, "States": inner})
            for key in mine[len(before) :]:
                selector[f"{key}.$"] = _key(f"$[{index}].results", key)
                done.append(key)
        for key in before:
            selector[f"{key}.$"] = _key("$[0].results", key)
        state = {
            "Type": "Parallel",
            "Comment": "stages whose needs are met together",
            "Branches": branches,
            "ResultSelector": selector,
            "ResultPath": "$.results",
        }
        states[name] = state
        return name, [state]


def _profiles(p: Pipeline, states: dict[str, Any], first: str) -> str:
    """A Choice on ``request.profile`` and one Pass per profile setting ``configs``: each stage's config merged
    with the profile's overrides, as fave does (an absent profile is the default one)."""
    choices: list[dict[str, Any]] = []
    for profile in p.profiles:
        name = f"profile {profile}"
        states[name] = {
            "Type": "Pass",
            "Result": {stage: p.stage_config(stage, profile) for stage in p.order},
            "ResultPath": "$.configs",
            "Next": first,
        }
        choices.append(
            {
                "And": [
                    {"Variable": "$.request.profile", "IsPresent": True},
                    {"Variable": "$.request.profile", "StringEquals": profile},
                ],
                "Next": name,
            }
        )
    choices.append({"Variable": "$.request.profile", "IsPresent": False, "Next": "profile default"})
    states["unknown profile"] = {
        "Type": "Fail",
        "Error": "UnknownProfile",
        "Cause": f"request.profile must be one of {', '.join(p.profiles)}",
    }
    states["choose profile"] = {"Type": "Choice", "Choices": choices, "Default": "unknown profile"}
    return "choose profile"


RESULTS_BUCKET = "FaveBucket"
"""The DefinitionSubstitution naming the store's bucket (``--sam``), for a DISTRIBUTED Map's ResultWriter."""

STORE_DEPTH = 6
"""The most folders a store's prefix may have for a DISTRIBUTED Map (no intrinsic joins a list back)."""


def _store_parts(states: dict[str, Any], then: str) -> str:
    """States splitting ``store`` (``s3://bucket[/prefix]``) into ``s3.bucket`` and ``s3.prefix`` (``""`` or
    ending in '/') for the S3 Tasks of DISTRIBUTED Maps. ``States.StringSplit`` drops empty parts, so
    ``s3://b/p/q`` gives ``["s3:", "b", "p", "q"]``; the prefix is joined again by a ``States.Format`` per
    depth (a Choice on the number of parts), up to ``STORE_DEPTH`` folders."""
    states["store parts"] = {
        "Type": "Pass",
        "Parameters": {"parts.$": "States.StringSplit($.store, '/')"},
        "ResultPath": "$.s3",
        "Next": "store parts counted",
    }
    states["store parts counted"] = {
        "Type": "Pass",
        "Parameters": {"parts.$": "$.s3.parts", "n.$": "States.ArrayLength($.s3.parts)"},
        "ResultPath": "$.s3",
        "Next": "store bucket and prefix",
    }
    states["store not on S3"] = {
        "Type": "Fail",
        "Error": "StoreNotOnS3",
        "Cause": f"a DISTRIBUTED Map keeps its items and results in the store: it must be s3://bucket[/prefix] "
        f"with at most {STORE_DEPTH} folders in the prefix",
    }
    choices: list[dict[str, Any]] = []
    bucket = "States.ArrayGetItem($.s3.parts, 1)"
    for depth in range(STORE_DEPTH + 1):
        name = f"store prefix of {depth} folders"
        parts = [f"States.ArrayGetItem($.s3.parts, {2 + i})" for i in range(depth)]
        fields: dict[str, Any] = {"bucket.$": bucket}
        if depth:
            fields["prefix.$"] = f"States.Format('{'{}/' * depth}', {', '.join(parts)})"
        else:
            fields["prefix"] = ""
        states[name] = {"Type": "Pass", "Parameters": fields, "ResultPath": "$.s3", "Next": then}
        choices.append(
            {
                "And": [
                    {"Variable": "$.s3.parts[0]", "StringEquals": "s3:"},
                    {"Variable": "$.s3.n", "NumericEquals": 2 + depth},
                ],
                "Next": name,
            }
        )
    states["store bucket and prefix"] = {"Type": "Choice", "Choices": choices, "Default": "store not on S3"}
    return "store parts"


def export_asl(p: Pipeline, options: AslOptions = AslOptions()) -> AslExport:
    """The state machine for ``p`` and the table of what it maps."""
    notes: list[str] = []
    units, unit_of, deps = _planned_units(p, notes)
    plan = _plan([u.name for u in units], deps, notes)
    builder = _Builder(p, options, unit_of, {u.name: u for u in units}, notes)
    states: dict[str, Any] = {}
    body_start, exits = builder.emit(plan, states, [], builder.unit)
    done = "final output"
    # A Pass, not a Succeed with OutputPath: validators disagree on whether a Succeed state takes one.
    states[done] = {"Type": "Pass", "OutputPath": builder.outer_path(p.final), "End": True}
    _link(exits, done)
    prepare: dict[str, Any] = {
        "request.$": "$.request",
        "request_id.$": "$$.Execution.Name",
        "results": {},
        "raw": {},  # a chained group's Map results, before `collect` makes them one list per stage
    }
    if options.arns == "input":
        prepare["store.$"] = "$.store"
        prepare["functions.$"] = "$.functions"
    else:
        prepare["store"] = "${FaveStore}"
        builder.substitutions["FaveStore"] = "FaveStore"
    profiles = _profiles(p, states, body_start)
    states["start"] = {
        "Type": "Pass",
        "Parameters": prepare,
        "Next": _store_parts(states, profiles) if builder.s3 else profiles,
    }
    definition: dict[str, Any] = {
        "Comment": f"fave pipeline '{p.name}' ({p.digest[:12]}), exported by fave export --format asl",
        "StartAt": "start",
        "States": states,
    }
    if p.operations.budget.max_wall_s is not None:  # the nearest thing to a wall-clock budget
        definition["TimeoutSeconds"] = _seconds(p.operations.budget.max_wall_s)
    rows = asl_rows(p, options, notes, result_writers=builder.result_writers)
    return AslExport(definition, tuple(rows), tuple(notes), dict(builder.substitutions))


def asl_rows(p: Pipeline, options: AslOptions, notes: Sequence[str], *, result_writers: int = 0) -> list[Row]:
    """The mapping table; ``result_writers``: how many DISTRIBUTED Maps got a ResultWriter (none when every
    DISTRIBUTED list is read by the machine itself, which keeps it in the state)."""
    from fave.export.mapping import Row, Wording, common_rows

    stages = list(p.stages.values())
    fanned = [s for s in stages if s.fanned_out]
    groups = [s for s in fanned if s.item_needs]
    whole_intervals = all(s.retry.interval_s == math.ceil(s.retry.interval_s) >= 1 for s in stages)
    whole_timeouts = all(s.timeout_s == math.ceil(s.timeout_s) for s in stages)
    tolerated = any(s.completion.tolerates_any for s in stages)
    ops = p.operations
    serial = [n for n in notes if "series-parallel" in n]
    capped = [n for n in notes if "MaxConcurrency" in n]
    split = [n for n in notes if "Map of its own" in n]
    writes_results = options.results is not None or options.arns == "substitutions"
    return [
        Row(
            "sync stage",
            "exact",
            "Task arn:aws:states:::lambda:invoke with fave's stage event as Payload; output = ResultSelector $.Payload",
            any(s.mode == "sync" for s in stages),
        ),
        Row(
            "async stage",
            "approximate",
            "invoked synchronously by the Task (Step Functions waits; event mode "
            "'sync', so the SDK's sync size limits apply), not through Lambda destinations",
            any(s.mode == "async" for s in stages),
        ),
        Row(
            "needs (series / parallel)",
            "approximate" if serial else "exact",
            "Parallel branches for stages whose needs are met together" + "".join("; " + n for n in serial),
            True,
        ),
        Row(
            "for_each fan-out", "exact", "Map over the list (ItemsPath), item and index from $$.Map.Item", bool(fanned)
        ),
        Row(
            "per-item chaining",
            "exact",
            "one Map whose ItemProcessor runs the chained stages item by item" + "".join("; " + n for n in split),
            bool(groups),
        ),
        Row(
            "Map mode",
            "exact",
            "DISTRIBUTED (child executions; items read from the store by an ItemReader, each item's outputs "
            "written to the store and passed on as one list marker per stage: needs an s3:// store, "
            "docs/export.md)"
            if options.distributed
            else f"INLINE up to {options.distributed_above} items, DISTRIBUTED above (a Choice on the list's "
            "States.ArrayLength)"
            if options.distributed_above is not None
            else "INLINE (40 concurrent iterations at most; --distributed for more)",
            bool(fanned),
        ),
        Row(
            "Map run results (ResultWriter)",
            "exact" if writes_results else "none",
            "the DISTRIBUTED Map's ResultWriter puts the run's manifest and result files "
            + ("in the store's bucket" if options.results is None else f"in s3://{options.results[0]}")
            + ", under requests/{id}/export/{group}/results/ (inspection, redrive); downstream reads the items' "
            "own objects"
            if writes_results
            else "no ResultWriter: the store's bucket comes with the execution input, known only at run time, and "
            "a ResultWriter's bucket cannot be read from the state alike on Step Functions and moto; "
            "--result-writer s3://bucket[/prefix] or --sam (the stack's bucket) names it and adds one",
            result_writers > 0
            if writes_results
            else bool(fanned) and (options.distributed or options.distributed_above is not None),
        ),
        Row(
            "retry",
            "exact" if whole_intervals else "approximate",
            "Retry: non_retryable first with MaxAttempts 0, then States.ALL with IntervalSeconds, MaxAttempts, "
            "BackoffRate, MaxDelaySeconds, JitterStrategy"
            + ("" if whole_intervals else "; intervals rounded up to whole seconds (>= 1)"),
            True,
        ),
        Row(
            "terminal error result",
            "exact",
            "a Choice after each Task: a returned {'$fave_error': ...} goes "
            "to a Fail state with its errorType, without a retry",
            True,
        ),
        Row(
            "timeout",
            "exact" if whole_timeouts else "approximate",
            "TimeoutSeconds per attempt" + ("" if whole_timeouts else ", rounded up to whole seconds"),
            True,
        ),
        Row(
            "max_concurrency",
            "approximate" if capped else "exact",
            "Map MaxConcurrency" + "".join("; " + n for n in capped),
            any(s.max_concurrency for s in stages),
        ),
        Row(
            "tolerated_failures",
            "approximate" if options.distributed or options.distributed_above is not None else "none",
            "ToleratedFailureCount/Percentage on the DISTRIBUTED Map; a failed item writes null for its outputs, "
            "as fave passes them (a chained group: null for every stage of the item, where fave keeps the "
            "outputs of the stages before the failed one)"
            + ("; the INLINE one (a short list) tolerates none" if options.distributed_above is not None else "")
            if options.distributed or options.distributed_above is not None
            else "INLINE Map has no tolerated failures: any failed item fails the stage (use --distributed)",
            tolerated,
        ),
        Row(
            "per-item skip downstream",
            "none",
            "a failed item fails its whole iteration: no null for it downstream",
            bool(groups) and tolerated,
        ),
        Row(
            "failure",
            "exact",
            "Catch States.ALL -> a Fail state keeping the error's name, its cause "
            "naming the stage ('stage NAME failed: ...')",
            True,
        ),
        Row("profiles", "exact", "Choice on request.profile -> Pass setting each stage's merged config", True),
        Row("final stage", "exact", "the execution's output is the final stage's output (final.json)", True),
        Row("task.attempt", "exact", "States.MathAdd($$.State.RetryCount, 1)", True),
        *common_rows(p, Wording(request="; nothing checks it")),
        Row(
            "budget max_wall",
            "approximate",
            "the machine's TimeoutSeconds: the execution fails States.Timeout (fave: FAILED budget_exceeded)",
            ops.budget.max_wall_s is not None,
        ),
        Row(
            "budget max_invocations, max_cost_usd",
            "none",
            "nothing counts invocations or cost in the machine",
            ops.budget.max_invocations is not None or ops.budget.max_cost_usd is not None,
        ),
        Row("function caps (functions:)", "none", "use the functions' reserved concurrency", bool(ops.function_caps)),
        Row(
            "large payloads (markers)",
            "approximate",
            "the state holds every output: 256 KiB per state (fave keeps large outputs in the store); a "
            "DISTRIBUTED Map's outputs stay in the store, the state holds one list marker per stage "
            "({'$ref': '.../[0:N].json'}) whatever the number of items",
            True,
        ),
    ]
