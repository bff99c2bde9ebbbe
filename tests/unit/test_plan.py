"""``fave.plan`` (issue 14, requirement 4: ``fave run --dry-run``): the plan of the demo pipeline, built from its
pipeline.yaml and the MemorySize/Timeout its template gives each function, priced with ``fave.pricing``.

The demo (tests/fixtures/demo): words (sync, 1 task) -> shout and measure (fan-outs over words.words, async) ->
join (sync, 1 task); every function has 128 MB; Timeout 10 s (Globals), WordsFunction 45 s, MeasureFunction 5 s;
the stage timeouts are 20 s (defaults), words 45 s, measure 2 s; retry.max_attempts is 2 everywhere.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fave.core.dag import Pipeline
from fave.pipeline import load_pipeline
from fave.plan import LOW_DURATION_S, FunctionFacts, build_plan
from fave.pricing import Prices

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "pipeline.yaml"
FACTS = {
    "WordsFunction": FunctionFacts(memory_mb=128, timeout_s=45),
    "ShoutFunction": FunctionFacts(memory_mb=128, timeout_s=10),
    "MeasureFunction": FunctionFacts(memory_mb=128, timeout_s=5),
    "JoinFunction": FunctionFacts(memory_mb=128, timeout_s=10),
}
INPUT = {"text": "a b c"}


@pytest.fixture(scope="module")
def demo() -> Pipeline:
    return load_pipeline(DEMO, functions=set(FACTS))


def lambda_usd(prices: Prices, calls: int, seconds_each: float, memory_mb: int) -> float:
    """Requests + GB-seconds, written out from the price fields (not through ``Prices.lambda_cost``)."""
    return calls * prices.lambda_request + calls * seconds_each * memory_mb / 1024 * prices.lambda_gb_second


def test_stages_in_order_with_counts_memory_and_timeouts(demo: Pipeline) -> None:
    plan = build_plan(demo, FACTS, Prices(), request_input=INPUT, items=3)
    rows = [(s.stage, s.function, s.mode, s.needs, s.invocations, s.memory_mb, s.timeout_s) for s in plan.stages]
    assert rows == [
        ("words", "WordsFunction", "sync", (), 1, 128, 45),
        ("shout", "ShoutFunction", "async", ("words",), 3, 128, 10),  # stage 20 s, but Lambda stops it at 10 s
        ("measure", "MeasureFunction", "async", ("shout",), 3, 128, 2),  # the stage's own 2 s
        ("join", "JoinFunction", "sync", ("measure", "shout"), 1, 128, 10),
    ]
    assert [s.fan_out for s in plan.stages] == [None, "words.words", "words.words", None]
    assert {s.max_attempts for s in plan.stages} == {2}
    assert plan.pipeline == "demo" and plan.profile == "default" and plan.complete


def test_costs_from_fave_pricing(demo: Pipeline) -> None:
    prices = Prices()
    plan = build_plan(demo, FACTS, prices, request_input=INPUT, items=3)
    by = {s.stage: s for s in plan.stages}
    # low: one attempt per task at 100 ms; high: 3 attempts (1 + 2 retries) per task, each at its timeout
    assert by["words"].cost_low == pytest.approx(lambda_usd(prices, 1, LOW_DURATION_S, 128))
    assert by["words"].cost_high == pytest.approx(lambda_usd(prices, 3, 45, 128))
    assert by["shout"].cost_low == pytest.approx(lambda_usd(prices, 3, LOW_DURATION_S, 128))
    assert by["shout"].cost_high == pytest.approx(lambda_usd(prices, 9, 10, 128))
    assert by["measure"].cost_high == pytest.approx(lambda_usd(prices, 9, 2, 128))
    assert by["join"].cost_high == pytest.approx(lambda_usd(prices, 3, 10, 128))
    assert plan.total_low == pytest.approx(lambda_usd(prices, 8, LOW_DURATION_S, 128))
    assert plan.total_high == pytest.approx(
        lambda_usd(prices, 3, 45, 128)
        + lambda_usd(prices, 9, 10, 128)
        + lambda_usd(prices, 9, 2, 128)
        + lambda_usd(prices, 3, 10, 128)
    )
    assert 0 < plan.total_low < plan.total_high


def test_prices_are_the_given_table(demo: Pipeline) -> None:
    # requests only: the high end is 24 calls (3 + 9 + 9 + 3 attempts), the low end 8 tasks
    requests_only = Prices(lambda_request=1.0, lambda_gb_second=0.0)
    plan = build_plan(demo, FACTS, requests_only, request_input=INPUT, items=3)
    assert (plan.total_low, plan.total_high) == (8.0, 24.0)
    # duration only: GB-seconds of the high end = 128 MB x (3 x 45 s + 9 x 10 s + 9 x 2 s + 3 x 10 s)
    seconds_only = Prices(lambda_request=0.0, lambda_gb_second=1.0)
    plan = build_plan(demo, FACTS, seconds_only, request_input=INPUT, items=3)
    assert plan.total_high == pytest.approx(0.125 * (135 + 90 + 18 + 30))
    assert plan.total_low == pytest.approx(0.125 * 8 * LOW_DURATION_S)


def test_unknown_fan_out_is_a_lower_bound(demo: Pipeline) -> None:
    prices = Prices()
    plan = build_plan(demo, FACTS, prices, request_input=INPUT)
    assert [s.invocations for s in plan.stages] == [1, None, None, 1]
    assert [(s.cost_low, s.cost_high) for s in plan.stages[1:3]] == [(None, None), (None, None)]
    assert not plan.complete
    assert plan.total_high == pytest.approx(lambda_usd(prices, 3, 45, 128) + lambda_usd(prices, 3, 10, 128))
    assert any("lower bound" in a for a in plan.assumptions)
    doc = plan.as_json()
    assert doc["total_cost_usd"]["complete"] is False
    assert doc["stages"][1]["invocations"] is None and doc["stages"][1]["cost_usd"] == {"low": None, "high": None}


def test_retries_and_empty_fan_out(demo: Pipeline) -> None:
    prices = Prices()
    no_retry = replace(demo.stages["words"].retry, max_attempts=0)
    pipeline = replace(demo, stages={**demo.stages, "words": replace(demo.stages["words"], retry=no_retry)})
    plan = build_plan(pipeline, FACTS, prices, request_input=INPUT, items=0)
    by = {s.stage: s for s in plan.stages}
    assert by["words"].cost_high == pytest.approx(lambda_usd(prices, 1, 45, 128))
    assert by["shout"].invocations == 0 and by["shout"].cost_high == 0
    assert plan.complete


def test_selection_and_json_shape(demo: Pipeline) -> None:
    plan = build_plan(demo, FACTS, Prices(), request_input={**INPUT, "profile": "loud"}, items=2, stages=["words"])
    doc = plan.as_json()
    assert set(doc) == {"pipeline", "input", "profile", "stages", "total_cost_usd", "assumptions"}
    assert doc["profile"] == "loud" and doc["input"] == {**INPUT, "profile": "loud"}
    assert [s["stage"] for s in doc["stages"]] == ["words"]
    assert set(doc["stages"][0]) >= {
        "stage",
        "function",
        "mode",
        "needs",
        "invocations",
        "memory_mb",
        "timeout_s",
        "max_attempts",
        "cost_usd",
    }
    with pytest.raises(ValueError, match="items"):
        build_plan(demo, FACTS, Prices(), request_input=INPUT, items=-1)
