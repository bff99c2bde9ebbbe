"""Metrics (CloudWatch EMF on stdout) and logs (correlation id = the fave request id) of the function."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fave.app.observability import logger
from support.app_lambda import OrchestratorLambda


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the Powertools logger writes, formatted by its own formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logger.registered_formatter)
    logging.getLogger(logger.name).addHandler(handler)
    try:
        yield out
    finally:
        logging.getLogger(logger.name).removeHandler(handler)


def emf_documents(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def metric_totals(docs: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "fave"
            for metric in directive["Metrics"]:
                values = doc[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(
                    values if isinstance(values, list) else [values]
                )
    return totals


def test_a_run_publishes_emf_metrics_and_logs_with_the_request_id(
    orchestrator_lambda: OrchestratorLambda, capsys: pytest.CaptureFixture[str], log_lines: io.StringIO
) -> None:
    lam = orchestrator_lambda
    code, body, _ = lam.http(
        "http-start.json",
        body={"video_uri": lam.source_uri, "extra": {"text": "one two three"}},
        without_headers=("idempotency-key",),
    )
    assert code == 202
    request_id = body["request_id"]
    assert lam.wait(request_id)["status"] == "COMPLETED"
    lam.close()  # every destination invocation has returned (and published)

    docs = emf_documents(capsys.readouterr().out)
    totals = metric_totals(docs)
    # words + 3 shouts + 3 measures + join, each dispatched and succeeded once
    assert totals["TasksDispatched"] == 8
    assert totals["TasksSucceeded"] == 8
    assert totals["RequestsStarted"] == 1 and totals["RequestsCompleted"] == 1
    durations = {d["stage"]: d["StageDuration"] for d in docs if "StageDuration" in d}
    assert set(durations) == {"words", "shout", "measure", "join"}
    assert all(len(v) == 1 and v[0] >= 0 for v in durations.values())

    records = [json.loads(line) for line in log_lines.getvalue().splitlines() if line.startswith("{")]
    started = [r for r in records if r["message"] == "request accepted"]
    assert started and started[0]["correlation_id"] == request_id
    assert started[0]["function_name"] == "fave-OrchestratorFunction-test"


def test_retries_and_failures_are_counted(
    orchestrator_lambda: OrchestratorLambda, capsys: pytest.CaptureFixture[str]
) -> None:
    lam = orchestrator_lambda
    _, body, _ = lam.http(
        "http-start.json",
        body={"video_uri": lam.source_uri, "extra": {"text": "bad", "fail": {"bad": 9}}},
        without_headers=("idempotency-key",),
    )
    assert lam.wait(body["request_id"], tick=True)["status"] == "FAILED"
    lam.close()
    totals = metric_totals(emf_documents(capsys.readouterr().out))
    assert totals["TasksRetried"] == 2  # retry.max_attempts 2, then the third failure is final
    assert totals["TasksFailed"] == 1 and totals["RequestsFailed"] == 1
