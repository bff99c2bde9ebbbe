"""The invoker seam: how the orchestrator runs a function, locally or on AWS Lambda.

``function`` is always the logical id from template.yaml (``"ExtractFunction"``); each backend maps it to
whatever it runs (a local execution environment, a deployed function name).

Errors: a failure *inside* the function is not an exception, it is an ``InvokeResult`` with
``function_error`` set (as Lambda reports it). A failure to invoke at all raises an ``InvocationError``
subclass below, which also derives from ``RetryableError`` or ``TerminalError`` so callers can decide
without knowing the backend.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fave_shared.errors import (
    InvocationError,
    NotFoundError,
    RetryableError,
    TerminalError,
    ValidationError,
)

from fave.jsonbytes import Encoder

__all__ = [
    "MAX_ASYNC_PAYLOAD_BYTES",
    "MAX_SYNC_PAYLOAD_BYTES",
    "EncodedPayload",
    "FunctionNotFoundError",
    "InvokeResult",
    "Invoker",
    "RetryableInvocationError",
    "SharedJSON",
    "TerminalInvocationError",
    "ThrottledInvocationError",
    "decode_response",
    "encode_payload",
    "invocation_is_terminal",
    "payload_json",
    "task_payload",
]

#: Lambda's limit on a synchronous (RequestResponse) request and response payload: 6 MB.
MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
#: Lambda's limit on an asynchronous (Event) payload: 1 MB (it was 256 KB before October 2025).
MAX_ASYNC_PAYLOAD_BYTES = 1024 * 1024


class RetryableInvocationError(InvocationError, RetryableError):
    """The invoke call itself failed transiently (throttled, 5xx, connection lost): try again later."""


class ThrottledInvocationError(RetryableInvocationError):
    """The function is at its concurrency limit (Lambda's 429 TooManyRequestsException, EC2ThrottledException):
    the invocation did not run. Not a task failure: the orchestrator re-queues the task without spending an
    attempt and lowers that stage's in-flight cap (``TaskThrottled``)."""


class TerminalInvocationError(InvocationError, TerminalError):
    """The invoke call was refused for good (permissions, bad request, runtime closed)."""


class FunctionNotFoundError(InvocationError, NotFoundError):
    """No function with that logical id (template) or physical name (AWS)."""


def decode_response(raw: bytes) -> Any:
    """A function's answer as the caller gets it: JSON decoded, None for nothing, and text that is not JSON as
    text (Lambda passes a handler's raw bytes through; an OpenFaaS function may answer plain text)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def invocation_is_terminal(error: BaseException) -> bool:
    """Whether an invocation that raised ``error`` would fail the same way if sent again: a ``TerminalError``
    (no AWS credentials, access denied, the runtime closed), an unknown function, a payload Lambda refuses.
    The orchestrator fails such a task at once (``TaskFailed(terminal=True)``) instead of spending its retry
    policy's attempts on it; a ``RetryableError`` (throttled, 5xx, connection lost) and anything unexpected
    are retried."""
    return isinstance(error, (TerminalError, NotFoundError, ValidationError))


@dataclass(frozen=True)
class InvokeResult:
    """The outcome of a synchronous invocation.

    ``payload`` is the JSON-decoded response; when ``function_error`` is set (``"Unhandled"`` or
    ``"Handled"``, like Lambda's ``FunctionError``) it is the error payload (``schemas.LambdaError`` shape:
    errorMessage, errorType, stackTrace).
    """

    payload: Any
    function_error: str | None = None
    request_id: str = ""

    @property
    def ok(self) -> bool:
        """True when the function returned normally."""
        return self.function_error is None


@runtime_checkable
class Invoker(Protocol):
    """Runs functions by logical id. Implementations are thread-safe."""

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        """Invoke and wait for the result (Lambda ``RequestResponse``).

        Raises ``FunctionNotFoundError``, ``ValidationError`` (payload not JSON or over 6 MB), or another
        ``InvocationError`` if the function could not be invoked at all.
        """
        ...

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        """Queue an invocation (Lambda ``Event``) and return its request id at once.

        The outcome goes to the function's OnSuccess / OnFailure destination as a ``DestinationEnvelope``
        dict, after Lambda's asynchronous retries. Raises like ``invoke_sync`` (payload limit 1 MB).
        """
        ...

    def functions(self) -> frozenset[str]:
        """The logical ids this invoker can run (what a pipeline's stages may name)."""
        ...

    def code_digest(self, function: str) -> str | None:
        """A digest of the code the function runs as deployed (its CodeUri tree and the layers it uses), for
        the result cache's keys (``fave.cache``); None when unknown: that function's tasks are never cached."""
        ...

    def close(self) -> None:
        """Release what the invoker holds (environments, threads, connections). Idempotent."""
        ...


# One encoder for all calls: json.dumps with non-default options builds a new encoder every time.
_ENCODER = Encoder(ensure_ascii=False, allow_nan=False)  # orjson's bytes where they mean the same


def payload_json(payload: Any) -> bytes:
    """An invocation payload as the JSON bytes an invoker sends (compact, UTF-8). Raises ``TypeError`` or
    ``ValueError`` if it is not JSON data."""
    return _ENCODER.encode(payload)


class EncodedPayload(dict[str, Any]):
    """An invocation payload that carries its JSON bytes, encoded once when it is built.

    The orchestrator needs each dispatched task's payload as JSON twice: to decide whether its input travels
    by reference, and to send it. ``encode_payload`` returns ``data`` instead of encoding it again. It is a
    dict like any other payload (invokers, fault keys and tests read it); never change one once built, its
    bytes would no longer match. Raises like ``payload_json``.
    """

    __slots__ = ("data",)

    def __init__(self, payload: dict[str, Any], data: bytes | None = None) -> None:
        """``data``: the payload's JSON bytes as ``payload_json`` gives them, when the caller has them already
        (``task_payload``); they are not checked."""
        super().__init__(payload)
        self.data = payload_json(payload) if data is None else data


def encode_payload(payload: Any, limit: int) -> bytes:
    """Serialise an invocation payload to JSON bytes (an ``EncodedPayload``'s own) and enforce Lambda's size
    limit.

    Raises ``ValidationError`` before anything is sent, like Lambda's InvalidRequestContentException and
    RequestTooLargeException.
    """
    try:
        data = payload.data if type(payload) is EncodedPayload else payload_json(payload)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"invocation payload is not JSON-serialisable: {e}") from e
    if len(data) > limit:
        raise ValidationError(f"invocation payload is {len(data)} bytes, over Lambda's limit of {limit} bytes")
    return data


_string = json.encoder.encode_basestring  # what _ENCODER writes for a string (ensure_ascii=False), keys included
_INT_RANGE = range(-(2**63), 2**64)  # the integers orjson writes (an event with another one is the stdlib's)


class _WholeError(Exception):
    """A part of an event that orjson would not write exactly: then neither would it the whole event, which the
    standard library encodes (``payload_json``), so the event is encoded whole to have the same bytes."""


def _encode(value: Any) -> str:
    """``value``'s text as ``payload_json`` writes it inside an event that orjson writes (``_WholeError`` otherwise)."""
    data = _ENCODER.exact(value)
    if data is None:
        raise _WholeError
    return data.decode()


class SharedJSON:
    """The JSON text of values that many payloads hold by reference, encoded once each.

    The engine gives every task of a stage the same request and config objects: at 10,000 tasks, encoding them
    once instead of once per task is most of a payload's encoding. Keyed by identity (and holding the values,
    so that an id is not reused while remembered): use one for values that do not change meanwhile (one
    orchestrator step's commands, which nothing changes once made). A race between threads only encodes a
    value twice."""

    __slots__ = ("_heads", "_texts")

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Any, str]] = {}
        self._heads: dict[tuple[str, str, str, str], tuple[str, str]] = {}

    def text(self, value: Any) -> str:
        known = self._texts.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        text = _encode(value)
        self._texts[id(value)] = (value, text)
        return text

    def event_head(self, request_id: str, stage: str, mode: str, store: str) -> tuple[str, str]:
        """A stage's events' text up to their item, and from their attempt to their input (the same for each of
        its tasks: strings only)."""
        key = (request_id, stage, mode, store)
        known = self._heads.get(key)
        if known is None:
            known = self._heads[key] = (
                f'{{"fave":1,"task":{{"request_id":{_string(request_id)},"stage":{_string(stage)},"item":',
                f'}},"mode":{_string(mode)},"store":{_string(store)},"input":{{',
            )
        return known


_TASK_KEYS = ["request_id", "stage", "item", "attempt"]


def task_payload(
    task: dict[str, Any],
    mode: str,
    store: str,
    task_input: dict[str, Any],
    shared: SharedJSON,
    *,
    shared_keys: Collection[str] = ("request", "config"),
) -> EncodedPayload:
    """``EncodedPayload`` of a stage's event, ``{"fave": 1, "task": task, "mode": mode, "store": store, "input":
    task_input}`` (docs/stages.md), the same bytes, built from pieces: the values of its input named by
    ``shared_keys`` come from ``shared`` instead of being encoded again, and strings, integers and the task
    reference (``request_id``, ``stage``, ``item``, ``attempt``) are written without a trip through the encoder.
    At 10,000 tasks a stage's request and config are most of what encoding their events costs.

    JSON text composes: with compact separators and no indent, a value's text inside a document is its text on
    its own, and dicts keep their key order. Anything else (a task reference of another shape, a key that is
    not a string, which the encoder would convert) is encoded whole. Raises like ``payload_json``."""
    event = {"fave": 1, "task": task, "mode": mode, "store": store, "input": task_input}
    request_id, stage = task.get("request_id"), task.get("stage")
    if (
        type(task_input) is not dict
        or list(task) != _TASK_KEYS
        or type(request_id) is not str
        or type(stage) is not str
        or type(mode) is not str
        or type(store) is not str
    ):
        return EncodedPayload(event)
    try:
        fields = ",".join(
            [
                f"{_string(name)}:{shared.text(value) if name in shared_keys else _text(value)}"
                for name, value in task_input.items()
            ]
        )
        head, middle = shared.event_head(request_id, stage, mode, store)
        text = f'{head}{_text(task["item"])},"attempt":{_text(task["attempt"])}{middle}{fields}}}}}'
    except (TypeError, _WholeError):  # a key that is not a string, a value orjson does not write (or that is not JSON)
        return EncodedPayload(event)
    return EncodedPayload(event, text.encode())


_int_text = int.__repr__


def _text(value: Any) -> str:
    """``_encode(value)``, without the encoder's call overhead for a string, an integer, null or an empty dict or
    list."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int:
        if value not in _INT_RANGE:
            raise _WholeError
        return _int_text(value)
    if value is None:
        return "null"
    if not value and (kind is dict or kind is list):
        return "{}" if kind is dict else "[]"
    return _encode(value)
