"""``LocalStore``: the object store as a directory on one machine.

Layout: object ``a/b.json`` is the file ``<root>/a/b.json`` (so a person can open it), and the store's own
bookkeeping lives under ``<root>/.fave/`` (``tmp/`` for files being written, ``locks/`` for lock files),
which is why no key may start with ``.fave``.

Atomicity: every write goes to a temp file first and is then renamed over the object (``os.replace``), so
a reader never sees half an object, even if the writer dies. Every mutation (put, conditional or not, and
delete) runs under an exclusive ``flock`` on one of ``LOCK_STRIPES`` lock files chosen by a stable hash of
the key; ``flock`` locks belong to an open file description, so the same lock serialises threads of one
process (each acquisition opens its own descriptor) and separate processes alike. That makes
``if_match``/``if_none_match`` a real compare-and-swap, and keeps a plain put from slipping in between
another writer's check and its rename. Lock descriptors are close-on-exec, and forked children close the
ones they inherit, so a fork (``multiprocessing``'s default on Linux) never leaves a lock held.

Limits, by design: a file system cannot hold both an object ``a`` and an object ``a/b``; writing the second
raises ``TerminalError``. Nothing is fsynced unless ``durable=True`` (a crash of the *machine* may lose
recent writes; a crash of the *process* never tears an object). Locks need a local file system (``flock``
on network file systems is not dependable).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from operator import itemgetter
from pathlib import Path

from fave_shared.errors import (
    ConflictError,
    FaveError,
    NotFoundError,
    RetryableError,
    TerminalError,
    ValidationError,
)
from fave_shared.store.base import Blob
from fave_shared.store.keys import validate_key, validate_prefix

__all__ = ["LOCK_STRIPES", "META_DIR", "LocalStore", "md5_etag"]

#: Name of the store's bookkeeping directory directly under the root (reserved: no key may start with it).
META_DIR = ".fave"
#: Number of lock files. More stripes means fewer unrelated keys sharing a lock; a fixed number keeps the
#: lock directory from growing with the number of keys ever written.
LOCK_STRIPES = 256

# errnos worth retrying: resource exhaustion that goes away, interrupted or busy calls.
_RETRYABLE_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.EMFILE, errno.ENFILE})
_OPEN_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_OPEN_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
# A concurrent delete may prune the parent directory between our makedirs and our rename; a few attempts
# always suffice in practice, the bound only stops a pathological loop.
_REPLACE_ATTEMPTS = 8


# Lock descriptors currently open in this process. A child forked while one is open inherits a descriptor of
# the same open file description, and a flock is only released when *every* descriptor of it is closed: the
# parent's release would then leave the lock held for as long as the child lives, and writers would hang.
# So forked children close the lock descriptors they inherit. The guard is held across fork, so no
# descriptor can be opened but not yet recorded (or closed but still recorded) at the moment of the fork.
_open_lock_fds: set[int] = set()
_lock_fds_guard = threading.Lock()


def _close_inherited_lock_fds() -> None:
    for fd in _open_lock_fds:
        with suppress(OSError):
            os.close(fd)
    _open_lock_fds.clear()
    _lock_fds_guard.release()


os.register_at_fork(
    before=_lock_fds_guard.acquire,
    after_in_parent=_lock_fds_guard.release,
    after_in_child=_close_inherited_lock_fds,
)


def md5_etag(data: bytes) -> str:
    """The etag S3 gives a single-part, unencrypted upload: the quoted hex MD5 of the bytes."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


def _quoted(etag: str) -> str:
    # Accept an etag with or without its quotes, as S3 does.
    return etag if etag.startswith('"') else '"' + etag + '"'


class LocalStore:
    """An ``ObjectStore`` backed by a directory; safe across threads and processes on one machine."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = False) -> None:
        """Open (lazily create) the store rooted at ``root``.

        ``durable=True`` fsyncs every written file and its directory before the write returns: slower, but
        survives power loss. The default only guarantees atomicity, which is what a pipeline run needs.
        """
        self._root = os.path.abspath(os.fspath(root))
        self._meta = os.path.join(self._root, META_DIR)
        self._tmp_dir = os.path.join(self._meta, "tmp")
        self._lock_dir = os.path.join(self._meta, "locks")
        self._lock_paths = [os.path.join(self._lock_dir, f"{i:03d}.lock") for i in range(LOCK_STRIPES)]
        self._durable = durable

    def __repr__(self) -> str:
        return f"LocalStore({self._root!r})"

    @property
    def uri(self) -> str:
        """The absolute root directory (``open_store(uri)`` reopens this store)."""
        return self._root

    @property
    def root(self) -> Path:
        """The root directory as a ``Path``."""
        return Path(self._root)

    # -- ObjectStore -----------------------------------------------------------------------------------

    def get(self, key: str) -> Blob:
        """Read an object. Raises ``NotFoundError`` if it does not exist."""
        path = self._path(key)
        data = self._read(path, key, "get")
        if data is None:
            raise NotFoundError(f"local store {self._root}: no object {key!r}")
        return Blob(data, md5_etag(data))

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Write an object atomically and return its etag (``content_type`` is not stored locally).

        ``if_none_match=True``: create only (``ConflictError`` if it exists). ``if_match=ETAG``: replace only
        if the current etag is ETAG (``ConflictError`` if it changed, ``NotFoundError`` if it is gone).
        """
        path = self._path(key)
        if if_match is not None and if_none_match:
            raise ValidationError(f"put {key!r}: pass if_match or if_none_match, not both")
        data = bytes(data)  # a caller's bytearray could change under us between hashing and writing
        etag = md5_etag(data)
        # Write outside the lock: the lock only has to cover check-then-rename.
        tmp = self._write_temp(data, key)
        renamed = False
        try:
            with self._locked(key):
                if if_none_match:
                    if self._is_object(path):
                        raise ConflictError(f"local store {self._root}: {key!r} already exists")
                elif if_match is not None:
                    current = self._read(path, key, "put")
                    if current is None:
                        raise NotFoundError(f"local store {self._root}: if_match on missing object {key!r}")
                    if md5_etag(current) != _quoted(if_match):
                        raise ConflictError(f"local store {self._root}: {key!r} changed (etag is no longer {if_match})")
                self._replace(tmp, path, key)
                renamed = True
        finally:
            if not renamed:
                _unlink_quietly(tmp)
        return etag

    def head(self, key: str) -> str | None:
        """The current etag, or None if the object does not exist."""
        data = self._read(self._path(key), key, "head")
        return None if data is None else md5_etag(data)

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error. Empty directories are pruned."""
        path = self._path(key)
        with self._locked(key):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as e:
                if os.path.isdir(path):  # a "directory" of other keys is not an object named `key`
                    return
                raise self._error(e, "delete", key) from e
        self._prune(os.path.dirname(path))

    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with ``prefix`` (plain string prefix, like S3), in lexicographic order.

        The walk is lazy: keys written or deleted while iterating may or may not be seen.
        """
        validate_prefix(prefix)
        dir_part, _, partial = prefix.rpartition("/")
        if dir_part == META_DIR or dir_part.startswith(META_DIR + "/"):
            return iter(())
        base = os.path.join(self._root, dir_part) if dir_part else self._root
        return self._walk(base, dir_part + "/" if dir_part else "", partial)

    def link(self, key: str) -> str:
        """A ``file://`` URI of the object's file (percent-encoded, as ``Path.as_uri`` does)."""
        return Path(self._path(key)).as_uri()

    # -- internals -------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        validate_key(key)
        if key == META_DIR or key.startswith(META_DIR + "/"):
            raise ValidationError(f"invalid object key {key!r}: {META_DIR!r} is reserved by the local store")
        return self._root + "/" + key

    def _read(self, path: str, key: str, op: str) -> bytes | None:
        """The object's bytes, or None if there is no object at ``path``."""
        try:
            with open(path, "rb", buffering=0) as f:
                return f.readall()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as e:
            raise self._error(e, op, key) from e

    @staticmethod
    def _is_object(path: str) -> bool:
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _write_temp(self, data: bytes, key: str) -> str:
        # Random, not pid+counter: other LocalStore instances in this process, other processes and other
        # containers (all pid 1) may share the directory. O_EXCL turns the impossible clash into an error.
        tmp = f"{self._tmp_dir}/{os.urandom(8).hex()}.tmp"
        fd = self._open_meta(tmp, _OPEN_TEMP_FLAGS, "put", key)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._durable:
                os.fsync(fd)
        except OSError as e:
            os.close(fd)
            _unlink_quietly(tmp)
            raise self._error(e, "put", key) from e
        os.close(fd)
        return tmp

    def _replace(self, tmp: str, path: str, key: str) -> None:
        parent = os.path.dirname(path)
        for _ in range(_REPLACE_ATTEMPTS):
            try:
                os.replace(tmp, path)
            except FileNotFoundError:
                # First object in this directory, or a concurrent delete pruned it: create and retry.
                try:
                    os.makedirs(parent, exist_ok=True)
                except (FileExistsError, NotADirectoryError) as e:
                    raise self._collision(key) from e
                except OSError as e:
                    raise self._error(e, "put", key) from e
                continue
            except (IsADirectoryError, NotADirectoryError) as e:
                raise self._collision(key) from e
            except OSError as e:
                raise self._error(e, "put", key) from e
            if self._durable:
                _fsync_dir(parent)
            return
        raise RetryableError(f"local store {self._root}: put {key!r}: parent directory kept disappearing")

    def _prune(self, directory: str) -> None:
        # Remove directories a delete left empty so that a later object may take their name; rmdir refuses
        # non-empty directories, which makes this safe against concurrent writers (see _replace).
        while len(directory) > len(self._root) and directory.startswith(self._root + "/"):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        # crc32, not hash(): str hashes are salted per process, and every process must pick the same file.
        lock_path = self._lock_paths[zlib.crc32(key.encode("utf-8")) % LOCK_STRIPES]
        with _lock_fds_guard:
            fd = self._open_meta(lock_path, _OPEN_LOCK_FLAGS, "lock", key)
            _open_lock_fds.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the guard held (and without the GIL)
            yield
        finally:
            with _lock_fds_guard:
                _open_lock_fds.discard(fd)
                os.close(fd)  # the last descriptor of this open file description: releases the lock

    def _open_meta(self, path: str, flags: int, op: str, key: str) -> int:
        """Open a file under ``.fave/``, creating the bookkeeping directories on first use."""
        for attempt in range(2):
            try:
                return os.open(path, flags, 0o666)
            except FileNotFoundError as e:
                if attempt:
                    raise self._error(e, op, key) from e
                try:
                    os.makedirs(self._tmp_dir, exist_ok=True)
                    os.makedirs(self._lock_dir, exist_ok=True)
                except OSError as e2:
                    raise self._error(e2, op, key) from e2
            except OSError as e:
                raise self._error(e, op, key) from e
        raise AssertionError("unreachable")

    def _walk(self, directory: str, key_base: str, partial: str) -> Iterator[str]:
        # Sorting names with "/" appended to directories orders the full keys lexicographically, because
        # every key below directory "x" starts with "x/". Symlinks are not followed (we never create any).
        entries: list[tuple[str, str, bool]] = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    name = entry.name
                    if not name.startswith(partial):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((name + "/", name, True))
                    elif entry.is_file(follow_symlinks=False):
                        entries.append((name, name, False))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise self._error(e, "list", key_base) from e
        entries.sort(key=itemgetter(0))
        at_root = not key_base
        for _, name, is_dir in entries:
            if is_dir:
                if at_root and name == META_DIR:
                    continue
                yield from self._walk(directory + "/" + name, key_base + name + "/", "")
            else:
                yield key_base + name

    def _collision(self, key: str) -> TerminalError:
        return TerminalError(
            f"local store {self._root}: cannot write {key!r}: a directory cannot hold both an object and "
            "objects below that object's key (e.g. 'a' and 'a/b')"
        )

    def _error(self, e: OSError, op: str, key: str) -> FaveError:
        message = f"local store {self._root}: {op} {key!r} failed: {e.strerror or e}"
        if e.errno == errno.ENAMETOOLONG:
            return ValidationError(message)
        if e.errno in _RETRYABLE_ERRNOS:
            return RetryableError(message)
        return TerminalError(message)


def _unlink_quietly(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
