"""``fave run --dry-run`` (issue 14, requirement 4), through the real ``fave`` process: the input is checked as
``fave run`` checks it, then the plan (stages, expected invocations, MemorySize and Timeout from the template, a
cost range) is printed, and nothing runs or is stored: the ``--store`` folder does not exist afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fave.pricing import Prices
from support import e2e
from support.declared_input import demo_with_input

SAMPLE = str(e2e.ROOT / "tests" / "fixtures" / "scenes20.mp4")
DEMO = str(e2e.ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml")


def fave(*args: str, store: Path) -> e2e.Result:
    """``fave ARGS --store STORE`` from the repository root."""
    return e2e.fave(*args, "--store", str(store), timeout=120)


def refused(result: e2e.Result, store: Path, *needles: str) -> None:
    """Exit 2, one line naming the problem, nothing stored."""
    assert result.code == 2, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fave: error: "), result.describe()
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not store.exists()


def test_video_plan_with_items(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = fave("run", SAMPLE, "--query", "cars", "--dry-run", "--items", "4", "--json", store=store)
    assert result.code == 0, result.describe()
    assert not store.exists()
    doc = result.json
    assert doc["pipeline"] == "video" and doc["profile"] == "default"
    assert doc["input"]["query"] == "cars" and doc["input"]["video_uri"].endswith("scenes20.mp4")
    stages = {s["stage"]: s for s in doc["stages"]}
    assert list(stages) == ["normalize", "audio", "split", "extract", "transcribe", "detect", "aggregate"]
    assert {k: s["invocations"] for k, s in stages.items()} == {
        "normalize": 1,
        "audio": 1,
        "split": 1,
        "extract": 4,
        "transcribe": 4,
        "detect": 4,
        "aggregate": 1,
    }
    # template.yaml: NormalizeFunction 2048 MB, Timeout 900 s, capped by the stage's timeout: 10m
    assert (stages["normalize"]["memory_mb"], stages["normalize"]["timeout_s"]) == (2048, 600)
    assert stages["extract"]["mode"] == "async" and stages["extract"]["needs"] == ["split", "normalize"]
    prices = Prices()
    gb_s = 2048 / 1024 * 600 * 3  # three attempts (max_attempts: 2 retries) at the stage's timeout
    assert stages["normalize"]["cost_usd"]["high"] == pytest.approx(
        3 * prices.lambda_request + gb_s * prices.lambda_gb_second
    )
    total = doc["total_cost_usd"]
    assert total["complete"] is True
    assert total["low"] == pytest.approx(sum(s["cost_usd"]["low"] for s in doc["stages"]))
    assert total["high"] == pytest.approx(sum(s["cost_usd"]["high"] for s in doc["stages"]))
    assert 0 < total["low"] < total["high"]
    assert doc["assumptions"] and all(isinstance(a, str) for a in doc["assumptions"])


def test_demo_plan_without_items_is_a_lower_bound(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = fave("run", "--pipeline", DEMO, "--input", '{"text": "a b c"}', "--dry-run", store=store)
    assert result.code == 0, result.describe()
    assert not store.exists()
    out = result.stdout
    for stage, function in [("words", "WordsFunction"), ("shout", "ShoutFunction"), ("join", "JoinFunction")]:
        assert stage in out and function in out
    assert out.count("unknown (give --items N)") == 2  # shout and measure fan out over words' output
    assert "lower bound" in out and "orchestrator" in out

    doc = fave("run", "--pipeline", DEMO, "--input", '{"text": "a b c"}', "--dry-run", "--json", store=store).json
    assert [s["invocations"] for s in doc["stages"]] == [1, None, None, 1]
    assert doc["total_cost_usd"]["complete"] is False
    assert not store.exists()


def test_bad_input_is_refused_as_by_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    words = demo_with_input(tmp_path / "pipelines")
    refused(
        fave("run", "--pipeline", str(words), "--input", '{"text": "a", "txet": 1}', "--dry-run", store=store),
        store,
        "txet",
    )
    refused(fave("run", "--pipeline", str(words), "--input", '{"text": ""}', "--dry-run", store=store), store, "text")
    refused(fave("run", "--query", "cars", "--dry-run", store=store), store, "SOURCE", "video_uri")
    refused(fave("run", SAMPLE, "--profile", "nope", "--dry-run", store=store), store, "nope")


def test_usage_errors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    refused(fave("run", SAMPLE, "--dry-run", "--detach", store=store), store, "--detach")
    refused(fave("run", SAMPLE, "--dry-run", "--items", "-1", store=store), store, "--items")
    refused(fave("run", SAMPLE, "--items", "3", store=store), store, "--items", "--dry-run")
