"""Idempotency keys on the object store: one create-only record per key, holding the request id.

``POST /requests`` with an ``Idempotency-Key`` header, and an upload event delivered twice, must both give
back the request the first call made. The record ``idempotency/{sha256(scope:key)}.json`` is written with
``If-None-Match: *`` *before* the request is created, and holds the request id chosen for it and a
fingerprint of the request body:

* first call: the record is written, then the request is created under that id;
* a retry or a concurrent duplicate: the write conflicts, the record is read, and the same request id is
  used. ``Orchestrator.create(..., request_id=)`` is itself idempotent (state.json is create-only too), so
  a call that died after writing the record but before creating the request is completed by its retry,
  with the same id, and two racing calls end with one request;
* the same key with a different body: ``IdempotencyKeyReusedError`` (HTTP 422), nothing is created.

Why not Powertools' Idempotency utility: it has no S3 persistence layer, and a custom
``BasePersistenceLayer`` would have to model its protocol (an INPROGRESS record, an update to COMPLETED
holding the cached response, expiry and deletion on failure). Here the work itself is made idempotent by
fixing the request id first, so a single conditional write and no record update or lock expiry is needed,
and the response is always the request's *current* status rather than a stale cached one. Records are
never deleted by fave; an S3 lifecycle rule on ``idempotency/`` can expire them (after which a reused key
starts a new request, as with any idempotency window).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fave_shared.errors import ConflictError, NotFoundError, ValidationError
from fave_shared.store import ObjectStore

from fave.ids import validate_request_id
from fave.keys import idempotency_key

MAX_KEY_LENGTH = 255


class IdempotencyKeyReusedError(ValidationError):
    """The key was already used for a request with a different body."""


@dataclass(frozen=True)
class Claim:
    """The request id a key stands for; ``replayed`` when the key had been seen before."""

    request_id: str
    replayed: bool


def fingerprint(body: Mapping[str, Any]) -> str:
    """A digest of a request body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str, where: str = "Idempotency-Key") -> str:
    """1 to 255 printable ASCII characters, else ``ValidationError`` naming ``where``."""
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise ValidationError(f"{where}: expected 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


class IdempotencyKeys:
    """Claims of idempotency keys in one store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def claim(self, scope: str, key: str, body_fingerprint: str | None, new_id: Callable[[], str]) -> Claim:
        """The request id for ``key`` in ``scope``: a new one (``new_id()``) on first use, else the recorded one.

        ``body_fingerprint`` None skips the body comparison (an upload is identified by its object alone).
        Raises ``IdempotencyKeyReusedError`` if the recorded fingerprint differs.
        """
        where = idempotency_key(scope, key)
        request_id = validate_request_id(new_id())
        record = {"scope": scope, "request_id": request_id, "fingerprint": body_fingerprint}
        try:
            self.store.put(where, json.dumps(record).encode(), if_none_match=True, content_type="application/json")
            return Claim(request_id, replayed=False)
        except ConflictError:
            pass
        try:
            existing = json.loads(self.store.get(where).data)
        except NotFoundError:  # deleted between our write and our read (a lifecycle rule): claim it again
            return self.claim(scope, key, body_fingerprint, new_id)
        recorded = existing.get("fingerprint")
        if body_fingerprint is not None and recorded is not None and recorded != body_fingerprint:
            raise IdempotencyKeyReusedError(
                f"Idempotency-Key: already used for request {existing.get('request_id')} with a different body; "
                "use a new key for a different request"
            )
        return Claim(validate_request_id(str(existing.get("request_id"))), replayed=True)
