"""A running worker picks up what another worker of the same store left when it died: a RUNNING entry whose
request nobody drives (its lease is free) is resumed at the next queue check, not only at a restart.

In-process (``fave.worker.Worker`` over the real LocalStore, queue and local runtime); the dead worker is
played by an orchestrator that starts the entry's request, dispatches its first stage and goes away."""

from __future__ import annotations

import threading
from pathlib import Path

from fave.core.model import RequestStatus, Start
from fave.ids import new_request_id
from fave.local.orchestrator import local_orchestrator
from fave.queue import AdmissionQueue
from fave.worker import Worker, WorkerOptions
from fave_shared.store import LocalStore
from support import e2e
from test_worker_sigterm import PIPELINE


def test_a_live_worker_resumes_the_request_a_dead_worker_left_running(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    queue = AdmissionQueue(store, "worker-ledger")
    options = WorkerOptions(concurrency=2, poll_s=3600.0, stats_every_s=0.3)  # claims only at start
    survivor = Worker(local_orchestrator(PIPELINE, store), queue, worker_id="survivor", options=options)
    stop = threading.Event()
    runner = threading.Thread(target=survivor.run, args=(stop,), daemon=True)
    runner.start()
    try:
        e2e.wait_for(lambda: survivor._drained, timeout=60, what="the survivor's first (empty) claim")
        entry = queue.add({"name": "orphan", "items": 2, "ledger": str(tmp_path / "ledger.txt")})
        (claimed,) = queue.claim("dead-worker")
        request_id = new_request_id()
        queue.started(claimed.id, request_id)
        dead = local_orchestrator(PIPELINE, store)
        try:
            dead.create(claimed.input, start=False, request_id=request_id)
            with dead.hold(request_id):
                dead.apply(request_id, [Start()])
        finally:
            dead.close()  # gone: nothing of the request is applied any more, its lease is free

        done = e2e.wait_for(
            lambda: (e := queue.get(entry.id)).status == "DONE" and e, timeout=60, what="the orphan's entry to end"
        )
    finally:
        stop.set()
        runner.join(60)
        survivor.orchestrator.close()
    assert done.request_id == request_id  # resumed, not run again as a new request
    assert survivor.report.picked_up == [request_id]
    reader = local_orchestrator(PIPELINE, store)
    try:
        assert reader.load(request_id).status is RequestStatus.COMPLETED
    finally:
        reader.close()
