"""A queue entry's budget reaches its request (issue 14, requirement 4, through the worker): the request stops
``budget_exceeded`` and its entry fails at once (no retry: it would stop again), while an entry without one
completes."""

from __future__ import annotations

from pathlib import Path

from fave.queue import AdmissionQueue
from fave_shared.store import LocalStore
from support import e2e
from test_worker_sigterm import PIPELINE, ledger, states


def test_an_entry_s_budget_stops_its_request_and_fails_the_entry_for_good(tmp_path: Path) -> None:
    store, book = tmp_path / "store", tmp_path / "ledger.txt"
    queue = AdmissionQueue(LocalStore(store), "worker-ledger")
    capped = queue.add({"name": "capped", "items": 20, "ledger": str(book)}, budget={"max_invocations": 3})
    free = queue.add({"name": "free", "items": 2, "ledger": str(book)})
    done = e2e.fave("worker", "--once", "--pipeline", str(PIPELINE), "--store", str(store), timeout=300)
    assert done.code == 1, done.describe()  # --once: a request failed
    entries = {e.id: e for e in queue.list()}
    assert entries[free.id].status == "DONE"
    assert entries[capped.id].status == "FAILED" and (entries[capped.id].error or "").startswith("budget_exceeded")
    by_name = {s.input["name"]: s for s in states(store).values()}
    assert by_name["capped"].failure is not None and by_name["capped"].failure.error_type == "budget_exceeded"
    assert len([n for n, _, _ in ledger(book) if n == "capped"]) < 20
