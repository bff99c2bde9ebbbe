"""The bulk result cache at its edges (CachedItems, pack format 3, deltas): values Python takes for equal and JSON
does not, which rows a full pack drops first, concurrent writers of a base and of a delta, a corrupt delta, the
counts of ``fave cache stats``. Written by a review of the change; each failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fave import cache
from fave_shared.store import LocalStore
from test_cache_packs import N, pack_id, packs, rows_of, run  # type: ignore[import-not-found]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.mark.parametrize("now", [True, 1.0])
def test_an_element_equal_by_python_but_not_by_json_is_not_a_hit(store: LocalStore, now: Any) -> None:
    """Position comparison uses ``==``: ``{"v": 1} == {"v": True} == {"v": 1.0}``, but the cache key (canonical
    JSON) tells them apart. The function gets another input, so its cached output must not be reused."""
    run(store, {"items": N, "changed": [3], "changed_at": 1})
    second, invoked, _ = run(store, {"items": N, "changed": [3], "changed_at": now})
    task = second.tasks["work"][3]
    assert invoked["work"] == 1, f"element 3 changed ({{'v': 1}} -> {{'v': {now!r}}}) but was taken from the cache"
    assert json.dumps(task.output) == json.dumps({"id": 3, "v": now})


def test_the_latest_previous_list_is_kept_before_older_ones(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond the bound, the *oldest* rows are dropped first (module docs, merged_rows). Format 3's ``_merged``
    puts the run's list first and keeps ``kept[-room:]`` of rows sorted by row number, so the previous run's list
    (rows 0..n-1 of the old base) goes first and older rows stay."""
    monkeypatch.setattr(cache, "PACK_ROWS_KEPT", 0)  # room: twice the run's rows (as with 10,000-row lists)
    run(store, {"items": N, "first": 0})  # A
    run(store, {"items": N, "first": 1000})  # B: new list, new base [B][A]
    run(store, {"items": N, "first": 2000})  # C: room for one earlier list: B (the latest) should stay
    (key,) = packs(store)
    assert len(rows_of(store, key)) == 2 * N
    _, invoked, _ = run(store, {"items": N, "first": 1000})
    assert invoked["work"] == 0, "list B (run just before C) was dropped while the older list A was kept"


def _changed_run(read: cache.Pack, positions: list[int], source: str) -> cache.PackRun:
    """A run of the read pack's list with ``positions`` changed (each a new key and output)."""
    keys: list[str | None] = [read.key(i) for i in range(N)]
    outputs = list(read.outputs[:N])
    sources: list[str | None] = [read.sources[read.source_of[i]] for i in range(N)]
    listed = list(read.elements)
    for p in positions:
        keys[p] = f"{source}{p}".encode().hex().ljust(64, "0")[:64]
        outputs[p] = {"new": p, "by": source}
        sources[p] = source
        listed[p] = {"id": p, "v": source}
    return cache.PackRun(keys, outputs, sources, listed)


def test_a_delta_written_after_a_concurrent_fold_keeps_its_rows(store: LocalStore) -> None:
    """Two requests read the pack at once; B changes many rows (folds: a new base), A a few (a delta). A's delta
    is conditional on the *delta's* etag only, which B's fold does not change (the old delta is left in place):
    A's put succeeds, names the base B replaced, and A's rows are never read again, although write_pack
    returned True ("no run's rows are lost")."""
    run(store, {"items": N})
    (key,) = packs(store)
    pid = pack_id(key)
    read = cache.read_pack(store, pid)
    many = list(range(0, N, 2))
    assert cache.write_pack(store, pid, _changed_run(read, many, "01JB"), source="01JB", stage="work", known=read)
    assert json.loads(store.get(key).data)["generation"] != read.generation  # B folded
    a = _changed_run(read, [1], "01JA")
    assert cache.write_pack(store, pid, a, source="01JA", stage="work", known=read)
    rows = cache.read_pack(store, pid).rows
    assert str(a.keys[1]) in rows, "A's row was written in a delta naming the replaced base: lost"


def test_a_fold_written_after_a_concurrent_delta_keeps_its_rows(store: LocalStore) -> None:
    """The other order: A's delta lands first, then B folds with a put conditional on the *base's* etag only,
    which A's delta did not change: B's new base lacks A's rows and A's delta names the old base."""
    run(store, {"items": N})
    (key,) = packs(store)
    pid = pack_id(key)
    read = cache.read_pack(store, pid)
    a = _changed_run(read, [1], "01JA")
    assert cache.write_pack(store, pid, a, source="01JA", stage="work", known=read)
    many = list(range(0, N, 2))
    assert cache.write_pack(store, pid, _changed_run(read, many, "01JB"), source="01JB", stage="work", known=read)
    rows = cache.read_pack(store, pid).rows
    assert str(a.keys[1]) in rows, "A's delta row was not folded into B's new base: lost"


def test_a_corrupt_delta_with_a_huge_length_is_a_miss_not_an_error(store: LocalStore) -> None:
    """``_with_delta`` checks ``length`` is an int >= 0 but not that it is sane: it pads the list to it
    (``listed.extend(repeat(None, length - ...))``), so a corrupt or foreign delta raises MemoryError (or, at
    10**9, takes a minute and ~16 GB) out of ``read_pack`` -- which the bulk lookup does not catch -- instead of
    being left out like any other malformed delta."""
    run(store, {"items": N})
    (key,) = packs(store)
    pid = pack_id(key)
    run(store, {"items": N, "changed": [5]})
    delta = json.loads(store.get(cache.delta_object(pid)).data)
    store.put(cache.delta_object(pid), json.dumps({**delta, "length": 10**15}).encode())
    read = cache.read_pack(store, pid)  # raises MemoryError
    assert len(read.elements) == N


def test_stats_count_only_rows_that_are_read(store: LocalStore) -> None:
    """After a fold, the old delta (naming the replaced base) is left in place and never read again, but
    ``cache.stats`` / ``cache.clear`` still count its rows as cached results."""
    run(store, {"items": N})
    (key,) = packs(store)
    run(store, {"items": N, "changed": [1]})  # a delta of one row
    run(store, {"items": N, "changed": list(range(0, N, 2))})  # folded: the delta is stale now
    entries = len(list(store.list(cache.CACHE_PREFIX))) - len(packs(store)) - len(list(store.list(cache.DELTA_PREFIX)))
    assert cache.stats(store)["entries"] == len(rows_of(store, key)) + entries
