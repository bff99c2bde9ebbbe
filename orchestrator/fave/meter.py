"""S3 requests per request, for its ledger (``RequestState.ledger``, ``StoreRequests``).

``RequestMeter`` wraps the store the persistence writes through and tallies each request's object traffic by
its key (``requests/{id}/...``): state.json, task shards, fan-out lists, the input, final.json. Priced as S3
prices them: PUT, POST and LIST as "puts", GET and HEAD as "gets"; DELETE is free and not counted. What is
shared between requests (leases, the active index, the result cache) is not any one request's and is left out.

``pending(id)`` is what the next decision adds to the ledger, and ``consume`` takes it away once that decision
is committed: counts are never lost to a step that committed nothing, nor counted twice by a conflict's retry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from fave_shared.store import ObjectStore
from fave_shared.store.base import Blob
from fave_shared.store.counting import CountingStore

__all__ = ["RequestMeter"]

_PREFIX = "requests/"


class RequestMeter(CountingStore):
    """A ``CountingStore`` that also tallies puts and gets per request id (thread-safe)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self._tally: dict[str, list[int]] = {}  # request id -> [puts, gets]
        self._tally_lock = threading.Lock()

    def _tally_of(self, key: str, slot: int) -> None:
        if not key.startswith(_PREFIX):
            return
        request_id = key[len(_PREFIX) :].split("/", 1)[0]
        with self._tally_lock:
            tally = self._tally.get(request_id)
            if tally is None:
                tally = self._tally[request_id] = [0, 0]
            tally[slot] += 1

    def get(self, key: str) -> Blob:
        self._tally_of(key, 1)
        return super().get(key)

    def head(self, key: str) -> str | None:
        self._tally_of(key, 1)
        return super().head(key)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        self._tally_of(key, 0)
        return super().put(key, data, if_match=if_match, if_none_match=if_none_match, content_type=content_type)

    def list(self, prefix: str) -> Iterator[str]:
        self._tally_of(prefix, 0)  # one request per listing (pages past the first are rare for one request)
        return super().list(prefix)

    def pending(self, request_id: str) -> tuple[int, int]:
        """(puts, gets) made for ``request_id`` and not yet consumed."""
        with self._tally_lock:
            tally = self._tally.get(request_id)
            return (tally[0], tally[1]) if tally is not None else (0, 0)

    def consume(self, request_id: str, puts: int, gets: int) -> None:
        """Take away what a committed decision has added to the ledger."""
        with self._tally_lock:
            tally = self._tally.get(request_id)
            if tally is None:
                return
            tally[0] -= puts
            tally[1] -= gets
            if tally == [0, 0]:
                del self._tally[request_id]
