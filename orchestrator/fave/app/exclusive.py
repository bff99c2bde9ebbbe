"""One writer per request at a time on Lambda: a lease object, and a mailbox for the events of the others.

Why: a step commits a request in several conditional writes (each changed task shard, then state.json). Two
orchestrator invocations that change *different* shards of one request both get their shard writes in, and
only one of them commits state.json. The loser's shard changes stay visible, stamped with the same version
as the winner's commit, so they look committed while what they imply was never decided (the stage that
item completed, the next item's dispatch); the loser then reloads, finds its completion already applied,
and stops: the request stalls. The ``server`` test tier reproduces this with duplicate destinations. The
local driver never meets it (one process drives a request); on Lambda every destination is its own
invocation, so this module serialises them per request:

* **lease** ``requests/{id}/metadata/lease.json``: created with ``If-None-Match: *``, holding the owner
  and an expiry of *now + the invocation's remaining time* (a holder cannot outlive its lease, so a live
  holder's lease never expires under it). Released by deleting it. An expired lease (its holder crashed or
  timed out) is taken over with ``If-Match``;
* **mailbox** ``requests/{id}/inbox/{time}-{random}.json``: an invocation that finds the lease taken posts
  its message there and returns at once instead of waiting. Whoever holds the lease applies the messages
  in one batch, deletes them after the commit (a crash in between re-applies them: duplicates change
  nothing), releases, then lists the mailbox once more and takes the lease again if anything is left. So
  a message posted while the holder was finishing is never stranded: either its sender's second try for
  the lease succeeds (the holder had let go) or the holder's last look finds it.

As a bonus, concurrent completions of a large fan-out become batched steps instead of O(concurrency)
conflicting writes on state.json.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fave_shared.errors import ConflictError, NotFoundError
from fave_shared.store import ObjectStore

from ..clock import Clock
from ..persistence import request_prefix

__all__ = ["Lease", "Leases", "Mailbox", "inbox_prefix", "lease_key"]


def lease_key(request_id: str) -> str:
    return request_prefix(request_id) + "metadata/lease.json"


def inbox_prefix(request_id: str) -> str:
    return request_prefix(request_id) + "inbox/"


@dataclass(frozen=True)
class Lease:
    request_id: str
    owner: str
    expires_at: float


class Leases:
    """Leases on requests in one store."""

    def __init__(self, store: ObjectStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def try_acquire(self, request_id: str, duration_s: float) -> Lease | None:
        """The lease on ``request_id`` for ``duration_s`` seconds, or None if someone else holds it."""
        key = lease_key(request_id)
        for _ in range(3):
            now = self.clock.now()
            lease = Lease(request_id, uuid.uuid4().hex, now + duration_s)
            body = json.dumps({"owner": lease.owner, "expires_at": lease.expires_at, "taken_at": now}).encode()
            try:
                self.store.put(key, body, if_none_match=True, content_type="application/json")
                return lease
            except ConflictError:
                pass
            try:
                blob = self.store.get(key)
            except NotFoundError:
                continue  # released in between: try to create it again
            try:
                expires_at = float(json.loads(blob.data)["expires_at"])
            except (ValueError, KeyError, TypeError):
                expires_at = 0.0  # unreadable: treat as expired
            if expires_at > now:
                return None
            try:
                self.store.put(key, body, if_match=blob.etag, content_type="application/json")
                return lease
            except (ConflictError, NotFoundError):
                continue
        return None

    def release(self, lease: Lease) -> None:
        self.store.delete(lease_key(lease.request_id))


class Mailbox:
    """Messages for a request, waiting for the holder of its lease."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def post(self, request_id: str, message: dict[str, Any]) -> str:
        key = f"{inbox_prefix(request_id)}{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
        self.store.put(key, json.dumps(message).encode(), if_none_match=True, content_type="application/json")
        return key

    def keys(self, request_id: str) -> list[str]:
        """Waiting messages, oldest first."""
        return list(self.store.list(inbox_prefix(request_id)))

    def read(self, key: str) -> dict[str, Any] | None:
        """A message, or None if another holder already applied and removed it."""
        try:
            message: dict[str, Any] = json.loads(self.store.get(key).data)
        except NotFoundError:
            return None
        return message

    def remove(self, keys: list[str]) -> None:
        for key in keys:
            self.store.delete(key)

    def pending(self, key: str) -> bool:
        return self.store.head(key) is not None
