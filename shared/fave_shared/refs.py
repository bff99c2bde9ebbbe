"""Pass-by-reference for large payloads: no 256 KB cliff.

A JSON value larger than the threshold is written to the store and replaced by ``{"$ref": KEY}``; the
receiving side resolves every such marker (anywhere in the structure) before stage code sees it. Stage code
never knows whether its input or output travelled inline or by reference.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import ValidationError
from .store.base import ObjectStore

REF = "$ref"
DEFAULT_THRESHOLD = 200_000
"""Bytes of compact JSON above which a payload travels by reference (``FAVE_PAYLOAD_THRESHOLD``)."""


def threshold() -> int:
    """The offload threshold in bytes, overridable with the ``FAVE_PAYLOAD_THRESHOLD`` environment variable
    (``ValidationError`` naming it if it is not a whole number)."""
    raw = os.environ.get("FAVE_PAYLOAD_THRESHOLD")
    if raw is None:
        return DEFAULT_THRESHOLD
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"FAVE_PAYLOAD_THRESHOLD={raw[:40]!r} is not a whole number of bytes") from None


def dumps(value: Any) -> bytes:
    """Compact, deterministic JSON bytes."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def is_ref(value: Any) -> bool:
    """True for a ``{"$ref": key}`` marker."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REF), str)


# Measures compact JSON without sorting keys (same length as ``dumps``) and without building an encoder per
# call, as ``json.dumps`` with options does: offload runs once per dispatched task. ASCII output: len = bytes.
_SIZER = json.JSONEncoder(separators=(",", ":"))


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (what ``dumps`` would write)."""
    return len(_SIZER.encode(value))


def offload(store: ObjectStore, key: str, value: Any, *, limit: int | None = None) -> Any:
    """Return ``value`` itself, or a ref to a copy written at ``key`` if its JSON exceeds ``limit`` bytes."""
    if json_size(value) <= (threshold() if limit is None else limit):
        return value
    store.put(key, dumps(value), content_type="application/json")
    return {REF: key}


def resolve(store: ObjectStore, value: Any) -> Any:
    """Replace every ref marker in ``value`` (recursively, including inside resolved values)."""
    if is_ref(value):
        return resolve(store, json.loads(store.get(value[REF]).data))
    if isinstance(value, dict):
        return {k: resolve(store, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(store, v) for v in value]
    return value
