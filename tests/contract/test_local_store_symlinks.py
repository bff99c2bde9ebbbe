"""LocalStore never follows a symbolic link below its root.

A link planted where an object's file or any directory on its way should be (pointing outside the root or
inside it), or in the store's own bookkeeping (``.fave``, its ``tmp`` and ``locks`` folders, a lock file),
makes get, head, put (plain and conditional), delete and list refuse with a ValidationError naming the link,
and leaves whatever the link points at untouched. ``list`` skips links found while walking.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import LocalStore
from fave_shared.store.local import LOCK_STRIPES


class Outside:
    """A directory next to the store root, with a file and a folder a link can point at."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "outside"
        (self.dir / "sub").mkdir(parents=True)
        self.secret = self.dir / "secret"
        self.secret.write_bytes(b"outside")
        (self.dir / "sub" / "inner").write_bytes(b"inner")
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        return {
            str(p.relative_to(self.dir)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
            for p in sorted(self.dir.rglob("*"))
        }

    def untouched(self) -> bool:
        return self.snapshot() == self.before


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside(tmp_path)


@pytest.fixture
def seeded_store(local_store: LocalStore) -> LocalStore:
    """``local_store`` holding one object, "seed" (which makes the root and .fave/)."""
    local_store.put("seed", b"makes the root and .fave/")
    return local_store


def refuses(call: Callable[[], Any], link: str) -> None:
    with pytest.raises(ValidationError, match=f"'{link}' is a symbolic link"):
        call()


def every_operation_refuses(store: LocalStore, key: str, link: str) -> None:
    refuses(lambda: store.get(key), link)
    refuses(lambda: store.head(key), link)
    refuses(lambda: store.put(key, b"pwned"), link)
    refuses(lambda: store.put(key, b"pwned", if_none_match=True), link)
    refuses(lambda: store.put(key, b"pwned", if_match='"00000000000000000000000000000000"'), link)
    refuses(lambda: store.delete(key), link)


def no_temp_files_left(store: LocalStore) -> bool:
    return list((store.root / ".fave" / "tmp").iterdir()) == []


# -- the object's own file is a link ------------------------------------------------------------------------


def test_a_key_whose_file_links_outside_is_refused_by_every_operation(
    seeded_store: LocalStore, outside: Outside
) -> None:
    (seeded_store.root / "a").mkdir()
    (seeded_store.root / "a" / "k").symlink_to(outside.secret)
    every_operation_refuses(seeded_store, "a/k", "a/k")
    assert outside.untouched()
    assert (seeded_store.root / "a" / "k").is_symlink()  # delete refused: the link is left for a person to look at
    assert list(seeded_store.list("")) == ["seed"]  # never listed
    assert list(seeded_store.list("a/")) == []
    assert no_temp_files_left(seeded_store)


def test_a_key_whose_file_links_inside_the_root_is_refused(seeded_store: LocalStore) -> None:
    seeded_store.put("real/k", b"real")
    (seeded_store.root / "copy").symlink_to(seeded_store.root / "real" / "k")
    every_operation_refuses(seeded_store, "copy", "copy")
    assert seeded_store.get("real/k").data == b"real"
    assert list(seeded_store.list("")) == ["real/k", "seed"]


def test_a_dangling_link_is_refused_and_put_does_not_create_its_target(
    seeded_store: LocalStore, outside: Outside
) -> None:
    (seeded_store.root / "k").symlink_to(outside.dir / "created-through-the-link")
    every_operation_refuses(seeded_store, "k", "k")
    assert not (outside.dir / "created-through-the-link").exists()
    assert outside.untouched()


# -- a directory on the way is a link -----------------------------------------------------------------------


def test_a_directory_link_to_outside_is_refused_by_every_operation(seeded_store: LocalStore, outside: Outside) -> None:
    (seeded_store.root / "d").symlink_to(outside.dir, target_is_directory=True)
    for key in ("d/secret", "d/new", "d/sub/inner", "d/sub/deeper/new"):
        every_operation_refuses(seeded_store, key, "d")
    refuses(lambda: list(seeded_store.list("d/")), "d")
    refuses(lambda: list(seeded_store.list("d/sub/")), "d")
    assert list(seeded_store.list("")) == ["seed"]  # the link is not descended into
    assert list(seeded_store.list("d")) == []
    assert outside.untouched()
    assert no_temp_files_left(seeded_store)


def test_a_deeper_directory_link_is_named(seeded_store: LocalStore, outside: Outside) -> None:
    seeded_store.put("requests/r1/metadata/state.json", b"{}")
    (seeded_store.root / "requests" / "r1" / "artifacts").symlink_to(outside.dir, target_is_directory=True)
    every_operation_refuses(seeded_store, "requests/r1/artifacts/sub/inner", "requests/r1/artifacts")
    refuses(lambda: list(seeded_store.list("requests/r1/artifacts/")), "requests/r1/artifacts")
    assert list(seeded_store.list("requests/")) == ["requests/r1/metadata/state.json"]
    assert outside.untouched()


def test_a_directory_link_inside_the_root_is_refused(seeded_store: LocalStore) -> None:
    seeded_store.put("real/k", b"real")
    (seeded_store.root / "alias").symlink_to(seeded_store.root / "real", target_is_directory=True)
    every_operation_refuses(seeded_store, "alias/k", "alias")
    refuses(lambda: seeded_store.put("alias/new", b"x"), "alias")
    assert sorted(p.name for p in (seeded_store.root / "real").iterdir()) == ["k"]
    assert seeded_store.get("real/k").data == b"real"
    assert list(seeded_store.list("")) == ["real/k", "seed"]


def test_a_link_swapped_in_for_a_directory_is_refused_on_the_next_call(
    seeded_store: LocalStore, outside: Outside
) -> None:
    seeded_store.put("d/k", b"mine")
    assert seeded_store.get("d/k").data == b"mine"
    (seeded_store.root / "d" / "k").unlink()
    (seeded_store.root / "d").rmdir()
    (seeded_store.root / "d").symlink_to(outside.dir, target_is_directory=True)
    refuses(lambda: seeded_store.put("d/secret", b"pwned"), "d")
    refuses(lambda: seeded_store.delete("d/secret"), "d")
    assert outside.untouched()


# -- the store's bookkeeping is a link ----------------------------------------------------------------------


@pytest.mark.parametrize("planted", [".fave", ".fave/tmp", ".fave/locks"])
def test_a_bookkeeping_folder_link_refuses_writes(tmp_path: Path, outside: Outside, planted: str) -> None:
    root = tmp_path / "root"
    (root / planted).parent.mkdir(parents=True, exist_ok=True)
    (root / planted).symlink_to(outside.dir, target_is_directory=True)
    store = LocalStore(root)
    refuses(lambda: store.put("k", b"v"), planted)
    if planted == ".fave/tmp":
        store.delete("k")  # a delete writes no temp file: it only needs the locks
    else:
        refuses(lambda: store.delete("k"), planted)
    assert outside.untouched()  # no temp file, lock file or folder was made out there
    assert store.head("k") is None  # reads do not touch the bookkeeping


def test_a_lock_file_link_is_refused_and_its_target_not_truncated(seeded_store: LocalStore, outside: Outside) -> None:
    key = "locked/key"
    lock = f"{zlib.crc32(key.encode()) % LOCK_STRIPES:03d}.lock"
    path = seeded_store.root / ".fave" / "locks" / lock
    path.unlink(missing_ok=True)
    path.symlink_to(outside.secret)
    refuses(lambda: seeded_store.put(key, b"v"), f".fave/locks/{lock}")
    refuses(lambda: seeded_store.delete(key), f".fave/locks/{lock}")
    assert outside.untouched()
    assert no_temp_files_left(seeded_store)


# -- what keeps working ---------------------------------------------------------------------------------------


def test_a_fifo_is_not_an_object_and_reading_it_does_not_block(seeded_store: LocalStore) -> None:
    os.mkfifo(seeded_store.root / "pipe")
    result: list[Any] = []

    def read() -> None:
        try:
            seeded_store.get("pipe")
        except NotFoundError as e:
            result.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "get() blocked opening a FIFO"
    assert len(result) == 1
    assert seeded_store.head("pipe") is None
    assert list(seeded_store.list("")) == ["seed"]


def test_a_root_that_is_itself_a_link_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real-root").mkdir()
    (tmp_path / "root-link").symlink_to(tmp_path / "real-root", target_is_directory=True)
    store = LocalStore(tmp_path / "root-link")  # the user's choice, e.g. /tmp on macOS
    etag = store.put("a/b", b"v", if_none_match=True)
    assert store.put("a/b", b"w", if_match=etag)
    assert store.get("a/b").data == b"w"
    assert list(store.list("")) == ["a/b"]
    store.delete("a/b")
    assert not (tmp_path / "real-root" / "a").exists()  # pruned


def test_a_failed_if_match_leaves_no_directory_behind(seeded_store: LocalStore) -> None:
    # Walking with descriptors must not create folders for a write that does not happen: an empty "a"
    # would make a later object "a" collide with it.
    with pytest.raises(NotFoundError):
        seeded_store.put("a/b/c", b"v", if_match='"00000000000000000000000000000000"')
    assert not (seeded_store.root / "a").exists()
    seeded_store.put("a", b"an object named a")
    assert seeded_store.get("a").data == b"an object named a"
