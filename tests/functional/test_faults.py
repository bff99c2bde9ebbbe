"""Fault injection where the faults really happen: the local runtime's deliveries and invokes, and the driver's
effects (store writes, invokes) before its next commit; and the system surviving each of them.

Runtime-level tests use tests/fixtures/runtime (EchoThread: a thread-isolated echo whose destination is
FanIn); orchestrator-level tests run tests/fixtures/demo/chaos.yaml (the demo functions, short timeouts)
with real worker processes and a real store.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fave.cli.chaos import check_request
from fave.core.model import Notify, RequestState, RequestStatus, Start, TaskSucceeded
from fave.invoke.base import RetryableInvocationError
from fave.keys import final_key, state_key
from fave.local.faults import FaultPlan, FaultSpec, InjectedCrash
from fave.local.orchestrator import local_orchestrator
from fave.local.runtime import LocalRuntime
from fave.service import Orchestrator
from fave.statefile import StateDoc
from fave_shared.store import ObjectStore
from support.pipelines import make_pipeline

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_TEMPLATE = ROOT / "tests" / "fixtures" / "runtime" / "template.yaml"
CHAOS = ROOT / "tests" / "fixtures" / "demo" / "chaos.yaml"
DEMO_TEMPLATE = CHAOS.parent / "template.yaml"
WORDS = ["the", "quick", "brown", "fox", "jumps"]
FAST = {"async_retry_delays_s": (0.05, 0.05)}
WAIT_S = 15


def expected_final(words: list[str] = WORDS) -> dict[str, Any]:
    """What join answers for ``words`` when nothing fails (``attempts`` depends on the faults: ignored)."""
    return {"text": " ".join(w.upper() + "!" for w in words), "total_length": sum(len(w) + 1 for w in words)}


# -- the runtime ----------------------------------------------------------------------------------------------


@pytest.fixture
def runtime_with(envelopes: queue.Queue[dict[str, Any]]) -> Iterator[Callable[[FaultPlan], LocalRuntime]]:
    runtimes: list[LocalRuntime] = []

    def make(plan: FaultPlan) -> LocalRuntime:
        runtime = LocalRuntime(
            RUNTIME_TEMPLATE,
            destination_handlers={"FanIn": envelopes.put, "DoneQueue": envelopes.put},
            env_overrides={"StageName": "test"},
            max_environments=1,
            faults=plan,
        )
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.close()


def task(i: int) -> dict[str, Any]:
    return {"task": {"request_id": "r", "stage": "echo", "item": i, "attempt": 1}, "i": i}


def received(envelopes: queue.Queue[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [envelopes.get(timeout=WAIT_S) for _ in range(n)]


def test_duplicate_delivers_each_completion_twice(
    runtime_with: Callable[[FaultPlan], LocalRuntime], envelopes: queue.Queue[dict[str, Any]]
) -> None:
    plan = FaultPlan(FaultSpec(duplicate=1.0))
    runtime = runtime_with(plan)
    ids = [runtime.invoke_async("EchoThread", task(i)) for i in range(5)]
    got = received(envelopes, 10)
    assert Counter(e["requestContext"]["requestId"] for e in got) == dict.fromkeys(ids, 2)
    assert runtime.stats()["EchoThread"].invocations == 5  # delivered twice, run once
    assert plan.counts()["duplicate"] == 5
    with pytest.raises(queue.Empty):
        envelopes.get(timeout=0.3)


def test_drop_loses_exactly_the_deliveries_it_counts(
    runtime_with: Callable[[FaultPlan], LocalRuntime], envelopes: queue.Queue[dict[str, Any]]
) -> None:
    plan = FaultPlan(FaultSpec(drop=0.5, seed=4))
    runtime = runtime_with(plan)
    for i in range(20):
        runtime.invoke_async("EchoThread", task(i))
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) + plan.counts()["drop"] < 20:  # every delivery decided: delivered or dropped
        assert time.monotonic() < deadline, (len(got), plan.counts())
        with contextlib.suppress(queue.Empty):
            got.append(envelopes.get(timeout=0.05))
    with pytest.raises(queue.Empty):
        envelopes.get(timeout=0.3)
    assert 0 < plan.counts()["drop"] < 20
    assert runtime.stats()["EchoThread"].invocations == 20
    assert len({e["responsePayload"]["event"]["i"] for e in got}) == len(got)


def test_delay_delivers_late_and_out_of_order(
    runtime_with: Callable[[FaultPlan], LocalRuntime], envelopes: queue.Queue[dict[str, Any]]
) -> None:
    spec = FaultSpec(delay=(0.3, 0.9), seed=1)
    runtime = runtime_with(FaultPlan(spec))
    invoked: dict[int, float] = {}
    for i in range(6):
        invoked[i] = time.monotonic()
        runtime.invoke_async("EchoThread", task(i))
    order: list[int] = []
    latency: dict[int, float] = {}
    for envelope in received(envelopes, 6):
        i = envelope["responsePayload"]["event"]["i"]
        order.append(i)
        latency[i] = time.monotonic() - invoked[i]
    # The same seed hits the same deliveries: a twin plan tells the delay each one drew (item 0: 0.77 s,
    # item 4: 0.41 s, so 4 overtakes 0 unless it finished 0.36 s later).
    twin = FaultPlan(spec)
    delays = {i: twin.delivery_delays(f"EchoThread/Success/echo/{i}/1")[0] for i in range(6)}
    assert all(latency[i] >= delays[i] - 0.01 for i in range(6)), (latency, delays)
    assert order.index(4) < order.index(0), order


def test_throttle_refuses_invokes_like_lambda_429(runtime_with: Callable[[FaultPlan], LocalRuntime]) -> None:
    plan = FaultPlan(FaultSpec(throttle=1.0))
    runtime = runtime_with(plan)
    with pytest.raises(RetryableInvocationError, match=r"EchoThread: TooManyRequestsException \(429\)"):
        runtime.invoke_async("EchoThread", task(1))
    with pytest.raises(RetryableInvocationError, match="TooManyRequestsException"):
        runtime.invoke_sync("EchoThread", task(2))
    assert runtime.stats()["EchoThread"].invocations == 0
    assert plan.counts()["throttle"] == 2


def test_a_crash_after_an_invoke_stops_everything_after_it(
    runtime_with: Callable[[FaultPlan], LocalRuntime], envelopes: queue.Queue[dict[str, Any]]
) -> None:
    # Every delivery is late (0.3 s): the echo may finish before the crash marks the plan dead, so only a
    # delivery still on its way when the driver died can be dropped deterministically.
    plan = FaultPlan(FaultSpec(crash_after_effect=1.0, delay=(0.3, 0.3)), crash="raise")
    runtime = runtime_with(plan)
    with pytest.raises(InjectedCrash, match="invoke EchoThread"):
        runtime.invoke_async("EchoThread", task(1))  # queued (the effect happened), then the caller died
    deadline = time.monotonic() + WAIT_S
    while runtime.stats()["EchoThread"].invocations < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(InjectedCrash):
        runtime.invoke_async("EchoThread", task(2))  # a dead driver invokes nothing more
    with pytest.raises(queue.Empty):  # and receives nothing, not even the late result of task 1
        envelopes.get(timeout=0.6)
    assert runtime.stats()["EchoThread"].invocations == 1


# -- the orchestrator -----------------------------------------------------------------------------------------


class RecordingInbox(queue.Queue[tuple[str, Any]]):
    """The orchestrator's inbox, remembering every event put in it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []

    def put(self, item: tuple[str, Any], block: bool = True, timeout: float | None = None) -> None:
        self.events.append(item[1])
        super().put(item, block, timeout)


def drive_new(
    store: ObjectStore, faults: FaultPlan | str, pipeline: Any = CHAOS, **kwargs: Any
) -> tuple[Orchestrator, RequestState]:
    orchestrator = local_orchestrator(pipeline, store, faults=faults, runtime_options=FAST, **kwargs)
    try:
        state = orchestrator.create({"text": " ".join(WORDS)})
        return orchestrator, orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()


def test_every_completion_delivered_twice_is_counted_once(local_store: ObjectStore) -> None:
    orchestrator = local_orchestrator(
        CHAOS, local_store, faults=FaultPlan(FaultSpec(duplicate=1.0)), runtime_options=FAST
    )
    inbox = RecordingInbox()
    orchestrator.inbox = inbox  # type: ignore[assignment]
    try:
        state = orchestrator.create({"text": " ".join(WORDS)})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()
    assert state.status is RequestStatus.COMPLETED
    successes = Counter(
        (e.stage, e.item, e.attempt) for e in inbox.events if isinstance(e, TaskSucceeded) and e.item is not None
    )
    assert len(successes) == 2 * len(WORDS) and set(successes.values()) == {2}  # shout, measure: every one twice
    assert check_request(local_store, state.request_id, expected_final(), ["attempts", "missing"]) == []
    doc = StateDoc.from_json(local_store.get(state_key(state.request_id)).data)
    assert doc.stages["shout"].succeeded == doc.stages["measure"].succeeded == len(WORDS)


def test_lost_deliveries_time_out_and_are_retried(local_store: ObjectStore, tmp_path: Path) -> None:
    pipeline = make_pipeline(
        f"""
        name: lossy
        template: {DEMO_TEMPLATE}
        final: join
        defaults:
          timeout: 1s
          retry: {{max_attempts: 1, interval: 50ms, jitter: none}}
        stages:
          words: {{function: WordsFunction, mode: sync}}
          shout: {{function: ShoutFunction, needs: [words], for_each: words.words, mode: async}}
          measure: {{function: MeasureFunction, needs: [shout], for_each: words.words, mode: async}}
          join: {{function: JoinFunction, needs: [measure, shout], mode: sync}}
        """,
    )
    notes: list[Notify] = []
    plan = FaultPlan(FaultSpec(drop=1.0))
    started = time.monotonic()
    _, state = drive_new(local_store, plan, pipeline, on_notify=lambda _rid, note, _state: notes.append(note))
    assert time.monotonic() - started < WAIT_S  # nothing hangs: the timeout recovers every lost delivery
    assert state.status is RequestStatus.FAILED
    assert state.failure is not None and state.failure.stage == "shout"
    assert state.failure.error_type == "States.Timeout" and state.failure.attempts == 2
    kinds = Counter(note.kind for note in notes)
    assert kinds["timeout"] >= 2 and kinds["retry"] >= 1
    assert plan.counts()["drop"] >= 2  # each attempt's completion was lost
    assert all(t.status.value != "SUCCEEDED" for t in state.tasks["shout"].values())


def test_throttled_invokes_are_sent_again_without_spending_attempts(local_store: ObjectStore) -> None:
    plan = FaultPlan(FaultSpec(throttle=0.4, seed=2))
    _, state = drive_new(local_store, plan)
    assert state.status is RequestStatus.COMPLETED
    assert plan.counts()["throttle"] > 0
    tasks = [t for stage in state.tasks.values() for t in stage.values()]
    throttled = [t for t in tasks if t.throttled]
    assert sum(t.throttled for t in tasks) == plan.counts()["throttle"], "every throttle is on its task"
    assert throttled and all(t.attempt == 1 and not t.history for t in throttled), "a throttle spent an attempt"
    assert sum(st.throttled for st in state.stages.values()) == plan.counts()["throttle"]
    assert check_request(local_store, state.request_id, expected_final(), ["attempts", "missing"]) == []


class CrashOnceAt(FaultPlan):
    """A plan that crashes (in-process) after the ``nth`` effect whose description starts with ``prefix``,
    and never elsewhere: only the decision is forced, the hooks and the crash are the real ones."""

    def __init__(self, prefix: str, nth: int = 1) -> None:
        super().__init__(FaultSpec(crash_after_effect=1.0), crash="raise")
        self.prefix = prefix
        self.nth = nth
        self.seen = 0

    def _draw(self, kind: str, key: str) -> float:
        if kind == "crash_after_effect" and key.startswith(self.prefix):
            self.seen += 1
            return 0.0 if self.seen == self.nth else 1.0
        return 1.0


def only_request(store: ObjectStore) -> str:
    ids = {key.split("/")[1] for key in store.list("requests/") if key.endswith("metadata/state.json")}
    assert len(ids) == 1, ids
    return ids.pop()


def orphan_shards(store: ObjectStore, request_id: str) -> list[str]:
    """Task-shard objects that state.json does not name (what a step leaves when it dies before committing)."""
    doc = StateDoc.from_json(store.get(state_key(request_id)).data)
    named = {
        f"{stage}/{shard:05d}.{token}.json"
        for stage, sdoc in doc.stages.items()
        for shard, token in enumerate(sdoc.shard_tokens)
        if token
    }
    prefix = f"requests/{request_id}/metadata/tasks/"
    return [key for key in store.list(prefix) if key[len(prefix) :] not in named]


def resume_to_end(store: ObjectStore, request_id: str) -> RequestState:
    """What `fave resume` does: a new orchestrator and runtime on the same store (no faults this time)."""
    orchestrator = local_orchestrator(CHAOS, store, faults="none", runtime_options=FAST)
    try:
        with orchestrator.hold(request_id):
            state = orchestrator.load(request_id)
            if state.status is RequestStatus.INIT:
                orchestrator.apply(request_id, [Start()])
            elif state.status is not RequestStatus.COMPLETED:
                orchestrator.resume(request_id)
            return orchestrator.drive(request_id, tick_s=0.02)
    finally:
        orchestrator.close()


@pytest.mark.parametrize(
    ("prefix", "nth"),
    [
        ("state.json commit", 2),  # the Start commit: committed, its invoke never performed
        ("invoke WordsFunction", 1),  # the sync function ran; its result dies with the driver
        ("task shard write", 1),  # a shard written, state.json not: the step never happened
        ("invoke ShoutFunction", 2),  # part of a step's invokes performed
        ("final.json write", 1),  # final.json written, the COMPLETED commit not
    ],
)
def test_a_crash_after_an_effect_then_resume_completes(local_store: ObjectStore, prefix: str, nth: int) -> None:
    plan = CrashOnceAt(prefix, nth)
    orchestrator = local_orchestrator(CHAOS, local_store, faults=plan, runtime_options=FAST)
    with pytest.raises(InjectedCrash, match=prefix):
        try:
            state = orchestrator.create({"text": " ".join(WORDS)})
            orchestrator.drive(state.request_id, tick_s=0.02, on_step=plan.check_alive)
        finally:
            orchestrator.close()
    assert plan.crashed_after is not None and plan.crashed_after.startswith(prefix)
    request_id = only_request(local_store)
    doc = StateDoc.from_json(local_store.get(state_key(request_id)).data)
    assert doc.status == "RUNNING"  # nothing after the crash point was committed
    if prefix == "task shard write":
        assert orphan_shards(local_store, request_id), "the crashed step's shard should be written but not committed"
    if prefix == "final.json write":
        assert local_store.head(final_key(request_id)) is not None

    state = resume_to_end(local_store, request_id)
    assert state.status is RequestStatus.COMPLETED
    assert check_request(local_store, request_id, expected_final(), ["attempts", "missing"]) == []
    assert orphan_shards(local_store, request_id) == []  # the resumed driver collected the dead step's garbage
