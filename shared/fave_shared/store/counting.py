"""``CountingStore``: a pass-through wrapper that counts requests and bytes (for ``fave bench``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from fave_shared.store.base import Blob, ObjectStore, StoreStats

__all__ = ["LIST_PAGE_SIZE", "CountingStore"]

#: Keys per ListObjectsV2 response; a listing is counted as one request per started page, as S3 bills it.
LIST_PAGE_SIZE = 1000


class CountingStore:
    """Wrap any ``ObjectStore`` and count what crosses the seam; thread-safe.

    Counting rules, chosen to match what S3 would bill and transfer:

    * every get, put, head and delete is one request, counted *before* the call, so a failed request
      (a 412 conflict, a missing key) counts too;
    * a put adds ``len(data)`` to ``bytes_written`` even if it fails (the body was sent);
    * a get adds the object's size to ``bytes_read`` when it succeeds;
    * a listing counts one request when it starts and one more per further ``LIST_PAGE_SIZE`` keys.
    """

    def __init__(self, inner: ObjectStore) -> None:
        """Count the requests made through this wrapper to ``inner``."""
        self._inner = inner
        self._lock = threading.Lock()
        self._requests = 0
        self._bytes_read = 0
        self._bytes_written = 0

    def __repr__(self) -> str:
        return f"CountingStore({self._inner!r})"

    @property
    def inner(self) -> ObjectStore:
        """The wrapped store."""
        return self._inner

    @property
    def uri(self) -> str:
        """The wrapped store's URI."""
        return self._inner.uri

    @property
    def stats(self) -> StoreStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return StoreStats(self._requests, self._bytes_read, self._bytes_written)

    def reset(self) -> StoreStats:
        """Zero the counters and return their values just before."""
        with self._lock:
            before = StoreStats(self._requests, self._bytes_read, self._bytes_written)
            self._requests = self._bytes_read = self._bytes_written = 0
        return before

    def _count(self, key: str | None, requests: int = 1, read: int = 0, written: int = 0) -> None:
        """Count a request on ``key`` (a listing's prefix; None for a listing's further pages). Subclasses
        may also tally by key (``fave.cli.measure.KeyKinds``)."""
        with self._lock:
            self._requests += requests
            self._bytes_read += read
            self._bytes_written += written

    # -- ObjectStore -----------------------------------------------------------------------------------

    def get(self, key: str) -> Blob:
        """Read an object (one request; its size in ``bytes_read``)."""
        self._count(key)
        blob = self._inner.get(key)
        self._count(key, requests=0, read=len(blob.data))
        return blob

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Write an object (one request; ``len(data)`` in ``bytes_written``)."""
        self._count(key, written=len(data))
        return self._inner.put(key, data, if_match=if_match, if_none_match=if_none_match, content_type=content_type)

    def head(self, key: str) -> str | None:
        """The current etag or None (one request)."""
        self._count(key)
        return self._inner.head(key)

    def delete(self, key: str) -> None:
        """Delete an object (one request)."""
        self._count(key)
        self._inner.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` (one request per started page of ``LIST_PAGE_SIZE`` keys)."""
        self._count(prefix)
        return self._list(self._inner.list(prefix))  # called now, so a bad prefix raises here

    def _list(self, keys: Iterator[str]) -> Iterator[str]:
        for n, key in enumerate(keys):
            if n and n % LIST_PAGE_SIZE == 0:
                self._count(None)
            yield key

    def link(self, key: str) -> str:
        """The wrapped store's link (no request)."""
        return self._inner.link(key)
