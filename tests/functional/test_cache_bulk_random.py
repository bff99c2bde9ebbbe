"""Random sequences of lists through the bulk cache; every element computed before is a hit, the rest
run, and every output is the element's own (work is the identity of its element)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fave.persistence import read_stage_tasks
from fave_shared.store import LocalStore
from test_cache_packs import run  # type: ignore[import-not-found]


@pytest.mark.parametrize("seed", range(6))
def test_random_lists(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    store = LocalStore(tmp_path / "store")
    seen: set[tuple[int, int]] = set()
    for step in range(8):
        items = rnd.choice([100, 120, 130, 200])
        first = rnd.choice([0, 0, 0, 1, 5, 60])
        changed = sorted(rnd.sample(range(first, first + items), rnd.choice([0, 1, 3, 20, 90])))
        at = rnd.choice([1, 2, 3])
        request = {"items": items, "first": first, "changed": changed, "changed_at": at}
        state, invoked, _ = run(store, request)
        elements = [(i, at if i in changed else 0) for i in range(first, first + items)]
        new = [e for e in elements if e not in seen]
        work = state.tasks["work"]
        assert len(work) == items
        for pos, (i, v) in enumerate(elements):
            assert work[pos].output == {"id": i, "v": v}, (step, pos)
        docs = read_stage_tasks(store, state.request_id, "work")
        assert len(docs) == items and all(d.status == "SUCCEEDED" for d in docs.values())
        assert state.final == {"count": items, "changed": len(changed)}
        assert invoked["work"] == len(new), (step, request)
        seen.update(elements)
