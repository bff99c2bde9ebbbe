"""Issue 14's acceptance: 50 entries queued from a CSV (``fave queue add-batch``) drain through
``fave worker --once --concurrency 3`` with at most 3 requests in flight, all COMPLETED.

"In flight" is read from what the requests recorded, not from the worker's word: each request's
[started_at, finished_at] in its state.json, and the most of those intervals that overlap at any instant.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fave.core.model import RequestStatus
from fave.local.orchestrator import load_local_pipeline
from fave.persistence import list_request_ids
from fave.queue import AdmissionQueue
from fave.service import Orchestrator
from fave_shared.store import LocalStore
from support import e2e

PIPELINE = e2e.ROOT / "tests" / "fixtures" / "worker" / "pipeline.yaml"
ROWS = 50
CONCURRENCY = 3


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant (an end and a start at the same instant do not)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_fifty_csv_entries_drain_with_at_most_three_in_flight(tmp_path: Path) -> None:
    store, book = tmp_path / "store", tmp_path / "ledger.txt"
    rows = tmp_path / "nightly.csv"
    with rows.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["name", "items", "sleep_ms", "ledger"])
        for n in range(ROWS):
            out.writerow([f"product-{n:02d}", 3, 60, str(book)])
    added = e2e.fave("queue", "add-batch", str(rows), "--pipeline", str(PIPELINE), "--store", str(store))
    assert added.code == 0, added.describe()
    queue = AdmissionQueue(LocalStore(store), "worker-ledger")
    assert len(queue.list(["QUEUED"])) == ROWS

    drained = e2e.fave(
        "worker", "--once", "--concurrency", str(CONCURRENCY), "--pipeline", str(PIPELINE), "--store", str(store),
        timeout=600,
    )  # fmt: skip
    assert drained.code == 0, drained.describe()

    entries = queue.list()
    assert len(entries) == ROWS and {e.status for e in entries} == {"DONE"}
    reader = Orchestrator(load_local_pipeline(PIPELINE), LocalStore(store))
    ids = list_request_ids(LocalStore(store))
    assert sorted(ids) == sorted(e.request_id for e in entries)  # one request per entry
    states = [reader.load(rid) for rid in ids]
    assert all(s.status is RequestStatus.COMPLETED for s in states)
    spans = [(s.started_at, s.finished_at) for s in states]
    assert all(start is not None and end is not None for start, end in spans)
    assert most_at_once(spans) == CONCURRENCY  # type: ignore[arg-type]
    assert f"at most {CONCURRENCY} in flight" in drained.stderr
    assert len(book.read_text().splitlines()) == ROWS * 3
