"""The object-store seam: a tiny key/value interface with compare-and-swap.

Two real backends implement it (``LocalStore``: a directory; ``S3Store``: boto3) and one contract test suite
(tests/contract/test_store_contract.py) runs against both. Keys are ``/``-separated relative paths
(``requests/{id}/metadata/state.json``); a key never starts with ``/`` and never contains ``..``.

Concurrency: every write that updates shared state uses ``if_match`` (the etag that was read) or
``if_none_match=True`` (create only). A lost race raises ``ConflictError``; nothing is last-writer-wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class Blob:
    """An object's bytes with the etag they were read at (pass it back as ``if_match``). Immutable.

    ``etag`` may be given as a function of the bytes, called the first time it is read: the local store's etag is
    the MD5 of the bytes (about 1 ms per MB), and most reads never use it."""

    __slots__ = ("_etag", "data")
    data: bytes
    _etag: str | Callable[[bytes], str]

    def __init__(self, data: bytes, etag: str | Callable[[bytes], str]) -> None:
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "_etag", etag)

    @property
    def etag(self) -> str:
        etag = self._etag
        if not isinstance(etag, str):
            etag = etag(self.data)
            object.__setattr__(self, "_etag", etag)  # the same value whoever computes it first
        return etag

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Blob is immutable: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Blob):
            return NotImplemented
        return self.data == other.data and self.etag == other.etag

    def __hash__(self) -> int:
        return hash((self.data, self.etag))

    def __repr__(self) -> str:
        return f"Blob(data={self.data!r}, etag={self.etag!r})"


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Cumulative request and byte counters (used by ``fave bench``)."""

    requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


@runtime_checkable
class ObjectStore(Protocol):
    """Object storage with conditional writes. Implementations are thread-safe."""

    @property
    def uri(self) -> str:
        """Where this store lives, reopenable with ``open_store`` (``/abs/dir`` or ``s3://bucket/prefix``)."""
        ...

    def get(self, key: str) -> Blob:
        """Read an object. Raises ``NotFoundError`` if it does not exist."""
        ...

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Write an object and return its new etag.

        ``if_none_match=True``: create only (``ConflictError`` if it exists). ``if_match=ETAG``: replace only
        if the current etag is ETAG (``ConflictError`` if it changed, ``NotFoundError`` if it is gone).
        """
        ...

    def head(self, key: str) -> str | None:
        """The current etag, or None if the object does not exist."""
        ...

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` (a plain string prefix, not a glob), in lexicographic order."""
        ...

    def link(self, key: str) -> str:
        """A link a person can follow to the object (``file://`` path or ``s3://`` URI)."""
        ...
