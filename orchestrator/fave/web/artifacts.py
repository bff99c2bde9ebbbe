"""Which objects the artifact endpoint serves, and as what.

final.json names its artifacts by link (``store.link(key)``: ``file:///...`` for a local store, ``s3://...``
for S3), so the view maps links back to keys. It serves a key only if it lies under the request's own prefix
or final.json references it: never another request's objects, the index, or idempotency records.

Artifacts are user data in our origin: only types a browser shows without running anything are served
inline (images other than SVG, audio, video, plain text, JSON). Anything else, HTML and SVG included, is sent
as an attachment, and every artifact carries a CSP sandbox and ``nosniff``.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import ObjectStore, validate_key

from fave.keys import final_key, request_prefix

__all__ = ["INLINE_TYPES", "content_type", "final_links", "key_of_link", "readable_key"]

INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "video/mp4",
        "video/webm",
        "audio/mpeg",
        "audio/wav",
        "audio/x-wav",
        "audio/ogg",
        "text/plain",
        "application/json",
    }
)
_EXTRA = {".json": "application/json", ".log": "text/plain", ".txt": "text/plain", ".webp": "image/webp"}


def content_type(key: str) -> tuple[str, bool]:
    """The Content-Type of an artifact by its name, and whether it may be shown inline."""
    dot = key.rfind(".")
    ext = key[dot:].lower() if dot > key.rfind("/") else ""
    kind = _EXTRA.get(ext) or mimetypes.types_map.get(ext) or "application/octet-stream"
    return kind, kind in INLINE_TYPES


def _link_base(store: ObjectStore) -> str:
    return store.link("x")[:-1]  # the link of key "" (every backend's link is its base + the key)


def key_of_link(store: ObjectStore, link: str) -> str | None:
    """The key a link of this store names, or None if it names none of it."""
    base = _link_base(store)
    if not link.startswith(base) or len(link) == len(base):
        return None
    rest = link[len(base) :]
    key = unquote(rest) if base.startswith("file:") else rest  # file URIs are percent-encoded
    try:
        return validate_key(key)
    except ValidationError:
        return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def final_links(store: ObjectStore, final: Any) -> dict[str, str]:
    """Every link in a final.json that names an object of this store: link → key."""
    found: dict[str, str] = {}
    for text in _strings(final):
        if text not in found:
            key = key_of_link(store, text)
            if key is not None:
                found[text] = key
    return found


def readable_key(store: ObjectStore, request_id: str, key: str) -> str:
    """``key`` if the artifact endpoint may serve it for ``request_id``; ``NotFoundError`` otherwise (the same
    answer as for a missing object: no probing of what exists elsewhere)."""
    try:
        validate_key(key)
    except ValidationError:
        raise ValidationError(f"key: {key[:80]!r} is not an object key") from None
    if key.startswith(request_prefix(request_id)):
        return key
    try:
        final = json.loads(store.get(final_key(request_id)).data)
    except (NotFoundError, ValueError):
        final = None
    if key in final_links(store, final).values():
        return key
    raise NotFoundError(f"request {request_id} has no artifact {key[:80]!r}")
