"""The orchestrator function's doors for any pipeline (issue 11): ``POST /requests`` takes the pipeline's declared
input as its body (400 naming the field), an upload fills the pipeline's upload field,
``GET /requests/{id}/stages/{stage}`` pages a stage's items with their attempts, errors and tracebacks, and a
function deployed without the configuration it needs answers 500 ``configuration error``, not a 400.

Real handler, the tier's S3, the demo's stage functions on the local runtime, behind the declared input of
``support.declared_input`` (a non-video ``text`` input whose upload field ``document`` is optional)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fave.invoke import LambdaInvoker
from fave.keys import state_key
from fave.persistence import list_request_ids
from support.app_lambda import DEMO, OrchestratorLambda
from support.declared_input import demo_with_input, serve
from support.events import load_event, s3_upload_event
from support.tiers import Tier


@pytest.fixture
def words_lambda(orchestrator_lambda: OrchestratorLambda, tier: Tier, tmp_path: Path) -> OrchestratorLambda:
    serve(orchestrator_lambda, tier, demo_with_input(tmp_path))
    return orchestrator_lambda


def post(lam: OrchestratorLambda, body: Any) -> tuple[int, dict[str, Any]]:
    code, response, _ = lam.http("http-start.json", body=body, without_headers=("idempotency-key",))
    return code, response


def stored_input(lam: OrchestratorLambda, request_id: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(lam.store.get(state_key(request_id)).data)["input"]
    return value


def get_stage(lam: OrchestratorLambda, request_id: str, stage: str, **query: Any) -> tuple[int, dict[str, Any]]:
    """``GET /requests/{id}/stages/{stage}?query`` as API Gateway sends it (payload format 2.0)."""
    event = load_event("http-status.json")
    path = f"/requests/{request_id}/stages/{stage}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /requests/{id}/stages/{stage}"
    event["pathParameters"] = {"id": request_id, "stage": stage}
    params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}
    event["rawQueryString"] = urlencode(params)
    if params:
        event["queryStringParameters"] = params
    response = lam.invoke(event)
    return response["statusCode"], json.loads(response["body"] or "null")


# -- POST /requests: the declared input ---------------------------------------------------------------------


def test_the_body_is_the_pipelines_declared_input(words_lambda: OrchestratorLambda) -> None:
    lam = words_lambda
    code, body = post(lam, {"text": "a b", "lang": "fr"})
    assert code == 202, body
    assert stored_input(lam, body["request_id"]) == {"text": "a b", "lang": "fr", "profile": "default"}  # no query
    assert lam.wait(body["request_id"])["final"]["text"] == "A! B!"

    code, body = post(lam, {"text": "go", "profile": "loud"})  # profile: a top-level option of every request
    assert code == 202, body
    assert stored_input(lam, body["request_id"]) == {"text": "go", "lang": "en", "profile": "loud"}  # default lang
    assert lam.wait(body["request_id"])["final"]["text"] == "GO!!"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "text"),
        ({"text": 7}, "text"),
        ({"text": ""}, "text"),
        ({"text": "a", "colour": "red"}, "colour"),
        ({"text": "a", "fail": ["a"]}, "fail"),
        ({"text": "a", "lang": "de"}, "lang"),
        ({"text": "a", "sleep_s": -1}, "sleep_s"),
        ({"text": "a", "profile": "nope"}, "profile"),
        ({"text": "a", "profile": 3}, "profile"),
        ({"text": "a", "document": "s3://another-bucket/inputs/a.txt"}, "document"),  # the upload field's source
        ({"text": "a", "document": 5}, "document"),
        ({"text": "a", "extra": {"text": "b"}}, "extra"),
    ],
)
def test_a_body_that_does_not_match_gets_400_naming_the_field(
    words_lambda: OrchestratorLambda, body: dict[str, Any], field: str
) -> None:
    code, response = post(words_lambda, body)
    assert code == 400, response
    assert response["message"].startswith(f"{field}: "), response
    assert response["errors"] == [{"field": field, "in": "body", "message": response["message"][len(field) + 2 :]}]
    assert list_request_ids(words_lambda.store) == []


def test_an_upload_fills_the_pipelines_upload_field(words_lambda: OrchestratorLambda, tier: Tier) -> None:
    lam = words_lambda
    key = tier.upload_prefix + "notes.txt"
    tier.client.put_object(Bucket=tier.bucket, Key=key + ".json", Body=json.dumps({"text": "hi you"}).encode())
    tier.client.put_object(Bucket=tier.bucket, Key=key, Body=b"some notes")
    result = lam.invoke(s3_upload_event(tier.bucket, key, sequencer="00A1"))
    (started,) = result["started"]
    assert stored_input(lam, started["request_id"]) == {
        "text": "hi you",
        "document": f"s3://{tier.bucket}/{key}",
        "lang": "en",
        "profile": "default",
    }
    assert lam.wait(started["request_id"])["final"]["text"] == "HI! YOU!"

    bad = tier.upload_prefix + "bad.txt"
    tier.client.put_object(Bucket=tier.bucket, Key=bad + ".json", Body=json.dumps({"txt": "typo"}).encode())
    tier.client.put_object(Bucket=tier.bucket, Key=bad, Body=b"x")
    (skipped,) = lam.invoke(s3_upload_event(tier.bucket, bad, sequencer="00A2"))["skipped"]
    assert "text: required" in skipped["reason"]


# -- GET /requests/{id}/stages/{stage} ---------------------------------------------------------------------

WORDS = [f"w{i}" for i in range(7)]
BAD = 5


@pytest.fixture
def failed_request(words_lambda: OrchestratorLambda) -> str:
    """A FAILED request: shout's item 5 fails on each of its three attempts."""
    code, body = post(words_lambda, {"text": " ".join(WORDS), "fail": {WORDS[BAD]: 9}})
    assert code == 202, body
    doc = words_lambda.wait(body["request_id"], tick=True)  # ticks start the retries (the clock stands still)
    assert doc["status"] == "FAILED" and f"stage 'shout' item {BAD}" in doc["failure"], doc
    return str(body["request_id"])


def test_a_stage_is_paged_item_by_item(words_lambda: OrchestratorLambda, failed_request: str) -> None:
    lam = words_lambda
    items: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        code, page = get_stage(lam, failed_request, "shout", limit=2, **({"cursor": cursor} if cursor else {}))
        assert code == 200, page
        assert (page["stage"], page["status"], page["total"], page["limit"]) == ("shout", "FAILED", len(WORDS), 2)
        assert len(page["items"]) <= 2
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and [row["item"] for row in items] == list(range(len(WORDS)))
    bad = items[BAD]
    assert (bad["status"], bad["attempts"], bad["error_type"]) == ("FAILED", 3, "ValueError")
    assert [a["attempt"] for a in bad["history"]] == [1, 2, 3] and bad["traceback"] is None
    assert all(row["status"] == "SUCCEEDED" and row["duration_s"] is not None for row in items if row["item"] != BAD)


def test_failed_traceback_and_item(words_lambda: OrchestratorLambda, failed_request: str) -> None:
    lam = words_lambda
    code, page = get_stage(lam, failed_request, "shout", failed=True)
    assert code == 200 and [row["item"] for row in page["items"]] == [BAD], page
    assert page["items"][0]["has_traceback"] and page["items"][0]["traceback"] is None
    code, page = get_stage(lam, failed_request, "shout", failed=True, traceback=True)
    traceback = page["items"][0]["traceback"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.rstrip().endswith(f"ValueError: shout refused '{WORDS[BAD]}' on attempt 3")
    code, alone = get_stage(lam, failed_request, "shout", item=BAD)
    assert code == 200 and alone["items"] == page["items"] and alone["next_cursor"] is None


@pytest.mark.parametrize(
    ("stage", "query", "code", "needle"),
    [
        ("nope", {}, 404, "has no stage 'nope'"),
        ("shout", {"item": 99}, 404, "no item 99"),
        ("shout", {"cursor": "x"}, 400, "cursor"),
        ("shout", {"limit": 0}, 400, "limit"),
        ("shout", {"limit": 5000}, 400, "limit"),
    ],
)
def test_a_bad_stage_query_is_refused(  # noqa: PLR0917 - one parameter per column of the table above
    words_lambda: OrchestratorLambda, failed_request: str, stage: str, query: dict[str, Any], code: int, needle: str
) -> None:
    got, body = get_stage(words_lambda, failed_request, stage, **query)
    assert got == code and needle in json.dumps(body), body


def test_an_unknown_request_is_404(words_lambda: OrchestratorLambda) -> None:
    code, body = get_stage(words_lambda, "01J0000000000000000000000Z", "shout")
    assert code == 404 and "no request" in body["message"], body


# -- a function deployed without its configuration -----------------------------------------------------------


def test_a_function_without_its_configuration_answers_500_not_400(
    orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    import fave.app

    lam = orchestrator_lambda
    settings = fave.app.Settings(
        store_uri=tier.store.uri,
        pipeline_path=DEMO,
        upload_prefix=tier.upload_prefix,
        input_prefixes=(tier.input_prefix,),
        default_query=None,
        default_profile="default",
    )
    body = {"video_uri": lam.source_uri, "extra": {"text": "a b"}}

    # No FAVE_FUNCTION_* in the environment: the pipeline names functions the invoker does not know.
    fave.app.configure(settings=settings, store=tier.orchestrator_store, invoker=LambdaInvoker.from_env(environ={}))
    code, response = post(lam, body)
    assert code == 500, response
    message = response["message"]
    assert message.startswith("configuration error: ") and "FAVE_FUNCTION_" in message and "WordsFunction" in message

    # No FAVE_STORE.
    fave.app.configure(
        settings=replace(settings, store_uri=""),
        pipeline=DEMO,
        invoker=tier.orchestrator_invoker(lam.runtime),
    )
    code, response = post(lam, body)
    assert code == 500 and "configuration error: FAVE_STORE is not set" in response["message"], response
    assert list_request_ids(lam.store) == []
