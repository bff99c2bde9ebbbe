"""The admission queue's doors on AWS (issue 14, requirement 1): ``POST /queue`` checks every entry's input as
``POST /requests`` checks its body (400 naming ``entries[i].input.FIELD``, nothing added), dedupes by key and
answers 202 with the ids; ``GET /queue`` lists entries and stats. The schedule tick and each request's end drain
the queue: never more than ``operations.max_requests_in_flight`` requests at once, each entry run once, to DONE.

Real handler, the tier's S3, the demo's stage functions on the local runtime, behind the declared ``words``
input of ``support.declared_input`` with ``operations: {max_requests_in_flight: 2}``."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fave.app.queue_doors import RECREATE_AFTER_S
from fave.ids import new_request_id
from fave.persistence import list_request_ids
from fave.queue import AdmissionQueue
from support.app_lambda import OrchestratorLambda
from support.declared_input import demo_with_input, serve
from support.events import load_event, tick_event
from support.tiers import Tier

IN_FLIGHT = 2


@pytest.fixture
def words_lambda(orchestrator_lambda: OrchestratorLambda, tier: Tier, tmp_path: Path) -> OrchestratorLambda:
    path = demo_with_input(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["operations"] = {"max_requests_in_flight": IN_FLIGHT}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    serve(orchestrator_lambda, tier, path)
    return orchestrator_lambda


def call(lam: OrchestratorLambda, method: str, *, body: Any = None, query: str = "") -> tuple[int, Any]:
    """``METHOD /queue`` as API Gateway sends it (payload format 2.0, from the shipped sample)."""
    event = load_event("http-status.json")
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} /queue"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/queue"
    event["requestContext"]["http"]["method"] = method
    event.pop("pathParameters", None)
    event["rawQueryString"] = query
    if query:
        event["queryStringParameters"] = dict(part.split("=", 1) for part in query.split("&"))
    if body is not None:
        event["body"] = json.dumps(body)
        event["headers"]["content-type"] = "application/json"
        event["headers"]["content-length"] = str(len(event["body"].encode()))
    response = lam.invoke(event)
    return response["statusCode"], json.loads(response["body"] or "null")


def listing(lam: OrchestratorLambda, query: str = "") -> dict[str, Any]:
    code, doc = call(lam, "GET", query=query)
    assert code == 200, doc
    return dict(doc)


def test_post_queue_checks_every_entry_first_and_dedupes_by_key(words_lambda: OrchestratorLambda) -> None:
    lam = words_lambda
    entries = [{"input": {"text": "a b"}, "key": "k1"}, {"input": {"text": "c"}, "priority": 1}, {"input": {}}]
    code, body = call(lam, "POST", body={"entries": entries})
    assert code == 400, body
    assert body["errors"][0]["field"] == "entries[2].input.text" and "entries[2].input.text" in body["message"]
    code, body = call(lam, "POST", body={"entries": [{"input": {"text": "x"}, "priority": 9}]})
    assert code == 400 and "priority" in body["errors"][0]["field"]
    code, body = call(lam, "POST", body={"entries": [{"input": {"text": "x", "document": "s3://elsewhere/x"}}]})
    assert code == 400 and body["errors"][0]["field"] == "entries[0].input.document"
    code, body = call(lam, "POST", body={"entries": [{"input": {"text": "x"}, "budget": {"max_wall": "soon"}}]})
    assert code == 400 and body["errors"][0]["field"] == "entries[0].budget.max_wall"
    assert listing(lam)["entries"] == []  # nothing of the refused batches was added

    code, body = call(lam, "POST", body={"entries": entries[:2], "priority": 4})
    assert code == 202, body
    assert body["added"] == 2 and [e["duplicate"] for e in body["entries"]] == [False, False]
    first = body["entries"][0]["id"]
    code, again = call(lam, "POST", body={"entries": [{"input": {"text": "other"}, "key": "k1"}]})
    assert code == 202 and again["added"] == 0 and again["entries"][0] == {**again["entries"][0], "id": first}

    doc = listing(lam)
    assert [(e["priority"], e["input"]["text"]) for e in doc["entries"]] == [(1, "c"), (4, "a b")]
    assert doc["entries"][1]["input"]["lang"] == "en"  # the declared default, filled in before it was stored
    assert doc["stats"]["depth"] == 2 and doc["stats"]["depth_by_priority"]["1"] == 1
    assert [e["id"] for e in listing(lam, "status=failed")["entries"]] == []
    code, bad = call(lam, "GET", query="status=nope")
    assert code == 400 and "status" in bad["message"]


def _release_held(lam: OrchestratorLambda) -> None:
    held = []
    while True:
        try:
            held.append(lam.held.get_nowait())
        except queue.Empty:
            break
    if held:
        lam.release(held)


def test_the_tick_and_completions_drain_the_queue_at_most_n_in_flight(words_lambda: OrchestratorLambda) -> None:
    lam = words_lambda
    lam.hold()  # the shout tasks' completions wait: every admitted request stays RUNNING
    code, body = call(lam, "POST", body={"entries": [{"input": {"text": f"w{i} x"}} for i in range(5)]})
    assert code == 202 and body["added"] == 5
    ids = [e["id"] for e in body["entries"]]

    lam.invoke(tick_event())
    lam.settle()
    lam.invoke(tick_event())  # a second tick admits nothing more: the cap is reached
    lam.settle()
    doc = listing(lam)
    assert sorted(e["status"] for e in doc["entries"]) == ["QUEUED"] * 3 + ["RUNNING"] * IN_FLIGHT
    assert [e["id"] for e in doc["entries"] if e["status"] == "RUNNING"] == ids[:IN_FLIGHT]  # oldest first
    assert len(list_request_ids(lam.store)) == IN_FLIGHT

    lam.holding = False
    deadline = time.monotonic() + 90
    peak = IN_FLIGHT
    while True:
        _release_held(lam)
        lam.settle()
        doc = listing(lam)
        peak = max(peak, sum(e["status"] in ("CLAIMED", "RUNNING") for e in doc["entries"]))
        if all(e["status"] == "DONE" for e in doc["entries"]):
            break
        assert time.monotonic() < deadline, doc["entries"]
        lam.clock.advance(1.0)
        lam.invoke(tick_event())
    assert peak <= IN_FLIGHT
    requests = {e["request_id"] for e in doc["entries"]}
    assert len(requests) == 5 and set(list_request_ids(lam.store)) == requests  # each entry ran once
    for request_id in requests:
        assert lam.status(request_id)["status"] == "COMPLETED"
    assert doc["stats"]["completed_24h"] == 5


def test_an_entry_whose_request_was_never_made_gets_it_made_once(words_lambda: OrchestratorLambda) -> None:
    """An invocation died between marking an entry started and making its request: a later drain makes that
    request (the id the entry names), once its maker has had time, and it runs to the end."""
    lam = words_lambda
    code, _ = call(lam, "POST", body={"entries": [{"input": {"text": "lost maker"}}]})
    assert code == 202
    pipeline = listing(lam)["pipeline"]
    own = AdmissionQueue(lam.store, pipeline, clock=lam.clock.now)
    [entry] = own.claim("died")
    request_id = new_request_id(lam.clock.now())
    own.started(entry.id, request_id)
    lam.invoke(tick_event())
    lam.settle()
    assert list_request_ids(lam.store) == []  # too soon: its maker may still be at it
    lam.clock.advance(RECREATE_AFTER_S + 1)
    lam.invoke(tick_event())
    lam.settle()
    assert lam.wait(request_id, tick=True)["status"] == "COMPLETED"
    lam.invoke(tick_event())
    lam.settle()
    [done] = listing(lam)["entries"]
    assert (done["status"], done["request_id"]) == ("DONE", request_id)
    assert list_request_ids(lam.store) == [request_id]


def test_the_document_gives_each_entrys_input_the_pipelines_schema(words_lambda: OrchestratorLambda) -> None:
    event = load_event("http-status.json")
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /openapi.json"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/openapi.json"
    event.pop("pathParameters", None)
    doc = json.loads(words_lambda.invoke(event)["body"])
    entry = doc["components"]["schemas"]["QueueEntryIn"]["properties"]["input"]
    assert entry["required"] == ["text"] and "lang" in entry["properties"]
    assert set(doc["paths"]["/queue"]) == {"get", "post"}
