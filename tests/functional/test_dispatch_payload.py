"""A dispatched task's payload is JSON-encoded once: the same bytes decide whether its input travels by
reference (over ``refs.event_limit``, to the byte) and are what the invoker sends.

Real parts: the bench's fan-out pipeline on the local runtime (thread isolation) and a local store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fave.core.model import Invoke, RequestStatus
from fave.invoke.base import EncodedPayload, payload_json
from fave.keys import task_input_key
from fave.local.orchestrator import local_orchestrator
from fave.service import Orchestrator
from fave_shared import refs
from fave_shared.errors import ValidationError
from fave_shared.store import LocalStore
from support.pipelines import CHAIN, make_pipeline

ROOT = Path(__file__).resolve().parents[2]
FANOUT = ROOT / "benchmarks" / "fanout" / "pipeline.yaml"
REQUEST_ID = "01M8C4KDV45JD9QKP9CY11KTTD"


@pytest.fixture
def orchestrator(tmp_path: Path) -> Orchestrator:
    return Orchestrator(make_pipeline(CHAIN), LocalStore(str(tmp_path)))


def payload_for(orchestrator: Orchestrator, task_input: dict[str, Any]) -> EncodedPayload:
    command = Invoke("a", 3, 1, "A", "async", task_input)
    ref = {"request_id": REQUEST_ID, "stage": "a", "item": 3, "attempt": 1}
    return orchestrator._payload(REQUEST_ID, ref, command)


def test_the_invoker_gets_each_payload_encoded_once(tmp_path: Path) -> None:
    orchestrator = local_orchestrator(FANOUT, LocalStore(str(tmp_path)))
    runtime = orchestrator.invoker
    assert runtime is not None
    sent: list[dict[str, Any]] = []
    invoke_async = runtime.invoke_async

    def recording(function: str, payload: dict[str, Any]) -> str:
        sent.append(payload)
        return invoke_async(function, payload)

    runtime.invoke_async = recording  # type: ignore[method-assign]
    try:
        state = orchestrator.create({"items": 25, "video_uri": None})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()
    assert state.status is RequestStatus.COMPLETED and state.final == {"count": 25, "sum": sum(range(25))}
    assert len(sent) == 25
    for payload in sent:
        assert isinstance(payload, EncodedPayload)
        assert payload.data == payload_json(dict(payload))  # its bytes are its own
        assert json.loads(payload.data) == payload


@pytest.mark.parametrize("text", ["plain ascii", "é and 漢字 and 🎬"])
def test_an_input_travels_by_reference_exactly_past_the_threshold(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    task_input = {"item": {"text": text * 200}, "index": 3, "needs": {}, "config": {}}
    monkeypatch.setenv("FAVE_PAYLOAD_THRESHOLD", "10000000")
    measured = len(payload_for(orchestrator, task_input).data)  # the event's bytes as sent (UTF-8)

    monkeypatch.setenv("FAVE_PAYLOAD_THRESHOLD", str(measured))
    inline = payload_for(orchestrator, task_input)
    assert inline["input"] == task_input and len(inline.data) == measured

    monkeypatch.setenv("FAVE_PAYLOAD_THRESHOLD", str(measured - 1))
    by_ref = payload_for(orchestrator, task_input)
    key = task_input_key(REQUEST_ID, "a", 3, 1)
    assert refs.is_ref(by_ref["input"]) and by_ref["input"][refs.REF] == key
    assert by_ref.data == payload_json(dict(by_ref))
    assert json.loads(orchestrator.store.get(key).data) == task_input


def test_a_small_payload_is_not_measured_again(orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAVE_PAYLOAD_THRESHOLD", "100000")

    def no_measuring(value: Any) -> int:
        raise AssertionError("a payload under a third of the threshold was measured again")

    monkeypatch.setattr(refs, "json_size", no_measuring)
    payload = payload_for(orchestrator, {"index": 3})
    assert payload["input"] == {"index": 3}
    assert json.loads(payload.data)["task"] == {"request_id": REQUEST_ID, "stage": "a", "item": 3, "attempt": 1}


def test_an_input_that_is_not_json_is_refused_before_anything_is_sent(orchestrator: Orchestrator) -> None:
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        payload_for(orchestrator, {"item": {1, 2}})
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        payload_for(orchestrator, {"item": float("nan")})
