"""tests/unit does no file I/O: while a unit test runs (its setup, call and teardown), every way of opening,
creating or removing a file raises ``UnitTestFileIOError``, and an attempt that the code under test swallowed
(``except Exception``) still fails the test at teardown.

Blocked: ``builtins.open`` (= ``io.open``), ``os.open`` and the ``os`` calls that create, rename or remove
files and folders, ``pathlib.Path``'s ``open`` / ``read_text`` / ``read_bytes`` / ``write_text`` /
``write_bytes`` / ``mkdir`` / ``unlink`` / ``touch`` / ``rmdir`` / ``rename`` / ``replace``, and ``tempfile``'s
files and folders. A unit test that asks for ``tmp_path``, ``tmpdir``, their factories or ``capfd`` fails at
setup, before pytest makes anything for it.

Left alone, so that importing, pytest and hypothesis keep working:

* the import system: it reads sources through ``io.open_code`` and writes bytecode through ``posix``
  directly, and whatever runs while an import is under way (pytest's assertion rewriter caches bytecode);
* reading installed libraries' own files (standard library, site-packages: botocore reads its service
  models when a client is made), read-only;
* pytest's tracebacks: ``linecache`` reads sources through ``tokenize.open``, which holds the real ``open``;
  its output capture opened its files at session start; ``capsys`` is in memory;
* hypothesis's own files (its example database under ``.hypothesis/``, which replays failing examples, and
  its caches): calls made by hypothesis's code or about that folder. Test infrastructure, like pytest's
  cache, not I/O of the code under test;
* queries that read no file's contents (``os.stat``, ``Path.exists``, ``Path.resolve``, listing a folder).

A test that needs files belongs in tests/functional (or tests/contract); build inputs in memory instead
(``support.pipelines.make_pipeline``, ``fave.yamlsafe.load_text``, ``fave.pipeline.parse_pipeline``).
"""

from __future__ import annotations

import builtins
import io
import os
import pathlib
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import hypothesis
import pytest
from hypothesis.configuration import storage_directory


class UnitTestFileIOError(Exception):
    """A unit test (or the code it runs) touched a file. Not an ``OSError``: no "file missing" fallback may
    take it for an ordinary failure."""


#: Fixtures that make or read files: refused before pytest creates anything (session-scoped ones would
#: otherwise read their file before this guard is in place).
FILE_FIXTURES = (
    *("tmp_path", "tmpdir", "tmp_path_factory", "tmpdir_factory", "capfd", "capfdbinary"),
    *("template", "runtime_template"),  # support.templates
)

#: (owner, attribute) of every blocked call. Their path is the first argument (a Path method's own path), or
#: ``dir=`` for tempfile's.
BLOCKED: list[tuple[Any, str]] = [
    (builtins, "open"),
    (io, "open"),  # the same function as builtins.open, looked up here by pathlib and others
    (os, "open"),
    (os, "mkdir"),
    (os, "makedirs"),
    (os, "mkfifo"),
    (os, "remove"),
    (os, "unlink"),
    (os, "rmdir"),
    (os, "rename"),
    (os, "replace"),
    (os, "truncate"),
    *((pathlib.Path, name) for name in ("open", "read_text", "read_bytes", "write_text", "write_bytes")),
    *((pathlib.Path, name) for name in ("mkdir", "unlink", "touch", "rmdir", "rename", "replace")),
    *((tempfile, name) for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile")),
    *((tempfile, name) for name in ("TemporaryDirectory", "mkstemp", "mkdtemp")),
]


_READS = {"read_text", "read_bytes"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _path_of(args: tuple[Any, ...], kwargs: dict[str, Any], *, tempfile_call: bool) -> str | None:
    """The file a blocked call is about (``dir=`` for tempfile), as an absolute path, if it names one."""
    value = kwargs.get("dir") if tempfile_call else (args[0] if args else kwargs.get("file", kwargs.get("path")))
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.path.abspath(os.fsdecode(value))
    return None


def _reads_only(owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if name in _READS:
        return True
    if name == "open" and owner is os:
        flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
        return isinstance(flags, int) and not flags & _WRITE_FLAGS
    if name == "open":  # builtins / io / Path: a mode without w, a, x or +
        mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
        return isinstance(mode, str) and not set(mode) & set("wax+")
    return False


def _importing() -> bool:
    """Whether an import is running (pytest's assertion rewriter reads and writes its cached bytecode then)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _within(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def _hypothesis_home() -> str:
    home = storage_directory(intent_to_write=False)
    return os.path.abspath(os.fspath(getattr(home, "path", home)))  # a StorageDirectory since 6.1xx, a Path before


#: Installed code (the standard library, site-packages): libraries read their own data there, as botocore
#: reads its service models when a client is made. Read-only; the project's own files are not in them.
LIBRARY_ROOTS = tuple(
    sorted({os.path.abspath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib")})
)


# "<frozen os>": os is frozen in 3.11+, so os.fdopen's own call to io.open names that file, not os.__file__ (hypothesis
# saves a failing example, e.g. one over its deadline on a loaded machine, through mkstemp and os.fdopen).
_SKIPPED = {__file__, pathlib.__file__, os.__file__, tempfile.__file__, "<frozen os>"}
HYPOTHESIS_PACKAGE = os.path.dirname(hypothesis.__file__)


def _caller() -> FrameType | None:
    """The frame that made the blocked call: the innermost one outside this file, pathlib, os and tempfile."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in _SKIPPED:
        frame = frame.f_back
    return frame


def _guarded(
    owner: Any, name: str, real: Callable[..., Any], hypothesis_home: str, attempts: list[str]
) -> Callable[..., Any]:
    tempfile_call = owner is tempfile
    qualified = f"{getattr(owner, '__name__', owner)}.{name}"

    def guard(*args: Any, **kwargs: Any) -> Any:
        path = _path_of(args, kwargs, tempfile_call=tempfile_call)
        caller = _caller()
        where = f"{caller.f_code.co_filename}:{caller.f_lineno}" if caller is not None else "?"
        if (
            (path is not None and _within(path, (hypothesis_home,)))
            or _within(where, (HYPOTHESIS_PACKAGE,))
            or (path is not None and _within(path, LIBRARY_ROOTS) and _reads_only(owner, name, args, kwargs))
            or _importing()
        ):
            return real(*args, **kwargs)
        what = f"{qualified}({path or ''}) called from {where}"
        attempts.append(what)
        raise UnitTestFileIOError(
            f"unit tests do no file I/O: {what}; build the input in memory, or move the test to tests/functional"
        )

    return guard


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(autouse=True)
def _no_file_io(request: pytest.FixtureRequest) -> Iterator[None]:
    wanted = [name for name in FILE_FIXTURES if name in request.fixturenames]
    if wanted:
        pytest.fail(f"unit tests do no file I/O: {request.node.nodeid} uses {', '.join(wanted)}", pytrace=False)
    hypothesis_home = _hypothesis_home()
    attempts: list[str] = []
    # (owner, name, the attribute, whether the owner itself defines it: an inherited one is deleted after)
    saved = [(owner, name, getattr(owner, name), name in vars(owner)) for owner, name in BLOCKED]
    for owner, name, real, _own in saved:
        setattr(owner, name, _guarded(owner, name, real, hypothesis_home, attempts))
    try:
        yield
    finally:
        for owner, name, real, own in saved:
            if own:
                setattr(owner, name, real)
            else:
                delattr(owner, name)
    if attempts and not request.node.stash.get(CALL_FAILED, False):  # a failed call already said why
        pytest.fail("unit tests do no file I/O; attempted:\n  " + "\n  ".join(attempts), pytrace=False)
