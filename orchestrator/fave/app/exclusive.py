"""The mailbox of a request on Lambda: events that arrive while another invocation holds its lease.

Every destination, resume and cancel is its own Lambda invocation. The lease (``fave.lease``) lets one of
them write the request at a time; the others post their *message* here and return at once instead of
waiting:

* **mailbox** ``requests/{id}/inbox/{time}-{random}.json``: whoever holds the lease applies the messages
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
from typing import Any

from fave_shared.errors import NotFoundError
from fave_shared.store import ObjectStore

from fave.lease import Lease, Leases, lease_key
from fave.persistence import request_prefix

__all__ = ["Lease", "Leases", "Mailbox", "inbox_prefix", "lease_key"]


def inbox_prefix(request_id: str) -> str:
    return request_prefix(request_id) + "inbox/"


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
