"""Turning what comes back from an invocation into engine events.

Two sources: a synchronous ``InvokeResult`` and an asynchronous destination envelope (Lambda's OnSuccess /
OnFailure record). Both end as ``TaskSucceeded`` / ``TaskFailed`` for a ``(request_id, stage, item, attempt)``.

An envelope is checked once, here, where it enters: one that is plainly well-formed (every field of the
exact JSON type the schema wants, as Lambda and the local runtime write them) is read directly; anything
else goes through the pydantic schemas (``fave_shared.schemas``), which coerce it or raise. Both ways accept,
refuse and read the same envelopes (tests/unit/test_completions.py compares them); the direct way costs a
fraction of the two model validations, once per completion (10,000 for a fan-out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from fave_shared.outcome import StageError, from_lambda_error, stage_error
from fave_shared.refs import unresolved_note

from fave.core.model import TaskFailed, TaskSucceeded

__all__ = ["LocalEnvelope", "Task", "from_envelope", "from_result"]

Completion = tuple[str, TaskSucceeded | TaskFailed]


class Task(NamedTuple):
    """Which task attempt an invocation ran (the fields of ``fave_shared.schemas.TaskRef``)."""

    request_id: str
    stage: str
    item: int | None
    attempt: int


def _failed(task: Task, error: StageError) -> Completion:
    return task.request_id, TaskFailed(
        task.stage, task.item, task.attempt, error.error_type, error.message, error.terminal, error.traceback
    )


def _succeeded(task: Task, output: Any) -> Completion:
    error = stage_error(output)  # a stage that returned its (terminal) error
    if error is not None:
        return _failed(task, error)
    return task.request_id, TaskSucceeded(task.stage, task.item, task.attempt, output)


def _noted(error: StageError, event: Any, payload: Any) -> StageError:
    """``error`` with a note when its handler most likely read the marker that stood for its event's input
    without resolving it (``fave_shared.refs.unresolved_note``; docs/stages.md)."""
    note = unresolved_note(event, payload)
    return error if note is None else replace(error, message=f"{error.message} ({note})")


def from_result(task: Task, payload: Any, function_error: str | None, event: Any = None) -> Completion:
    """Event for a synchronous invocation's result; ``event``: what it was invoked with."""
    if function_error:
        return _failed(task, _noted(from_lambda_error(payload), event, payload))
    return _succeeded(task, payload)


def from_envelope(envelope: Mapping[str, Any]) -> Completion:
    """Event for an asynchronous invocation's destination record. Raises pydantic's error if malformed."""
    read = _read_plain(envelope)
    if read is None:
        read = _read_validated(envelope)
    task, condition, failed, response = read
    if not failed:
        return _succeeded(task, response)
    if condition == "EventAgeExceeded":
        return task.request_id, TaskFailed(
            task.stage, task.item, task.attempt, "EventAgeExceeded", "the event expired before it could run"
        )
    return _failed(task, _noted(from_lambda_error(response), envelope.get("requestPayload"), response))


# (task, condition, failed, responsePayload)
_Read = tuple[Task, str, bool, Any]


def _read_validated(envelope: Mapping[str, Any]) -> _Read:
    from fave_shared.schemas import DestinationEnvelope, StageEvent  # pydantic: only for unusual envelopes

    env = DestinationEnvelope.model_validate(envelope)
    ref = StageEvent.model_validate(env.requestPayload).task
    task = Task(ref.request_id, ref.stage, ref.item, ref.attempt)
    return task, env.requestContext.condition, not env.succeeded, env.responsePayload


_CONDITIONS = frozenset({"Success", "RetriesExhausted", "EventAgeExceeded"})
_MODES = ("sync", "async")


class LocalEnvelope(dict[str, Any]):
    """A destination record as the local runtime builds it (``fave.local.runtime``): its own fields have the
    schema's types by construction, and its ``requestPayload`` and ``responsePayload`` were just decoded from
    JSON (so every key in them is a string). Reading one checks only what could still be wrong: the event it
    carries. Build one only from such parts."""

    __slots__ = ()


def _read_plain(envelope: Any) -> _Read | None:
    """The envelope read directly when every field the schemas check has exactly the type they want; None
    otherwise (the caller then validates it). Mirrors DestinationEnvelope + StageEvent field by field; an
    absent field with a default is fine, a present one must have the type."""
    if type(envelope) is LocalEnvelope:
        context, response = envelope["requestContext"], envelope["responseContext"]
        return _read_request(
            envelope["requestPayload"],
            context["condition"],
            response["functionError"],
            envelope["responsePayload"],
            decoded=True,
        )
    if type(envelope) is not dict:
        return None
    get = envelope.get
    context, response, request = get("requestContext"), get("responseContext"), get("requestPayload")
    if type(context) is not dict or type(response) is not dict or type(request) is not dict:
        return None
    if type(get("timestamp")) is not str or type(get("version", "")) is not str:
        return None
    # Every model takes extra fields, whose names must be strings (json.loads never makes others).
    if not all(map(_is_str, envelope)) or not all(map(_is_str, context)) or not all(map(_is_str, response)):
        return None
    condition = context.get("condition")
    if (
        type(context.get("requestId")) is not str
        or type(context.get("functionArn")) is not str
        or type(condition) is not str
        or condition not in _CONDITIONS
        or type(context.get("approximateInvokeCount", 0)) is not int
    ):
        return None
    function_error = response.get("functionError")
    if (
        type(response.get("statusCode", 0)) is not int
        or type(response.get("executedVersion", "")) is not str
        or (function_error is not None and type(function_error) is not str)
    ):
        return None
    return _read_request(request, condition, function_error, get("responsePayload"), decoded=False)


def _read_request(request: Any, condition: str, function_error: Any, response: Any, *, decoded: bool) -> _Read | None:
    """The rest of ``_read_plain``: the task event the envelope carries (``decoded``: from JSON, whose keys are
    all strings)."""
    # requestPayload: dict[str, Any], then StageEvent (fave: Literal[1], task: TaskRef, mode: Literal[...] | None,
    # store: str, input: dict).
    if type(request) is not dict:
        return None
    fave, store, task_input, ref, mode = (
        request.get("fave", 1),
        request.get("store"),
        request.get("input", {}),
        request.get("task"),
        request.get("mode"),
    )
    if (
        type(fave) is not int
        or fave != 1
        or (mode is not None and mode not in _MODES)
        or type(store) is not str
        or type(task_input) is not dict
        or type(ref) is not dict
        or not (decoded or (all(map(_is_str, request)) and all(map(_is_str, task_input))))
    ):
        return None
    request_id, stage, item, attempt = ref.get("request_id"), ref.get("stage"), ref.get("item"), ref.get("attempt")
    if (
        not (decoded or all(map(_is_str, ref)))
        or type(request_id) is not str
        or type(stage) is not str
        or (item is not None and type(item) is not int)
        or type(attempt) is not int
        or attempt < 1
    ):
        return None
    failed = condition != "Success" or bool(function_error)
    return Task(request_id, stage, item, attempt), condition, failed, response


# pydantic accepts subclasses of str as str (and yields equal keys); exact types are required elsewhere only to
# stay on the side of what it accepts without coercion.
_is_str = str.__instancecheck__
