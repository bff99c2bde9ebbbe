"""A pipeline as an Amazon States Language state machine (``fave export --format asl``). Pure: Pipeline -> dict.

The machine calls the SAME stage functions with the same event as fave (docs/stages.md), each through
``arn:aws:states:::lambda:invoke``, so it runs on Step Functions without a line of stage code changed.

Execution input: ``{"request": {...the request as fave passes it, with its profile}, "store": "s3://bucket",
"functions": {"WordsFunction": "arn:aws:lambda:...", ...}}``. With ``arns="substitutions"`` (``--sam``) the
function ARNs and the store are ``${LogicalIdArn}`` / ``${FaveStore}`` DefinitionSubstitutions instead, and the
input is just ``{"request": {...}}``. The execution's name is the request id the stages see (``task.request_id``);
its output is the final stage's output (fave's final.json).

The state document while it runs: ``request``, ``store``, ``functions``, ``request_id``, ``configs`` (each stage's
config for the request's profile, chosen by a Choice state at the start) and ``results`` (each stage's output by
name; the stages of a per-item group under one key holding their lists).

Shape: single-task stages are Task states; per-item stages over one list that join item by item form one Map
whose ItemProcessor runs them in order for each item; the graph of those units is split into series and
parallel parts (Parallel branches); a part that is not series-parallel runs in a topological order (``notes``
says so).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fave.core.dag import Pipeline, RetryPolicy, Stage
from fave.export.mapping import Row

__all__ = ["AslExport", "AslOptions", "export_asl", "function_arn_parameter"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STAGE_FAILED = "StageFailed"
"""The Error of every Fail state the export adds (its Cause names the stage)."""


@dataclass(frozen=True, slots=True)
class AslOptions:
    arns: Literal["input", "substitutions"] = "input"
    """Where the function ARNs (and the store) come from: the execution input, or DefinitionSubstitutions."""
    distributed: bool = False
    """Every fan-out as a DISTRIBUTED Map (child executions, tolerated failures) instead of INLINE."""


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


def _units(p: Pipeline) -> tuple[list[_Unit], dict[str, str]]:
    """The units in topological order and the unit of each stage. Per-item stages joined item by item (over
    the same list) are one group: union-find over ``item_needs``."""
    parent = {n: n for n in p.order}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for name, s in p.stages.items():
        for dep in s.item_needs:
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


# ---- series-parallel plan ----------------------------------------------------------------------------

_Step = tuple[str, Any]  # ("unit", name) | ("seq", [steps]) | ("par", [steps])


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

    def caught(self, states: dict[str, Any], what: str, *, wrap: bool = True) -> list[dict[str, Any]]:
        """A Catch of every error to a Fail state naming ``what``, which keeps the error's name and says
        which stage it came from in the cause (``wrap=False``: the cause as it is, already saying so)."""
        name = f"{what} failed"
        cause = f"States.Format('{what} failed: {{}}', $.error.Cause)" if wrap else "$.error.Cause"
        states[name] = {"Type": "Fail", "Comment": f"{what} failed", "ErrorPath": "$.error.Error", "CausePath": cause}
        return [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": name}]

    def terminal_check(self, s: Stage, states: dict[str, Any], output: str) -> dict[str, Any]:
        """A Choice after a stage's Task: a terminal error result (``{"$fave_error": ...}``, docs/stages.md) is
        a successful invoke for Step Functions; fave fails the task at once, without retrying, and so does
        this."""
        error = _key(output, "$fave_error")
        fail = f"stage {s.name} failed (terminal)"
        states[fail] = {
            "Type": "Fail",
            "Comment": "the stage returned a terminal error result",
            "ErrorPath": f"{error}.errorType",
            "CausePath": f"States.Format('stage {s.name} failed: {{}}', {error}.errorMessage)",
        }
        choice = {"Type": "Choice", "Choices": [{"Variable": error, "IsPresent": True, "Next": fail}]}
        states[f"{s.name} terminal?"] = choice
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
        state["Catch"] = self.caught(states, f"stage {s.name}")
        states[s.name] = state
        check = self.terminal_check(s, states, paths[s.name])
        state["Next"] = f"{s.name} terminal?"
        return check

    def single(self, s: Stage, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        paths = {n: self.outer_path(n) for n in self.p.stages}
        return s.name, [self.task(s, states, paths, per_item=False)]

    # -- a per-item group --

    def map_state(self, unit: _Unit, states: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        first = self.p.stages[unit.stages[0]]
        assert first.for_each is not None
        fe = first.for_each
        outer: dict[str, str] = {}
        for name in unit.stages:
            s = self.p.stages[name]
            for need in s.whole_needs:
                if need != fe.source:
                    outer[need] = self.outer_path(need)
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
        inner_paths = {n: _key("$.outer", n) for n in outer}
        inner_paths.update({n: _key(_key("$.results", n), "output") for n in unit.stages})
        inner: dict[str, Any] = {}
        exits: list[dict[str, Any]] = []
        for name in unit.stages:
            check = self.task(self.p.stages[name], inner, inner_paths, per_item=True)
            _link(exits, name)
            exits = [check]
        single = len(unit.stages) == 1
        done = f"{unit.name} item done"
        inner[done] = {"Type": "Pass", "OutputPath": inner_paths[unit.stages[0]] if single else "$.results", "End": True}
        _link(exits, done)
        caps = [self.p.stages[n].max_concurrency for n in unit.stages]
        given = [c for c in caps if c is not None]
        mode = "DISTRIBUTED" if self.options.distributed else "INLINE"
        config: dict[str, Any] = {"Mode": mode}
        if mode == "DISTRIBUTED":
            config["ExecutionType"] = "STANDARD"
        label = f"each {fe} ({', '.join(unit.stages)})"
        state: dict[str, Any] = {
            "Type": "Map",
            "Comment": f"per item of {fe}: " + ", then ".join(unit.stages),
            "ItemsPath": self.items_path(str(fe.source), fe.path),
            "ItemSelector": selector,
            "ItemProcessor": {"ProcessorConfig": config, "StartAt": unit.stages[0], "States": inner},
            "ResultPath": _key("$.results", unit.name),
        }
        if given:
            state["MaxConcurrency"] = min(given)
            if len(set(caps)) > 1:
                self.notes.append(f"{label}: MaxConcurrency {min(given)} is the smallest of the stages' caps")
        if not single:
            state["ResultSelector"] = {f"{n}.$": _key(_key("$[*]", n), "output") for n in unit.stages}
        tolerated = [self.p.stages[n].completion for n in unit.stages if self.p.stages[n].completion.tolerates_any]
        if tolerated and mode == "DISTRIBUTED":
            policy = tolerated[0]
            if policy.percent is not None:
                state["ToleratedFailurePercentage"] = policy.percent
            else:
                state["ToleratedFailureCount"] = policy.count
            if len(tolerated) > 1:
                self.notes.append(f"{label}: one tolerated_failures for the group (the first stage's)")
        # An item's failure already names its stage (the Fail states inside); a tolerated-failure threshold
        # (States.ExceedToleratedFailureThreshold) names the Map.
        state["Catch"] = self.caught(states, label, wrap=False)
        states[label] = state
        return label, [state]

    def items_path(self, source: str, path: Sequence[str]) -> str:
        out = self.outer_path(source)
        for part in path:
            out = _key(out, part)
        return out

    # -- series and parallel --

    def emit(self, step: _Step, states: dict[str, Any], done: list[str]) -> tuple[str, list[dict[str, Any]]]:
        """Add ``step``'s states; return its first state's name and the states that still need a Next.
        ``done``: the result keys written so far (grows)."""
        kind, value = step
        if kind == "unit":
            unit = self.units[value]
            start, exits = (
                self.map_state(unit, states) if unit.per_item else self.single(self.p.stages[unit.stages[0]], states)
            )
            done.append(unit.name)
            return start, exits
        if kind == "seq":
            start = ""
            exits: list[dict[str, Any]] = []
            for sub in value:
                first, ends = self.emit(sub, states, done)
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
            first, ends = self.emit(sub, inner, mine)
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


def export_asl(p: Pipeline, options: AslOptions = AslOptions()) -> AslExport:
    """The state machine for ``p`` and the table of what it maps."""
    notes: list[str] = []
    units, unit_of = _units(p)
    deps = _unit_deps(p, units, unit_of)
    plan = _plan([u.name for u in units], deps, notes)
    builder = _Builder(p, options, unit_of, {u.name: u for u in units}, notes)
    states: dict[str, Any] = {}
    body_start, exits = builder.emit(plan, states, [])
    done = "final output"
    states[done] = {"Type": "Succeed", "OutputPath": builder.outer_path(p.final)}
    _link(exits, done)
    prepare: dict[str, Any] = {"request.$": "$.request", "request_id.$": "$$.Execution.Name", "results": {}}
    if options.arns == "input":
        prepare["store.$"] = "$.store"
        prepare["functions.$"] = "$.functions"
    else:
        prepare["store"] = "${FaveStore}"
        builder.substitutions["FaveStore"] = "FaveStore"
    states["start"] = {"Type": "Pass", "Parameters": prepare, "Next": _profiles(p, states, body_start)}
    definition = {
        "Comment": f"fave pipeline '{p.name}' ({p.digest[:12]}), exported by fave export --format asl",
        "StartAt": "start",
        "States": states,
    }
    return AslExport(definition, tuple(asl_rows(p, options, notes)), tuple(notes), dict(builder.substitutions))


def asl_rows(p: Pipeline, options: AslOptions, notes: Sequence[str]) -> list[Row]:
    from fave.export.mapping import Row

    stages = list(p.stages.values())
    fanned = [s for s in stages if s.fanned_out]
    groups = [s for s in fanned if s.item_needs]
    whole_intervals = all(s.retry.interval_s == math.ceil(s.retry.interval_s) >= 1 for s in stages)
    whole_timeouts = all(s.timeout_s == math.ceil(s.timeout_s) for s in stages)
    tolerated = any(s.completion.tolerates_any for s in stages)
    ops = p.operations
    serial = [n for n in notes if "series-parallel" in n]
    return [
        Row("sync stage", "exact", "Task arn:aws:states:::lambda:invoke with fave's stage event as Payload; "
            "output = ResultSelector $.Payload", any(s.mode == "sync" for s in stages)),
        Row("async stage", "approximate", "invoked synchronously by the Task (Step Functions waits; event mode "
            "'sync', so the SDK's sync size limits apply), not through Lambda destinations",
            any(s.mode == "async" for s in stages)),
        Row("needs (series / parallel)", "approximate" if serial else "exact",
            "Parallel branches for stages whose needs are met together" + "".join("; " + n for n in serial), True),
        Row("for_each fan-out", "exact", "Map over the list (ItemsPath), item and index from $$.Map.Item",
            bool(fanned)),
        Row("per-item chaining", "exact", "one Map whose ItemProcessor runs the chained stages item by item",
            bool(groups)),
        Row("Map mode", "exact", "DISTRIBUTED (child executions; items and results travel in the state, no "
            "ItemReader/ResultWriter: the list is an upstream stage's output, and downstream stages need the "
            "outputs in the state, 256 KiB at most)" if options.distributed else "INLINE (40 concurrent "
            "iterations at most; --distributed for more)", bool(fanned)),
        Row("retry", "exact" if whole_intervals else "approximate",
            "Retry: non_retryable first with MaxAttempts 0, then States.ALL with IntervalSeconds, MaxAttempts, "
            "BackoffRate, MaxDelaySeconds, JitterStrategy" + ("" if whole_intervals else
                                                             "; intervals rounded up to whole seconds (>= 1)"),
            True),
        Row("terminal error result", "none", "a returned {'$fave_error': ...} is a successful invoke for Step "
            "Functions: it flows on as output (fave fails the task at once)", True),
        Row("timeout", "exact" if whole_timeouts else "approximate",
            "TimeoutSeconds per attempt" + ("" if whole_timeouts else ", rounded up to whole seconds"), True),
        Row("max_concurrency", "exact", "Map MaxConcurrency (the smallest in a per-item group)",
            any(s.max_concurrency for s in stages)),
        Row("tolerated_failures", "approximate" if options.distributed else "none",
            "ToleratedFailureCount/Percentage on the DISTRIBUTED Map (a failed item is not a null downstream)"
            if options.distributed else "INLINE Map has no tolerated failures: any failed item fails the stage "
            "(use --distributed)", tolerated),
        Row("per-item skip downstream", "none", "a failed item fails its whole iteration: no null for it "
            "downstream", bool(groups) and tolerated),
        Row("failure", "exact", "Catch States.ALL -> a Fail state (Error StageFailed) naming the stage", True),
        Row("profiles", "exact", "Choice on request.profile -> Pass setting each stage's merged config", True),
        Row("final stage", "exact", "the execution's output is the final stage's output (final.json)", True),
        Row("task.attempt", "exact", "States.MathAdd($$.State.RetryCount, 1)", True),
        Row("request input schema / defaults", "none", "give the request as fave would pass it (defaults "
            "applied); nothing checks it", p.input_schema is not None),
        Row("result cache", "none", "every stage runs", any(s.cache for s in stages)),
        Row("for_each key", "none", "items are named by position only", any(s.for_each and s.for_each.key
                                                                             for s in stages)),
        Row("budget", "none", "no wall/invocation/cost stop (the execution's own TimeoutSeconds is the nearest)",
            ops.budget != type(ops.budget)()),
        Row("function caps (functions:)", "none", "use the functions' reserved concurrency",
            bool(ops.function_caps)),
        Row("max_requests_in_flight, stale_after, alerts", "none", "fave's queue and worker only", False),
        Row("large payloads (markers)", "approximate", "the state holds every output: 256 KiB per state "
            "(fave keeps large outputs in the store)", True),
    ]
