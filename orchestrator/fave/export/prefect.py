"""A pipeline as a Prefect 3 flow (``fave export --format prefect``). Pure: Pipeline -> the text of a Python file.

Each stage is a ``@task`` calling the SAME stage function with fave's event (``fave.export.pyflow``'s runtime:
Lambda, or fave's local runtime with ``FAVE_EXPORT_CALL=local``). Single-task stages are ``.submit``-ed futures
(Prefect runs a stage as soon as the futures it takes are done: needs met together run in parallel); a fan-out is
``task.map`` over carriers, a chained group one ``.map`` per stage over the previous stage's futures, so item k of
the next stage waits for item k only. Retries: ``retries``, ``retry_delay_seconds`` (fave's schedule, one delay
per retry), ``retry_jitter_factor``, ``retry_condition_fn`` (no retry after a terminal result or a non_retryable
type); ``timeout_seconds``. Concurrency: a stage's ``max_concurrency`` is a semaphore in the flow's process (the
ThreadPoolTaskRunner's threads), per run as in fave; each task also carries the tag ``fave:<pipeline>:<stage>``
for a server-side tag limit across runs (``prefect concurrency-limit create TAG N``).

Run it: ``python flow.py --input '{"text": "..."}' --store DIR`` (prints the final stage's output as JSON).
"""

from __future__ import annotations

import pprint
from dataclasses import dataclass

from fave.core.dag import Pipeline, Stage
from fave.export.mapping import Row, Wording, common_rows
from fave.export.pyflow import RUNTIME, FlowPlan, PlanUnit, identifier, plan, retry_delays

__all__ = ["PythonExport", "export_prefect", "prefect_rows"]


@dataclass(frozen=True, slots=True)
class PythonExport:
    source: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()


def _task(s: Stage, ident: str, pipeline: str, per_item: bool) -> str:
    r = s.retry
    opts = [f"name={s.name!r}", f"retries={r.max_attempts}"]
    if r.max_attempts:
        # fave's full jitter draws a delay from [0, d) (mean d/2). Prefect's jitter factor 1.0 draws around the
        # given delay, up to twice it, keeping its mean: given d/2, the delay stays in [0, d] with fave's mean.
        half = 0.5 if r.jitter == "full" else 1.0
        opts.append(f"retry_delay_seconds={[round(d * half, 6) for d in retry_delays(r)]!r}")
        if r.jitter == "full":
            opts.append("retry_jitter_factor=1.0")
        opts.append(f"retry_condition_fn=_retry_if({s.name!r})")
    opts.append(f"timeout_seconds={s.timeout_s!r}")
    opts.append(f"tags={['fave', f'fave:{pipeline}:{s.name}']!r}")
    args = "ctx, units, carrier" if per_item else "ctx, units"
    carrier = "carrier" if per_item else "None"
    return (
        f"@task({', '.join(opts)})\n"
        f"def {ident}({args}):\n"
        f'    """{s.mode} stage {s.name!r} in fave: function {s.function}."""\n'
        f"    return call_stage(ctx, {s.name!r}, units, {carrier}, attempt=_task_run.run_count or 1)\n"
    )


def _units_arg(fp: FlowPlan, u: PlanUnit, p: Pipeline) -> str:
    wanted = sorted({fp.unit_of[n] for name in u.stages for n in p.stages[name].needs} - {u.name})
    return "{" + ", ".join(f"{w!r}: results[{w!r}]" for w in wanted) + "}"


def _flow_body(fp: FlowPlan, p: Pipeline) -> list[str]:
    lines = ["    ctx = start(request, store, request_id, functions)", "    results = {}", "    groups = {}"]
    collected: set[str] = set()

    def ensure(units: list[str]) -> None:
        for w in units:
            if w in fp.unit_of.values() and w not in collected and any(x.name == w and x.per_item for x in fp.units):
                lines.append(f"    results[{w!r}] = collect_groups(groups[{w!r}])  # the group's lists, item order")
                collected.add(w)

    for u in fp.units:
        needed = sorted({fp.unit_of[n] for name in u.stages for n in p.stages[name].needs} - {u.name})
        if not u.per_item:
            ensure(needed)
            lines.append(f"    results[{u.name!r}] = {fp.stage_ident[u.stages[0]]}.submit(ctx, {_units_arg(fp, u, p)})")
            continue
        first = p.stages[u.stages[0]]
        assert first.for_each is not None
        fe = first.for_each
        ensure(needed)
        source = fp.unit_of[fe.source]
        # a fan-out's source is a single-task stage: its list is known before the map
        value = f"results[{source!r}].result()"
        lines.append(f"    # each {fe} ({', '.join(u.stages)}): item by item, no barrier between the stages")
        lines.append(f"    c = carriers(items_at({value}, {list(fe.path)!r}))")
        lines.append(f"    groups[{u.name!r}] = []")
        for name in u.stages:
            lines.append(f"    c = {fp.stage_ident[name]}.map(unmapped(ctx), unmapped({_units_arg(fp, u, p)}), c)")
            lines.append(f"    groups[{u.name!r}].append(({name!r}, c))")
    final_unit, member = fp.spec["final_unit"]
    ensure([final_unit])
    lines.append("    raise_first_failure(results, groups)")
    out = f"results[{final_unit!r}]"
    if final_unit not in collected:
        out += ".result()"
    if member is not None:
        out += f"[{member!r}]"
    lines.append(f"    return {out}")
    return lines


_PREFECT_GLUE = '''

def _retry_if(stage):
    """retry_condition_fn: fave retries neither a terminal error result nor a non_retryable error type."""

    def condition(task, task_run, state):
        try:
            state.result()
        except Exception as exc:  # the attempt's exception
            return retryable(exc, stage)
        return True

    return condition


def collect_groups(steps):
    """A chained group's futures as one list per stage, in item order. An item that failed (after its retries)
    is None there and in the group's later stages (which do not run for it), as fave does, while the stage's
    tolerated_failures allows; past that, the first failure is raised as it is."""
    out, gone = {}, {}  # gone: item index -> its failure
    for stage, futures in steps:
        values, failures = [], []
        for index, future in enumerate(futures):
            if index in gone:
                values.append(None)
                continue
            try:
                values.append(future.result()["out"][stage])
            except Exception as exc:  # the stage's own error for this item
                gone[index] = exc
                failures.append(exc)
                values.append(None)
        if failures and not tolerated(stage, len(failures), len(futures)):
            raise failures[0]
        out[stage] = values
    return out


def raise_first_failure(results, groups):
    """Raise the first failed stage's own error (in topological order), not a downstream 'upstream failed'."""
    for name, value in results.items():
        if name in groups:
            collect_groups(groups[name])
        elif hasattr(value, "result"):
            value.result()
'''


def export_prefect(p: Pipeline, *, template: str | None = None) -> PythonExport:
    """The flow file for ``p`` and the table of what it maps."""
    fp = plan(p, template)
    per_item = {name for u in fp.units if u.per_item for name in u.stages}
    tasks = "\n\n".join(_task(p.stages[n], fp.stage_ident[n], p.name, n in per_item) for n in p.order)
    flow_name = identifier(p.name, set())
    header = (
        f'"""fave pipeline {p.name!r} ({p.digest[:12]}) as a Prefect flow, exported by '
        "fave export --format prefect.\n\n"
        "Stages run through FAVE_EXPORT_CALL: lambda (boto3 Invoke; --functions or FAVE_FUNCTIONS maps logical ids\n"
        "to ARNs) or local (fave invoke over the pipeline's template.yaml: FAVE_BIN, FAVE_TEMPLATE).\n"
        'Run: python THIS_FILE --input JSON --store DIR  (prints the final stage\'s output)\n"""\n\n'
        "from prefect import flow, task, unmapped\n"
        "from prefect.runtime import task_run as _task_run\n"
        "from prefect.task_runners import ThreadPoolTaskRunner\n\n"
        f"PIPELINE = {pprint.pformat(fp.spec, width=110, sort_dicts=False)}\n"
    )
    flow = (
        f"@flow(name={p.name!r}, task_runner=ThreadPoolTaskRunner(max_workers=16), validate_parameters=False)\n"
        f"def {flow_name}_flow(request, store, request_id=None, functions=None):\n"
        + "\n".join(_flow_body(fp, p))
        + "\n"
    )
    main = (
        '\n\nif __name__ == "__main__":\n'
        "    import sys\n\n"
        "    _request, _store, _rid, _functions = main_args(sys.argv[1:])\n"
        "    try:\n"
        f"        _out = {flow_name}_flow(_request, _store, _rid, _functions)\n"
        "    except Exception as exc:\n"
        '        print(f"fave export: the flow failed: {exc}", file=sys.stderr)\n'
        "        sys.exit(1)\n"
        "    print(_json.dumps(_out))\n"
    )
    source = header + RUNTIME + _PREFECT_GLUE + "\n\n" + tasks + "\n\n" + flow + main
    return PythonExport(source, tuple(prefect_rows(p, fp.notes)), fp.notes)


def prefect_rows(p: Pipeline, notes: tuple[str, ...]) -> list[Row]:
    stages = list(p.stages.values())
    fanned = [s for s in stages if s.fanned_out]
    ops = p.operations
    return [
        Row("sync stage", "exact", "a @task calling the function with fave's event (Lambda Invoke or fave invoke)"),
        Row(
            "async stage",
            "approximate",
            "invoked synchronously by its task (event mode 'sync'), not through Lambda destinations",
            any(s.mode == "async" for s in stages),
        ),
        Row(
            "needs (series / parallel)", "exact", "task.submit with the futures it needs: Prefect waits for those only"
        ),
        Row("for_each fan-out", "exact", "task.map over the list's items (item and index in the event)", bool(fanned)),
        Row(
            "per-item chaining",
            "approximate" if notes else "exact",
            "one .map per stage over the previous stage's futures: item k waits for item k only"
            + "".join("; " + n for n in notes),
            any(s.item_needs for s in stages),
        ),
        Row(
            "retry",
            "approximate",
            "retries, retry_delay_seconds = fave's schedule (interval * backoff_rate^(n-1), max_delay); "
            "retry_condition_fn skips non_retryable / terminal; full jitter: half of each delay with "
            "retry_jitter_factor 1.0 (Prefect's clamped Poisson draw: same range [0, delay] and mean as fave's "
            "uniform one, another distribution)",
        ),
        Row("terminal error result", "exact", "raised as StageFailed; retry_condition_fn refuses the retry"),
        Row(
            "timeout",
            "approximate",
            "timeout_seconds per attempt, which cannot interrupt a task's thread: the call's own timeout does "
            "(boto3's read timeout; the local caller's includes fave invoke's start-up)",
        ),
        Row(
            "max_concurrency",
            "exact",
            "a semaphore per stage in the flow's process (per run, as fave); tag fave:<pipeline>:<stage> "
            "for a server-side limit across runs",
            any(s.max_concurrency for s in stages),
        ),
        Row(
            "tolerated_failures",
            "exact",
            "the flow collects a group's futures itself: a failed item is None at its position (and in the group's "
            "later stages) while fave's count/percent rule allows, else the flow fails with its error",
            any(s.completion.tolerates_any for s in stages),
        ),
        Row("failure", "exact", "the flow fails with the first failed stage's error: 'stage NAME failed: TYPE: ...'"),
        Row("profiles", "exact", "request.profile picks each stage's merged config (PIPELINE['configs'])"),
        Row("final stage", "exact", "the flow returns the final stage's output (final.json)"),
        Row("task.attempt", "exact", "prefect.runtime.task_run.run_count"),
        *common_rows(p, Wording(cache=" (Prefect's own cache_policy is not set)")),
        Row(
            "budgets (max_wall, max_invocations, max_cost_usd)",
            "none",
            "nothing counts them in the flow",
            ops.budget.limited,
        ),
        Row(
            "function caps (functions:)",
            "approximate",
            "create a Prefect global concurrency limit per function and wrap calls (not generated)",
            bool(ops.function_caps),
        ),
    ]
