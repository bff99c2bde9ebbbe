"""Large dispatches: bounded parallelism, a continuation when time runs short, and nothing lost to a crash.

A step commits its tasks RUNNING and puts them in the request's outbox (``RequestState.unsent``) before any
invoke is sent; sends are recorded by the next commit. A holder that dies mid-dispatch, or stops for lack of
time, leaves the rest in the outbox, and the next holder sends it (``Resend``) with the same attempt numbers:
no dispatch is lost and no task gets a second attempt for it (a re-sent invoke is a duplicate delivery, which
the engine counts once).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from fave.core.model import RequestStatus, Resend, Start, TaskSucceeded, Tick
from fave.invoke.base import InvokeResult
from fave.service import HANDOVER_MARGIN_S, Orchestrator, handover_margin
from fave_shared.store import ObjectStore
from fave_shared.store.counting import CountingStore
from support.pipelines import CHAIN, make_pipeline

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


def test_a_tick_commits_asynchronous_sends_at_once_and_synchronous_ones_with_their_outcome(
    local_store: ObjectStore,
) -> None:
    # An async invoke outlives this process: it is recorded by the next commit, a tick's included, so that a
    # crash long before its completion does not send it again. A sync one runs in this process and reports here:
    # a tick with nothing else due does not commit for it (should the process die, it died too, and whoever
    # resumes sends it again at once instead of waiting for its deadline).
    orch = orchestrator(local_store, Lambda(), dispatch_parallelism=4)  # sync calls never answered here
    rid = orch.create({}, start=False).request_id
    started = orch.apply(rid, [Start()])  # plan is sent, synchronously
    ticked = orch.apply(rid, [Tick()])
    assert ticked.version == started.version and orch.load(rid).unsent.get("plan")  # no commit for it
    succeeded = orch.apply(
        rid, [TaskSucceeded("plan", None, 1, {"items": list(range(ITEMS))}, {"plan.items": tuple(range(ITEMS))})]
    )
    assert not orch.load(rid).unsent.get("plan")  # recorded with its outcome
    assert orch.load(rid).unsent.get("work")  # the async sends of that step: not yet recorded ...
    recorded = orch.apply(rid, [Tick()])
    assert recorded.version == succeeded.version + 1 and not orch.load(rid).unsent.get("work")  # ... the tick does
    assert not orch.apply(rid, []).unsent  # nothing left for a flush


class Answering(Lambda):
    """Answers the synchronous stages after a while (longer than the driver's tick: it ticks idle meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        self.calls[function] += 1
        threading.Event().wait(0.08)
        return InvokeResult({"n": 1})


def test_the_driver_neither_sends_again_nor_commits_only_to_record_what_it_sent_itself(
    local_store: ObjectStore,
) -> None:
    states = Writes(local_store)
    service = Answering()
    orch = Orchestrator(make_pipeline(CHAIN), states, service)
    try:
        rid = orch.create({}).request_id  # sends ``a`` (sync) before the driver starts
        done = orch.drive(rid, tick_s=0.01)
    finally:
        orch.close()
    assert done.status is RequestStatus.COMPLETED and service.calls == {"A": 1, "B": 1, "C": 1}
    # Each commit changed something besides the outbox and the ledger: created, started, a's and b's
    # successes, the end.
    assert all(_differences(a, b) for a, b in pairwise(states.docs)), [
        _differences(a, b) for a, b in pairwise(states.docs)
    ]
    assert len(states.docs) == 5


class Writes(CountingStore):
    """Keeps every state.json written, and the prefixes listed."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.docs: list[dict[str, Any]] = []
        self.listed: list[str] = []

    def list(self, prefix: str) -> Iterator[str]:
        self.listed.append(prefix)
        return super().list(prefix)

    def put(self, key: str, data: bytes, **options: Any) -> str:
        if key.endswith("/metadata/state.json"):
            self.docs.append(json.loads(data))
        return super().put(key, data, **options)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    """The members of two state.json documents that differ, besides the bookkeeping every commit changes."""
    ignored = {"version", "updated_at", "ledger"}
    changed = {name for name in a.keys() | b.keys() if name not in ignored and a.get(name) != b.get(name)}
    if "stages" in changed:
        changed.discard("stages")
        for stage in a["stages"].keys() | b["stages"].keys():
            sa, sb = dict(a["stages"].get(stage) or {}), dict(b["stages"].get(stage) or {})
            sa.pop("unsent", None)
            sb.pop("unsent", None)
            if sa != sb:
                changed.add(f"stages.{stage}")
    return changed


def test_a_driver_collects_garbage_for_a_request_it_did_not_create_only(local_store: ObjectStore) -> None:
    # The garbage a driver collects is the shards of another writer's crashed step: a request created by this
    # orchestrator has none, and its driver does not list the request's shards for it.
    states = Writes(local_store)
    orch = Orchestrator(make_pipeline(CHAIN), states, Answering())
    try:
        rid = orch.create({}).request_id
        orch.drive(rid, tick_s=0.01)
        assert not [p for p in states.listed if p.startswith(f"requests/{rid}/")]
        heir = Orchestrator(make_pipeline(CHAIN), states, Answering())  # a resume elsewhere: it does collect
        # Created and started elsewhere, its first invoke never sent: the heir sends it again and runs it.
        other = (
            Orchestrator(make_pipeline(CHAIN), states, Answering(), sync_submit=lambda call: None).create({}).request_id
        )
        try:
            heir.drive(other, tick_s=0.01)
        finally:
            heir.close()
    finally:
        orch.close()
    assert [p for p in states.listed if p.startswith(f"requests/{other}/")]
