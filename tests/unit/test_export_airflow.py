"""``fave export --format airflow`` as a pure function (fave.export.airflow): the DAG file's tasks, their retry,
timeout and concurrency arguments, the mapped tasks of fan-outs, the profiles' configs, and the mapping table.
tests/functional/test_export_airflow.py runs the files with ``airflow dags test``."""

from __future__ import annotations

import ast
import json
from typing import Any

from fave.core.dag import CompletionPolicy, ForEach, Pipeline, RetryPolicy, Stage
from fave.export.airflow import export_airflow


def stage(name: str, *needs: str, **kw: Any) -> Stage:
    return Stage(name=name, function=f"{name.title()}Function", needs=needs, mode=kw.pop("mode", "sync"),
                 timeout_s=kw.pop("timeout_s", 30.0), **kw)  # fmt: skip


def build(*stages: Stage, **kw: Any) -> Pipeline:
    return Pipeline.build(name=kw.pop("name", "p"), stages=stages, digest="0" * 64, **kw)


def demo(**shout: Any) -> Pipeline:
    words = ForEach.parse("words.words")
    return build(
        stage("words", timeout_s=45.0),
        stage("shout", "words", for_each=words, mode="async", max_concurrency=2, config={"suffix": "!"}, **shout),
        stage("measure", "shout", for_each=words, mode="async", timeout_s=2.0),
        stage("join", "measure", "shout"),
        profiles={"loud": {"shout": {"suffix": "!!"}}},
        name="demo",
    )


def tasks(source: str) -> dict[str, dict[str, str]]:
    """task id -> the @task decorator's keyword arguments (as source text), from the DAG file."""
    out: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "task":
                    kw = {k.arg: ast.unparse(k.value) for k in deco.keywords if k.arg}
                    out[ast.literal_eval(kw.pop("task_id"))] = kw
    return out


def assignments(source: str) -> dict[str, str]:
    """name -> the assigned expression (as source text), annotated or not."""
    out: dict[str, str] = {}
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Assign) and len(n.targets) == 1:
            out[ast.unparse(n.targets[0])] = ast.unparse(n.value)
        elif isinstance(n, ast.AnnAssign) and n.value is not None:
            out[ast.unparse(n.target)] = ast.unparse(n.value)
    return out


def loaded(expr: str) -> Any:
    """The value of a ``json.loads('...')`` expression."""
    call = ast.parse(expr, mode="eval").body
    assert isinstance(call, ast.Call)
    return json.loads(ast.literal_eval(call.args[0]))


def test_each_stage_is_a_task_with_fave_s_retry_timeout_and_concurrency() -> None:
    exported = export_airflow(demo(), template="/t/template.yaml")
    compile(exported.source, "dag.py", "exec")
    t = tasks(exported.source)
    assert set(t) == {"words", "shout", "measure", "join", "words_items_words"}  # shout, measure: in a group
    # RetryPolicy's defaults: 2 retries after the first attempt, 1 s, rate 2, no max delay.
    assert t["words"]["retries"] == "2"
    assert t["words"]["retry_delay"] == "timedelta(seconds=1.0)"
    assert t["words"]["retry_exponential_backoff"] == "2.0"
    assert t["words"]["execution_timeout"] == "timedelta(seconds=45.0)"
    assert "max_retry_delay" not in t["words"]
    assert t["shout"]["max_active_tis_per_dag"] == "2"
    assert "max_active_tis_per_dag" not in t["measure"]
    assert t["measure"]["execution_timeout"] == "timedelta(seconds=2.0)"
    # After a fan-out: none_failed, as a mapped task over no item is skipped and fave still runs join.
    assert t["join"]["trigger_rule"] == "'none_failed'"
    assert "trigger_rule" not in t["words"]
    assert exported.dag_id == "fave_demo" and exported.final_task == "join"


def test_a_per_item_chain_is_a_mapped_task_group_and_a_lone_fan_out_a_mapped_task() -> None:
    source = export_airflow(demo(), template="/t/template.yaml").source
    a = assignments(source)
    assert a["items0"] == "items0_of(t0)"
    # shout then measure, item by item: one group instance per item, measure taking its own item's shout.
    assert "made['shout'] = stage_t1(entry=entry)" in source
    assert "made['measure'] = stage_t2(entry=entry, need_0=made['shout'])" in source
    assert "group_t1.expand(entry=items0)" in source
    assert "{'shout': need_0}" in source
    assert a["t1"] == "made['shout']" and a["t2"] == "made['measure']"
    assert a["t3"] == "stage_t3(need_0=t2, need_1=t1)"
    assert "{'measure': _all(need_0), 'shout': _all(need_1)}" in source  # join gets the lists
    lone = build(stage("a"), stage("b", "a", for_each=ForEach.parse("a.xs")), stage("c", "b"))
    assert assignments(export_airflow(lone, template="t").source)["t1"] == "stage_t1.partial().expand(entry=items0)"


def test_a_single_task_stage_inside_a_chain_splits_it_into_mapped_tasks_with_a_barrier() -> None:
    xs = ForEach.parse("src.xs")
    # c needs a item by item and b; b needs all of a: no group can hold a and c.
    p = build(stage("src"), stage("a", "src", for_each=xs), stage("b", "a"), stage("c", "a", "b", for_each=xs),
              stage("d", "c"))  # fmt: skip
    exported = export_airflow(p, template="t")
    compile(exported.source, "dag.py", "exec")
    a = assignments(exported.source)
    assert a["t1"] == "stage_t1.partial().expand(entry=items0)"
    assert a["t3"] == "stage_t3.partial(need_0=t1, need_1=t2).expand(entry=items0)"
    assert "{'a': _at(need_0, entry['index']), 'b': need_1}" in exported.source
    assert "task_group(" not in exported.source.split("def fave_p", 1)[1]
    rows = {r.feature: r for r in exported.rows}
    assert rows["per-item chaining"].fidelity == "approximate" and exported.notes


def test_retry_max_delay_non_retryable_and_the_profiles_configs() -> None:
    retry = RetryPolicy(max_attempts=4, interval_s=0.5, backoff_rate=1, max_delay_s=30, non_retryable=("KeyError",))
    source = export_airflow(demo(retry=retry), template="/t/template.yaml").source
    t = tasks(source)["shout"]
    assert t["retries"] == "4" and t["retry_exponential_backoff"] == "0.0"  # rate 1: no backoff
    assert t["max_retry_delay"] == "timedelta(seconds=30)"
    a = assignments(source)
    assert loaded(a["NON_RETRYABLE"]) == {"shout": ["KeyError"]}
    configs = loaded(a["CONFIGS"])
    assert configs["default"]["shout"] == {"suffix": "!"}
    assert configs["loud"]["shout"] == {"suffix": "!!"}
    assert a["TEMPLATE"] == "'/t/template.yaml'"


def test_the_table_says_what_airflow_cannot_express() -> None:
    rows = {r.feature: r for r in export_airflow(demo(), template="t").rows}
    assert rows["per-item chaining"].fidelity == "exact" and rows["per-item chaining"].used
    assert rows["max_concurrency"].fidelity == "exact" and rows["max_concurrency"].used
    assert not rows["tolerated_failures"].used
    tolerant = demo(completion=CompletionPolicy(count=1))
    rows = {r.feature: r for r in export_airflow(tolerant, template="t").rows}
    assert rows["tolerated_failures"].fidelity == "none" and rows["tolerated_failures"].used
    assert rows["result cache"].fidelity == "none"
