"""``fave worker`` stops on SIGTERM without losing anything, and a restarted worker picks up every request and
queue entry where it was (issue 14, requirement 3); ``fave run`` on SIGTERM ends like Ctrl-C.

Real ``fave`` subprocesses, real signals, the local runtime. The pipeline (tests/fixtures/worker) fans out over
items whose bodies append ``NAME ITEM ATTEMPT`` to a ledger file just before they return, so the tests count the
bodies that ran: a body that succeeded never runs again, whatever the signal interrupted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fave.core.model import RequestStatus, TaskStatus
from fave.local.orchestrator import load_local_pipeline
from fave.persistence import list_request_ids
from fave.queue import AdmissionQueue
from fave.service import Orchestrator
from fave_shared.store import LocalStore
from support import e2e

PIPELINE = e2e.ROOT / "tests" / "fixtures" / "worker" / "pipeline.yaml"


def ledger(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    return [
        (name, int(item), int(attempt))
        for name, item, attempt in (ln.split() for ln in path.read_text().split("\n") if ln)
    ]


def queue_entries(store: Path, names: list[str], *, items: int, sleep_ms: int, book: Path) -> None:
    for name in names:
        request = {"name": name, "items": items, "sleep_ms": sleep_ms, "ledger": str(book)}
        added = e2e.fave("queue", "add", "--pipeline", str(PIPELINE), "--store", str(store), "--key", name,
                         "--input", json.dumps(request))  # fmt: skip
        assert added.code == 0, added.describe()


def start_worker(store: Path, logs: Path, *extra: str) -> subprocess.Popen[bytes]:
    return e2e.start_fave("worker", "--pipeline", str(PIPELINE), "--store", str(store), *extra, env=None, log_dir=logs)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def states(store: Path) -> dict[str, Any]:
    """Every request's state, fully loaded (read-only: no invoker)."""
    reader = Orchestrator(load_local_pipeline(PIPELINE), LocalStore(store))
    return {rid: reader.load(rid, full=True) for rid in list_request_ids(LocalStore(store))}


def succeeded_items(state: Any) -> set[int]:
    return {item for item, task in (state.tasks.get("work") or {}).items() if task.status is TaskStatus.SUCCEEDED}


def test_sigterm_mid_run_then_restart_loses_nothing_and_runs_no_success_twice(tmp_path: Path) -> None:
    store, book = tmp_path / "store", tmp_path / "ledger.txt"
    names = ["a", "b", "c"]
    items = 16
    queue_entries(store, names, items=items, sleep_ms=400, book=book)
    worker = start_worker(store, tmp_path / "w1", "--concurrency", "2", "--grace", "60s")
    try:
        e2e.wait_for(lambda: len(ledger(book)) >= 6, timeout=120, what="some bodies to run")
        assert len(ledger(book)) < len(names) * items, "the run ended before the signal: nothing was tested"
        code = stop(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    log = (tmp_path / "w1" / "stderr").read_text()
    assert code == 0, log
    assert "left RUNNING for the next worker" in log, log

    # Stopped gracefully: every body that ran reported and its step committed (the ledger is exactly the
    # recorded successes), and what was still running stays RUNNING, with its entry, for the next worker.
    first = states(store)
    by_name = {s.input["name"]: s for s in first.values()}
    ran = ledger(book)
    for name, state in by_name.items():
        assert {item for n, item, _ in ran if n == name} == succeeded_items(state), name
    unfinished = [s for s in first.values() if s.status is RequestStatus.RUNNING]
    assert unfinished, log
    queue = AdmissionQueue(LocalStore(store), "worker-ledger")
    running = {e.request_id for e in queue.list(["RUNNING"])}
    assert running == {s.request_id for s in unfinished}

    second = e2e.fave("worker", "--once", "--pipeline", str(PIPELINE), "--store", str(store), timeout=300)
    assert second.code == 0, second.describe()
    assert "resumed request" in second.stderr, second.stderr
    final = states(store)
    assert len(final) == len(names)  # no request made twice for an entry
    assert all(s.status is RequestStatus.COMPLETED for s in final.values())
    assert sorted(s.final["count"] for s in final.values()) == [items] * len(names)
    assert {e.status for e in queue.list()} == {"DONE"}
    counts = Counter((name, item) for name, item, _ in ledger(book))
    assert set(counts) == {(n, i) for n in names for i in range(items)}  # nothing lost
    assert [key for key, n in counts.items() if n > 1] == []  # nothing that succeeded ran twice


def test_grace_period_bounds_the_stop_and_the_cut_invocations_run_again(tmp_path: Path) -> None:
    store, book = tmp_path / "store", tmp_path / "ledger.txt"
    # Bodies far longer than the stop takes: the grace period, then the local runtime's close, which waits up to
    # 5 s for thread-isolated handlers (``local.runtime._CLOSE_S``) before the process exits without them. With
    # 8 s bodies, a signal that came 2.5 s after they started (a loaded machine) let them finish first.
    queue_entries(store, ["slow"], items=2, sleep_ms=15_000, book=book)
    worker = start_worker(store, tmp_path / "w1", "--grace", "0.5s")
    try:
        e2e.wait_for(lambda: "started request" in (tmp_path / "w1" / "stderr").read_text(), timeout=120,
                     what="the worker to start a request")  # fmt: skip
        time.sleep(1.0)  # into the slow bodies
        code = stop(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    log = (tmp_path / "w1" / "stderr").read_text()
    assert code == 0, log
    # It did not wait for the 15 s bodies (they would have written their lines): the grace period cut them.
    assert ledger(book) == []
    (state,) = states(store).values()
    assert state.status is RequestStatus.RUNNING

    again = e2e.fave("worker", "--once", "--pipeline", str(PIPELINE), "--store", str(store), timeout=300)
    assert again.code == 0, again.describe()
    (state,) = states(store).values()
    assert state.status is RequestStatus.COMPLETED
    assert sorted(item for _, item, _ in ledger(book)) == [0, 1]


def test_once_exits_1_when_a_request_failed_and_its_entry_waits_for_a_retry(tmp_path: Path) -> None:
    store, book = tmp_path / "store", tmp_path / "ledger.txt"
    request = {"name": "bad", "items": 2, "ledger": str(book), "fail": True}
    added = e2e.fave("queue", "add", "--pipeline", str(PIPELINE), "--store", str(store),
                     "--input", json.dumps(request))  # fmt: skip
    assert added.code == 0, added.describe()
    queue_entries(store, ["good"], items=2, sleep_ms=0, book=book)
    done = e2e.fave("worker", "--once", "--pipeline", str(PIPELINE), "--store", str(store), timeout=300)
    assert done.code == 1, done.describe()
    assert "FAILED" in done.stderr
    entries = {e.input["name"]: e for e in AdmissionQueue(LocalStore(store), "worker-ledger").list()}
    assert entries["good"].status == "DONE"
    bad = entries["bad"]
    assert (bad.status, bad.attempts) == ("QUEUED", 1) and bad.not_before > time.time()  # its cooldown


def test_bad_worker_options_exit_2_in_one_line(tmp_path: Path) -> None:
    for option in (["--concurrency", "0"], ["--grace", "soon"], ["--poll", "0"]):
        shown = e2e.fave("worker", "--once", "--pipeline", str(PIPELINE), "--store", str(tmp_path), *option)
        assert shown.code == 2, shown.describe()
        assert len(shown.stderr.strip().splitlines()) == 1 and option[0] in shown.stderr, shown.stderr


def test_fave_run_on_sigterm_commits_its_step_names_the_resume_and_exits_143(tmp_path: Path) -> None:
    store, book = tmp_path / "store", tmp_path / "ledger.txt"
    request = {"name": "run", "items": 24, "sleep_ms": 500, "ledger": str(book)}
    running = subprocess.Popen(
        e2e.fave_command("run", "--pipeline", str(PIPELINE), "--input", json.dumps(request), "--store", str(store)),
        cwd=e2e.ROOT,
        env=e2e.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        e2e.wait_for(lambda: len(ledger(book)) >= 2, timeout=120, what="some bodies to run")
        running.send_signal(signal.SIGTERM)
        out, err = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 143, err
    (request_id,) = list_request_ids(LocalStore(store))
    assert err.strip().splitlines()[-1] == (
        f"fave: interrupted; `fave resume {request_id} --store {store}` continues the request"
    ), err
    assert "Traceback" not in err and out == ""
    (state,) = states(store).values()
    assert state.status is RequestStatus.RUNNING  # committed and readable, not cut mid-write
    before = succeeded_items(state)
    resumed = e2e.fave("resume", request_id, "--store", str(store), "--json", timeout=300)
    assert resumed.code == 0 and resumed.json["status"] == "COMPLETED", resumed.describe()
    counts = Counter(item for _, item, _ in ledger(book))
    assert set(counts) == set(range(24))
    assert [item for item in before if counts[item] > 1] == []  # what had succeeded did not run again


def test_a_killed_worker_s_requests_are_resumed_by_the_next_and_no_recorded_success_runs_again(
    tmp_path: Path,
) -> None:
    # A power cut, not a signal: nothing is committed on the way out, the leases name a dead process.
    store, book = tmp_path / "store", tmp_path / "ledger.txt"
    names, items = ["x", "y"], 16
    queue_entries(store, names, items=items, sleep_ms=400, book=book)
    worker = start_worker(store, tmp_path / "w1", "--concurrency", "2")
    try:
        e2e.wait_for(lambda: len(ledger(book)) >= 6, timeout=120, what="some bodies to run")
        e2e.crash(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    recorded = {s.input["name"]: succeeded_items(s) for s in states(store).values()}
    assert any(len(done) < items for done in recorded.values())

    again = e2e.fave("worker", "--once", "--pipeline", str(PIPELINE), "--store", str(store), timeout=300)
    assert again.code == 0, again.describe()
    final = states(store)
    assert len(final) == len(names) and all(s.status is RequestStatus.COMPLETED for s in final.values())
    counts = Counter((name, item) for name, item, _ in ledger(book))
    assert set(counts) == {(n, i) for n in names for i in range(items)}
    assert [(n, i) for n, done in recorded.items() for i in done if counts[(n, i)] > 1] == []
