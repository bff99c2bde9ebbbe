"""``fave export --format prefect`` verified by running (issue 15, requirements 1 and 2): the exported flow runs on
Prefect (.venv-prefect, a temporary local server started by the test) with its stages called through fave's local
runtime (FAVE_EXPORT_CALL=local: ``fave invoke`` over the pipeline's own template.yaml), so the SAME stage functions
run; the flow's answer must equal ``fave run``'s final.json for the same request, and a stage that fails after its
retries (or returns a terminal error) must fail the flow naming that stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.demo import MEASURE_2S, demo_variant
from support.engines import (
    DEMO,
    KEYED,
    SALES,
    assert_gives_fave_run_s_output,
    engine_python,
    export_file,
    fave_run,
    prefect_server,
    run_exported,
)

ROOMY_MEASURE = "mode: async, timeout: 20s}"
"""measure's 2 s timeout (fave's own timeout tests) raised: a ``fave invoke`` process per task can take that long to
start under load."""


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engine_python("prefect")  # skips the module's tests, saying why, when .venv-prefect is missing
    with prefect_server(tmp_path_factory.mktemp("prefect") / "home") as url:
        yield url


def run_flow(pipeline: Path, request: dict[str, Any], tmp: Path, api_url: str) -> Any:
    report = export_file("prefect", pipeline, tmp / "flow.py")
    assert {r["feature"]: r["mapping"] for r in report["mapping"]}["for_each fan-out"] == "exact"
    return run_exported(
        "prefect", tmp / "flow.py", request, tmp / "flow-store",
        extra_env={"PREFECT_API_URL": api_url, "PREFECT_HOME": str(tmp / "home")},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("pipeline", "request_", "profile"),
    [
        # bb fails its first attempt: Prefect's retry runs it again and join reports the attempts it saw.
        pytest.param(DEMO, {"text": "a bb ccc", "fail": {"bb": 1}}, "loud", id="demo-retry-loud"),
        pytest.param(SALES / "pipeline.yaml", {"source": str(SALES / "data" / "sales.csv")}, "default", id="sales"),
        # One failed item tolerated: None at its position for join, and the flow still ends with join's output.
        pytest.param(KEYED, {"entries": [{"id": "a", "text": "x"}, {"id": "b", "fail": True}, {"id": "c"}]},
                     "default", id="keyed-one-failure-tolerated"),
    ],
)  # fmt: skip
def test_the_flow_gives_fave_run_s_final_output(
    pipeline: Path, request_: dict[str, Any], profile: str, tmp_path: Path, api_url: str
) -> None:
    if pipeline == DEMO:  # measure's 2 s timeout, not a Prefect worker's start-up under load, is tested elsewhere
        pipeline = demo_variant(tmp_path / "pipeline", (MEASURE_2S, ROOMY_MEASURE))
    state, final = fave_run(pipeline, request_, tmp_path / "fave", profile)
    assert state["status"] == "COMPLETED" and final is not None
    ran = run_flow(pipeline, state["input"], tmp_path, api_url)
    assert_gives_fave_run_s_output(ran, final, pipeline, request_)


@pytest.mark.parametrize(
    ("request_", "said", "retried"),
    [
        pytest.param({"text": "a bb", "fail": {"bb": 9}},
                     "stage shout failed: ValueError: shout refused 'bb' on attempt 3",
                     True, id="retries-used-up"),
        pytest.param({"text": "a bb", "bad_word": "bb"}, "stage shout failed: TerminalError: 'bb' can never be shouted",
                     False, id="terminal-no-retry"),
    ],
)  # fmt: skip
def test_a_stage_that_keeps_failing_fails_the_flow_naming_it(
    request_: dict[str, Any], said: str, retried: bool, tmp_path: Path, api_url: str
) -> None:
    demo = demo_variant(
        tmp_path / "pipeline", (MEASURE_2S, ROOMY_MEASURE)
    )  # item a's measure must not time out first under load
    state, final = fave_run(demo, request_, tmp_path / "fave")
    assert state["status"] == "FAILED" and final is None
    ran = run_flow(demo, state["input"], tmp_path, api_url)
    assert ran.code == 1
    assert f"fave export: the flow failed: {said}" in ran.stderr
    assert ("Retry 2/2" in ran.stderr) is retried  # Prefect's own log of its retries


def test_more_failed_items_than_tolerated_fail_the_flow(tmp_path: Path, api_url: str) -> None:
    request = {"entries": [{"id": "p", "text": "1"}, {"id": "q", "fail": True}, {"id": "r", "fail": True}]}
    state, final = fave_run(KEYED, request, tmp_path / "fave")
    assert state["status"] == "FAILED" and final is None
    ran = run_flow(KEYED, state["input"], tmp_path, api_url)
    assert ran.code == 1
    assert "fave export: the flow failed: stage work failed: TerminalError: entry q refused" in ran.stderr
