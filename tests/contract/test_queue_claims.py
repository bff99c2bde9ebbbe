"""The admission queue under real concurrency (threads against the local store and the HTTP moto server, whose
conditional writes are atomic; see tests/contract/test_store_concurrency.py): workers claiming at once never
get the same entry, every entry is claimed by exactly one of them, and adders racing on one key make one entry.
"""

from __future__ import annotations

from collections import Counter
from typing import TypeVar

import pytest
from fave.queue import AdmissionQueue
from fave_shared.store import ObjectStore
from support.threads import in_threads

T = TypeVar("T")
TIMEOUT = 120
# (workers, entries): the HTTP server does ~100 requests/s here, the local store thousands.
LOAD = {"local": (8, 60), "server": (4, 12), "localstack": (4, 12)}


def test_workers_claiming_at_once_never_share_an_entry(
    shared_store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    workers, n = LOAD[request.node.callspec.params["shared_store"]]
    queue = AdmissionQueue(shared_store, "sales")
    ids = {e.id for e in queue.add_batch([{"input": {"n": i}} for i in range(n)])}

    def drain(w: int) -> list[str]:
        mine: list[str] = []
        own = AdmissionQueue(shared_store, "sales")  # each worker its own queue object, as separate processes
        while claimed := own.claim(f"w{w}", limit=2):
            mine.extend(e.id for e in claimed)
        return mine

    per_worker = in_threads(workers, drain)
    counts = Counter(i for mine in per_worker for i in mine)
    assert set(counts) == ids
    assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1]
    assert sum(1 for mine in per_worker if mine) > 1  # the race really happened: more than one worker got some
    stored = {e.id: e.worker for e in queue.list()}
    assert all(stored[i] == f"w{w}" for w, mine in enumerate(per_worker) for i in mine)


def test_adders_racing_on_one_key_make_one_entry(shared_store: ObjectStore, request: pytest.FixtureRequest) -> None:
    workers, _ = LOAD[request.node.callspec.params["shared_store"]]
    queue = AdmissionQueue(shared_store, "sales")
    added = in_threads(workers, lambda w: queue.add({"n": w}, key="sku-1"))
    assert len({e.id for e in added}) == 1
    assert sum(not e.duplicate for e in added) == 1
    [entry] = queue.list()
    assert entry.id == added[0].id
    assert len(queue.claim("w", limit=10)) == 1
