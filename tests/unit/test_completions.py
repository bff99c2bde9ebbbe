"""``fave.completions``: an envelope read directly (the common, well-formed case) gives exactly what the pydantic
schemas give, and anything the direct reading does not vouch for goes to the schemas, which coerce or refuse it.

The reference below is the implementation before the direct reading existed (two model validations).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from fave.completions import LocalEnvelope, Task, _read_plain, from_envelope, from_result
from fave.core.model import TaskFailed, TaskSucceeded
from fave_shared.outcome import StageError, from_lambda_error, stage_error
from fave_shared.schemas import DestinationEnvelope, StageEvent

REQUEST_ID = "01M8C4KDV45JD9QKP9CY11KTTD"


def reference(envelope: Any) -> tuple[str, TaskSucceeded | TaskFailed]:
    """What the schemas read, turned into events by ``fave_shared.outcome`` (a stage's own error result, a
    Lambda error payload)."""
    env = DestinationEnvelope.model_validate(envelope)
    task = StageEvent.model_validate(env.requestPayload).task

    def failed(error: StageError) -> tuple[str, TaskFailed]:
        return task.request_id, TaskFailed(
            task.stage, task.item, task.attempt, error.error_type, error.message, error.terminal, error.traceback
        )

    if env.succeeded:
        returned = stage_error(env.responsePayload)
        if returned is not None:
            return failed(returned)
        return task.request_id, TaskSucceeded(task.stage, task.item, task.attempt, env.responsePayload)
    if env.requestContext.condition == "EventAgeExceeded":
        return task.request_id, TaskFailed(
            task.stage, task.item, task.attempt, "EventAgeExceeded", "the event expired before it could run"
        )
    return failed(from_lambda_error(env.responsePayload))


def envelope(condition: str = "Success", function_error: str | None = None, response: Any = None) -> dict[str, Any]:
    """As the local runtime builds it (and Lambda sends it)."""
    return {
        "version": "1.0",
        "timestamp": "2026-01-31T12:34:56.789Z",
        "requestContext": {
            "requestId": "c0ffee00-0000-4000-8000-000000000001",
            "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:Work:$LATEST",
            "condition": condition,
            "approximateInvokeCount": 1,
        },
        "requestPayload": {
            "fave": 1,
            "task": {"request_id": REQUEST_ID, "stage": "work", "item": 7, "attempt": 2},
            "store": "/tmp/store",
            "input": {"item": 7, "index": 7, "needs": {}, "config": {}},
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": function_error},
        "responsePayload": {"i": 7} if response is None else response,
    }


CANONICAL = [
    envelope(),
    envelope(response=[1, "two", None]),
    envelope("RetriesExhausted", "Unhandled", {"errorType": "KeyError", "errorMessage": "'x'", "stackTrace": []}),
    envelope("RetriesExhausted", "Unhandled", "plain text error"),
    envelope("EventAgeExceeded"),
    envelope("Success", "Unhandled", {"errorMessage": ""}),  # a function error is a failure whatever the condition
]


class Text(str):
    pass


class Number(int):
    pass


class Doc(dict[str, Any]):
    pass


ODD_VALUES: list[Any] = [
    None, 0, 1, -1, 2, True, 1.0, "", "x", "Success", "RetriesExhausted", Text("x"), Text("Success"), Number(1),
    b"x", [], {}, Doc(), {1: "one"}, (1,),
]  # fmt: skip


def paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in doc.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from paths(value, (*prefix, key))


def variants(base: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every field of ``base`` (at any depth) removed, or replaced by each odd value; every mapping given an
    extra field, and a non-string key."""
    for path in paths(base):
        *parents, last = path
        for replacement in [*ODD_VALUES, "__delete__"]:
            doc = copy.deepcopy(base)
            target = doc
            for key in parents:
                target = target[key]
            if replacement == "__delete__":
                del target[last]
            else:
                target[last] = copy.deepcopy(replacement)
            yield doc
    for path in [(), *[p for p in paths(base) if isinstance(_at(base, p), dict)]]:
        for extra_key in ("extra", 5):
            doc = copy.deepcopy(base)
            _at(doc, path)[extra_key] = "more"
            yield doc


def _at(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def outcome(read: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", read(value)
    except pydantic.ValidationError:
        return "refused", None


@pytest.mark.parametrize("base", CANONICAL, ids=lambda e: e["requestContext"]["condition"])
def test_every_variant_reads_as_the_schemas_read_it(base: dict[str, Any]) -> None:
    direct = 0
    checked = 0
    for doc in [base, *variants(base)]:
        expected = outcome(reference, copy.deepcopy(doc))
        assert outcome(from_envelope, doc) == expected, doc
        direct += _read_plain(doc) is not None
        checked += 1
    # The direct reading really is taken (for the well-formed base and the harmless variants) and really
    # hands the rest to the schemas (every odd value of a checked field).
    assert _read_plain(base) is not None
    assert checked > 300 and 30 < direct < checked - 200, (direct, checked)


@pytest.mark.parametrize("base", CANONICAL, ids=lambda e: e["requestContext"]["condition"])
def test_a_local_runtime_s_envelope_reads_as_the_schemas_read_it(base: dict[str, Any]) -> None:
    # What the local runtime varies in the envelopes it builds: the payloads, which it has just decoded from JSON
    # (so only JSON values and string keys); its own fields are as in ``envelope``.
    checked = direct = 0
    for doc in [base, *variants(base)]:
        own = {key: value for key, value in doc.items() if key not in ("requestPayload", "responsePayload")}
        if own != {key: value for key, value in base.items() if key not in ("requestPayload", "responsePayload")}:
            continue
        if "requestPayload" not in doc or "responsePayload" not in doc or not _as_decoded(doc):
            continue
        expected = outcome(reference, copy.deepcopy(doc))
        assert outcome(from_envelope, LocalEnvelope(copy.deepcopy(doc))) == expected, doc
        direct += _read_plain(LocalEnvelope(doc)) is not None
        checked += 1
    assert checked > 50 and 10 < direct < checked - 20, (direct, checked)


def _as_decoded(value: Any) -> bool:
    """Whether ``value`` is something ``json.loads`` could return (exact types, string keys)."""
    if type(value) is dict:
        return all(type(key) is str and _as_decoded(item) for key, item in value.items())
    if type(value) is list:
        return all(map(_as_decoded, value))
    return value is None or type(value) in (bool, int, float, str)


def test_the_direct_reading_keeps_the_response_object_itself() -> None:
    doc = envelope(response={"big": list(range(10))})
    _, event = from_envelope(doc)
    assert isinstance(event, TaskSucceeded) and event.output is doc["responsePayload"]
    assert (event.stage, event.item, event.attempt) == ("work", 7, 2)


def test_a_malformed_envelope_raises_pydantics_error() -> None:
    doc = envelope()
    del doc["requestPayload"]["task"]["attempt"]
    with pytest.raises(pydantic.ValidationError):
        from_envelope(doc)


def test_a_synchronous_result_becomes_an_event() -> None:
    task = Task(REQUEST_ID, "plan", None, 1)
    assert from_result(task, {"items": [1]}, None) == (REQUEST_ID, TaskSucceeded("plan", None, 1, {"items": [1]}))
    failed = from_result(task, {"errorType": "ValueError", "errorMessage": " bad \n"}, "Unhandled")
    assert failed == (REQUEST_ID, TaskFailed("plan", None, 1, "ValueError", "bad"))
