"""The HTTP API of the orchestrator function: real handler, events/ samples, the tier's S3, real stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fave.keys import state_key
from fave.persistence import list_request_ids
from fave.service import Orchestrator
from support.app_lambda import OrchestratorLambda
from support.declared_input import demo_with_input, serve, video_input
from support.demo import TEXT
from support.tiers import Tier

WORDS = TEXT.split()


SOURCE = "s3://SOURCE"
"""Stands for the tier's allowed source (``lam.source_uri``) in bodies built before a test has its lambda."""


def start_body(text: str = TEXT, **fields: Any) -> dict[str, Any]:
    return {"video_uri": SOURCE, "extra": {"text": text}, **fields}


def send(lam: OrchestratorLambda, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /requests with ``SOURCE`` replaced by the tier's allowed source, and ``{bucket}`` / ``{prefix}`` in
    a ``video_uri`` by the tier's bucket and key prefix."""
    bucket, _, rest = lam.source_uri.removeprefix("s3://").partition("/")
    prefix = rest.removesuffix("inputs/a.mp4")
    if isinstance(body, dict) and isinstance(body.get("video_uri"), str):
        uri = lam.source_uri if body["video_uri"] == SOURCE else body["video_uri"]
        body = {**body, "video_uri": uri.replace("{bucket}", bucket).replace("{prefix}", prefix)}
    elif isinstance(body, str):
        body = body.replace(SOURCE, lam.source_uri)
    return lam.http("http-start.json", body=body, **kwargs)


def test_start_records_the_request_and_its_first_step_runs_in_another_invocation(
    orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    lam = orchestrator_lambda
    lam.hold()  # nothing asynchronous comes back: the state is exactly what the first step made
    code, body, headers = send(lam, start_body(), without_headers=("idempotency-key",))

    assert code == 202, body
    request_id = body["request_id"]
    assert body["status"] == "INIT" and body["replayed"] is False  # accepted; no stage ran in this invocation
    assert body["status_url"].endswith(f"/requests/{request_id}") and body["status_url"].startswith("https://")
    assert headers["Location"] == body["status_url"]
    assert lam.kicks == 1  # the first step was handed to an asynchronous invocation of the function
    lam.settle()
    doc = json.loads(tier.client.get_object(Bucket=tier.bucket, Key=tier.prefix + state_key(request_id))["Body"].read())
    assert doc["input"]["video_uri"] == lam.source_uri
    assert doc["input"]["query"] == "find the words"  # FAVE_DEFAULT_QUERY
    # words is synchronous: it ran inside the step invocation; shout (async, max_concurrency 2) was dispatched.
    assert doc["stages"]["words"]["status"] == "SUCCEEDED"
    assert doc["stages"]["shout"] == {**doc["stages"]["shout"], "status": "RUNNING", "running": 2, "total": 9}
    assert lam.invocations("WordsFunction") == 1
    assert len(lam.take(2)) == 2  # the two shout invocations really ran
    assert lam.invocations("ShoutFunction") == 2


def test_a_request_runs_to_completion_and_get_returns_the_final_result(
    orchestrator_lambda: OrchestratorLambda,
) -> None:
    lam = orchestrator_lambda
    code, body, _ = send(lam, start_body(profile="loud"), headers={"Idempotency-Key": "run-1"})
    assert code == 202, body
    doc = lam.wait(body["request_id"])
    assert doc["status"] == "COMPLETED", doc
    assert doc["final"]["text"] == " ".join(w.upper() + "!!" for w in WORDS)
    assert doc["stages"]["measure"]["succeeded"] == len(WORDS)
    assert lam.invocations("JoinFunction") == 1


def test_idempotency_key_returns_the_same_request(orchestrator_lambda: OrchestratorLambda) -> None:
    lam = orchestrator_lambda
    lam.hold()
    key = {"Idempotency-Key": "7c1e2f9a-same"}
    first = send(lam, start_body(), headers=key)
    # The same body written differently (another key order) is the same request.
    again = send(lam, json.dumps(start_body(), sort_keys=True, indent=1), headers=key)
    assert first[0] == again[0] == 202
    assert again[1]["request_id"] == first[1]["request_id"]
    assert again[1]["replayed"] is True and again[2].get("Idempotent-Replayed") == "true"
    assert list_request_ids(lam.store) == [first[1]["request_id"]]
    lam.settle()
    assert lam.invocations("WordsFunction") == 1  # the replay started nothing

    code, body, _ = send(lam, start_body("other words"), headers=key)
    assert code == 422
    assert "Idempotency-Key" in body["message"] and first[1]["request_id"] in body["message"]
    assert list_request_ids(lam.store) == [first[1]["request_id"]]


def test_a_crash_after_the_idempotency_record_is_completed_by_the_retry(
    orchestrator_lambda: OrchestratorLambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    lam = orchestrator_lambda
    lam.hold()
    real_create = Orchestrator.create
    crashes = []

    def crash_once(self: Orchestrator, *args: Any, **kwargs: Any) -> Any:
        if not crashes:
            crashes.append(kwargs.get("request_id"))
            raise RuntimeError("the execution environment died")
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(Orchestrator, "create", crash_once)
    key = {"Idempotency-Key": "crash-test"}
    with pytest.raises(RuntimeError, match="died"):
        send(lam, start_body(), headers=key)
    assert list_request_ids(lam.store) == []  # the record exists, the request does not

    code, body, _ = send(lam, start_body(), headers=key)
    assert code == 202
    assert body["request_id"] == crashes[0]  # the id the record holds, not a new one
    assert list_request_ids(lam.store) == [crashes[0]]
    lam.settle()
    assert lam.status(crashes[0])["stages"]["words"]["status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "cars"}, "video_uri"),
        ({"video_uri": "/etc/passwd"}, "video_uri"),
        ({"video_uri": SOURCE, "profile": "nope"}, "profile"),
        ({"video_uri": "s3://b/k.mp4", "qeury": "cars"}, "qeury"),
        ({"video_uri": "s3://b/k.mp4", "query": 7}, "query"),
        ({"video_uri": "s3://b/k.mp4", "extra": {"profile": "loud"}}, "extra"),
        ("{not json", "body"),
        # Sources outside this bucket's allowed prefixes (requirement: least privilege per request).
        ({"video_uri": "s3://other-bucket/{prefix}inputs/a.mp4"}, "video_uri"),
        ({"video_uri": "s3://{bucket}/{prefix}requests/01M7Q5CQG08V1KSN1NN13VDKQ9/metadata/state.json"}, "video_uri"),
        ({"video_uri": "s3://{bucket}/{prefix}idempotency/x.json"}, "video_uri"),
        ({"video_uri": "s3://{bucket}/{prefix}inputs/"}, "video_uri"),
        ({"video_uri": "s3://{bucket}/{prefix}inputs/../requests/x/metadata/state.json"}, "video_uri"),
        ({"video_uri": "s3://{bucket}/{prefix}inputs/a\u0000.mp4"}, "video_uri"),
        ({"video_uri": "s3://{bucket}/{prefix}inputs/a\u0007b.mp4"}, "video_uri"),
        ({"video_uri": "s3://{bucket}/{prefix}inputs/" + "x" * 1100 + ".mp4"}, "video_uri"),
    ],
)
def test_bad_start_requests_get_400_naming_the_field(
    orchestrator_lambda: OrchestratorLambda, tier: Tier, tmp_path: Path, body: Any, field: str
) -> None:
    # The demo's stages behind the video pipeline's declared input (video_uri required, query, profile).
    serve(orchestrator_lambda, tier, demo_with_input(tmp_path, *video_input()))
    code, response, _ = send(orchestrator_lambda, body)
    assert code == 400, response
    assert field in response["message"]
    assert list_request_ids(orchestrator_lambda.store) == []


def test_the_video_body_is_the_video_pipelines_input(
    orchestrator_lambda: OrchestratorLambda, tier: Tier, tmp_path: Path
) -> None:
    lam = orchestrator_lambda
    serve(lam, tier, demo_with_input(tmp_path, *video_input()))
    lam.hold()
    code, body, _ = send(lam, {"video_uri": SOURCE, "query": "cars", "profile": "loud"})
    assert code == 202, body
    doc = json.loads(lam.store.get(state_key(body["request_id"])).data)
    assert doc["input"] == {"video_uri": lam.source_uri, "query": "cars", "profile": "loud"}


def test_bad_idempotency_key_is_a_400(orchestrator_lambda: OrchestratorLambda) -> None:
    code, body, _ = send(orchestrator_lambda, start_body(), headers={"Idempotency-Key": "x" * 300})
    assert code == 400 and "Idempotency-Key" in body["message"]


@pytest.mark.parametrize("sample", ["http-status.json", "http-resume.json", "http-cancel.json"])
def test_unknown_ids_are_404_and_malformed_ids_400(orchestrator_lambda: OrchestratorLambda, sample: str) -> None:
    code, body, _ = orchestrator_lambda.http(sample)  # the sample's id names no request in this store
    assert code == 404 and "no request" in body["message"]
    code, body, _ = orchestrator_lambda.http(sample, request_id="..%2F..%2Fetc")
    assert code == 400 and "request_id" in body["message"]


def test_cancel_then_resume(orchestrator_lambda: OrchestratorLambda) -> None:
    lam = orchestrator_lambda
    lam.hold()
    request_id = lam.start(TEXT)
    lam.take(2)

    code, doc, _ = lam.http("http-cancel.json", request_id=request_id)
    assert code == 200 and doc["status"] == "CANCELLED" and doc["cancel_reason"] == "wrong video"
    assert doc["queued"] is False  # the request was free: cancelled at once
    code, body, _ = lam.http("http-cancel.json", request_id=request_id)
    assert code == 409 and "CANCELLED" in body["message"]

    kicks = lam.kicks
    code, doc, _ = lam.http("http-resume.json", request_id=request_id)
    # Accepted, not applied: resuming dispatches stage work, which the kicked step invocation does.
    assert code == 202 and doc["status"] == "CANCELLED" and doc["queued"] is True
    assert doc["status_url"].endswith(f"/requests/{request_id}")
    assert lam.kicks == kicks + 1
    lam.settle()
    assert lam.status(request_id)["status"] == "RUNNING"
    resumed = lam.take(2)  # the cancelled shouts were dispatched again
    assert lam.invocations("ShoutFunction") == 4

    lam.holding = False  # from here on the destinations come back by themselves
    for envelope in resumed:
        lam.deliver(envelope)
    done = lam.wait(request_id)
    # The two shouts of the first run were held and never delivered; the resumed run finished alone.
    assert done["status"] == "COMPLETED", done
    code, body, _ = lam.http("http-resume.json", request_id=request_id)
    assert code == 409 and "COMPLETED" in body["message"]
