"""Engine events as JSON documents: what a request's mailbox holds between Lambda invocations.

One vocabulary (``fave.core.model.Event``) for the engine and the mailbox: a destination record is parsed once,
where it arrives (``fave.completions``), and travels as the ``TaskSucceeded`` / ``TaskFailed`` it is.
``decode`` refuses anything that is not an encoded event with ``ValueError`` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fave.core.model import Cancel, Event, Resume, Start, TaskFailed, TaskSucceeded, Tick

__all__ = ["decode", "encode"]


def encode(event: Event) -> dict[str, Any]:
    """A JSON-ready document of ``event`` (``{"event": NAME, ...fields}``)."""
    match event:
        case TaskSucceeded():
            return {
                "event": "TaskSucceeded",
                "stage": event.stage,
                "item": event.item,
                "attempt": event.attempt,
                "output": event.output,
            }
        case TaskFailed():
            return {
                "event": "TaskFailed",
                "stage": event.stage,
                "item": event.item,
                "attempt": event.attempt,
                "error_type": event.error_type,
                "message": event.message,
            }
        case Cancel():
            return {"event": "Cancel", "reason": event.reason}
        case Start() | Tick() | Resume():
            return {"event": type(event).__name__}
    raise TypeError(f"not an engine event: {event!r}")


def _str(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string")
    return value


def _item(doc: Mapping[str, Any]) -> int | None:
    item = doc.get("item")
    if item is not None and (not isinstance(item, int) or isinstance(item, bool) or item < 0):
        raise ValueError("item: expected null or an integer >= 0")
    return item


def _attempt(doc: Mapping[str, Any]) -> int:
    attempt = doc.get("attempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise ValueError("attempt: expected an integer >= 1")
    return attempt


def decode(doc: Any) -> Event:
    """The event ``doc`` encodes; ``ValueError`` naming the field for anything else."""
    if not isinstance(doc, Mapping):
        raise ValueError("expected a JSON object")
    name = doc.get("event")
    if name == "TaskSucceeded":
        return TaskSucceeded(_str(doc, "stage"), _item(doc), _attempt(doc), doc.get("output"))
    if name == "TaskFailed":
        return TaskFailed(_str(doc, "stage"), _item(doc), _attempt(doc), _str(doc, "error_type"), _str(doc, "message"))
    if name == "Cancel":
        return Cancel(_str(doc, "reason"))
    simple: dict[Any, type[Start | Tick | Resume]] = {"Start": Start, "Tick": Tick, "Resume": Resume}
    if name in simple:
        return simple[name]()
    raise ValueError(f"event: unknown event {name!r}")
