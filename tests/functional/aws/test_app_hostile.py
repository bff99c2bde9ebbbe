"""Hostile input to the orchestrator function gets a clear answer and changes nothing else.

HTTP bodies that Powertools would turn into a 500 (bad base64, bytes that are not UTF-8, JSON nested 100,000
deep), events with no HTTP method, bodies over the cap; S3 records that are truncated, in another bucket or
with keys at S3's length limit; a state.json that cannot be read. Each case: the answer, and the store
unchanged (or only the bad request affected).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from fave.app.http_guard import MAX_BODY_BYTES, MAX_JSON_DEPTH
from fave.keys import state_key
from fave.persistence import list_request_ids
from support.app_lambda import OrchestratorLambda
from support.events import http_event, s3_upload_event, tick_event
from support.tiers import Tier


def objects(tier: Tier) -> list[str]:
    listed = tier.client.list_objects_v2(Bucket=tier.bucket, Prefix=tier.prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def raw_start(lam: OrchestratorLambda, body: str, *, base64_encoded: bool = False) -> tuple[int, dict[str, Any]]:
    event = http_event("http-start.json", without_headers=("idempotency-key",))
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    response = lam.invoke(event)
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (("[" * 100_000 + "]" * 100_000, False), 400, f"nested deeper than {MAX_JSON_DEPTH}"),
        (('{"video_uri": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", False), 400, "nested deeper"),
        (("not base64 at all!", True), 400, "not valid base64"),
        ((base64.b64encode(b'{"video_uri": "\xff\xfe"}').decode(), True), 400, "not valid UTF-8"),
        (("x" * (MAX_BODY_BYTES + 1), False), 413, f"larger than {MAX_BODY_BYTES}"),
        ((base64.b64encode(b" " * (MAX_BODY_BYTES + 1)).decode(), True), 413, f"larger than {MAX_BODY_BYTES}"),
    ],
    ids=["100k-deep", "deep-field", "bad-base64", "not-utf8", "over-cap", "over-cap-base64"],
)
def test_bodies_that_would_crash_the_router_are_refused(
    orchestrator_lambda: OrchestratorLambda, tier: Tier, body: tuple[str, bool], status: int, says: str
) -> None:
    text, base64_encoded = body
    code, response = raw_start(orchestrator_lambda, text, base64_encoded=base64_encoded)
    assert code == status and says in response["message"], response
    assert objects(tier) == []


def test_an_extra_over_the_cap_is_a_413_and_a_base64_body_within_it_works(
    orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    lam = orchestrator_lambda
    lam.hold()
    big = {"video_uri": lam.source_uri, "extra": {"text": "a b", "blob": "x" * MAX_BODY_BYTES}}
    code, response = raw_start(lam, json.dumps(big))
    assert code == 413 and "body" in response["message"]
    assert objects(tier) == []
    good = {"video_uri": lam.source_uri, "extra": {"text": "a b"}}
    code, response = raw_start(lam, base64.b64encode(json.dumps(good).encode()).decode(), base64_encoded=True)
    assert code == 202, response
    assert list_request_ids(lam.store) == [response["request_id"]]


@pytest.mark.parametrize("where", ["no-http", "no-method", "method-not-a-string"])
def test_an_http_event_without_a_method_is_a_400(orchestrator_lambda: OrchestratorLambda, where: str) -> None:
    event = http_event("http-status.json")
    if where == "no-http":
        del event["requestContext"]["http"]
    elif where == "no-method":
        del event["requestContext"]["http"]["method"]
    else:
        event["requestContext"]["http"]["method"] = 7
    response = orchestrator_lambda.invoke(event)
    assert response["statusCode"] == 400
    assert "requestContext.http.method" in json.loads(response["body"])["message"]


# ---- S3 events ----------------------------------------------------------------------------------------------


def test_malformed_and_foreign_records_are_skipped_and_the_good_one_starts(
    orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    lam = orchestrator_lambda
    lam.hold()
    key = tier.upload_prefix + "good.mp4"
    tier.client.put_object(Bucket=tier.bucket, Key=key, Body=b"video")
    good = s3_upload_event(tier.bucket, key)["Records"][0]
    numeric = json.loads(json.dumps(good))
    numeric["s3"]["object"]["key"] = 12345
    no_bucket = json.loads(json.dumps(good))
    del no_bucket["s3"]["bucket"]["name"]
    no_object = json.loads(json.dumps(good))
    del no_object["s3"]["object"]
    other_bucket = s3_upload_event("someone-elses-bucket", key)["Records"][0]
    no_name = {k: v for k, v in good.items() if k != "eventName"}
    event = {"Records": [numeric, no_bucket, no_object, other_bucket, no_name, "not a record", good]}
    for record in event["Records"][:-1]:
        if isinstance(record, dict):
            record["eventSource"] = "aws:s3"

    result = lam.invoke(event)

    assert [s["object"] for s in result["started"]] == [f"s3://{tier.bucket}/{key}"]
    reasons = [s["reason"] for s in result["skipped"]]
    assert len(reasons) == 6, reasons
    assert sum("malformed record" in r for r in reasons) == 5
    assert any("someone-elses-bucket is not this service's bucket" in r for r in reasons)
    assert len(list_request_ids(lam.store)) == 1


def test_an_upload_key_at_s3s_length_limit_starts_a_request(
    orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    lam = orchestrator_lambda
    lam.hold()
    name = "v" * (1024 - len(tier.upload_prefix.encode()) - 4) + ".mp4"
    key = tier.upload_prefix + name
    assert len(key.encode()) == 1024  # no room for a sidecar name: metadata and defaults apply
    tier.client.put_object(Bucket=tier.bucket, Key=key, Body=b"video", Metadata={"fave-query": "long"})
    result = lam.invoke(s3_upload_event(tier.bucket, key))
    assert result["skipped"] == [] and len(result["started"]) == 1
    request_id = result["started"][0]["request_id"]
    doc = json.loads(lam.store.get(state_key(request_id)).data)
    assert doc["input"]["video_uri"] == f"s3://{tier.bucket}/{key}" and doc["input"]["query"] == "long"


def test_a_sidecar_over_the_cap_rejects_its_upload(orchestrator_lambda: OrchestratorLambda, tier: Tier) -> None:
    lam = orchestrator_lambda
    key = tier.upload_prefix + "big-sidecar.mp4"
    sidecar = json.dumps({"query": "q", "extra": {"blob": "x" * MAX_BODY_BYTES}}).encode()
    tier.client.put_object(Bucket=tier.bucket, Key=key + ".json", Body=sidecar)
    tier.client.put_object(Bucket=tier.bucket, Key=key, Body=b"video")
    result = lam.invoke(s3_upload_event(tier.bucket, key))
    assert result["started"] == []
    assert f"larger than {MAX_BODY_BYTES} bytes" in result["skipped"][0]["reason"]
    assert list_request_ids(lam.store) == []


# ---- corrupt state ----------------------------------------------------------------------------------------


def test_an_unreadable_state_is_reported_for_that_request_only(
    orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    lam = orchestrator_lambda
    lam.hold()
    good = lam.start("a b")
    broken = lam.start("c d")
    foreign = lam.start("e f")
    lam.take(6)
    lam.store.put(state_key(broken), b"{this is not json")
    doc = json.loads(lam.store.get(state_key(foreign)).data)
    lam.store.put(state_key(foreign), json.dumps({**doc, "schema_version": 99}).encode())
    lam.store.put("index/active/not-a-request-id", b"{}")  # a stray marker
    lam.store.put("index/requests/stray.txt", b"?")  # and a stray index entry

    ticked = lam.invoke(tick_event())["ticked"]
    assert ticked[good] == "RUNNING"
    assert ticked[broken].startswith("ERROR") and ticked[foreign].startswith("ERROR")

    for request_id, says in ((broken, "state.json is unreadable"), (foreign, "schema version 99")):
        code, body, _ = lam.http("http-status.json", request_id=request_id)
        assert code == 500 and request_id in body["message"] and says in body["message"], body
    assert lam.status(good)["status"] == "RUNNING"
    assert sorted(list_request_ids(lam.store)) == sorted([good, broken, foreign])


# ---- the HTTP invocation never runs stage work -------------------------------------------------------------


@pytest.mark.slow
def test_a_first_stage_longer_than_api_gateways_30_s_does_not_hold_the_answer(
    orchestrator_lambda: OrchestratorLambda,
) -> None:
    lam = orchestrator_lambda
    body = {"video_uri": lam.source_uri, "extra": {"text": "slow start", "words_sleep_s": 31}}
    started = time.monotonic()
    code, response, _ = lam.http("http-start.json", body=body, without_headers=("idempotency-key",))
    answered = time.monotonic() - started
    assert code == 202, response
    assert answered < 30, f"the 202 took {answered:.1f} s: API Gateway would have given up at 30 s"
    request_id = response["request_id"]
    # Read the store directly: on the moto tier invocations run one at a time, and the step holds the turn.
    doc = json.loads(lam.store.get(state_key(request_id)).data)
    assert doc["status"] in ("INIT", "RUNNING") and doc["stages"]["words"]["status"] != "SUCCEEDED"
    done = lam.wait(request_id, timeout=90)
    assert done["status"] == "COMPLETED", done
    assert done["final"]["text"] == "SLOW! START!"
