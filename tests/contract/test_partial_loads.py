"""A step reads what it changes: the request's head and the task blocks its events touch, on every store.

Each step here runs in a fresh orchestrator (as each Lambda invocation does), so nothing is cached between steps:
the counts of store reads are what a deployed orchestrator pays per step.
"""

from __future__ import annotations

from typing import Any

import pytest
from fave.clock import ManualClock
from fave.core.model import TIMEOUT_ERROR, RequestStatus, Start, TaskFailed, TaskSucceeded, Tick
from fave.service import Orchestrator
from fave_shared.store import CountingStore, ObjectStore
from support.pipelines import make_pipeline

ITEMS = 640  # five shards of 128
PIPELINE = """
    name: partial
    final: reduce
    defaults: {timeout: 60s, retry: {max_attempts: 2, interval: 10s, backoff_rate: 1, jitter: none}}
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async, max_concurrency: 200}
      post: {function: Post, needs: [work], for_each: plan.items, mode: async}
      reduce: {function: Reduce, needs: [post], mode: sync}
"""


class Lambda:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None, int]] = []

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        task = payload["task"]
        self.sent.append((task["stage"], task["item"], task["attempt"]))
        return "id"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        raise AssertionError("answered by the test")

    def functions(self) -> frozenset[str]:
        return frozenset({"Plan", "Work", "Post", "Reduce"})

    def close(self) -> None:
        """Nothing."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000.0)


def fresh(store: ObjectStore, clock: ManualClock, service: Lambda) -> Orchestrator:
    return Orchestrator(make_pipeline(PIPELINE), store, service, clock=clock, sync_submit=lambda call: None)


def started(store: ObjectStore, clock: ManualClock, service: Lambda) -> str:
    orch = fresh(store, clock, service)
    rid = orch.create({}, start=False).request_id
    orch.apply(rid, [Start()])
    items = list(range(ITEMS))
    orch.apply(rid, [TaskSucceeded("plan", None, 1, {"items": items}, {"plan.items": tuple(items)})])
    orch.flush_sent(rid)
    return rid


class Reads(CountingStore):
    """Counts GETs (and HEADs) apart: what a step reads."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.gets = 0

    def get(self, key: str) -> Any:
        self.gets += 1
        return super().get(key)


def test_a_completion_reads_the_head_and_its_own_blocks_only(store: ObjectStore, clock: ManualClock) -> None:
    service = Lambda()
    rid = started(store, clock, service)
    assert sum(1 for s, _, _ in service.sent if s == "work") == 200  # max_concurrency
    for item in (5, 150, 200):  # each its own step in a fresh process; 200 runs once 5 has made room
        reads = Reads(store)
        fresh(reads, clock, service).apply(rid, [TaskSucceeded("work", item, 1, {"v": item})])
        # The head, the work and post blocks of the item (post's item k is ready now), the block of the next work
        # item dispatched and the fan-out list's blocks of the two dispatched items: never all 2 x 5 shards.
        assert reads.gets <= 6, reads.gets
    state = fresh(store, clock, service).load(rid, full=True)
    assert state.stages["work"].succeeded == 3 and state.stages["post"].running == 3


def test_timeouts_and_retries_are_found_in_blocks_that_were_not_loaded(store: ObjectStore, clock: ManualClock) -> None:
    service = Lambda()
    rid = started(store, clock, service)
    # Item 250's first attempt fails: a retry in 10 s, recorded in the head's retry blocks.
    orch = fresh(store, clock, service)
    for i in range(200):  # the first 200 succeed, so items 200..399 run next
        orch.apply(rid, [TaskSucceeded("work", i, 1, {"v": i})])
    orch = fresh(store, clock, service)
    orch.apply(rid, [TaskFailed("work", 250, 1, "Boom", "flaky")])
    head = fresh(store, clock, service).load(rid)
    assert head.stages["work"].retry_blocks and not head.partial["work"]  # known without loading a task

    clock.advance(11)  # the retry is due: a tick makes it ready, and the next slot that frees goes to it first
    fresh(store, clock, service).apply(rid, [Tick()])
    before = len(service.sent)
    fresh(store, clock, service).apply(rid, [TaskSucceeded("work", 260, 1, {"v": 260})])
    assert ("work", 250, 2) in service.sent[before:]

    clock.advance(60)  # every running task's deadline has passed: the tick loads what it must and times them out
    orch = fresh(store, clock, service)
    state = orch.apply(rid, [Tick()])
    assert state.status is RequestStatus.RUNNING
    full = fresh(store, clock, service).load(rid, full=True)
    timed_out = [i for i, t in full.tasks["work"].items() if t.error_type == TIMEOUT_ERROR and t.retry_at is not None]
    assert len(timed_out) == 200  # every task that was running, though no step before had loaded their blocks
    assert full.stages["work"].retry_blocks and full.stages["work"].running == 200  # new items took the slots


@pytest.mark.parametrize("event", ["resume", "cancel"])
def test_a_resume_or_cancel_loads_everything_in_one_go(store: ObjectStore, clock: ManualClock, event: str) -> None:
    """Not one restarted decision per block: at 157 blocks that ran out of loads (MAX_LOADS) and took 20 s."""
    service = Lambda()
    rid = started(store, clock, service)
    if event == "resume":
        fresh(store, clock, service).apply(rid, [TaskFailed("work", 3, 1, "Boom", "broken", terminal=True)])
    orch = fresh(store, clock, service)
    loads = []
    load_more = orch.persistence.load_more

    def counted(state: Any, missing: Any) -> Any:
        loads.append((len(missing.tasks), len(missing.items)))
        return load_more(state, missing)

    orch.persistence.load_more = counted  # type: ignore[method-assign]
    before = len(service.sent)
    state = orch.resume(rid) if event == "resume" else orch.cancel(rid, "enough")
    assert len(loads) == 1, loads  # every task block (and, to dispatch again, every fan-out item block) at once
    if event == "resume":
        assert state.status is RequestStatus.RUNNING
        assert sum(1 for s, _, _ in service.sent[before:] if s == "work") == 200  # max_concurrency
    else:
        assert state.status is RequestStatus.CANCELLED
