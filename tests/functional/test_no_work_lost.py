"""No completed work is thrown away: what succeeds after its request FAILED is kept, and a resume re-runs exactly
the tasks that did not succeed (issue 11, requirement 5; W4 of `fave bench workloads`).

1,000 items are dispatched at once; items i % 10 == 0 fail their first attempt and the pipeline allows no retry,
so the first failure to arrive fails the request while nearly every other item is still queued or running. The
driver waits for those attempts (up to their deadlines) and records their results. The function appends one
ledger line per body it runs, so the test counts bodies, not events.
"""

from __future__ import annotations

import json
from pathlib import Path

from fave.core.model import RequestStatus, TaskStatus
from fave.local.orchestrator import local_orchestrator
from fave_shared.store import LocalStore

ROOT = Path(__file__).resolve().parents[2]
W4 = ROOT / "benchmarks" / "workloads" / "w4-fail-resume.yaml"
ITEMS = 1_000


def ledger_lines(path: Path) -> list[tuple[int, int, str]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(i), int(attempt), outcome) for i, attempt, outcome in rows]


def test_a_failed_request_keeps_late_successes_and_resume_reruns_exactly_the_failures(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ledger = tmp_path / "ledger.txt"
    request = {"items": ITEMS, "fail_every": 10, "ledger": str(ledger)}

    first = local_orchestrator(W4, store)
    try:
        rid = first.create(request).request_id
        state = first.drive(rid, tick_s=0.01)
    finally:
        first.close()
    assert state.status is RequestStatus.FAILED
    run1 = ledger_lines(ledger)
    assert len(run1) == ITEMS  # every dispatched body ran once
    work = state.stages["work"]
    assert work.succeeded == ITEMS - ITEMS // 10, json.dumps(state.failure.describe() if state.failure else None)
    assert state.abandoned == 0  # every attempt in flight at the failure reported before the driver let go

    second = local_orchestrator(W4, store)
    try:
        with second.hold(rid):
            second.resume(rid)
            state = second.drive(rid, tick_s=0.01)
    finally:
        second.close()
    assert state.status is RequestStatus.COMPLETED
    rerun = ledger_lines(ledger)[len(run1) :]
    assert sorted(i for i, _, _ in rerun) == list(range(0, ITEMS, 10))  # exactly the 100 that failed
    assert all(attempt == 2 and outcome == "ok" for _, attempt, outcome in rerun)
    assert state.final == {"count": ITEMS} or state.stages["reduce"].status.value == "SUCCEEDED"
    full = second.load(rid, full=True)
    assert all(t.status is TaskStatus.SUCCEEDED for t in full.tasks["work"].values())
