"""A pack base's stored key index (``cache.Pack._sorted``): ``find`` by it answers as the full index does, for
the base's rows and a delta's, and an index that does not fit its base is not used."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fave import cache
from fave_shared.store import LocalStore

PACK = "e" * 64
SOURCE = "01M8F1G3C0BVK1PYRQSHAQQ6Y8"


def key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def run_of(ns: list[int | None]) -> cache.PackRun:
    keys = [None if n is None else key(n) for n in ns]
    return cache.PackRun(keys, [None if n is None else {"n": n} for n in ns], [SOURCE] * len(ns), list(range(len(ns))))


def test_find_by_the_stored_index_answers_as_the_full_index(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ns: list[int | None] = [*range(300), None, *range(300, 400)]  # a failed item: a row with no key
    assert cache.write_pack(store, PACK, run_of(ns), source=SOURCE, stage="s", known=None)
    read = cache.read_pack(store, PACK)
    assert read._sorted is not None and len(read._sorted[0]) == len(read)
    index = dict(read.index())
    assert len(index) == 400 and all(read.find(k) == r for k, r in index.items())
    assert read.find(key(10_000)) == -1 and read.find("-" * 64) == -1 and read.find("zz") == -1
    twin = key(5)[:16] + "0" * 48  # its first 64 bits are a stored key's: the full key decides
    assert read.find(twin) == -1

    # A run that adds a few rows writes a delta: its rows are found after the base's, by their own index.
    more: list[int | None] = [*ns, 1000, 1001]
    assert cache.write_pack(store, PACK, run_of(more), source=SOURCE, stage="s", known=read)
    again = cache.read_pack(store, PACK)
    assert len(again) == 403 and again._sorted is not None and len(again._sorted[0]) == 401
    assert cache.delta_object(PACK) in set(store.list("cache/"))
    assert again.find(key(1001)) == 402 and again.find(key(7)) == index[key(7)] and again.find(key(2000)) == -1


def test_an_index_that_does_not_fit_its_base_is_not_used(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert cache.write_pack(store, PACK, run_of(list(range(50))), source=SOURCE, stage="s", known=None)
    obj = cache.pack_object(PACK)
    doc = json.loads(store.get(obj).data)
    store.put(obj, json.dumps({**doc, "prefix_rows": doc["prefix_rows"][8:]}).encode())  # a row short
    read = cache.read_pack(store, PACK)
    assert read._sorted is None and read.find(key(7)) == 7 and len(read.index()) == 50


def test_an_index_naming_a_row_beyond_its_base_misses_that_key_and_answers_no_other_wrongly(tmp_path: Path) -> None:
    """The rows an index names are not checked when it is read (a pass over every row): ``find`` compares the full
    key of the row named, which a row beyond the base does not have."""
    store = LocalStore(tmp_path)
    assert cache.write_pack(store, PACK, run_of(list(range(50))), source=SOURCE, stage="s", known=None)
    obj = cache.pack_object(PACK)
    doc = json.loads(store.get(obj).data)
    first = int.from_bytes(bytes.fromhex(doc["prefix_rows"][:8]), "little")  # the row whose key sorts first
    doc["prefix_rows"] = "ff" * 4 + doc["prefix_rows"][8:]  # now a row beyond the base
    store.put(obj, json.dumps(doc).encode())
    read = cache.read_pack(store, PACK)
    assert read._sorted is not None
    assert [read.find(key(k)) for k in range(50)] == [-1 if k == first else k for k in range(50)]
