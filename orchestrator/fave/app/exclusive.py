"""The mailbox of a request on Lambda: events that arrive while another invocation holds its lease.

Every destination, resume and cancel is its own Lambda invocation. The lease (``fave.lease``) lets one of
them write the request at a time; the others post their *message* here and return at once instead of
waiting:

* **mailbox** ``requests/{id}/inbox/{time}-{random}.json``, each a list of engine events (``fave.eventcodec``;
  one object for a whole batch of completions, so a busy request costs one write per batch): a destination
  record is parsed once where it arrives and waits here as its ``TaskSucceeded`` / ``TaskFailed``. Whoever
  holds the lease applies the events
  in one batch, deletes them after the commit (a crash in between re-applies them: duplicates change
  nothing), releases, then lists the mailbox once more and takes the lease again if anything is left. So
  a message posted while the holder was finishing is never stranded: either its sender's second try for
  the lease succeeds (the holder had let go) or the holder's last look finds it.

As a bonus, concurrent completions of a large fan-out become batched steps instead of O(concurrency)
conflicting writes on state.json.
"""

from __future__ import annotations

import logging
import time
import uuid

from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import ObjectStore, get_json, put_json

from fave import eventcodec
from fave.core.model import Event
from fave.keys import inbox_prefix

__all__ = ["Mailbox"]

log = logging.getLogger("fave.app.exclusive")


class Mailbox:
    """Messages for a request, waiting for the holder of its lease."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def post(self, request_id: str, events: list[Event]) -> str:
        """Leave ``events`` (one message, however many) for the lease holder; returns the message's key."""
        key = f"{inbox_prefix(request_id)}{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
        put_json(self.store, key, {"events": [eventcodec.encode(event) for event in events]}, if_none_match=True)
        return key

    def keys(self, request_id: str) -> list[str]:
        """Waiting messages, oldest first."""
        return list(self.store.list(inbox_prefix(request_id)))

    def read(self, key: str) -> list[Event]:
        """The message's events; none if another holder already applied and removed it (or it is malformed:
        logged and dropped, since no retry can make it readable)."""
        try:
            doc, _ = get_json(self.store, key)
            if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
                raise ValueError("events: expected a list")
            return [eventcodec.decode(event) for event in doc["events"]]
        except NotFoundError:
            return []
        except (ValueError, ValidationError) as exc:
            log.error("mailbox: malformed message %s dropped: %s", key, exc)
            return []

    def remove(self, keys: list[str]) -> None:
        for key in keys:
            self.store.delete(key)

    def pending(self, key: str) -> bool:
        return self.store.head(key) is not None
