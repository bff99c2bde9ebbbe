"""Parsed files kept between commands, as Python keeps bytecode: a ``fave`` command that reads an unchanged
pipeline.yaml takes its validated ``Pipeline`` from here instead of validating it again, and so never imports
pydantic (~90 ms of the ~0.3 s a three-stage ``fave run`` took from exec to exit; issue 10's target is 0.25 s).

An entry is found by what it was parsed from: the kind, the file's path and bytes, the Python version and where
fave's packages are loaded from. It records the other files the result depends on (a pipeline: its template,
whose functions it names) with a digest of their bytes, and the size and mtime of every fave module loaded when it
was made (the code that parsed it and the classes it is made of). It is used only if all of those are unchanged;
anything else (no entry, a stale or unreadable one, a directory that cannot be written) parses the file as before
and stores the result. Failures are never stored: a bad file is parsed, and refused, every time.

Where: ``$FAVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/fave``, else ``~/.cache/fave``; under ``parsed/``, at most
``KEEP`` entries (the oldest go). ``FAVE_PARSE_CACHE=0`` turns it off. Entries are pickles, read only from a
directory and files this user owns that nobody else can write (like ``__pycache__``, they are code's output).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

KEEP = 256
"""Entries kept; writing one more removes the least recently written."""

MAX_BYTES = 1 << 20
"""Larger files are parsed without the cache (their parser applies its own limits)."""

_FORMAT = 2
_T = TypeVar("_T")


def cache_dir() -> Path | None:
    """The directory of parsed entries, or None when turned off (``FAVE_PARSE_CACHE=0``)."""
    if os.environ.get("FAVE_PARSE_CACHE", "1") in ("0", "false", "no", "off"):
        return None
    base = os.environ.get("FAVE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        try:
            base = str(Path(xdg) / "fave") if xdg else str(Path.home() / ".cache" / "fave")
        except RuntimeError:  # no HOME and no passwd entry (a container run as an arbitrary uid): no cache
            return None
    return Path(base) / "parsed"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(kind: str, path: Path, data: bytes) -> str:
    head = f"{_FORMAT}\0{kind}\0{path}\0{sys.version}\0{_code_roots()}\0".encode()
    return _digest(head + data)[:40]


def _code_roots() -> str:
    """Where this process's fave comes from: two checkouts (or a checkout and an install) never share an entry,
    even for the same pipeline file (one's classes may not unpickle the other's objects)."""
    roots = []
    for name in ("fave", "fave_shared"):
        module = sys.modules.get(name)
        roots.append(str(getattr(module, "__file__", None) or getattr(module, "__path__", "")))
    return "\0".join(roots)


_VALIDATING = ("fave", "fave_shared", "pydantic", "pydantic_core", "yaml", "fastjsonschema", "immutables")
"""Packages whose loaded modules an entry is stamped with: fave's code and the libraries that validate with it or
make up its objects (an upgrade rewrites their files)."""


def _modules() -> tuple[tuple[str, int, int], ...]:
    """(file, size, mtime_ns) of every module of ``_VALIDATING`` loaded now: the code that made an entry."""
    stamps = []
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] not in _VALIDATING:
            continue
        file = getattr(module, "__file__", None)
        if file:
            with contextlib.suppress(OSError):
                st = os.stat(file)
                stamps.append((file, st.st_size, st.st_mtime_ns))
    return tuple(sorted(stamps))


def _unchanged(stamps: tuple[tuple[str, int, int], ...]) -> bool:
    for file, size, mtime in stamps:
        try:
            st = os.stat(file)
        except OSError:
            return False
        if st.st_size != size or st.st_mtime_ns != mtime:
            return False
    return True


def _same_files(files: tuple[tuple[str, str, str], ...]) -> bool:
    """Each dependency, reached by the path its parser used, is still the same file (a symbolic link on the way
    may have been repointed) with the same bytes."""
    for given, real, digest in files:
        try:
            if os.path.realpath(given) != real or _digest(Path(given).read_bytes()) != digest:
                return False
        except OSError:
            return False
    return True


def _private(path: Path) -> bool:
    """Owned by this user and writable by nobody else: safe to unpickle."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


Depends = Sequence[tuple[Path, bytes]]
"""The other files a parse read: each by the path it was reached by, with its bytes as read before parsing (or
earlier): a file that changes during the parse then no longer matches its entry."""


def parsed(kind: str, path: Path, parse: Callable[[], tuple[_T, Depends]]) -> _T:
    """What ``parse()`` returns first, from the cache when neither ``path`` nor anything it depends on changed.

    ``parse`` reads ``path`` itself and returns (the result, the other files it read: ``Depends``); its exceptions
    pass through and nothing is stored (a missing or unreadable file is ``parse``'s to report)."""
    where = cache_dir()
    data = None
    try:
        st = path.stat()
        if where is not None and stat.S_ISREG(st.st_mode) and st.st_size <= MAX_BYTES:  # not a pipe: read once
            data = path.read_bytes()
    except OSError:
        pass
    if where is None or data is None:
        return parse()[0]
    entry = where / f"{_key(kind, path, data)}.pickle"
    found = _load(entry)
    if found is not None:
        return found  # type: ignore[no-any-return]
    result, depends = parse()
    try:
        if path.read_bytes() != data:
            return result  # changed while it was parsed: which version the result is of is unknown
        files = tuple((str(given), os.path.realpath(given), _digest(read)) for given, read in depends)
    except OSError:
        return result
    _store(where, entry, (_FORMAT, files, _modules(), result))
    return result


def _load(entry: Path) -> Any:
    if not (_private(entry.parent) and _private(entry)):
        return None
    try:
        fmt, files, modules, result = pickle.loads(entry.read_bytes())  # only entries _private() accepts
    except Exception:  # a truncated or foreign entry is a miss, whatever it raises
        return None
    if fmt != _FORMAT or not _unchanged(modules) or not _same_files(files):
        return None
    return result


def _store(where: Path, entry: Path, value: Any) -> None:
    """Write ``entry`` whole (a reader sees the old one or the new one), best effort."""
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _prune(where)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return  # a cache that cannot be written is no cache: the file is parsed every time


_STALE_TMP_NS = 3600 * 10**9
"""A temporary file this old was left by a writer that died before renaming it."""


def _prune(where: Path) -> None:
    entries = []
    now = time.time_ns()
    with os.scandir(where) as listing:
        for item in listing:
            with contextlib.suppress(OSError):
                if item.name.endswith(".pickle"):
                    entries.append((item.stat().st_mtime_ns, item.path))
                elif item.name.endswith(".tmp") and now - item.stat().st_mtime_ns > _STALE_TMP_NS:
                    os.unlink(item.path)
    if len(entries) <= KEEP:
        return
    entries.sort()
    for _, old in entries[: len(entries) - KEEP]:
        with contextlib.suppress(OSError):
            os.unlink(old)
