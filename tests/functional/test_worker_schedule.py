"""``fave worker`` runs scheduled re-runs (issue 14, requirement 3): an entry added with ``--every`` runs again
that long after each success, and with ``operations.stale_after`` a keyed entry whose last success is older is
queued again. Real ``fave`` subprocesses on the local runtime (tests/fixtures/worker)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from fave.queue import AdmissionQueue
from fave_shared.store import LocalStore
from support import e2e
from test_worker_sigterm import ledger, start_worker, stop

FIXTURE = e2e.ROOT / "tests" / "fixtures" / "worker"


def add(pipeline: Path, store: Path, request: dict[str, object], *options: str) -> None:
    added = e2e.fave("queue", "add", "--pipeline", str(pipeline), "--store", str(store), "--input", json.dumps(request),
                     *options)  # fmt: skip
    assert added.code == 0, added.describe()


def once(pipeline: Path, store: Path) -> e2e.Result:
    done = e2e.fave("worker", "--once", "--pipeline", str(pipeline), "--store", str(store), timeout=300)
    assert done.code == 0, done.describe()
    return done


def test_a_stale_keyed_entry_is_queued_again_by_the_worker(tmp_path: Path) -> None:
    # (That a fresh one is not is the queue's rule, tested with an injected clock in tests/functional/test_queue*.)
    pipeline, store, book = FIXTURE / "stale.yaml", tmp_path / "store", tmp_path / "ledger.txt"
    add(pipeline, store, {"name": "sku-1", "items": 1, "ledger": str(book)}, "--key", "sku-1")
    first = once(pipeline, store)
    assert "queued again" not in first.stderr and len(ledger(book)) == 1
    queue = AdmissionQueue(LocalStore(store), "worker-stale")
    (done,) = queue.list()
    time.sleep(2.5)  # stale_after: 2s
    again = once(pipeline, store)
    assert "queued again" in again.stderr, again.stderr
    assert len(ledger(book)) == 2
    (entry,) = queue.list()
    assert entry.id == done.id and entry.status == "DONE" and entry.key == "sku-1"
    assert entry.request_id != done.request_id  # a new run of it
    assert (entry.last_success_at or 0.0) > (done.last_success_at or 0.0)


def test_an_every_entry_runs_again_after_each_success_while_the_worker_runs(tmp_path: Path) -> None:
    pipeline, store, book = FIXTURE / "pipeline.yaml", tmp_path / "store", tmp_path / "ledger.txt"
    add(pipeline, store, {"name": "nightly", "items": 1, "ledger": str(book)}, "--every", "1s")
    worker = start_worker(store, tmp_path / "w", "--poll", "0.2s")
    try:
        e2e.wait_for(lambda: len(ledger(book)) >= 3, timeout=120, what="three runs of the recurring entry")
        assert stop(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert Counter(name for name, _, _ in ledger(book)) == {"nightly": len(ledger(book))}
    (entry,) = AdmissionQueue(LocalStore(store), "worker-ledger").list()
    assert entry.every_s == 1.0 and entry.last_success_at is not None
