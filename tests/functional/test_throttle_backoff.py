"""Issue 14, requirement 7: a throttled invocation (Lambda's 429 at ReservedConcurrentExecutions) is not a task
failure. The task is re-queued without spending an attempt and the stage's in-flight cap comes down to what the
function takes (additive increase, multiplicative decrease), through the real local runtime, which refuses a
synchronous invoke past a function's reserved concurrency as Lambda does."""

from __future__ import annotations

import time
from pathlib import Path

from fave.core.model import Notify, NotifyKind, RequestState, RequestStatus, TaskStatus
from fave.local.orchestrator import local_orchestrator
from fave_shared.store import LocalStore

PIPELINE = Path(__file__).resolve().parents[1] / "fixtures" / "throttle" / "pipeline.yaml"
ITEMS = 200


def test_a_fan_out_onto_a_function_reserved_at_two_backs_off_and_every_task_succeeds(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    throttles: list[float] = []
    in_flight: list[tuple[float, int]] = []  # (when, the stage's RUNNING tasks) after every step of the driver

    def notes(_request_id: str, note: Notify, _state: RequestState) -> None:
        if note.kind is NotifyKind.THROTTLED:
            throttles.append(time.monotonic())

    orchestrator = local_orchestrator(PIPELINE, store, on_notify=notes)
    try:
        created = orchestrator.create({"items": ITEMS, "sleep_s": 0.02})
        started = time.monotonic()
        orchestrator.drive(
            created.request_id,
            tick_s=0.02,
            on_step=lambda s: in_flight.append((time.monotonic(), s.stages["work"].running)),
        )
        ended = time.monotonic()
        state = orchestrator.load(created.request_id, full=True)
    finally:
        orchestrator.close()

    assert state.status is RequestStatus.COMPLETED, state.failure
    work = state.stages["work"]
    assert work.succeeded == ITEMS and work.failed == 0
    tasks = list(state.tasks["work"].values())
    # No throttle spent an attempt or left a failed attempt behind.
    assert all(t.status is TaskStatus.SUCCEEDED and t.attempt == 1 and not t.history for t in tasks)
    assert work.throttled == len(throttles) == sum(t.throttled for t in tasks) > 0
    # The function never ran more than its reservation (the runtime enforces it; this checks the fixture).
    spans = sorted((t.output["started"], t.output["ended"]) for t in tasks)
    assert max(sum(1 for s, e in spans if s <= at < e) for at, _ in spans) <= 2
    # What the orchestrator keeps in flight converges near the reservation: 32 at first, then about 2 (2 running
    # plus now and then a probe that is refused), never 32 again.
    second_half = [n for at, n in in_flight if at > started + (ended - started) / 2 and n]
    assert second_half and sum(second_half) / len(second_half) <= 3.0, second_half
    assert max(second_half) <= 4, second_half
    # Throttles come as a burst at the start, then as probes, at most about one per two successes.
    late = [at for at in throttles if at > started + (ended - started) / 2]
    assert len(late) <= ITEMS // 4, (len(late), len(throttles))
