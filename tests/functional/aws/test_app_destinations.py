"""Destination envelopes into the orchestrator function: fan-in happens exactly once, whatever the delivery."""

from __future__ import annotations

import pytest
from fave.keys import inbox_prefix, lease_key, state_key
from fave.lease import Leases
from fave.persistence import read_stage_tasks
from fave_shared.schemas import TaskRef
from support.app_lambda import TERMINAL, OrchestratorLambda
from support.demo import TEXT
from support.events import destination_event, tick_event
from support.tiers import Tier

WORDS = TEXT.split()


def start(lam: OrchestratorLambda, text: str = TEXT) -> str:
    return lam.start(text)


def test_every_destination_delivered_twice_still_fans_in_exactly_once(orchestrator_lambda: OrchestratorLambda) -> None:
    lam = orchestrator_lambda
    lam.copies = 2  # each envelope twice; on tiers other than moto, the two copies race each other
    request_id = start(lam)
    doc = lam.wait(request_id)

    assert doc["status"] == "COMPLETED", doc
    assert doc["final"]["text"] == " ".join(w.upper() + "!" for w in WORDS)
    assert doc["final"]["missing"] == []
    for stage in ("shout", "measure"):
        assert doc["stages"][stage]["succeeded"] == len(WORDS), doc["stages"][stage]
    assert lam.invocations("ShoutFunction") == len(WORDS)
    assert lam.invocations("MeasureFunction") == len(WORDS)  # a duplicate never dispatched the next item twice
    assert lam.invocations("JoinFunction") == 1  # the fan-in ran once
    assert lam.sqs_records == 2 * 2 * len(WORDS)  # every completion of both stages arrived twice, through SQS


def test_a_burst_of_completions_is_applied_in_fewer_invocations_than_completions(
    orchestrator_lambda: OrchestratorLambda,
) -> None:
    """Completions that reach CompletionsQueue together are applied by one orchestrator invocation: here every
    completion a step's dispatches produce is held until all of them have arrived, then released at once."""
    lam = orchestrator_lambda
    lam.hold()
    words = ["one", "two", "three", "four", "five", "six"]
    request_id = start(lam, " ".join(words))
    released = bursts = 0
    while lam.status(request_id)["status"] not in TERMINAL:
        dispatched = lam.invocations("ShoutFunction") + lam.invocations("MeasureFunction")
        burst = lam.take(max(1, dispatched - released))
        lam.release(burst)
        lam.settle()  # the batch is applied; its step dispatched the next tasks
        released += len(burst)
        bursts += 1
    doc = lam.status(request_id)
    assert doc["status"] == "COMPLETED", doc
    assert doc["final"]["text"] == " ".join(w.upper() + "!" for w in words)
    assert released == lam.sqs_records == 2 * len(words)  # a shout and a measure per word
    assert lam.sqs_invocations == bursts < released  # one invocation per burst, not one per completion


def test_sample_destination_events_are_applied_once(orchestrator_lambda: OrchestratorLambda, tier: Tier) -> None:
    lam = orchestrator_lambda
    lam.hold()  # the real envelopes are kept back: the samples from events/ stand in for them
    request_id = start(lam, "hello world")
    lam.take(2)
    etag = lam.store.head(state_key(request_id))

    success = destination_event(
        "destination-success.json",
        TaskRef(request_id=request_id, stage="shout", item=0, attempt=1),
        response={"word": "HELLO!", "pid": 1, "attempt": 1},
    )
    assert lam.deliver(success) == {"request_id": request_id, "status": "RUNNING"}
    after_first = lam.store.head(state_key(request_id))
    assert after_first != etag
    doc = lam.status(request_id)
    assert doc["stages"]["shout"]["succeeded"] == 1
    assert doc["stages"]["measure"]["running"] == 1  # item 0 moved on to the next stage

    lam.deliver(success)  # the same event again: nothing changes, nothing is dispatched
    assert lam.store.head(state_key(request_id)) == after_first
    assert lam.take(1)  # measure[0] from the first delivery
    assert lam.invocations("MeasureFunction") == 1

    failure = destination_event(
        "destination-failure.json", TaskRef(request_id=request_id, stage="shout", item=1, attempt=1)
    )
    lam.deliver(failure)
    after_failure = lam.store.head(state_key(request_id))
    lam.deliver(failure)
    assert lam.store.head(state_key(request_id)) == after_failure
    shout = read_stage_tasks(lam.store, request_id, "shout")[1]
    assert shout.error_type == "RetryableError" and "SlowDown" in (shout.error or "")
    doc = lam.status(request_id)
    assert doc["stages"]["shout"]["failed"] == 0 and doc["stages"]["shout"]["pending"] == 1  # waiting to retry


def test_a_completion_for_an_unknown_request_is_ignored(orchestrator_lambda: OrchestratorLambda) -> None:
    event = destination_event(
        "destination-success.json", TaskRef(request_id="01M7Q5CQG08V1KSN1NN13VDKQ9", stage="extract", item=3, attempt=1)
    )
    result = orchestrator_lambda.deliver(event)
    assert result["ignored"] == "unknown request" and result["status"] is None


def test_a_malformed_destination_record_is_an_error_naming_the_field(orchestrator_lambda: OrchestratorLambda) -> None:
    event = destination_event(
        "destination-success.json", TaskRef(request_id="01M7Q5CQG08V1KSN1NN13VDKQ9", stage="extract", item=3, attempt=1)
    )
    del event["requestPayload"]["task"]["stage"]
    from fave_shared.errors import ValidationError

    with pytest.raises(ValidationError, match="stage"):
        orchestrator_lambda.deliver(event)


def test_a_busy_request_gets_its_messages_through_the_mailbox(orchestrator_lambda: OrchestratorLambda) -> None:
    lam = orchestrator_lambda
    lam.hold()
    request_id = start(lam, "hello world")
    lam.take(2)
    # Another invocation holds the request (as a concurrent destination would).
    holder = Leases(lam.store, lam.clock).try_acquire(request_id, 60)
    assert holder is not None
    etag = lam.store.head(state_key(request_id))

    success = destination_event(
        "destination-success.json",
        TaskRef(request_id=request_id, stage="shout", item=0, attempt=1),
        response={"word": "HELLO!", "pid": 1, "attempt": 1},
    )
    assert lam.deliver(success) == {"request_id": request_id, "status": None, "queued": True}
    assert lam.store.head(state_key(request_id)) == etag  # nothing written behind the holder's back
    assert len(list(lam.store.list(inbox_prefix(request_id)))) == 1
    assert lam.invoke(tick_event())["ticked"] == {request_id: "BUSY"}

    # The holder dies without letting go: once its lease has expired, the next invocation takes over.
    lam.clock.advance(61)
    assert lam.invoke(tick_event())["ticked"] == {request_id: "RUNNING"}
    assert list(lam.store.list(inbox_prefix(request_id))) == []
    assert lam.status(request_id)["stages"]["shout"]["succeeded"] == 1
    assert lam.store.head(lease_key(request_id)) is None  # released
