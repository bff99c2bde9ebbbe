"""What the Python-engine exports (Prefect, Dagster) share. Pure: Pipeline -> a JSON-able spec, plus the text of
the small runtime every exported file carries (the exported file runs in the engine's own environment, where fave
is not installed: it cannot import fave).

The runtime builds fave's stage event (docs/stages.md) exactly as ``fave.export.asl`` does for Step Functions
(``{"fave": 1, "task": {...}, "mode": "sync", "store": ..., "input": {request, needs, config[, item, index]}}``)
and calls the stage function through one seam, ``FAVE_EXPORT_CALL``:

- ``lambda`` (the default): boto3 ``lambda.invoke`` of the function's ARN (the run's ``functions`` parameter, or
  ``FAVE_FUNCTIONS`` = a JSON object logical id -> ARN; without one, the logical id itself is the name);
- ``local``: ``fave invoke FUNCTION --template T`` (fave's local runtime over the pipeline's template.yaml:
  ``FAVE_BIN``, default ``fave``; ``FAVE_TEMPLATE``, default the template the pipeline named at export time).

Per-item stages travel as *carriers* ``{"index": i, "item": element, "out": {stage: output}}``: a chained
group's stages take the carrier of the stage before them and add their output, item by item, with no barrier.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fave.core.dag import Pipeline, RetryPolicy
from fave.export.asl import _planned_units

__all__ = ["RUNTIME", "FlowPlan", "PlanUnit", "identifier", "plan", "retry_delays"]


def identifier(name: str, taken: set[str]) -> str:
    """A Python identifier (and Dagster op name) for ``name``, unique in ``taken`` (which it joins)."""
    out = re.sub(r"\W", "_", name)
    if not out or out[0].isdigit() or keyword.iskeyword(out):
        out = f"s_{out}"
    while out in taken:
        out += "_"
    taken.add(out)
    return out


# Names the exported files use besides the stages' (runtime, glue, engine imports, locals): a stage never takes one.
RESERVED = frozenset(
    [
        "ctx",
        "carrier",
        "context",
        "start",
        "request",
        "store",
        "request_id",
        "functions",
        "results",
        "groups",
        "c",
        "units",
        "sys",
        "StageFailed",
        "new_request_id",
        "items_at",
        "carriers",
        "collect",
        "needs_of",
        "call_stage",
        "retryable",
        "main_args",
        "collect_groups",
        "raise_first_failure",
        "run_in_process",
        "start_run",
        "PIPELINE",
        "FINAL",
        "JOB",
        "flow",
        "task",
        "unmapped",
        "ThreadPoolTaskRunner",
        "op",
        "job",
        "Backoff",
        "DynamicOut",
        "DynamicOutput",
        "Failure",
        "Field",
        "Jitter",
        "Permissive",
        "RetryPolicy",
        "multiprocess_executor",
    ]
)


@dataclass(frozen=True, slots=True)
class PlanUnit:
    name: str  # a single stage's name, or a chained group's key (as in the ASL export)
    ident: str
    stages: tuple[str, ...]  # in an order where each stage's per-item needs come first
    per_item: bool
    deps: tuple[str, ...]  # the units it needs whole (the for_each source's unit included)


@dataclass(frozen=True, slots=True)
class FlowPlan:
    units: tuple[PlanUnit, ...]  # in a topological order
    unit_of: Mapping[str, str]
    stage_ident: Mapping[str, str]
    spec: dict[str, Any]
    notes: tuple[str, ...]


def plan(p: Pipeline, template: str | None = None) -> FlowPlan:
    """The units of ``p`` (grouped as the ASL export groups them) and the spec the runtime reads; ``template``:
    the template.yaml the local caller runs (default: the pipeline's, as it names it)."""
    notes: list[str] = []
    ordered, unit_of, deps = _planned_units(p, notes)
    taken: set[str] = set(RESERVED)
    stage_ident = {name: identifier(name, taken) for name in p.order}
    units = []
    for u in ordered:
        ident = stage_ident[u.name] if u.name in stage_ident else identifier(u.name, taken)
        units.append(PlanUnit(u.name, ident, u.stages, u.per_item, tuple(sorted(deps[u.name]))))
        if u.per_item and _is_diamond(p, u.stages):
            notes.append(
                f"{', '.join(u.stages)}: within an item these run one after another (their per-item needs are not "
                "a chain), still item by item with no barrier"
            )
    # a per-item unit's result is one list per stage (``collect``), even for a single stage
    per_item_unit = {u.name: u.per_item for u in ordered}
    stages: dict[str, Any] = {}
    for name in p.order:
        s = p.stages[name]
        stages[name] = {
            "function": s.function,
            "timeout_s": s.timeout_s,
            "non_retryable": list(s.retry.non_retryable),
            "max_attempts": s.retry.max_attempts,
            "max_concurrency": s.max_concurrency,
            # where each need's value is: (unit, its stage's list in a per-item unit's dict, or None); per-item
            # needs come from the carrier; the for_each source is left out (the task gets its element as `item`)
            "whole": {
                n: [unit_of[n], n if per_item_unit[unit_of[n]] else None]
                for n in s.needs
                if n not in s.item_needs and not (s.for_each is not None and n == s.for_each.source)
            },
            "per_item": list(s.item_needs),
            "for_each": [s.for_each.source, list(s.for_each.path)] if s.for_each is not None else None,
            # tolerated_failures: [count, percent] (fave.core.dag.CompletionPolicy)
            "tolerated": [s.completion.count, s.completion.percent],
        }
    spec = {
        "name": p.name,
        "final": p.final,
        "final_unit": [unit_of[p.final], p.final if per_item_unit[unit_of[p.final]] else None],
        "template": template or str(p.template_path),
        "configs": {profile: {n: p.stage_config(n, profile) for n in p.order} for profile in p.profiles},
        "stages": stages,
    }
    return FlowPlan(tuple(units), dict(unit_of), stage_ident, spec, tuple(notes))


def _is_diamond(p: Pipeline, stages: tuple[str, ...]) -> bool:
    """Whether a group's per-item needs are more than one chain (then its stages run in series per item)."""
    fed = [b for a in stages for b in stages if a in p.stages[b].item_needs]
    return (
        any(len(p.stages[n].item_needs) > 1 for n in stages)
        or len(fed) != len(set(fed))
        or any(sum(1 for b in stages if a in p.stages[b].item_needs) > 1 for a in stages)
    )


def retry_delays(policy: RetryPolicy) -> list[float]:
    """fave's delay before each retry, without jitter: interval * backoff_rate^(n-1), capped by max_delay."""
    plain = RetryPolicy(policy.max_attempts, policy.interval_s, policy.backoff_rate, policy.max_delay_s, "none")
    return [plain.delay(n, 0.0) for n in range(1, 1 + policy.max_attempts)]


RUNTIME = r'''
# ---- fave's stage call (generated by fave export; the same event fave sends, docs/stages.md) ----------------
import json as _json
import os as _os
import secrets as _secrets
import subprocess as _subprocess
import threading as _threading
import time as _time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class StageFailed(Exception):
    """A stage's attempt failed: ``error_type`` is the stage's error type (or Lambda's)."""

    def __init__(self, stage, error_type, message, *, terminal=False):
        super().__init__(f"stage {stage} failed: {error_type}: {message}")
        self.stage, self.error_type, self.terminal = stage, error_type, terminal


def new_request_id():
    """26 characters of Crockford base32, time first (as fave's request ids)."""
    n = (int(_time.time() * 1000) << 80) | _secrets.randbits(80)
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def start(request, store, request_id=None, functions=None):
    """The run's context: what every stage call needs besides its own input."""
    profile = request.get("profile", "default")
    if profile not in PIPELINE["configs"]:
        raise ValueError(f"request.profile must be one of {', '.join(PIPELINE['configs'])}, got {profile!r}")
    if not functions and _os.environ.get("FAVE_FUNCTIONS"):
        functions = _json.loads(_os.environ["FAVE_FUNCTIONS"])
    return {
        "request": request,
        "store": store,
        "request_id": request_id or new_request_id(),
        "configs": PIPELINE["configs"][profile],
        "functions": dict(functions or {}),
    }


def items_at(output, path):
    """The list a fan-out runs over: ``path`` inside the source stage's output."""
    for part in path:
        output = output[part]
    if not isinstance(output, list):
        raise StageFailed("for_each", "FanOutError", f"{'.'.join(path)} is not a list")
    return output


def tolerated(stage, failed, total):
    """fave's tolerated_failures rule (fave.core.dag.CompletionPolicy.decide)."""
    count, percent = PIPELINE["stages"][stage]["tolerated"]
    return failed * 100.0 <= percent * total if percent is not None else failed <= count


def carriers(items):
    return [{"index": i, "item": item, "out": {}} for i, item in enumerate(items)]


def collect(stages, done):
    """A chained group's carriers (one per item, in item order) as one list per stage."""
    done = sorted(done, key=lambda c: c["index"])
    return {s: [c["out"].get(s) for c in done] for s in stages}


def needs_of(stage, units, carrier=None):
    """The stage's ``input.needs``: whole needs from the units' results, per-item ones from the carrier."""
    spec = PIPELINE["stages"][stage]
    needs = {}
    for need, (unit, member) in spec["whole"].items():
        value = units[unit]
        needs[need] = value[member] if member is not None else value
    for need in spec["per_item"]:
        needs[need] = carrier["out"][need]
    return needs


_LIMITS = {}
_LIMITS_LOCK = _threading.Lock()


def _limit(stage):
    """The stage's max_concurrency within this process (one run), as fave caps a stage within a request."""
    cap = PIPELINE["stages"][stage]["max_concurrency"]
    if cap is None:
        return None
    with _LIMITS_LOCK:
        return _LIMITS.setdefault(stage, _threading.BoundedSemaphore(cap))


def call_stage(ctx, stage, units, carrier=None, attempt=1):
    """Invoke ``stage``'s function once with fave's event; its output, or StageFailed."""
    spec = PIPELINE["stages"][stage]
    inp = {"request": ctx["request"], "needs": needs_of(stage, units, carrier), "config": ctx["configs"][stage]}
    if carrier is not None:
        inp["item"], inp["index"] = carrier["item"], carrier["index"]
    event = {
        "fave": 1,
        "task": {
            "request_id": ctx["request_id"],
            "stage": stage,
            "item": carrier["index"] if carrier is not None else None,
            "attempt": attempt,
        },
        "mode": "sync",
        "store": ctx["store"],
        "input": inp,
    }
    limit = _limit(stage)
    if limit is not None:
        limit.acquire()
    try:
        how = _os.environ.get("FAVE_EXPORT_CALL", "lambda")
        if how == "local":
            payload, error = _call_local(spec, event)
        elif how == "lambda":
            payload, error = _call_lambda(ctx, spec, event)
        else:
            raise ValueError(f"FAVE_EXPORT_CALL must be local or lambda, got {how!r}")
    finally:
        if limit is not None:
            limit.release()
    if error:
        payload = payload if isinstance(payload, dict) else {}
        raise StageFailed(stage, payload.get("errorType", error), payload.get("errorMessage", ""))
    if isinstance(payload, dict) and set(payload) == {"$fave_error"} and payload["$fave_error"].get("terminal", True):
        err = payload["$fave_error"]
        raise StageFailed(stage, err.get("errorType", "Error"), err.get("errorMessage", ""), terminal=True)
    if carrier is not None:
        return {**carrier, "out": {**carrier["out"], stage: payload}}
    return payload


def retryable(exc, stage):
    """Whether fave would retry after ``exc``: not a terminal result, not a non_retryable type."""
    if isinstance(exc, StageFailed):
        return not exc.terminal and exc.error_type not in PIPELINE["stages"][stage]["non_retryable"]
    return True


def _call_local(spec, event):
    """fave's local runtime (``fave invoke``): the template's environment, the stage's timeout."""
    fave = _os.environ.get("FAVE_BIN", "fave")
    template = _os.environ.get("FAVE_TEMPLATE", PIPELINE["template"])
    try:
        done = _subprocess.run(
            [fave, "invoke", spec["function"], "--event", "-", "--template", template],
            input=_json.dumps(event), capture_output=True, text=True, timeout=spec["timeout_s"],
        )
    except _subprocess.TimeoutExpired:
        return {"errorType": "States.Timeout", "errorMessage": f"no answer in {spec['timeout_s']}s"}, "Timeout"
    try:
        payload = _json.loads(done.stdout)
    except ValueError:
        payload = {"errorType": "InvokeError", "errorMessage": (done.stderr or done.stdout)[-2000:]}
        return payload, "Unhandled"
    return payload, ("Unhandled" if done.returncode != 0 else None)


def _call_lambda(ctx, spec, event):
    """AWS Lambda ``Invoke`` (RequestResponse), the function by ARN; read timeout = the stage's timeout."""
    import boto3
    from botocore.config import Config

    client = boto3.client("lambda", config=Config(read_timeout=spec["timeout_s"] + 5, retries={"max_attempts": 0}))
    name = ctx["functions"].get(spec["function"], spec["function"])
    answer = client.invoke(FunctionName=name, Payload=_json.dumps(event).encode())
    return _json.loads(answer["Payload"].read() or b"null"), answer.get("FunctionError")


def main_args(argv):
    """``python FILE --input JSON [--store DIR] [--request-id ID] [--functions JSON]``."""
    import argparse

    parser = argparse.ArgumentParser(description=f"fave pipeline {PIPELINE['name']!r}")
    parser.add_argument("--input", required=True, help="the request as fave passes it (JSON, or @FILE)")
    parser.add_argument("--store", default=_os.environ.get("FAVE_STORE", "fave-artifacts"))
    parser.add_argument("--request-id", default=None)
    parser.add_argument("--functions", default=None, help="JSON: function logical id -> Lambda ARN")
    args = parser.parse_args(argv)
    text = args.input
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    return _json.loads(text), args.store, args.request_id, _json.loads(args.functions) if args.functions else None
'''
