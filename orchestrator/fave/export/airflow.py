"""A pipeline as an Airflow DAG file (``fave export --format airflow``). Pure: Pipeline -> Python source text.

The DAG (Airflow 3, TaskFlow: ``airflow.sdk``) calls the SAME stage functions with fave's own stage event
(docs/stages.md: the payload ``fave.export.asl`` builds too), one task per single-task stage and one mapped task
(``expand``) per fanned-out stage, so it runs on Airflow without a line of stage code changed.

How a task reaches its function is the generated file's one seam, ``FAVE_EXPORT_CALL``: ``lambda`` (the default:
boto3's Lambda Invoke, the function ARNs in the run's conf ``functions``) or ``local`` (fave's local runtime:
``fave invoke FUNCTION --template TEMPLATE``, ``FAVE_BIN`` and ``FAVE_TEMPLATE`` overriding the defaults), so a
test runs the real stage functions with ``airflow dags test`` and no AWS account.

Run conf: ``{"request": {...the request as fave passes it, with its profile}, "request_id": "...", "store":
"s3://bucket", "functions": {"WordsFunction": "arn:aws:lambda:...", ...}}`` (``request_id`` defaults to the run
id). The final stage's task returns the final output (fave's final.json) as its XCom.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fave.core.dag import Pipeline, Stage
from fave.export.mapping import Row, Wording, common_rows

__all__ = ["AirflowExport", "dag_id", "export_airflow"]

_TASK_ID = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class AirflowExport:
    source: str
    """The DAG file's Python source."""
    dag_id: str
    final_task: str
    """The task id of the final stage: its XCom is the final output."""
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()


def dag_id(p: Pipeline) -> str:
    return "fave_" + _TASK_ID.sub("_", p.name)


def _seconds(value: float) -> str:
    return f"timedelta(seconds={value!r})"


def _retry_kwargs(s: Stage) -> dict[str, str]:
    """fave's ``retry`` and ``timeout`` as BaseOperator arguments (as Python source)."""
    r = s.retry
    out = {
        "retries": str(r.max_attempts),
        "retry_delay": _seconds(r.interval_s),
        # Airflow 3's multiplier: delay = ceil(retry_delay * rate ** (try - 1)), spread up to twice that.
        "retry_exponential_backoff": repr(float(r.backoff_rate) if r.backoff_rate != 1 else 0.0),
        "execution_timeout": _seconds(s.timeout_s),
    }
    if r.max_delay_s is not None:
        out["max_retry_delay"] = _seconds(r.max_delay_s)
    if s.max_concurrency is not None:
        out["max_active_tis_per_dag"] = str(s.max_concurrency)
    return out


_PRELUDE = '''\
from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException

PIPELINE = {pipeline!r}
TEMPLATE = {template!r}
FINAL = {final!r}
# Each stage's config for each profile (the stage's config merged with the profile's overrides, as fave does).
CONFIGS: dict[str, dict[str, Any]] = json.loads({configs!r})
# Error types a stage never retries (its retry.non_retryable): they fail the task at once.
NON_RETRYABLE: dict[str, list[str]] = json.loads({non_retryable!r})


class StageFailed(Exception):
    """A stage's function failed (raised or timed out): Airflow retries the task as its retries say."""


def _conf() -> dict[str, Any]:
    context = get_current_context()
    run = context["dag_run"]
    conf = dict(run.conf or {{}})
    conf.setdefault("request_id", run.run_id)
    return conf


def _call(function: str, event: dict[str, Any], conf: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """Invoke ``function`` with ``event``: (its response, None), or (None, Lambda's error payload)."""
    how = os.environ.get("FAVE_EXPORT_CALL", "lambda")
    if how == "local":  # fave's local runtime: the function's code folder, layers and environment
        command = [os.environ.get("FAVE_BIN", "fave"), "invoke", function, "-e", "-",
                   "--template", os.environ.get("FAVE_TEMPLATE", TEMPLATE)]
        done = subprocess.run(command, input=json.dumps(event), capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        body = json.loads(lines[-1]) if lines else None
        if done.returncode == 0:
            return body, None
        if isinstance(body, dict) and "errorType" in body:
            return None, body
        return None, {{"errorType": "InvokeError", "errorMessage": done.stderr.strip()[-2000:]}}
    if how == "lambda":
        import boto3  # only this caller needs it (apache-airflow-providers-amazon brings it)

        arn = (conf.get("functions") or {{}}).get(function, function)
        response = boto3.client("lambda").invoke(FunctionName=arn, Payload=json.dumps(event).encode())
        body = json.loads(response["Payload"].read() or b"null")
        return (None, body) if response.get("FunctionError") else (body, None)
    raise AirflowFailException(f"FAVE_EXPORT_CALL must be lambda or local, got {{how!r}}")


def _run(stage: str, function: str, needs: dict[str, Any], entry: dict[str, Any] | None = None) -> Any:
    """One attempt of ``stage``: fave's stage event (docs/stages.md) to its function; its output."""
    context = get_current_context()
    conf = _conf()
    request = conf.get("request") or {{}}
    profile = request.get("profile", "default")
    if profile not in CONFIGS:
        raise AirflowFailException(f"UnknownProfile: request.profile must be one of {{', '.join(CONFIGS)}}")
    inp: dict[str, Any] = {{"request": request, "needs": needs, "config": CONFIGS[profile][stage]}}
    index = None
    if entry is not None:
        index = entry["index"]
        inp["item"], inp["index"] = entry["item"], index
    attempt = context["ti"].try_number
    task_ = {{"request_id": conf["request_id"], "stage": stage, "item": index, "attempt": attempt}}
    event = {{"fave": 1, "task": task_, "mode": "sync", "store": conf.get("store"), "input": inp}}
    output, error = _call(function, event, conf)
    if error is not None:
        kind = str(error.get("errorType", "Error"))
        message = f"{{kind}}: stage {{stage}} failed: {{error.get('errorMessage', '')}}"
        if kind in NON_RETRYABLE.get(stage, ()):
            raise AirflowFailException(message)
        raise StageFailed(message)
    if isinstance(output, dict) and "$fave_error" in output:  # a terminal error result: never retried
        err = output["$fave_error"]
        raise AirflowFailException(f"{{err.get('errorType')}}: stage {{stage}} failed: {{err.get('errorMessage')}}")
    return output


def _items(output: Any, path: list[str]) -> list[dict[str, Any]]:
    """The list a fan-out runs over, as (item, index) entries: one mapped task instance each."""
    for part in path:
        output = output[part]
    return [{{"item": item, "index": index}} for index, item in enumerate(output)]


def _all(outputs: Any) -> list[Any]:
    """A mapped task's outputs, in map-index order, as a plain list (a stage's ``needs`` are JSON)."""
    return [] if outputs is None else [outputs[i] for i in range(len(outputs))]


def _at(outputs: Any, index: int) -> Any:
    """An item's own output of an earlier per-item stage (the earlier mapped task's, at the same index)."""
    return outputs[index]
'''


def _literal(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _plan(p: Pipeline, notes: list[str]) -> tuple[list[tuple[str, tuple[str, ...]]], bool]:
    """The stages as units in a topological order: (name, members). Per-item stages joined item by item are
    one unit (a mapped task group), as the ASL export makes them one Map, unless a single-task stage sits in
    the middle of the chain (c needs a item by item and b; b needs all of a): then each is a unit of its own,
    taking its item's entry of the earlier list by index. Also whether any group was made."""
    from fave.export.asl import _ordered, _unit_deps, _units  # the same grouping as the ASL export's

    units, unit_of = _units(p)
    ordered = _ordered(units, _unit_deps(p, units, unit_of))
    if ordered is None:
        units, unit_of = _units(p, grouped=False)
        ordered = _ordered(units, _unit_deps(p, units, unit_of))
        assert ordered is not None  # the pipeline's own DAG has no cycle
        notes.append(
            "per-item stages chained item by item with a single-task stage between them: each is a mapped task "
            "of its own, the later one waiting for every item of the earlier one (a barrier fave does not have)"
        )
    return [(u.name, u.stages) for u in ordered], any(len(u.stages) > 1 for u in ordered)


def export_airflow(p: Pipeline, *, template: str | None = None) -> AirflowExport:
    """The DAG file for ``p`` and the table of what it maps. ``template``: the template path the local caller
    uses by default (the pipeline's own, as given)."""
    notes: list[str] = []
    ident = dag_id(p)
    configs = {profile: {name: p.stage_config(name, profile) for name in p.order} for profile in p.profiles}
    non_retryable = {n: list(s.retry.non_retryable) for n, s in p.stages.items() if s.retry.non_retryable}
    out = [
        f'"""fave pipeline {p.name!r} ({p.digest[:12]}) as an Airflow DAG, exported by '
        "`fave export --format airflow`.\n\n"
        'Trigger it with conf {"request": {...}, "request_id": "...", "store": "s3://...", "functions": '
        '{"LogicalId": "arn:..."}}.\nFAVE_EXPORT_CALL=lambda (default: boto3 Lambda Invoke) or local '
        '(`fave invoke` on TEMPLATE; FAVE_BIN, FAVE_TEMPLATE).\n"""\n\n',
        _PRELUDE.format(
            pipeline=p.name,
            template=template if template is not None else str(p.template_path),
            final=p.final,
            configs=_literal(configs),
            non_retryable=_literal(non_retryable),
        ),
    ]
    var = {name: f"t{i}" for i, name in enumerate(p.order)}
    body: list[str] = []
    items_vars: dict[tuple[str, tuple[str, ...]], str] = {}
    units, grouped = _plan(p, notes)

    def items_of(s: Stage) -> str:
        """The task making a fan-out's (item, index) entries: one per list, shared by the stages over it."""
        assert s.for_each is not None
        key = (s.for_each.source, tuple(s.for_each.path))
        if key not in items_vars:
            iv = items_vars[key] = f"items{len(items_vars)}"
            items_id = _TASK_ID.sub("_", f"{s.for_each.source}_items_{'_'.join(s.for_each.path)}")
            body.append(f"    @task(task_id={items_id!r})")
            body.append(f"    def {iv}_of(output: Any) -> list[dict[str, Any]]:")
            body.append(f"        return _items(output, {list(s.for_each.path)!r})")
            body.append(f"    {iv} = {iv}_of({var[s.for_each.source]})")
        return items_vars[key]

    def define(name: str, group: tuple[str, ...]) -> str:
        """The stage's task function; the keyword arguments that call it (its needs' variables)."""
        s = p.stages[name]
        kwargs = ", ".join(f"{k}={val}" for k, val in _retry_kwargs(s).items())
        needs = [n for n in s.needs if not (s.for_each is not None and n == s.for_each.source)]
        # A stage after a fan-out also runs when the fan-out had no item (Airflow skips a mapped task over an
        # empty list; fave gives the stage an empty list): none_failed, not all_success.
        after_fan_out = any(p.stages[n].fanned_out for n in s.needs) or s.fanned_out
        rule = ', trigger_rule="none_failed"' if after_fan_out else ""
        params = [f"need_{i}" for i in range(len(needs))]
        parts = []
        for param, need in zip(params, needs, strict=True):
            if need in group:  # the same item's output: a mapped task group passes it by map index
                value = param
            elif need in s.item_needs:  # not grouped (see _plan): the item's entry of the whole list
                value = f"_at({param}, entry['index'])"
            else:
                value = f"_all({param})" if p.stages[need].fanned_out else param
            parts.append(f"{need!r}: {value}")
        needs_expr = "{" + ", ".join(parts) + "}"
        signature = ", ".join((["entry: dict[str, Any]"] if s.fanned_out else []) + [f"{x}: Any" for x in params])
        body.append(f"    @task(task_id={_TASK_ID.sub('_', name)!r}, {kwargs}{rule})")
        body.append(f"    def stage_{var[name]}({signature}) -> Any:")
        body.append(f"        # stage {name!r} ({s.mode} in fave): function {s.function}")
        entry_arg = ", entry" if s.fanned_out else ""
        body.append(f"        return _run({name!r}, {s.function!r}, {needs_expr}{entry_arg})")
        # Inside a group its own tasks are only in `made` yet (their variables are set after the expand).
        ref = {need: f"made[{need!r}]" if need in group else var[need] for need in needs}
        return ", ".join(f"{param}={ref[need]}" for param, need in zip(params, needs, strict=True))

    for unit_name, members in units:
        first = p.stages[members[0]]
        if len(members) > 1:
            # Per-item stages chained item by item: a mapped task group, so an item's later stage starts when
            # its own earlier one is done (Airflow wires tasks of one group instance by map index).
            iv = items_of(first)
            calls = {name: define(name, members) for name in members}
            body.append(f"    @task_group(group_id={_TASK_ID.sub('_', unit_name)!r})")
            body.append(f"    def group_{var[members[0]]}(entry: Any) -> None:")
            body.append(f"        # per item of {first.for_each}: " + ", then ".join(members))
            for name in members:
                args = ", ".join(x for x in ("entry=entry", calls[name]) if x)
                body.append(f"        made[{name!r}] = stage_{var[name]}({args})")
            body.append(f"    group_{var[members[0]]}.expand(entry={iv})")
            for name in members:
                body.append(f"    {var[name]} = made[{name!r}]")
        elif first.fanned_out:
            iv = items_of(first)
            call_args = define(members[0], ())
            body.append(f"    {var[members[0]]} = stage_{var[members[0]]}.partial({call_args}).expand(entry={iv})")
        else:
            call_args = define(members[0], ())
            body.append(f"    {var[members[0]]} = stage_{var[members[0]]}({call_args})")
        body.append("")
    if grouped:
        body.insert(0, "    made: dict[str, Any] = {}  # the tasks made inside mapped task groups, by stage\n")
    timeout = p.operations.budget.max_wall_s
    dag_args = [f"dag_id={ident!r}", "schedule=None", "catchup=False", 'tags=["fave"]']
    if timeout is not None:
        dag_args.append(f"dagrun_timeout={_seconds(timeout)}")
    out.append("\n\n@dag(" + ", ".join(dag_args) + ")\n")
    out.append(f"def {ident}() -> None:\n")
    out.append("\n".join(body).rstrip() + "\n")
    out.append(f"\n\n{ident}()\n")
    final_task = _TASK_ID.sub("_", p.final)  # never fanned out, so never in a group
    return AirflowExport("".join(out), ident, final_task, tuple(airflow_rows(p, notes)), tuple(notes))


def airflow_rows(p: Pipeline, notes: Sequence[str]) -> list[Row]:
    stages = list(p.stages.values())
    fanned = [s for s in stages if s.fanned_out]
    chained = [s for s in fanned if s.item_needs]
    backoff = [s for s in stages if s.retry.max_attempts and s.retry.backoff_rate != 1]
    jitter = any(s.retry.jitter == "full" and s.retry.max_attempts for s in stages)
    ops = p.operations
    split = [n for n in notes if "mapped task of its own" in n]
    return [
        Row("sync stage", "exact", "a @task calling the function with fave's stage event; its output is the XCom"),
        Row(
            "async stage",
            "approximate",
            "invoked synchronously by the task (event mode 'sync'), not through Lambda destinations",
            any(s.mode == "async" for s in stages),
        ),
        Row("needs (series / parallel)", "exact", "task dependencies from the XCom arguments"),
        Row(
            "for_each fan-out",
            "exact",
            "dynamic task mapping: .partial(...).expand(entry=...) over the list's (item, index) entries",
            bool(fanned),
        ),
        Row(
            "per-item chaining",
            "approximate" if split else "exact",
            "a mapped task group over the list: an item's later stage starts when its own earlier one is done"
            + "".join("; " + n for n in split),
            bool(chained),
        ),
        Row("retry max_attempts", "exact", "retries"),
        Row(
            "retry interval / backoff_rate",
            "approximate" if backoff else "exact",
            "retry_delay and retry_exponential_backoff=backoff_rate: Airflow rounds interval * rate^(n-1) up to "
            "whole seconds (>= 1) and spreads it up to twice that by a hash of the try",
            True,
        ),
        Row("retry max_delay", "exact", "max_retry_delay", any(s.retry.max_delay_s is not None for s in stages)),
        Row("retry jitter: full", "approximate", "no random jitter: Airflow's hash spread only", jitter),
        Row(
            "non_retryable / terminal error result",
            "exact",
            "AirflowFailException: the task fails without a retry",
            True,
        ),
        Row("timeout", "exact", "execution_timeout per try", True),
        Row(
            "max_concurrency",
            "exact",
            "max_active_tis_per_dag on the mapped task",
            any(s.max_concurrency for s in stages),
        ),
        Row(
            "tolerated_failures",
            "none",
            "a failed mapped task instance fails the stage; the downstream tasks do not run",
            any(s.completion.tolerates_any for s in stages),
        ),
        Row("failure", "exact", "the run fails; the task's error says 'TYPE: stage NAME failed: ...'", True),
        Row("profiles", "exact", "CONFIGS per profile in the file, chosen by request.profile at run time", True),
        Row("final stage", "exact", "the final stage's task returns the final output (its XCom)", True),
        Row("task.attempt", "exact", "the task instance's try_number", True),
        *common_rows(
            p, Wording(request=" in the run's conf", items="map index only", queue=" (max_active_runs is the nearest)")
        ),
        Row(
            "budget max_wall",
            "approximate",
            "dagrun_timeout (the scheduler fails the run; fave: FAILED budget_exceeded)",
            ops.budget.max_wall_s is not None,
        ),
        Row(
            "budget max_invocations, max_cost_usd",
            "none",
            "nothing counts invocations or cost",
            ops.budget.max_invocations is not None or ops.budget.max_cost_usd is not None,
        ),
        Row(
            "function caps (functions:)",
            "none",
            "use an Airflow pool or the functions' reserved concurrency",
            bool(ops.function_caps),
        ),
        Row(
            "large payloads (markers)",
            "approximate",
            "outputs travel as XComs in Airflow's database (a stage's own marker still works: the SDK resolves it)",
            True,
        ),
    ]
