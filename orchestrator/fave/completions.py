"""Turning what comes back from an invocation into engine events.

Two sources: a synchronous ``InvokeResult`` and an asynchronous destination envelope (Lambda's OnSuccess /
OnFailure record). Both end as ``TaskSucceeded`` / ``TaskFailed`` for a ``(request_id, stage, item, attempt)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fave_shared.schemas import DestinationEnvelope, StageEvent, TaskRef

from fave.core.model import TaskFailed, TaskSucceeded


def _error_fields(payload: Any) -> tuple[str, str]:
    if isinstance(payload, Mapping):
        error_type = str(payload.get("errorType") or "Error")
        message = str(payload.get("errorMessage") or "")
        return error_type, message.strip() or "(no message)"
    return "Error", str(payload)


def from_result(task: TaskRef, payload: Any, function_error: str | None) -> tuple[str, TaskSucceeded | TaskFailed]:
    """Event for a synchronous invocation's result."""
    if function_error:
        error_type, message = _error_fields(payload)
        return task.request_id, TaskFailed(task.stage, task.item, task.attempt, error_type, message)
    return task.request_id, TaskSucceeded(task.stage, task.item, task.attempt, payload)


def from_envelope(envelope: Mapping[str, Any]) -> tuple[str, TaskSucceeded | TaskFailed]:
    """Event for an asynchronous invocation's destination record. Raises pydantic's error if malformed."""
    env = DestinationEnvelope.model_validate(envelope)
    task = StageEvent.model_validate(env.requestPayload).task
    if env.succeeded:
        return task.request_id, TaskSucceeded(task.stage, task.item, task.attempt, env.responsePayload)
    if env.requestContext.condition == "EventAgeExceeded":
        return task.request_id, TaskFailed(
            task.stage, task.item, task.attempt, "EventAgeExceeded", "the event expired before it could run"
        )
    error_type, message = _error_fields(env.responsePayload)
    return task.request_id, TaskFailed(task.stage, task.item, task.attempt, error_type, message)
