"""``fave export --format dagster`` verified by running (issue 15, requirements 1 and 2): the exported job runs on
Dagster (.venv-dagster, ``execute_in_process``) with its stages called through fave's local runtime
(FAVE_EXPORT_CALL=local: ``fave invoke`` over the pipeline's own template.yaml), so the SAME stage functions run;
the job's answer must equal ``fave run``'s final.json for the same request, and a stage that fails after its
retries (or returns a terminal error) must fail the run naming that stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.engines import (
    DEMO,
    KEYED,
    SALES,
    assert_gives_fave_run_s_output,
    engine_python,
    export_file,
    fave_run,
    local_lambda_api,
    run_exported,
)


def run_job(pipeline: Path, request: dict[str, Any], tmp: Path) -> Any:
    engine_python("dagster")
    report = export_file("dagster", pipeline, tmp / "job.py")
    assert {r["feature"]: r["mapping"] for r in report["mapping"]}["for_each fan-out"] == "exact"
    return run_exported("dagster", tmp / "job.py", request, tmp / "job-store")


@pytest.mark.parametrize(
    ("pipeline", "request_", "profile"),
    [
        pytest.param(DEMO, {"text": "a bb ccc", "fail": {"bb": 1}}, "loud", id="demo-retry-loud"),
        # No item: the DynamicOut yields nothing, collect() still gives join empty lists.
        pytest.param(DEMO, {"text": ""}, "default", id="demo-no-item"),
        pytest.param(SALES / "pipeline.yaml", {"source": str(SALES / "data" / "sales.csv")}, "default", id="sales"),
        # One failed item tolerated: None at its position for join, and the run still ends with join's output.
        pytest.param(KEYED, {"entries": [{"id": "a", "text": "x"}, {"id": "b", "fail": True}, {"id": "c"}]},
                     "default", id="keyed-one-failure-tolerated"),
    ],
)  # fmt: skip
def test_the_job_gives_fave_run_s_final_output(
    pipeline: Path, request_: dict[str, Any], profile: str, tmp_path: Path
) -> None:
    state, final = fave_run(pipeline, request_, tmp_path / "fave", profile)
    assert state["status"] == "COMPLETED" and final is not None
    assert_gives_fave_run_s_output(run_job(pipeline, state["input"], tmp_path), final, pipeline, request_)


@pytest.mark.parametrize(
    ("request_", "said", "attempts"),
    [
        pytest.param({"text": "a bb", "fail": {"bb": 9}},
                     "stage shout failed: ValueError: shout refused 'bb' on attempt 3",
                     3, id="retries-used-up"),
        pytest.param({"text": "a bb", "bad_word": "bb"}, "stage shout failed: TerminalError: 'bb' can never be shouted",
                     1, id="terminal-no-retry"),
    ],
)  # fmt: skip
def test_a_stage_that_keeps_failing_fails_the_run_naming_it(
    request_: dict[str, Any], said: str, attempts: int, tmp_path: Path
) -> None:
    state, final = fave_run(DEMO, request_, tmp_path / "fave")
    assert state["status"] == "FAILED" and final is None
    ran = run_job(DEMO, state["input"], tmp_path)
    assert ran.code == 1
    assert f"fave export: the job failed: {said}" in ran.stderr
    # Dagster logs one STEP_FAILURE or STEP_UP_FOR_RETRY per attempt of shout's item 1
    tries = ran.stderr.count("shout[1] - STEP_UP_FOR_RETRY") + ran.stderr.count("shout[1] - STEP_FAILURE")
    assert tries == attempts


def test_more_failed_items_than_tolerated_fail_the_run(tmp_path: Path) -> None:
    request = {"entries": [{"id": "p", "text": "1"}, {"id": "q", "fail": True}, {"id": "r", "fail": True}]}
    state, final = fave_run(KEYED, request, tmp_path / "fave")
    assert state["status"] == "FAILED" and final is None
    ran = run_job(KEYED, state["input"], tmp_path)
    assert ran.code == 1
    assert "fave export: the job failed: stage work failed: TerminalError: entry q refused" in ran.stderr


def test_the_lambda_caller_invokes_the_functions_through_lambda_s_invoke_api(tmp_path: Path) -> None:
    """FAVE_EXPORT_CALL=lambda (the default): boto3's Invoke of the ARNs given by --functions, here answered by
    fave's local Lambda API (AWS_ENDPOINT_URL_LAMBDA) over the demo's template; a retried failure included."""
    import json

    engine_python("dagster")
    state, final = fave_run(DEMO, {"text": "a bb", "fail": {"bb": 1}}, tmp_path / "fave")
    assert final is not None and final["attempts"] == [1, 2]
    export_file("dagster", DEMO, tmp_path / "job.py")
    with local_lambda_api(DEMO) as (env, functions):
        ran = run_exported(
            "dagster", tmp_path / "job.py", state["input"], tmp_path / "job-store",
            extra_env=env, args=("--functions", json.dumps(functions)),
        )  # fmt: skip
    assert ran.code == 0, ran.stderr[-3000:]
    assert ran.output == final
