"""The worker's invoker gate (``fave.worker._Gate``): it knows which invocations are still running, and once the
worker stops, new invocations are parked (an asynchronous one accepted and dropped, a synchronous one held
until the worker lets go, then failed) so that the grace period only waits for what was running already. And
the worker's routing of the shared inbox: by request, another request's completions dropped, throttles counted."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from fave.core.model import TaskFailed, TaskSucceeded, TaskThrottled, Tick
from fave.invoke.base import InvokeResult
from fave.worker import Worker, WorkerHooks, WorkerStoppingError, _Gate


class Recorder:
    """An invoker that records what it was asked to run."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail = fail
        self.faults = "the runtime's own attribute"

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        if self.fail:
            raise RuntimeError("no such function")
        self.calls.append(("async", function, payload["task"]["item"]))
        return "id"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        self.calls.append(("sync", function, payload["task"]["item"]))
        return InvokeResult(payload={"ok": True})

    def functions(self) -> frozenset[str]:
        return frozenset({"F"})

    def code_digest(self, function: str) -> str | None:
        return "digest"

    def close(self) -> None:
        self.calls.append(("close", "", None))


def payload(item: int | None, attempt: int = 1, request_id: str = "R1") -> dict[str, Any]:
    return {"task": {"request_id": request_id, "stage": "work", "item": item, "attempt": attempt}, "input": {}}


def test_running_invocations_are_counted_until_their_completion_is_routed() -> None:
    inner = Recorder()
    gate = _Gate(inner)  # type: ignore[arg-type]
    gate.invoke_async("F", payload(0))
    gate.invoke_async("F", payload(1))
    gate.invoke_sync("F", payload(None))
    assert gate.running() == 3
    gate.reported("R1", TaskSucceeded("work", 0, 1, {"i": 0}))
    gate.reported("R1", TaskFailed("work", 1, 2, "E", "an older attempt's"))  # not the one running
    gate.reported("R2", TaskSucceeded("work", 1, 1))  # another request's
    gate.reported("R1", Tick())
    assert gate.running() == 2
    gate.reported("R1", TaskFailed("work", 1, 1, "E", "failed"))
    gate.reported("R1", TaskSucceeded("work", None, 1))
    assert gate.running() == 0
    assert [c[0] for c in inner.calls] == ["async", "async", "sync"]


def test_an_invoke_that_did_not_go_out_is_not_counted() -> None:
    gate = _Gate(Recorder(fail=True))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        gate.invoke_async("F", payload(0))
    assert gate.running() == 0


def test_after_stop_new_invocations_are_parked_and_those_running_still_count() -> None:
    inner = Recorder()
    gate = _Gate(inner)  # type: ignore[arg-type]
    gate.invoke_async("F", payload(0))
    gate.stop_new()
    assert gate.invoke_async("F", payload(1)) != "id"  # accepted (the engine records it sent), never run
    assert gate.parked == 1 and gate.running() == 1
    assert inner.calls == [("async", "F", 0)]

    outcome: list[BaseException] = []

    def sync_call() -> None:
        try:
            gate.invoke_sync("F", payload(None))
        except WorkerStoppingError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=sync_call)
    caller.start()
    caller.join(0.2)
    assert caller.is_alive() and not outcome  # held until the worker lets go: its failure is never applied
    gate.release()
    caller.join(5)
    assert len(outcome) == 1 and gate.parked == 2
    assert inner.calls == [("async", "F", 0)]


def test_the_gate_is_the_runtime_for_everything_else() -> None:
    inner = Recorder()
    gate = _Gate(inner)  # type: ignore[arg-type]
    assert gate.functions() == frozenset({"F"}) and gate.code_digest("F") == "digest"
    assert gate.faults == "the runtime's own attribute"
    gate.close()
    assert inner.calls[-1][0] == "close"


class Hooks(WorkerHooks):
    def __init__(self) -> None:
        self.throttles: list[tuple[str, str, int]] = []

    def throttled(self, request_id: str, stage: str, n: int) -> None:
        self.throttles.append((request_id, stage, n))


def test_the_inbox_is_routed_by_request_and_throttles_are_counted_for_the_hooks() -> None:
    inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    orchestrator = SimpleNamespace(invoker=Recorder(), inbox=inbox, clock=SimpleNamespace(now=lambda: 0.0))
    hooks = Hooks()
    worker = Worker(orchestrator, queue=None, worker_id="w", hooks=hooks)  # type: ignore[arg-type]
    worker.active = {"R1": None, "R2": None}  # type: ignore[dict-item]
    gate = worker.gate
    gate.invoke_async("F", payload(0))
    events = [
        ("R1", TaskSucceeded("work", 0, 1)),
        ("R2", TaskThrottled("work", 3, 1)),
        ("R2", TaskThrottled("work", 4, 1)),
        ("R3", TaskSucceeded("work", 9, 1)),  # a request this worker let go of: dropped
        ("R1", Tick()),
    ]
    for message in events:
        inbox.put(message)
    batch = worker._received()
    assert batch == {"R1": [events[0][1]], "R2": [events[1][1], events[2][1]]}
    assert hooks.throttles == [("R2", "work", 2)]
    assert gate.running() == 0  # R1's invocation reported
