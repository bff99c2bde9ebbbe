"""``fave export --format prefect|dagster`` without the engines: the generated files' shape (retries, timeouts,
concurrency as each engine spells them), the runtime they carry (fave's stage event, the per-run stage cap, what
is retried), the CLI. Running them on the real engines: tests/functional/test_export_prefect.py, _dagster.py."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from fave.core.dag import ForEach, Pipeline, RetryPolicy, Stage
from fave.export.dagster import export_dagster
from fave.export.prefect import export_prefect
from fave.export.pyflow import identifier, plan, retry_delays

RETRY = RetryPolicy(max_attempts=2, interval_s=0.05, backoff_rate=2.0, jitter="full")


def stage(name: str, *needs: str, **kw: Any) -> Stage:
    return Stage(name=name, function=f"{name.title().replace('-', '')}Function", needs=needs,
                 mode=kw.pop("mode", "sync"), timeout_s=kw.pop("timeout_s", 20.0), retry=kw.pop("retry", RETRY),
                 **kw)  # fmt: skip


def build(*stages: Stage, **kw: Any) -> Pipeline:
    return Pipeline.build(name=kw.pop("name", "p"), stages=stages, digest="0" * 64, **kw)


def demo() -> Pipeline:
    """tests/fixtures/demo's shape: words -> shout[k] -> measure[k] -> join."""
    words = ForEach.parse("words.words")
    return build(
        stage("words", timeout_s=45.0),
        stage("shout", "words", for_each=words, mode="async", max_concurrency=2, config={"suffix": "!"}),
        stage("measure", "shout", for_each=words, mode="async", timeout_s=2.0),
        stage("join", "measure", "shout"),
        name="demo",
        profiles={"loud": {"shout": {"suffix": "!!"}}},
    )


def sales() -> Pipeline:
    """examples/sales' shape: load -> (totals, region[each]) -> report."""
    retry = RetryPolicy(max_attempts=2, interval_s=1.0, backoff_rate=2.0, max_delay_s=30.0, jitter="full")
    return build(
        stage("load", retry=retry),
        stage("totals", "load", retry=retry),
        stage("region", "load", for_each=ForEach.parse("load.regions"), retry=retry),
        stage("report", "totals", "region", retry=retry),
        name="sales",
    )


def odd() -> Pipeline:
    """Names that are not Python identifiers, and a per-item diamond (b and c need a, d needs both, item by item)."""
    each = ForEach.parse("src.items")
    return build(
        stage("src"),
        stage("a-1", "src", for_each=each),
        stage("b", "a-1", for_each=each),
        stage("c", "a-1", for_each=each),
        stage("d", "b", "c", for_each=each),
        stage("class", "d"),
        name="odd-one",
    )


def decorators(source: str, kind: str) -> dict[str, dict[str, Any]]:
    """Each ``@kind(...)``-decorated function's literal keyword arguments (the others as source text)."""
    out: dict[str, dict[str, Any]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for d in node.decorator_list:
            if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == kind:
                kw: dict[str, Any] = {}
                for k in d.keywords:
                    try:
                        kw[str(k.arg)] = ast.literal_eval(k.value)
                    except ValueError:
                        kw[str(k.arg)] = ast.unparse(k.value)
                out[node.name] = kw
    return out


@pytest.mark.parametrize("make", [demo, sales, odd])
@pytest.mark.parametrize("export", [export_prefect, export_dagster], ids=["prefect", "dagster"])
def test_each_shape_exports_to_a_python_file(make: Any, export: Any) -> None:
    p = make()
    exported = export(p)
    compile(exported.source, "exported.py", "exec")
    kind = "task" if export is export_prefect else "op"
    named = {kw["name"] for kw in decorators(exported.source, kind).values() if "name" in kw}
    idents = plan(p).stage_ident
    assert {idents[n] if kind == "op" else n for n in p.order} <= named  # one task/op per stage
    rows = {r.feature: r.fidelity for r in exported.rows}
    assert rows["result cache"] == "none"
    assert rows["tolerated_failures"] == "exact"


def test_prefect_tasks_carry_fave_s_retry_timeout_and_tags() -> None:
    tasks = decorators(export_prefect(demo()).source, "task")
    shout = tasks["shout"]
    # demo: retry {max_attempts: 2, interval: 50ms, backoff_rate: 2, jitter: full}; shout's timeout is the default
    assert shout["retries"] == 2
    # fave's delays 0.05, 0.1 with full jitter: half each, and Prefect's jitter draws in [0, 2 x half]
    assert shout["retry_delay_seconds"] == [0.025, 0.05]
    assert shout["retry_jitter_factor"] == 1.0
    assert shout["retry_condition_fn"] == "_retry_if('shout')"
    assert shout["timeout_seconds"] == 20.0 and tasks["measure"]["timeout_seconds"] == 2.0
    assert shout["tags"] == ["fave", "fave:demo:shout"]


def test_dagster_ops_carry_a_retry_policy_and_the_stage_cap_is_a_tag_limit() -> None:
    source = export_dagster(sales()).source
    ops = decorators(source, "op")
    # sales: retry {max_attempts: 2, interval: 1s, backoff_rate: 2, max_delay: 30s, jitter: full}
    assert ops["region"]["retry_policy"] == (
        "RetryPolicy(max_retries=2, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.FULL)"
    )
    assert ops["region"]["tags"] == {"fave/stage": "region"}
    demo_source = export_dagster(demo()).source
    job = decorators(demo_source, "job")["demo"]
    assert "{'key': 'fave/stage', 'value': 'shout', 'limit': 2}" in job["executor_def"]
    assert "executor_def" not in decorators(source, "job")["sales"]  # no stage of sales is capped
    assert "shout_items__items(words_out).map(each_shout_items).collect()" in demo_source


def test_retry_delays_follow_fave_s_schedule() -> None:
    assert retry_delays(RetryPolicy(4, 1.0, 2.0, 3.0, "full")) == [1.0, 2.0, 3.0, 3.0]
    assert retry_delays(RetryPolicy(2, 0.5, 1.0, None, "none")) == [0.5, 0.5]
    assert retry_delays(RetryPolicy(0)) == []


def test_identifiers_are_python_names_and_unique() -> None:
    taken: set[str] = set()
    assert [identifier(n, taken) for n in ("my-stage", "my_stage", "1x", "class")] == [
        "my_stage",
        "my_stage_",
        "s_1x",
        "s_class",
    ]


def test_a_per_item_diamond_runs_in_series_within_an_item_and_says_so() -> None:
    fp = plan(odd())
    (group,) = [u for u in fp.units if u.per_item]
    assert group.stages == ("a-1", "b", "c", "d")
    assert any("one after another" in n for n in fp.notes)
    rows = {r.feature: r.fidelity for r in export_prefect(odd()).rows}
    assert rows["per-item chaining"] == "approximate"
    spec = fp.spec["stages"]
    assert spec["d"]["per_item"] == ["b", "c"] and spec["d"]["whole"] == {}
    assert spec["class"]["whole"] == {"d": [group.name, "d"]}  # a per-item unit's result: one list per stage
    assert fp.stage_ident["a-1"] == "a_1" and fp.stage_ident["class"] == "s_class"


def test_a_stage_named_like_the_runtime_does_not_shadow_it() -> None:
    p = build(stage("start"), stage("collect", "start"), name="collect")
    fp = plan(p)
    assert fp.stage_ident == {"start": "start_", "collect": "collect_"}
    for export in (export_prefect, export_dagster):
        compile(export(p).source, "exported.py", "exec")
