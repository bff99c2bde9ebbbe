"""Pass-by-reference for large payloads, only past what a Lambda invocation can carry (docs/stages.md).

A JSON value is written to the store and replaced by a *marker*, ``{"$ref": KEY}`` (optionally with
``"$size"``: the value's bytes as compact UTF-8 JSON, and ``"$note"``: a sentence for whoever reads the event),
only where Lambda could not carry it inline:

* a stage's event (``event.input`` as a whole) when the event would be over ``event_limit(mode)``:
  ``SYNC_EVENT_LIMIT`` (Lambda's 6 MB synchronous payload minus headroom) or ``ASYNC_EVENT_LIMIT`` (part of
  Lambda's 1 MB asynchronous payload: the destination record that brings the result back carries the event
  *and* the response, and must fit in one SQS message);
* a stage's response, by the SDK, when it would be over ``SYNC_RESPONSE_LIMIT`` or, asynchronously, when
  event + response would be over ``ASYNC_RECORD_LIMIT``.

Below those limits a stage's event holds no marker anywhere: the orchestrator inlines the outputs it parked in
the store. ``FAVE_PAYLOAD_THRESHOLD`` (bytes) overrides every limit (tests use it to force references).
The receiving side resolves every marker (anywhere in the structure) before stage code sees it: the SDK does,
and ``fave_shared.stage.resolve_event`` does it for a handler that does not use the SDK.

A *list marker* stands for a list of N stored values, one object each: ``{"$ref": "HEAD[0:N]TAIL"}`` is the list
of the values at ``HEAD0TAIL`` .. ``HEAD{N-1}TAIL``, in order (``fave export --format asl``: a DISTRIBUTED Map's
outputs, ``.../{stage}/[0:N].json``, docs/export.md). It is an ordinary marker to a reader that predates it, which
then fails on a GET of a key that does not exist, naming it, rather than take the marker for data.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeGuard

from .errors import ValidationError
from .store.base import ObjectStore

REF = "$ref"
SIZE = "$size"
NOTE = "$note"
_MARKER_KEYS = frozenset({REF, SIZE, NOTE})

KIB = 1024
MIB = 1024 * KIB

LAMBDA_SYNC_PAYLOAD_BYTES = 6 * MIB
"""Lambda's limit on a synchronous (RequestResponse) request, and on its response: 6 MB (Lambda's MB = MiB)."""
LAMBDA_ASYNC_PAYLOAD_BYTES = 1 * MIB
"""Lambda's limit on an asynchronous (Event) request since October 2025 (256 KB before), and SQS's limit on a
message (since August 2025): what a destination record, which holds the event and the response, must fit in."""

SYNC_EVENT_LIMIT = LAMBDA_SYNC_PAYLOAD_BYTES - 64 * KIB
"""A synchronous stage's event travels inline up to this many bytes (6 MiB minus 64 KiB of headroom)."""
SYNC_RESPONSE_LIMIT = LAMBDA_SYNC_PAYLOAD_BYTES - 64 * KIB
"""The SDK returns a synchronous stage's output inline up to this many bytes of JSON."""
ASYNC_RECORD_LIMIT = LAMBDA_ASYNC_PAYLOAD_BYTES - 32 * KIB
"""Event + response of an asynchronous stage, together: the destination record holds both, plus its own
fields (~0.5 KB: ids, the function's ARN, timestamps); 32 KiB are kept for those and for Lambda's own framing."""
ASYNC_EVENT_LIMIT = 768 * KIB
"""An asynchronous stage's event travels inline up to this many bytes, which leaves a response at least
``ASYNC_RECORD_LIMIT - ASYNC_EVENT_LIMIT`` (224 KiB) in the destination record."""

OVERRIDE_VAR = "FAVE_PAYLOAD_THRESHOLD"


def override() -> int | None:
    """``FAVE_PAYLOAD_THRESHOLD`` in bytes when set: it replaces every limit above (``ValidationError``
    naming it if it is not a whole number)."""
    raw = os.environ.get(OVERRIDE_VAR)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"{OVERRIDE_VAR}={raw[:40]!r} is not a whole number of bytes") from None


def event_limit(mode: str) -> int:
    """Bytes of a stage's event (its invocation payload as sent) up to which its input travels inline."""
    limit = override()
    if limit is not None:
        return limit
    return SYNC_EVENT_LIMIT if mode == "sync" else ASYNC_EVENT_LIMIT


def dumps(value: Any) -> bytes:
    """Compact, deterministic JSON bytes."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def is_ref(value: Any) -> TypeGuard[dict[str, Any]]:
    """True for a marker: a dict with a string ``"$ref"`` and no keys but ``"$size"`` (an int) and ``"$note"``
    (a string). Any other dict is data, also one that has a ``"$ref"`` key (a JSON Schema document, say)."""
    if not isinstance(value, dict) or not isinstance(value.get(REF), str):
        return False
    if len(value) == 1:
        return True
    return (
        value.keys() <= _MARKER_KEYS
        and (SIZE not in value or (type(value[SIZE]) is int and value[SIZE] >= 0))
        and (NOTE not in value or isinstance(value[NOTE], str))
    )


# ``HEAD[0:N]TAIL``: N without leading zeros; no bracket in the tail, so the last ``[0:N]`` is the range.
_RANGE = re.compile(r"(?P<head>.*)\[0:(?P<n>0|[1-9][0-9]{0,8})\](?P<tail>[^\[\]]*)", re.DOTALL)

LIST_WORKERS = 16
"""Threads reading a list marker's objects (``resolve``): one GET each, ~10-30 ms on S3, so a list of a
thousand items takes ~1 s instead of ~20 s (fave's S3 client keeps 64 connections, so none waits for one); a
local store's reads are cheap either way. Few enough not to crowd a Lambda's single vCPU with threads."""


def _list_range(value: Any) -> tuple[str, int, str] | None:
    """A list marker's ``(HEAD, N, TAIL)``, without making its N keys; None for any other value."""
    if not is_ref(value):
        return None
    found = _RANGE.fullmatch(value[REF])
    return None if found is None else (found["head"], int(found["n"]), found["tail"])


def list_keys(value: Any) -> list[str] | None:
    """The keys a list marker stands for, in order (``HEAD0TAIL`` .. ``HEAD{N-1}TAIL``); None for any other
    value, a single-object marker included."""
    found = _list_range(value)
    if found is None:
        return None
    head, n, tail = found
    return [f"{head}{i}{tail}" for i in range(n)]


def list_marker(head: str, count: int, tail: str = ".json") -> dict[str, Any]:
    """``{"$ref": "HEAD[0:COUNT]TAIL"}``: the list of the values at ``HEAD0TAIL`` .. ``HEAD{COUNT-1}TAIL``."""
    if count < 0 or "[" in tail or "]" in tail:
        raise ValueError(f"a list marker needs a count >= 0 and a tail without brackets, got {count}, {tail!r}")
    return {REF: f"{head}[0:{count}]{tail}"}


def marker(key: str, *, size: int | None = None, note: str | None = None) -> dict[str, Any]:
    """``{"$ref": key}``, with ``"$size"`` and ``"$note"`` when given."""
    value: dict[str, Any] = {REF: key}
    if size is not None:
        value[SIZE] = size
    if note is not None:
        value[NOTE] = note
    return value


# Measures compact JSON without sorting keys (same length as ``dumps``) and without building an encoder per
# call, as ``json.dumps`` with options does: offload runs once per dispatched task. ASCII output: len = bytes.
_SIZER = json.JSONEncoder(separators=(",", ":"))
# As an invocation payload is sent (fave.invoke.base.payload_json): UTF-8, not \u-escaped.
_UTF8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact ASCII JSON (what ``dumps`` would write; non-ASCII text \\u-escaped)."""
    return len(_SIZER.encode(value))


def utf8_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON, as an invocation payload carries it."""
    return len(_UTF8.encode(value).encode())


def offload(store: ObjectStore, key: str, value: Any, *, limit: int) -> Any:
    """Return ``value`` itself, or a marker (with ``"$size"``) to a copy written at ``key`` if its JSON
    exceeds ``limit`` bytes."""
    if json_size(value) <= limit:
        return value
    store.put(key, dumps(value), content_type="application/json")
    return marker(key, size=utf8_size(value))


def resolve(store: ObjectStore, value: Any) -> Any:
    """Replace every marker in ``value`` (recursively, including inside resolved values); a list marker's
    objects are read ``LIST_WORKERS`` at a time."""
    return resolve_with(lambda key: json.loads(store.get(key).data), value, workers=LIST_WORKERS)


def resolve_with(load: Callable[[str], Any], value: Any, *, workers: int = 1) -> Any:
    """``resolve`` with ``load(key)`` giving the JSON value stored at ``key`` (it raises for a missing key,
    naming it: a list marker's missing item too). ``workers`` > 1: a list marker's objects are loaded by that
    many threads (``load`` must be thread-safe), the list still in index order."""
    if is_ref(value):
        keys = list_keys(value)
        if keys is None:
            return resolve_with(load, load(value[REF]), workers=workers)

        def one(key: str) -> Any:  # what an item's object holds may be a marker itself (an SDK's large output)
            return resolve_with(load, load(key))

        if workers <= 1 or len(keys) <= 1:
            return [one(k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(workers, len(keys)), thread_name_prefix="fave-refs") as pool:
            return list(pool.map(one, keys))
    if isinstance(value, dict):
        return {k: resolve_with(load, v, workers=workers) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_with(load, v, workers=workers) for v in value]
    return value


def find_refs(value: Any) -> list[dict[str, Any]]:
    """Every marker in ``value``, list markers included (not looking inside what they refer to)."""
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if is_ref(item):
                found.append(item)
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class RefCache:
    """The objects markers name, kept as their JSON bytes (and UTF-8 size) up to ``max_bytes`` in all, for
    whoever puts them back inline many times: the orchestrator, when the events of a fan-out's tasks all carry
    the same upstream output or the same stored request input. What a marker names is written once (its key
    holds the request, stage, item and attempt), so a kept copy does not go stale. Thread-safe; when full, it
    starts again empty.
    """

    def __init__(self, max_bytes: int = 16 * MIB) -> None:
        self.max_bytes = max_bytes
        self._held = 0
        self._items: dict[tuple[str, str], tuple[bytes, int]] = {}
        self._lock = threading.Lock()

    def _get(self, store: ObjectStore, key: str) -> tuple[bytes, int]:
        slot = (store.uri, key)
        with self._lock:
            item = self._items.get(slot)
        if item is not None:
            return item
        data = store.get(key).data
        item = (data, utf8_size(json.loads(data)))
        if len(data) <= self.max_bytes:
            with self._lock:
                if self._held + len(data) > self.max_bytes:
                    self._items.clear()
                    self._held = 0
                if slot not in self._items:
                    self._items[slot] = item
                    self._held += len(data)
        return item

    def load(self, store: ObjectStore, key: str) -> Any:
        """The JSON value stored at ``key``."""
        return json.loads(self._get(store, key)[0])

    def size(self, store: ObjectStore, ref: Mapping[str, Any]) -> int:
        """Bytes of the value a marker names as compact UTF-8 JSON: its ``"$size"``, else measured (one GET;
        a list marker: one per item, plus the brackets and commas)."""
        size = ref.get(SIZE)
        if type(size) is int:
            return size
        keys = list_keys(dict(ref))
        if keys is not None:
            return 2 + max(len(keys) - 1, 0) + sum(self._get(store, k)[1] for k in keys)
        return self._get(store, str(ref[REF]))[1]

    def inlined_size(self, store: ObjectStore, size: int, markers: list[dict[str, Any]]) -> int:
        """``size`` (bytes of a JSON document holding ``markers``) with every one replaced by its value."""
        return size + sum(self.size(store, ref) - utf8_size(ref) for ref in markers)

    def resolve(self, store: ObjectStore, value: Any) -> Any:
        """``resolve(store, value)``, reading through this cache."""
        return resolve_with(lambda key: self.load(store, key), value, workers=LIST_WORKERS)


# ---- what a handler that does not resolve markers is told ------------------------------------------------

SDK_HELPER = "fave_shared.stage.resolve_event(event)"
SDK_DECORATOR = "@fave_shared.stage.stage(InputModel)"


def input_note(size: int, limit: int, mode: str) -> str:
    """The ``"$note"`` of a stage event's offloaded input: why it is a marker and how to read it."""
    kind = "a synchronous" if mode == "sync" else "an asynchronous"
    return (
        f"event.input was passed by reference: with it inline the event would be {size} bytes, over the {limit} "
        f"bytes {kind} stage's event carries; a handler that does not use fave's SDK must resolve it with "
        f"{SDK_HELPER} (or be written with {SDK_DECORATOR}), see docs/stages.md"
    )


_PLATFORM_ERRORS = ("Runtime.", "Sandbox.", "Function.", "States.", "EventAgeExceeded")
_SDK_FRAMES = ("fave_shared/stage.py", "fave_shared\\stage.py")


def unresolved_note(event: Any, error: Any) -> str | None:
    """The note to add to a failed invocation's error when its handler most likely tripped over a marker.

    ``event``: the stage's event as sent; ``error``: Lambda's error payload. That is when the event's input
    was a marker or held a list marker (which only an exported machine sends, in a need), the error was raised
    by the handler (not a timeout, a crash, or the platform), and its stack trace does not pass through the
    SDK (which resolves markers before the stage body runs). None otherwise.
    """
    if not isinstance(event, Mapping):
        return None
    marker_ = event.get("input")
    if not is_ref(marker_):
        lists = [m for m in find_refs(marker_) if _list_range(m) is not None]
        if not lists:
            return None
        marker_ = {
            REF: lists[0][REF],
            NOTE: f'event.input holds a list marker ({{"{REF}": "{lists[0][REF]}"}}: the list of the objects '
            f"it names, one per item); a handler that does not use fave's SDK must resolve it with {SDK_HELPER}, "
            f"see docs/stages.md",
        }
    error_type = str(error.get("errorType") or "") if isinstance(error, Mapping) else ""
    if error_type.startswith(_PLATFORM_ERRORS):
        return None
    stack = error.get("stackTrace") if isinstance(error, Mapping) else None
    if isinstance(stack, list) and any(isinstance(f, str) and any(s in f for s in _SDK_FRAMES) for f in stack):
        return None
    note = marker_.get(NOTE)
    if isinstance(note, str) and note:
        return note
    return (
        f'event.input was passed by reference ({{"{REF}": ...}}); a handler that does not use fave\'s SDK must '
        f"resolve it with {SDK_HELPER}, see docs/stages.md"
    )
