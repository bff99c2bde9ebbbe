"""Property-based tests of the engine's invariants under random interleavings, duplicate deliveries and
crashes between any side effect and the state write.

The orchestrator, engine, persistence and local store are the real ones; only the stage functions are
simulated (``SimInvoker`` computes each stage's output from its input), so hypothesis controls exactly when
each invocation's result arrives, whether it fails, whether it is delivered twice, and where the process
"dies" (an exception raised inside a store write, before or after the bytes land).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from fave.clock import ManualClock
from fave.core.model import RequestStatus, TaskStatus, Tick
from fave.invoke.base import InvokeResult
from fave.keys import final_key
from fave.service import Orchestrator
from fave_shared.store import LocalStore, get_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.pipelines import make_pipeline

PIPELINE = """
    name: props
    final: reduce
    defaults:
      timeout: 30s
      retry: {max_attempts: 2, interval: 1s, backoff_rate: 2, jitter: full}
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async, max_concurrency: 2}
      post: {function: Post, needs: [work], for_each: plan.items, mode: async}
      reduce: {function: Reduce, needs: [post], mode: sync}
"""


class Crash(BaseException):
    """The process dies here (BaseException: nothing in the orchestrator may swallow it)."""


class CrashingStore(LocalStore):
    """A real local store that can be armed to die on its k-th next write, before or after the write."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.countdown: int | None = None
        self.after = False

    def arm(self, k: int, after: bool) -> None:
        self.countdown, self.after = k, after

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:  # type: ignore[override]
        if self.countdown is not None:
            self.countdown -= 1
            if self.countdown < 0:
                self.countdown = None
                if self.after:
                    super().put(key, data, **kwargs)
                raise Crash(key)
        return super().put(key, data, **kwargs)


def expected_total(n: int) -> int:
    return sum(i * 10 + 1 for i in range(n))


class SimInvoker:
    """Computes stage outputs and checks, at every invocation, what must hold when a task is dispatched."""

    def __init__(self) -> None:
        self.outstanding: list[dict[str, Any]] = []
        self.orchestrator: Orchestrator | None = None
        self.committed_successes: set[tuple[str, int]] = set()

    def check(self, payload: dict[str, Any]) -> None:
        assert self.orchestrator is not None
        task = payload["task"]
        stage, item = task["stage"], task["item"] or 0
        state = self.orchestrator._states[task["request_id"]]
        current = state.task(stage, item)
        # Dispatched only after the decision was committed, for the attempt the state says is running.
        assert current is not None and current.status is TaskStatus.RUNNING and current.attempt == task["attempt"]
        # Resume re-runs only what did not succeed.
        assert (stage, item) not in self.committed_successes
        # A stage never has more than max_concurrency tasks in flight.
        assert state.stages["work"].running <= 2
        # Inputs exist: item k of 'post' sees the output of item k of 'work'.
        if stage == "post":
            assert payload["input"]["needs"]["work"] == {"v": item * 10}

    def compute(self, payload: dict[str, Any]) -> Any:
        stage, inp = payload["task"]["stage"], payload["input"]
        if stage == "plan":
            return {"items": list(range(inp["request"]["n"]))}
        if stage == "work":
            return {"v": inp["index"] * 10}
        if stage == "post":
            return {"v": inp["needs"]["work"]["v"] + 1}
        return {"total": sum(p["v"] for p in inp["needs"]["post"])}

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        self.check(payload)
        return InvokeResult(payload=self.compute(payload))

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        self.check(payload)
        self.outstanding.append(payload)
        return "req"

    def close(self) -> None:
        pass


def envelope(payload: dict[str, Any], ok: bool, result: Any) -> dict[str, Any]:
    return {
        "version": "1.0",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "requestContext": {
            "requestId": "r",
            "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:x",
            "condition": "Success" if ok else "RetriesExhausted",
            "approximateInvokeCount": 1,
        },
        "requestPayload": payload,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": None if ok else "Unhandled",
        },
        "responsePayload": result if ok else {"errorType": "ValueError", "errorMessage": "flaky"},
    }


class World:
    def __init__(self, root: Path, pipeline_dir: Path) -> None:
        self.pipeline = make_pipeline(PIPELINE)
        self.store = CrashingStore(root)
        self.clock = ManualClock()
        self.invoker = SimInvoker()
        self.deferred: list[Any] = []
        self.delivered: list[dict[str, Any]] = []
        self.orchestrator = self.fresh()
        self.request_id = ""

    def fresh(self) -> Orchestrator:
        orch = Orchestrator(self.pipeline, self.store, self.invoker, clock=self.clock, sync_submit=self.deferred.append)
        self.invoker.orchestrator = orch
        return orch

    def step(self) -> None:
        events = []
        while not self.orchestrator.inbox.empty():
            _rid, event = self.orchestrator.inbox.get_nowait()
            events.append(event)
        state = self.orchestrator.apply(self.request_id, [*events, Tick()])
        self.invoker.committed_successes |= {
            (stage, item)
            for stage, tasks in state.tasks.items()
            for item, task in tasks.items()
            if task.status is TaskStatus.SUCCEEDED
        }

    def crash_and_resume(self) -> None:
        # The process died: its memory, its inbox and its sync calls in flight are gone. Async
        # invocations already sent keep running (as Lambda's do) and will deliver to the new process.
        self.store.countdown = None
        self.deferred.clear()
        self.orchestrator = self.fresh()
        state = self.orchestrator.resume(self.request_id)
        self.invoker.committed_successes = {
            (stage, item)
            for stage, tasks in state.tasks.items()
            for item, task in tasks.items()
            if task.status is TaskStatus.SUCCEEDED
        }


ACTIONS = ["deliver", "deliver", "deliver", "sync", "sync", "duplicate", "tick", "crash"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_interleaving_duplicates_and_crashes_end_with_the_same_final_json(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 5), label="items")
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp) / "store", Path(tmp))
        # A fixed id: retry jitter hashes the id, and hypothesis must replay an example exactly.
        with mock.patch("fave.service.new_request_id", return_value="01JPR0PERTYTEST00000000000"):
            world.request_id = world.orchestrator.create({"n": n}).request_id
        for _ in range(data.draw(st.integers(0, 50), label="steps")):
            action = data.draw(st.sampled_from(ACTIONS))
            try:
                if action == "deliver" and world.invoker.outstanding:
                    i = data.draw(st.integers(0, len(world.invoker.outstanding) - 1))
                    payload = world.invoker.outstanding.pop(i)
                    ok = data.draw(st.booleans() | st.just(True))
                    env = envelope(payload, ok, world.invoker.compute(payload))
                    world.delivered.append(env)
                    world.orchestrator.deliver(env)
                    world.step()
                elif action == "sync" and world.deferred:
                    world.deferred.pop(data.draw(st.integers(0, len(world.deferred) - 1)))()
                    world.step()
                elif action == "duplicate" and world.delivered:
                    world.orchestrator.deliver(data.draw(st.sampled_from(world.delivered)))
                    world.step()
                elif action == "tick":
                    world.clock.advance(data.draw(st.floats(0, 40)))
                    world.step()
                elif action == "crash":
                    world.store.arm(data.draw(st.integers(0, 3)), data.draw(st.booleans()))
            except Crash:
                world.crash_and_resume()

        # Drain: no more crashes; deliver everything; resume whatever failed; time moves on.
        world.store.countdown = None
        for _ in range(400):
            state = world.orchestrator._states.get(world.request_id) or world.orchestrator.load(world.request_id)
            if state.status is RequestStatus.COMPLETED:
                break
            if state.status.terminal:
                world.orchestrator.resume(world.request_id)
            elif world.deferred:
                world.deferred.pop(0)()
            elif world.invoker.outstanding:
                payload = world.invoker.outstanding.pop(0)
                world.orchestrator.deliver(envelope(payload, True, world.invoker.compute(payload)))
            else:
                world.clock.advance(31)  # retries come due, lost dispatches time out
            world.step()
        state = world.orchestrator.load(world.request_id)
        assert state.status is RequestStatus.COMPLETED
        final, _ = get_json(world.store, final_key(world.request_id))
        assert final == {"total": expected_total(n)}
        # Exactly-once accounting: counts equal the tasks, each item succeeded once.
        for stage in ("work", "post"):
            st_ = state.stages[stage]
            assert st_.succeeded == st_.total == n and st_.running == st_.pending == st_.failed == 0
