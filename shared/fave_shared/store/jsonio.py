"""JSON objects on any ``ObjectStore``: compact UTF-8 JSON in, ``(value, etag)`` out.

Read-modify-write pattern (compare-and-swap)::

    state, etag = get_json(store, key)
    put_json(store, key, update(state), if_match=etag)   # ConflictError: re-read and re-decide
"""

from __future__ import annotations

import json
from typing import Any

from fave_shared.errors import ValidationError
from fave_shared.store.base import ObjectStore

__all__ = ["JSON_CONTENT_TYPE", "dumps_json", "get_json", "loads_json", "put_json"]

JSON_CONTENT_TYPE = "application/json"


def dumps_json(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON; ``ValidationError`` if it is not JSON-serialisable.

    NaN and infinities are rejected: they are not JSON, and other readers (JavaScript, jq) choke on them.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"value is not JSON-serialisable: {e}") from e
    return text.encode("utf-8")


def loads_json(data: bytes, *, where: str = "object") -> Any:
    """Decode UTF-8 JSON bytes; ``ValidationError`` naming ``where`` if they are not valid JSON."""
    try:
        return json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValidationError(f"{where} is not valid UTF-8 JSON: {e}") from e


def get_json(store: ObjectStore, key: str) -> tuple[Any, str]:
    """Read and decode the JSON object at ``key``; returns ``(value, etag)``.

    ``NotFoundError`` if it does not exist, ``ValidationError`` if it is not valid JSON.
    """
    blob = store.get(key)
    return loads_json(blob.data, where=store.link(key)), blob.etag


def put_json(
    store: ObjectStore,
    key: str,
    value: Any,
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> str:
    """Encode ``value`` as compact JSON, write it to ``key`` under the given conditions, return the etag."""
    return store.put(
        key,
        dumps_json(value),
        if_match=if_match,
        if_none_match=if_none_match,
        content_type=JSON_CONTENT_TYPE,
    )
