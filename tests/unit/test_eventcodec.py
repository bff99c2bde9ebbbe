"""Engine events through the mailbox's JSON (fave.eventcodec): every event round-trips; anything else is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fave import eventcodec
from fave.core.model import Cancel, Event, Resume, Start, TaskFailed, TaskSucceeded, Tick

EVENTS: list[Event] = [
    Start(),
    Tick(),
    Resume(),
    Cancel("wrong video"),
    TaskSucceeded("shout", 3, 2, {"word": "FOX!", "nested": [1, {"a": None}]}),
    TaskSucceeded("words", None, 1, {"$ref": "requests/X/stages/words/output-1.json"}),
    TaskFailed("measure", 0, 1, "States.Timeout", "task timed out after 2s"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_json(event: Event) -> None:
    assert eventcodec.decode(json.loads(json.dumps(eventcodec.encode(event)))) == event


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ([], "expected a JSON object"),
        ({"event": "Explode"}, "unknown event 'Explode'"),
        ({"kind": "destination"}, "unknown event None"),  # the old string-keyed vocabulary is gone
        ({"event": "TaskSucceeded", "item": 1, "attempt": 1}, "stage: expected a string"),
        ({"event": "TaskSucceeded", "stage": "s", "item": -1, "attempt": 1}, "item"),
        ({"event": "TaskSucceeded", "stage": "s", "item": True, "attempt": 1}, "item"),
        ({"event": "TaskFailed", "stage": "s", "attempt": 0, "error_type": "E", "message": "m"}, "attempt"),
        ({"event": "TaskFailed", "stage": "s", "item": None, "attempt": 1, "message": "m"}, "error_type"),
        ({"event": "Cancel"}, "reason"),
    ],
)
def test_anything_else_is_refused_naming_the_field(doc: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        eventcodec.decode(doc)


def test_a_non_event_cannot_be_encoded() -> None:
    with pytest.raises(TypeError, match="not an engine event"):
        eventcodec.encode("tick")  # type: ignore[arg-type]
