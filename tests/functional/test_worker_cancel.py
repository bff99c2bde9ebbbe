"""``fave cancel`` of a request a worker drives: the worker notices the outside write, stops driving it and
finishes its entry (FAILED for good: a cancelled entry is not retried), and goes on with the rest."""

from __future__ import annotations

import re
from pathlib import Path

from fave.core.model import RequestStatus
from fave.queue import AdmissionQueue
from fave_shared.store import LocalStore
from support import e2e
from test_worker_sigterm import PIPELINE, ledger, queue_entries, start_worker, states, stop


def test_a_cancel_from_another_process_ends_the_entry_and_the_worker_goes_on(tmp_path: Path) -> None:
    store, book, logs = tmp_path / "store", tmp_path / "ledger.txt", tmp_path / "w"
    queue_entries(store, ["doomed"], items=100, sleep_ms=400, book=book)
    worker = start_worker(store, logs, "--concurrency", "1", "--poll", "0.2s")
    try:
        started = e2e.wait_for(
            lambda: re.search(r"started request (\w+)", (logs / "stderr").read_text()), timeout=120, what="a request"
        )
        e2e.wait_for(lambda: ledger(book), timeout=60, what="a body to run")
        cancelled = e2e.fave("cancel", started.group(1), "--store", str(store), "--pipeline", str(PIPELINE))
        assert cancelled.code == 0, cancelled.describe()
        e2e.wait_for(lambda: "CANCELLED" in (logs / "stderr").read_text(), timeout=60, what="the worker to notice")
        queue_entries(store, ["next"], items=1, sleep_ms=0, book=book)
        e2e.wait_for(
            lambda: "next" in {n for n, _, _ in ledger(book)}, timeout=60, what="the worker to run the next entry"
        )
        assert stop(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    entries = {e.input["name"]: e for e in AdmissionQueue(LocalStore(store), "worker-ledger").list()}
    assert entries["doomed"].status == "FAILED" and entries["doomed"].attempts == 1
    by_name = {s.input["name"]: s for s in states(store).values()}
    assert by_name["doomed"].status is RequestStatus.CANCELLED
    assert len([n for n, _, _ in ledger(book) if n == "doomed"]) < 100
