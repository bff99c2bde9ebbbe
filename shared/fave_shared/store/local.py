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

Symbolic links: the store never follows one below its root (the root itself may be a link). Every path is
walked one component at a time from a descriptor of the root, each directory opened with ``O_NOFOLLOW`` and
every file opened, created, renamed or removed relative to its directory's descriptor, so a link planted
anywhere (an object's file, a directory on its way, ``.fave`` or its lock and temp folders), pointing outside
the root or inside it, and even one swapped in while an operation runs, cannot send a read, write, delete,
head or list anywhere else. An operation on a key whose file or any directory component is a link raises
``ValidationError`` naming the link, reads included: fave never creates links, so one is tampering or a
mistake to report, not an absent object to act on. ``list`` never lists a link nor descends into one (only
regular files are objects), and a prefix whose directory part passes through one raises ``ValidationError``.
An entry that is neither a regular file nor a directory (a FIFO, a socket) is not an object.

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
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
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

#: A temp file this old belongs to a write that died before its rename (``LocalStore.sweep_temp``).
TEMP_MAX_AGE_S = 3600.0
#: Name of the store's bookkeeping directory directly under the root (reserved: no key may start with it).
META_DIR = ".fave"
#: Number of lock files. More stripes means fewer unrelated keys sharing a lock; a fixed number keeps the
#: lock directory from growing with the number of keys ever written. A lock is held only from a put's check to
#: its rename (~0.1 ms), so 16 are plenty for one machine's writers; each is a file made on its first use, and
#: making a file costs ~0.3 ms of kernel time here: with 256, a store's first thousand writes kept paying for new
#: ones (a third of a cached re-run's store time, ``fave bench incremental``). A process of a fave from before
#: (256 stripes) locks other files: do not write one store with both at once.
LOCK_STRIPES = 16

# errnos worth retrying: resource exhaustion that goes away, interrupted or busy calls.
_RETRYABLE_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.EMFILE, errno.ENFILE})
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the root itself may be a link: the user chose it
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW
# O_NONBLOCK: opening a FIFO planted under the root must not wait for a writer (it is then not an object).
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW
_OPEN_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
_OPEN_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | _NOFOLLOW
# A concurrent delete may prune a directory between our walk and our rename or open; a few attempts
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
    # Accept an etag with or without its quotes, as S3 accepts it.
    return etag if etag.startswith('"') else '"' + etag + '"'


# Inside LocalStore, `list` is the method: these spell the built-in types its signatures need.
_Names = list[str]
_Descriptors = list[int]


class _MissingError(Exception):
    """A directory on the way to a key does not exist (or is an object): nothing to read there."""


class _PrunedError(RetryableError):
    """A directory the walk had just opened was removed (a delete of another key pruned it, under another lock
    stripe) before a directory could be made inside it: walk again from the root."""


class LocalStore:
    """An ``ObjectStore`` backed by a directory; safe across threads and processes on one machine."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = False) -> None:
        """Open (lazily create) the store rooted at ``root``.

        ``durable=True`` fsyncs every written file and its directory before the write returns: slower, but
        survives power loss. The default only guarantees atomicity, which is what a pipeline run needs.
        """
        self._root = os.path.abspath(os.fspath(root))
        self._lock_names = [f"{i:03d}.lock" for i in range(LOCK_STRIPES)]
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
        data = self._read(key, "get")
        if data is None:
            raise NotFoundError(f"local store {self._root}: no object {key!r}")
        return Blob(data, md5_etag)  # computed if asked for

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
        dirs, name = self._split(key)
        if if_match is not None and if_none_match:
            raise ValidationError(f"put {key!r}: pass if_match or if_none_match, not both")
        data = bytes(data)  # a caller's bytearray could change under us between hashing and writing
        etag = md5_etag(data)
        # Write outside the lock: the lock only has to cover check-then-rename.
        tmp_dir, tmp_name = self._write_temp(data, key)
        renamed = False
        try:
            with self._locked(key):
                for _ in range(_REPLACE_ATTEMPTS):
                    # Only a write that will happen makes directories: an if_match on a missing object must not
                    # leave empty ones behind (they would collide with a later object of their name).
                    with ExitStack() as walk:
                        try:
                            chain = walk.enter_context(self._directories(dirs, key, "put", create=if_match is None))
                        except _PrunedError:
                            continue  # a concurrent delete pruned a directory on the way: walk again
                        if chain is None:
                            raise NotFoundError(f"local store {self._root}: if_match on missing object {key!r}")
                        parent = chain[-1]
                        self._check_put(parent, name, key, if_match=if_match, if_none_match=if_none_match)
                        try:
                            os.replace(tmp_name, name, src_dir_fd=tmp_dir, dst_dir_fd=parent)
                        except FileNotFoundError:
                            continue  # a concurrent delete pruned the directory after our walk: walk again
                        except (IsADirectoryError, NotADirectoryError) as e:
                            raise self._collision(key) from e
                        except OSError as e:
                            raise self._error(e, "put", key) from e
                        renamed = True
                        if self._durable:
                            try:
                                os.fsync(parent)
                            except OSError as e:
                                raise self._error(e, "put", key) from e
                        return etag
                raise RetryableError(f"local store {self._root}: put {key!r}: its directory kept disappearing")
        finally:
            if not renamed:
                with suppress(OSError):
                    os.unlink(tmp_name, dir_fd=tmp_dir)
            os.close(tmp_dir)

    def head(self, key: str) -> str | None:
        """The current etag, or None if the object does not exist."""
        data = self._read(key, "head")
        return None if data is None else md5_etag(data)

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error. Empty directories are pruned."""
        dirs, name = self._split(key)
        with self._locked(key), self._directories(dirs, key, "delete", create=False) as chain:
            if chain is None:
                return
            kind = self._kind(chain[-1], name, key, "delete")
            if kind != "file":
                return  # missing, or a "directory" of other keys, which is not an object named `key`
            try:
                os.unlink(name, dir_fd=chain[-1])
            except FileNotFoundError:
                return
            except OSError as e:
                raise self._error(e, "delete", key) from e
            # Remove directories the delete left empty so that a later object may take their name; rmdir
            # refuses non-empty directories, which makes this safe against concurrent writers (see put).
            for parent, directory in zip(reversed(chain[:-1]), reversed(dirs), strict=True):
                try:
                    os.rmdir(directory, dir_fd=parent)
                except OSError:
                    return

    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with ``prefix`` (plain string prefix, like S3), in lexicographic order.

        The walk is lazy: keys written or deleted while iterating may or may not be seen.
        """
        validate_prefix(prefix)
        dir_part, _, partial = prefix.rpartition("/")
        if dir_part == META_DIR or dir_part.startswith(META_DIR + "/"):
            return iter(())
        return self._list(dir_part.split("/") if dir_part else [], partial, prefix)

    def link(self, key: str) -> str:
        """A ``file://`` URI of the object's file (percent-encoded, as ``Path.as_uri`` does)."""
        self._split(key)
        return Path(self._root + "/" + key).as_uri()

    # -- walking without following links ---------------------------------------------------------------

    def _split(self, key: str) -> tuple[_Names, str]:
        """The directory components and the file name of a valid key."""
        validate_key(key)
        if key == META_DIR or key.startswith(META_DIR + "/"):
            raise ValidationError(f"invalid object key {key!r}: {META_DIR!r} is reserved by the local store")
        *dirs, name = key.split("/")
        return dirs, name

    def _open_root(self, key: str, op: str, *, create: bool) -> int | None:
        for attempt in range(2):
            try:
                return os.open(self._root, _ROOT_FLAGS)
            except FileNotFoundError as e:
                if not create:
                    return None
                if attempt:
                    raise self._error(e, op, key) from e
                try:
                    os.makedirs(self._root, exist_ok=True)
                except OSError as e2:
                    raise self._error(e2, op, key) from e2
            except OSError as e:
                raise self._error(e, op, key) from e
        raise AssertionError("unreachable")

    @contextmanager
    def _directories(self, dirs: _Names, key: str, op: str, *, create: bool) -> Iterator[_Descriptors | None]:
        """Descriptors of the root and of each directory in ``dirs`` below it, each opened relative to the
        one before without following a link (``ValidationError`` if one is a link). None if one is missing
        and not ``create``; ``create`` makes the missing ones. Closed on exit."""
        chain: _Descriptors = []
        try:
            root = self._open_root(key, op, create=create)
            if root is None:
                yield None
                return
            chain.append(root)
            for depth, directory in enumerate(dirs):
                try:
                    chain.append(self._open_dir(chain[-1], directory, dirs[: depth + 1], key, op, create=create))
                except _MissingError:
                    yield None
                    return
            yield chain
        finally:
            for fd in reversed(chain):
                os.close(fd)

    def _open_dir(self, parent: int, name: str, path: _Names, key: str, op: str, *, create: bool) -> int:
        for _ in range(_REPLACE_ATTEMPTS):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise _MissingError from None
                try:
                    os.mkdir(name, 0o777, dir_fd=parent)
                except FileExistsError:
                    pass  # made by a concurrent writer (or it is a file or a link: the next open says which)
                except FileNotFoundError:
                    gone = "/".join(path[:-1])  # the parent we had opened: a delete pruned it since
                    raise _PrunedError(f"local store {self._root}: {op} {key!r}: {gone!r} was pruned") from None
                except OSError as e:
                    raise self._error(e, op, key) from e
            except NotADirectoryError:  # a file, a FIFO or a link (O_DIRECTORY | O_NOFOLLOW on a link)
                kind = self._kind(parent, name, key, op, path="/".join(path))
                if kind in ("missing", "dir"):
                    continue  # deleted, or made a directory, since: look again
                if create:
                    raise self._collision(key) from None
                raise _MissingError from None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW on a link, depending on the system
                    raise self._link(key, "/".join(path)) from None
                raise self._error(e, op, key) from e
        raise RetryableError(f"local store {self._root}: {op} {key!r}: {'/'.join(path)!r} kept changing")

    def _kind(self, parent: int, name: str, key: str, op: str, *, path: str | None = None) -> str:
        """``file``, ``dir``, ``missing`` or ``other`` for ``name`` in ``parent``; a link is ValidationError."""
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return "missing"
        except OSError as e:
            raise self._error(e, op, key) from e
        if stat.S_ISLNK(mode):
            raise self._link(key, path or key)
        if stat.S_ISREG(mode):
            return "file"
        return "dir" if stat.S_ISDIR(mode) else "other"

    def _read(self, key: str, op: str) -> bytes | None:
        """The object's bytes, or None if there is no object at ``key``."""
        dirs, name = self._split(key)
        with self._directories(dirs, key, op, create=False) as chain:
            return None if chain is None else self._read_at(chain[-1], name, key, op)

    def _read_at(self, parent: int, name: str, key: str, op: str) -> bytes | None:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EMLINK):
                raise self._link(key, key) from None
            raise self._error(e, op, key) from e
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a directory of other keys, or a FIFO: not an object
            with open(fd, "rb", buffering=0, closefd=False) as f:
                return f.readall()
        except OSError as e:
            raise self._error(e, op, key) from e
        finally:
            os.close(fd)

    def _check_put(self, parent: int, name: str, key: str, *, if_match: str | None, if_none_match: bool) -> None:
        """The conditions of a put, checked under the key's lock; a link where the object goes is refused."""
        if if_match is not None:
            current = self._read_at(parent, name, key, "put")
            if current is None:
                raise NotFoundError(f"local store {self._root}: if_match on missing object {key!r}")
            if md5_etag(current) != _quoted(if_match):
                raise ConflictError(f"local store {self._root}: {key!r} changed (etag is no longer {if_match})")
            return
        kind = self._kind(parent, name, key, "put")
        if if_none_match and kind == "file":
            raise ConflictError(f"local store {self._root}: {key!r} already exists")

    def _list(self, dirs: _Names, partial: str, prefix: str) -> Iterator[str]:
        key_base = "".join(d + "/" for d in dirs)
        with self._directories(dirs, prefix, "list", create=False) as chain:
            if chain is None:
                return
            yield from self._walk(chain[-1], key_base, partial)

    def _walk(self, directory: int, key_base: str, partial: str) -> Iterator[str]:
        # Sorting names with "/" appended to directories orders the full keys lexicographically, because
        # every key below directory "x" starts with "x/". Links are neither listed nor descended into.
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
        except OSError as e:
            raise self._error(e, "list", key_base) from e
        entries.sort(key=itemgetter(0))
        at_root = not key_base
        for _, name, is_dir in entries:
            if not is_dir:
                yield key_base + name
                continue
            if at_root and name == META_DIR:
                continue
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=directory)
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted (or swapped for a link) since the scan
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.EMLINK):
                    continue
                raise self._error(e, "list", key_base + name) from e
            try:
                yield from self._walk(fd, key_base + name + "/", "")
            finally:
                os.close(fd)

    # -- bookkeeping: temp files and locks under .fave/ --------------------------------------------------

    def sweep_temp(self, older_than_s: float = TEMP_MAX_AGE_S) -> int:
        """Delete temp files that no write will ever rename: those of a process that died between writing
        its temp file and renaming it over the object. Returns how many went.

        A live write renames its temp file within moments, so anything older than ``older_than_s`` (an hour
        by default) is an orphan; the age, not the owner, decides, since the writer may be any process."""
        try:
            tmp_dir = self._meta_dir("tmp", "sweep", META_DIR)
        except FaveError:
            return 0
        removed = 0
        cutoff = time.time() - older_than_s
        try:
            with os.scandir(tmp_dir) as it:
                for entry in it:
                    try:
                        if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.name, dir_fd=tmp_dir)
                            removed += 1
                    except FileNotFoundError:
                        continue  # renamed or swept by someone else meanwhile
        except OSError as e:
            raise self._error(e, "sweep", META_DIR) from e
        finally:
            os.close(tmp_dir)
        return removed

    def _meta_dir(self, name: str, op: str, key: str) -> int:
        """A descriptor of ``.fave/<name>``, created on first use, reached without following a link."""
        root = self._open_root(key, op, create=True)
        assert root is not None
        try:
            meta = self._open_dir(root, META_DIR, [META_DIR], key, op, create=True)
        finally:
            os.close(root)
        try:
            return self._open_dir(meta, name, [META_DIR, name], key, op, create=True)
        finally:
            os.close(meta)

    def _write_temp(self, data: bytes, key: str) -> tuple[int, str]:
        """Write ``data`` to a new temp file; returns the temp directory's descriptor and the file's name."""
        # Random, not pid+counter: other LocalStore instances in this process, other processes and other
        # containers (all pid 1) may share the directory. O_EXCL turns the impossible clash into an error.
        tmp_dir = self._meta_dir("tmp", "put", key)
        name = f"{os.urandom(8).hex()}.tmp"
        try:
            fd = os.open(name, _OPEN_TEMP_FLAGS, 0o666, dir_fd=tmp_dir)
        except OSError as e:
            os.close(tmp_dir)
            raise self._error(e, "put", key) from e
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._durable:
                os.fsync(fd)
        except OSError as e:
            os.close(fd)
            with suppress(OSError):
                os.unlink(name, dir_fd=tmp_dir)
            os.close(tmp_dir)
            raise self._error(e, "put", key) from e
        os.close(fd)
        return tmp_dir, name

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        # crc32, not hash(): str hashes are salted per process, and every process must pick the same file.
        lock_name = self._lock_names[zlib.crc32(key.encode("utf-8")) % LOCK_STRIPES]
        lock_dir = self._meta_dir("locks", "lock", key)  # outside the guard: several system calls
        try:
            with _lock_fds_guard:
                try:
                    fd = os.open(lock_name, _OPEN_LOCK_FLAGS, 0o666, dir_fd=lock_dir)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.EMLINK):
                        raise self._link(key, f"{META_DIR}/locks/{lock_name}") from None
                    raise self._error(e, "lock", key) from e
                _open_lock_fds.add(fd)
        finally:
            os.close(lock_dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the guard held (and without the GIL)
            yield
        finally:
            with _lock_fds_guard:
                _open_lock_fds.discard(fd)
                os.close(fd)  # the last descriptor of this open file description: releases the lock

    # -- errors ----------------------------------------------------------------------------------------

    def _link(self, key: str, path: str) -> ValidationError:
        return ValidationError(
            f"local store {self._root}: refusing {key!r}: {path!r} is a symbolic link "
            "(the local store never follows links below its root)"
        )

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
