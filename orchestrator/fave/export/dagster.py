"""A pipeline as a Dagster job (``fave export --format dagster``). Pure: Pipeline -> the text of a Python file.

Each stage is an ``@op`` calling the SAME stage function with fave's event (``fave.export.pyflow``'s runtime:
Lambda, or fave's local runtime with ``FAVE_EXPORT_CALL=local``). A fan-out is an op with a ``DynamicOut`` (one
carrier per item), ``.map`` over a function calling the group's ops in turn (item by item, no barrier), then
``.collect()`` into one list per stage. Retries: ``RetryPolicy(max_retries, delay, Backoff.EXPONENTIAL or none,
Jitter.FULL)``; a terminal result or a non_retryable type raises ``Failure(allow_retries=False)``. Concurrency:
each op is tagged ``fave/stage: NAME`` and the job's multiprocess executor has a ``tag_concurrency_limits`` entry
per capped stage: a run-level limit, per run as in fave, needing no instance set-up (a ``dagster/concurrency_key``
pool would be across runs and needs the instance's pool limits; fave's ``functions:`` caps are that).

Run it: ``python job.py --input '{"text": "..."}' --store DIR`` (``execute_in_process``; prints the final
stage's output as JSON), or load it in ``dagster dev -f job.py``.
"""

from __future__ import annotations

import pprint

from fave.core.dag import Pipeline, Stage
from fave.export.mapping import Row, Wording, common_rows
from fave.export.prefect import PythonExport
from fave.export.pyflow import RUNTIME, FlowPlan, PlanUnit, identifier, plan

__all__ = ["dagster_rows", "export_dagster"]


def _needed(fp: FlowPlan, u: PlanUnit, p: Pipeline) -> list[str]:
    """The units whose results ``u``'s stages take whole (the for_each source's only for the items op)."""
    out: set[str] = set()
    for name in u.stages:
        s = p.stages[name]
        for need in s.needs:
            if need in s.item_needs or (s.for_each is not None and need == s.for_each.source):
                continue
            out.add(fp.unit_of[need])
    out.discard(u.name)
    return sorted(out)


def _ident(fp: FlowPlan, unit: str) -> str:
    return next(u.ident for u in fp.units if u.name == unit)


def _retry_policy(s: Stage) -> str:
    r = s.retry
    if not r.max_attempts:
        return "None"
    backoff = "None" if r.backoff_rate == 1 else "Backoff.EXPONENTIAL"
    jitter = "Jitter.FULL" if r.jitter == "full" else "None"
    return f"RetryPolicy(max_retries={r.max_attempts}, delay={r.interval_s!r}, backoff={backoff}, jitter={jitter})"


def _op(fp: FlowPlan, p: Pipeline, u: PlanUnit, name: str) -> str:
    s = p.stages[name]
    ident = fp.stage_ident[name]
    inputs = [_ident(fp, w) for w in _needed(fp, u, p)]
    params = ["context", "ctx"] + (["carrier"] if u.per_item else []) + inputs
    units = "{" + ", ".join(f"{w!r}: {_ident(fp, w)}" for w in _needed(fp, u, p)) + "}"
    carrier = "carrier" if u.per_item else "None"
    return (
        f"@op(name={ident!r}, description={f'{s.mode} stage {s.name!r} in fave: function {s.function}'!r},\n"
        f"    retry_policy={_retry_policy(s)}, tags={{'fave/stage': {s.name!r}}})\n"
        f"def {ident}({', '.join(params)}):\n"
        f"    return _call(context, ctx, {s.name!r}, {units}, {carrier})\n"
    )


def _fan_ops(fp: FlowPlan, p: Pipeline, u: PlanUnit) -> str:
    fe = p.stages[u.stages[0]].for_each
    assert fe is not None
    source = _ident(fp, fp.unit_of[fe.source])
    return (
        f"@op(name={u.ident + '__items'!r}, out=DynamicOut(), description={f'the items of {fe}'!r})\n"
        f"def {u.ident}__items({source}):\n"
        f"    for c in carriers(items_at({source}, {list(fe.path)!r})):\n"
        '        yield DynamicOutput(c, mapping_key=str(c["index"]))\n\n\n'
        f"@op(name={u.ident + '__collect'!r}, description='one list per stage, in item order')\n"
        f"def {u.ident}__collect(done):\n"
        f"    return collect_checked({list(u.stages)!r}, done)\n"
    )


def _job_body(fp: FlowPlan, p: Pipeline) -> list[str]:
    lines = ["    ctx = start_run()"]
    for u in fp.units:
        inputs = [_ident(fp, w) + "_out" for w in _needed(fp, u, p)]  # a unit's result: NAME_out (not the op)
        if not u.per_item:
            lines.append(f"    {u.ident}_out = {fp.stage_ident[u.stages[0]]}({', '.join(['ctx', *inputs])})")
            continue
        fe = p.stages[u.stages[0]].for_each
        assert fe is not None
        lines.append(f"    # each {fe} ({', '.join(u.stages)}): item by item, no barrier between the stages")
        lines.append(f"    def each_{u.ident}(c):")
        for name in u.stages:
            lines.append(f"        c = {fp.stage_ident[name]}({', '.join(['ctx', 'c', *inputs])})")
        lines.append("        return c")
        lines.append("")
        source = _ident(fp, fp.unit_of[fe.source]) + "_out"
        items = f"{u.ident}__items({source}).map(each_{u.ident}).collect()"
        lines.append(f"    {u.ident}_out = {u.ident}__collect({items})")
    return lines


_DAGSTER_GLUE = '''
import re as _re


def _call(context, ctx, stage, units, carrier):
    """One attempt (context.retry_number counts Dagster's retries); no retry where fave would make none. An item's
    last failure in a stage with tolerated_failures is kept in its carrier (``collect_checked`` decides)."""
    if carrier is not None and carrier.get("failed"):
        return carrier  # an earlier stage of the group failed this item: the later ones do not run for it
    try:
        return call_stage(ctx, stage, units, carrier, attempt=context.retry_number + 1)
    except StageFailed as exc:
        spec = PIPELINE["stages"][stage]
        last = not retryable(exc, stage) or context.retry_number >= spec["max_attempts"]
        if carrier is not None and last and any(spec["tolerated"]):
            return {**carrier, "failed": {"stage": stage, "error": str(exc)}}
        if not retryable(exc, stage):
            raise Failure(description=str(exc), allow_retries=False) from exc
        raise


def collect_checked(stages, done):
    """A group's carriers as one list per stage (None where an item failed or was skipped), if each stage's
    tolerated_failures allows its failed items; else the run fails with the first one's error."""
    done = sorted(done, key=lambda c: c["index"])
    for stage in stages:
        failed = [c["failed"]["error"] for c in done if c.get("failed", {}).get("stage") == stage]
        if failed and not tolerated(stage, len(failed), len(done)):
            raise Failure(description=failed[0], allow_retries=False)
    return collect(stages, done)


@op(config_schema={"request": Permissive(), "store": str, "request_id": Field(str, is_required=False),
                   "functions": Field(Permissive(), is_required=False)})
def start_run(context):
    c = context.op_config
    return start(c["request"], c["store"], c.get("request_id"), c.get("functions"))


_OURS = _re.compile(r"(?:StageFailed|Failure): (stage .*)", _re.S)  # the stage's own error, in a cause


def run_in_process(request, store, request_id=None, functions=None):
    """execute_in_process; (True, the final output) or (False, the failed stage's error)."""
    config = {"request": request, "store": store}
    if request_id:
        config["request_id"] = request_id
    if functions:
        config["functions"] = functions
    result = JOB.execute_in_process(run_config={"ops": {"start_run": {"config": config}}}, raise_on_error=False)
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                error, said = event.event_specific_data.error, []
                while error is not None:  # "Exceeded max_retries", caused by the stage's own StageFailed
                    said.append(error.message.strip())
                    error = error.cause
                ours = [found.group(1) for found in map(_OURS.search, said) if found]
                return False, ours[0] if ours else f"op {event.step_key} failed: {'; '.join(said)}"
        return False, "the run failed"
    out = result.output_for_node(FINAL[0])
    return True, out[FINAL[1]] if FINAL[1] is not None else out
'''


def export_dagster(p: Pipeline, *, template: str | None = None) -> PythonExport:
    """The job file for ``p`` and the table of what it maps."""
    fp = plan(p, template)
    parts: list[str] = []
    for u in fp.units:
        if u.per_item:
            parts.append(_fan_ops(fp, p, u))
        parts.extend(_op(fp, p, u, name) for name in u.stages)
    caps = [(n, p.stages[n].max_concurrency) for n in p.order if p.stages[n].max_concurrency]
    executor = ""
    if caps:
        limits = [{"key": "fave/stage", "value": n, "limit": c} for n, c in caps]
        executor = f", executor_def=multiprocess_executor.configured({{'tag_concurrency_limits': {limits!r}}})"
    job_name = identifier(p.name, set())
    final_unit, member = fp.spec["final_unit"]
    header = (
        f'"""fave pipeline {p.name!r} ({p.digest[:12]}) as a Dagster job, exported by fave export --format dagster.\n\n'
        "Stages run through FAVE_EXPORT_CALL: lambda (boto3 Invoke; --functions or FAVE_FUNCTIONS maps logical ids\n"
        "to ARNs) or local (fave invoke over the pipeline's template.yaml: FAVE_BIN, FAVE_TEMPLATE).\n"
        'Run: python THIS_FILE --input JSON --store DIR  (prints the final stage\'s output)\n"""\n\n'
        "from dagster import (Backoff, DynamicOut, DynamicOutput, Failure, Field, Jitter, Permissive, RetryPolicy,\n"
        "                     job, multiprocess_executor, op)\n\n"
        f"PIPELINE = {pprint.pformat(fp.spec, width=110, sort_dicts=False)}\n"
        f"FINAL = ({_ident(fp, final_unit)!r}, {member!r})\n"
    )
    body = (
        f"@job(name={job_name!r}, description={f'fave pipeline {p.name}'!r}{executor})\n"
        f"def {job_name}():\n" + "\n".join(_job_body(fp, p)) + f"\n\n\nJOB = {job_name}\n"
    )
    main = (
        '\n\nif __name__ == "__main__":\n'
        "    import sys\n\n"
        "    _ok, _out = run_in_process(*main_args(sys.argv[1:]))\n"
        "    if not _ok:\n"
        '        print(f"fave export: the job failed: {_out}", file=sys.stderr)\n'
        "        sys.exit(1)\n"
        "    print(_json.dumps(_out))\n"
    )
    source = header + RUNTIME + _DAGSTER_GLUE + "\n\n" + "\n\n".join(parts) + "\n\n" + body + main
    return PythonExport(source, tuple(dagster_rows(p, fp.notes)), fp.notes)


def dagster_rows(p: Pipeline, notes: tuple[str, ...]) -> list[Row]:
    stages = list(p.stages.values())
    fanned = [s for s in stages if s.fanned_out]
    ops = p.operations
    exact_backoff = all(s.retry.backoff_rate == 1 and s.retry.max_delay_s is None for s in stages)
    return [
        Row("sync stage", "exact", "an @op calling the function with fave's event (Lambda Invoke or fave invoke)"),
        Row(
            "async stage",
            "approximate",
            "invoked synchronously by its op (event mode 'sync'), not through Lambda destinations",
            any(s.mode == "async" for s in stages),
        ),
        Row(
            "needs (series / parallel)",
            "exact",
            "op inputs: the job's graph (in parallel with the multiprocess executor)",
        ),
        Row("for_each fan-out", "exact", "an op with DynamicOut (one output per item), .map, .collect()", bool(fanned)),
        Row(
            "per-item chaining",
            "approximate" if notes else "exact",
            ".map over a function calling the group's ops in turn: item k's next op waits for item k only"
            + "".join("; " + n for n in notes),
            any(s.item_needs for s in stages),
        ),
        Row(
            "retry",
            "exact" if exact_backoff else "approximate",
            "RetryPolicy(max_retries, delay=interval, Jitter.FULL); Failure(allow_retries=False) for non_retryable "
            "/ terminal"
            + (
                ""
                if exact_backoff
                else "; Backoff.EXPONENTIAL waits interval*(2^n - 1) (fave: interval*backoff_rate^(n-1)), no max_delay"
            ),
        ),
        Row("terminal error result", "exact", "Failure(allow_retries=False): no retry"),
        Row(
            "timeout",
            "approximate",
            "Dagster has no per-op timeout: the call enforces it (the local call's timeout, boto3's read timeout)",
        ),
        Row(
            "max_concurrency",
            "approximate",
            "op tag fave/stage + the multiprocess executor's tag_concurrency_limits (per run, as fave); "
            "execute_in_process runs ops one at a time",
            any(s.max_concurrency for s in stages),
        ),
        Row(
            "tolerated_failures",
            "exact",
            "an item's last failure in a tolerant stage is kept in its carrier (its later stages skip it); the "
            "collect op applies fave's count/percent rule: None at its position, or the run fails with its error",
            any(s.completion.tolerates_any for s in stages),
        ),
        Row("failure", "exact", "the run fails; its STEP_FAILURE says 'stage NAME failed: TYPE: ...'"),
        Row("profiles", "exact", "request.profile picks each stage's merged config (PIPELINE['configs'])"),
        Row("final stage", "exact", "the final op's output (final.json)"),
        Row("task.attempt", "exact", "context.retry_number + 1"),
        *common_rows(p, Wording(items="position (mapping_key)")),
        Row(
            "budgets (max_wall, max_invocations, max_cost_usd)",
            "none",
            "nothing counts them in the job (a run tag dagster/max_runtime is the nearest to max_wall)",
            ops.budget.limited,
        ),
        Row(
            "function caps (functions:)",
            "approximate",
            "a dagster/concurrency_key pool per function with the instance's pool limit (not generated)",
            bool(ops.function_caps),
        ),
    ]
