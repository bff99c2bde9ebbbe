"""``fave.invoke.base.task_payload`` builds a stage's event from pieces (the stage's request and config encoded
once a step): its bytes are exactly ``payload_json`` of the same event, whatever the input holds, and what
``payload_json`` refuses it refuses with the same error."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fave.invoke.base import EncodedPayload, SharedJSON, payload_json, task_payload
from hypothesis import given
from hypothesis import strategies as st

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12
)
KEYS = st.text() | st.integers() | st.booleans() | st.none()  # the encoder turns the non-strings into strings


def event(task: dict[str, Any], mode: str, store: str, task_input: dict[Any, Any]) -> dict[str, Any]:
    return {"fave": 1, "task": task, "mode": mode, "store": store, "input": task_input}


@given(
    request=st.dictionaries(st.text(), JSON, max_size=4),
    config=st.dictionaries(st.text(), JSON, max_size=4),
    item=JSON,
    index=st.integers(min_value=0),
    extra=st.dictionaries(KEYS, JSON, max_size=3),
    stage=st.text(),
    attempt=st.integers(min_value=1),
    store=st.text(),
)
def test_the_same_bytes_as_encoding_the_event_whole(
    *,
    request: dict[str, Any],
    config: dict[str, Any],
    item: Any,
    index: int,
    extra: dict[Any, Any],
    stage: str,
    attempt: int,
    store: str,
) -> None:
    shared = SharedJSON()
    for n in range(2):  # the second time, request and config come from what the first one remembered
        task = {"request_id": "01M8C4KDV45JD9QKP9CY11KTTD", "stage": stage, "item": index + n, "attempt": attempt}
        task_input = {"request": request, "needs": {}, "config": config, "item": item, "index": index + n, **extra}
        payload = task_payload(task, "async", store, task_input, shared)
        assert isinstance(payload, EncodedPayload)
        assert payload == event(task, "async", store, task_input)
        assert payload.data == payload_json(event(task, "async", store, task_input))


def test_a_task_reference_of_another_shape_is_encoded_whole() -> None:
    task = {"stage": "a", "request_id": "r", "attempt": 1, "item": None}  # another key order
    payload = task_payload(task, "sync", "s", {"request": {"x": "é"}, "needs": {"b": [1]}}, SharedJSON())
    assert payload.data == payload_json(event(task, "sync", "s", {"request": {"x": "é"}, "needs": {"b": [1]}}))


@pytest.mark.parametrize(
    ("bad", "error"),
    [({1, 2}, TypeError), (math.nan, ValueError), (object(), TypeError)],
)
def test_what_the_encoder_refuses_is_refused_alike(bad: Any, error: type[Exception]) -> None:
    task = {"request_id": "r", "stage": "a", "item": 0, "attempt": 1}
    for task_input in ({"request": {"v": bad}, "needs": {}}, {"request": {}, "item": bad}):
        with pytest.raises(error) as expected:
            payload_json(event(task, "async", "s", task_input))
        with pytest.raises(error) as got:
            task_payload(task, "async", "s", task_input, SharedJSON())
        assert str(got.value) == str(expected.value)
