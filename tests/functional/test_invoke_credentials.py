"""Missing AWS credentials are a terminal error, not three retries (issue 11, requirement 7).

An orchestrator whose ``LambdaInvoker`` cannot sign its calls (a real botocore Lambda client in an environment
with no credentials anywhere: no variables, no files, no instance metadata) fails the task on its first attempt
with a message that says so, for a synchronous and an asynchronous stage alike, although the stage's retry
policy allows two retries: signing would fail the same way every time."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from fave.core.model import RequestStatus
from fave.invoke import LambdaInvoker
from fave.service import Orchestrator
from fave.status import stage_page, status_document
from fave_shared.store import LocalStore
from support.pipelines import make_pipeline

_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CREDENTIAL_EXPIRATION",
)


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_credentials")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_missing_credentials_fail_the_task_on_its_first_attempt(tmp_path: Path, mode: str) -> None:
    client = boto3.session.Session(region_name="us-east-1").client(
        "lambda", endpoint_url="http://127.0.0.1:9", config=Config(retries={"total_max_attempts": 1})
    )
    invoker = LambdaInvoker(client, {"Echo": "fave-echo"})
    pipeline = make_pipeline(
        {
            "name": "unsigned",
            "defaults": {"retry": {"max_attempts": 2, "interval": "10ms"}},  # two retries allowed
            "stages": {"echo": {"function": "Echo", "mode": mode}},
        }
    )
    store = LocalStore(tmp_path / "store")
    orchestrator = Orchestrator(pipeline, store, invoker)
    try:
        state = orchestrator.create({"x": 1})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()
    assert state.status is RequestStatus.FAILED
    (row,) = stage_page(store, state.request_id, "echo")["items"]
    assert (row["status"], row["attempts"], row["error_type"]) == ("FAILED", 1, "TerminalInvocationError")
    assert "no AWS credentials" in row["error"] and "Unable to locate credentials" in row["error"]
    assert "after 1 attempt" in status_document(store, state.request_id)["failure"]
