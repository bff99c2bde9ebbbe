"""A put walks its key's directories while deletes of other keys (under other lock stripes) prune the ones they
empty: a directory the walk has just opened may be gone before it makes the next one inside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fave_shared.store import LocalStore
from fave_shared.store import local as local_module


def test_a_put_whose_directory_is_pruned_mid_walk_walks_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    store.put("a/other.json", b"{}")
    real = os.mkdir
    pruned: list[str] = []

    def mkdir_after_a_prune(name: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if name == "b" and not pruned:
            # The walk opened a/; another writer's delete of a/other.json now empties and prunes it.
            store.delete("a/other.json")
            pruned.append(name)
        real(name, mode, dir_fd=dir_fd)

    monkeypatch.setattr(local_module.os, "mkdir", mkdir_after_a_prune)
    store.put("a/b/c.json", b"x")  # was: TerminalError (mkdir in a removed directory)
    assert pruned == ["b"]
    assert store.get("a/b/c.json").data == b"x"
    assert not (tmp_path / "a" / "other.json").exists()
