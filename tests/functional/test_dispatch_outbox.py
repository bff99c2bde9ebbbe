"""Large dispatches: bounded parallelism, a continuation when time runs short, and nothing lost to a crash.

A step commits its tasks RUNNING and puts them in the request's outbox (``RequestState.unsent``) before any
invoke is sent; sends are recorded by the next commit. A holder that dies mid-dispatch, or stops for lack of
time, leaves the rest in the outbox, and the next holder sends it (``Resend``) with the same attempt numbers:
no dispatch is lost and no task gets a second attempt for it (a re-sent invoke is a duplicate delivery, which
the engine counts once).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from fave.core.model import RequestStatus, Resend, Start, TaskSucceeded
from fave.service import HANDOVER_MARGIN_S, Orchestrator, handover_margin
from fave_shared.store import ObjectStore
from support.pipelines import make_pipeline

ITEMS = 300
PIPELINE = """
    name: outbox
    final: reduce
    defaults: {timeout: 10m}
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async}
      reduce: {function: Reduce, needs: [work], mode: sync}
"""


class Died(BaseException):
    """The process is gone (no handler of ours catches a BaseException, as none survives a SIGKILL)."""


class Lambda:
    """Records every asynchronous invoke (and can die after ``die_after`` of them)."""

    def __init__(self, die_after: int | None = None) -> None:
        self.sent: Counter[tuple[str, int, int]] = Counter()
        self.die_after = die_after
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        task = payload["task"]
        with self._lock:
            if self.die_after is not None and sum(self.sent.values()) >= self.die_after:
                raise Died()
            self.sent[(task["stage"], task["item"], task["attempt"])] += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        threading.Event().wait(0.002)  # an API round trip
        with self._lock:
            self.in_flight -= 1
        return "id"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        raise AssertionError("synchronous stages are answered by the test")

    def functions(self) -> frozenset[str]:
        return frozenset({"Plan", "Work", "Reduce"})

    def close(self) -> None:
        """Nothing to release."""


def orchestrator(store: ObjectStore, invoker: Lambda, **options: Any) -> Orchestrator:
    return Orchestrator(make_pipeline(PIPELINE), store, invoker, sync_submit=lambda call: None, **options)


def start_fanout(orch: Orchestrator) -> str:
    rid = orch.create({}, start=False).request_id
    orch.apply(rid, [Start()])
    orch.apply(
        rid, [TaskSucceeded("plan", None, 1, {"items": list(range(ITEMS))}, {"plan.items": tuple(range(ITEMS))})]
    )
    return rid


def test_a_fanout_is_dispatched_with_bounded_parallelism_and_recorded_as_sent(local_store: ObjectStore) -> None:
    service = Lambda()
    orch = orchestrator(local_store, service, dispatch_parallelism=8)
    rid = start_fanout(orch)
    assert len(service.sent) == ITEMS and set(service.sent.values()) == {1}
    assert 1 < service.most_in_flight <= 8
    assert orch.load(rid).unsent  # sends are recorded by the next commit ...
    orch.flush_sent(rid)
    assert not orch.load(rid).unsent  # ... or by flushing before letting go of the request


def test_a_holder_that_dies_mid_dispatch_loses_nothing_and_adds_no_attempt(local_store: ObjectStore) -> None:
    dying = Lambda(die_after=100)
    with pytest.raises(Died):
        start_fanout(orchestrator(local_store, dying, dispatch_parallelism=1))
    rid = next(iter(local_store.list("index/requests/"))).rsplit("/", 1)[1]

    service = Lambda()
    heir = orchestrator(local_store, service, dispatch_parallelism=4)
    state = heir.apply(rid, [Resend()])
    assert set(service.sent) == {("work", i, 1) for i in range(ITEMS)}  # every dispatch, the first attempt
    assert sum(dying.sent.values()) == 100  # ... of which these had gone out before: sent again, not lost

    done = heir.apply(rid, [TaskSucceeded("work", i, 1, {"v": i}) for i in range(ITEMS)])
    assert done.stages["work"].succeeded == ITEMS and done.status is RequestStatus.RUNNING  # reduce runs next
    assert all(t.attempt == 1 for t in heir.load(rid, full=True).tasks["work"].values())
    assert not heir.load(rid).unsent.get("work")  # the completions took every work task out of the outbox
    assert state.version < done.version


def test_a_dispatch_short_of_time_stops_and_leaves_the_rest_to_a_continuation(local_store: ObjectStore) -> None:
    service = Lambda()
    calls = 0

    def time_left() -> float:  # plenty for 120 sends, then under the margin
        nonlocal calls
        calls += 1
        return 300.0 if calls <= 120 else 10.0

    orch = orchestrator(local_store, service, dispatch_parallelism=4, time_left=time_left)
    rid = start_fanout(orch)
    assert rid in orch.handover
    first = sum(service.sent.values())
    assert 100 <= first < ITEMS
    orch.flush_sent(rid)
    assert len(orch.load(rid).unsent["work"]) == ITEMS - first

    continuation = orchestrator(local_store, service, dispatch_parallelism=4)
    continuation.apply(rid, [Resend()])
    assert set(service.sent) == {("work", i, 1) for i in range(ITEMS)}
    assert set(service.sent.values()) == {1}  # recorded before the hand-over: nothing sent twice


def test_a_short_function_keeps_a_third_of_its_time_and_still_dispatches(local_store: ObjectStore) -> None:
    # A 10 s orchestrator (the demo template's Timeout): with the 30 s margin no invocation dispatched anything
    # and each one handed over to the next, forever. A third of its time is the margin instead.
    assert handover_margin(900.0) == HANDOVER_MARGIN_S and handover_margin(9.0) == 3.0
    service = Lambda()
    orch = orchestrator(
        local_store, service, dispatch_parallelism=4, time_left=lambda: 9.0, handover_margin_s=handover_margin(9.0)
    )
    rid = start_fanout(orch)
    assert rid not in orch.handover
    assert set(service.sent) == {("work", i, 1) for i in range(ITEMS)}
