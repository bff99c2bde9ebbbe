"""``Orchestrator.reset`` against a real store (issue 13, requirement 4): a fanned-out stage of many shards is reset
from a state loaded head-only (as a new process or Lambda invocation loads it), the decision asks for every task
block in one load, the rewritten shards are committed, and a resume from another fresh orchestrator re-runs exactly
that stage and what needs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fave.core.model import RequestStatus, TaskStatus, TaskSucceeded
from fave.persistence import SHARD_SIZE, Persistence, read_stage_tasks
from fave.service import Orchestrator
from fave_shared.errors import ConflictError, ValidationError
from fave_shared.store import LocalStore
from support.pipelines import make_pipeline

ITEMS = 5 * SHARD_SIZE + 7  # six shards

PIPELINE = """
    name: wide
    final: total
    defaults: {timeout: 60s}
    stages:
      plan: {function: Plan, mode: async}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async}
      total: {function: Total, needs: [work], mode: async}
"""


class Recorder:
    """An invoker that records the tasks it was asked to run (nothing runs)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int | None, int]] = []

    def invoke_async(self, function: str, payload: Any) -> str:
        task = json.loads(payload.data)["task"] if hasattr(payload, "data") else payload["task"]
        self.tasks.append((task["stage"], task["item"], task["attempt"]))
        return "id"

    def invoke_sync(self, function: str, payload: Any) -> Any:
        raise AssertionError("no synchronous stage here")

    def functions(self) -> frozenset[str]:
        return frozenset({"Plan", "Work", "Total"})

    def close(self) -> None:
        """Nothing to release."""


def fresh(store: LocalStore) -> tuple[Orchestrator, Recorder]:
    invoker = Recorder()
    return Orchestrator(make_pipeline(PIPELINE), store, invoker), invoker  # type: ignore[arg-type]


def complete(orch: Orchestrator, invoker: Recorder, request_id: str) -> None:
    """Answer every recorded invocation (and what they lead to) until nothing more is dispatched."""
    while invoker.tasks:
        batch, invoker.tasks = invoker.tasks, []
        events = []
        for stage, item, attempt in batch:
            output: Any = {"items": list(range(ITEMS))} if stage == "plan" else {"v": item, "attempt": attempt}
            fanout = {"plan.items": tuple(range(ITEMS))} if stage == "plan" else {}
            events.append(TaskSucceeded(stage, item, attempt, output, fanout))
        orch.apply(request_id, events)


def test_reset_of_a_wide_stage_loads_its_blocks_at_once_and_resume_reruns_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    orch, invoker = fresh(store)
    request_id = orch.create({}).request_id
    complete(orch, invoker, request_id)
    assert orch.load(request_id).status is RequestStatus.COMPLETED

    loads: list[int] = []
    real = Persistence.load_more

    def counted(self: Persistence, state: Any, missing: Any) -> Any:
        loads.append(len(missing.tasks))
        return real(self, state, missing)

    monkeypatch.setattr(Persistence, "load_more", counted)
    second, _ = fresh(store)  # a new process: the head alone is loaded
    with pytest.raises(ValidationError, match="'nope'"):
        second.reset(request_id, ["nope"])
    state, counts = second.reset(request_id, ["work"], downstream=True)
    assert counts == {"work": ITEMS, "total": 1}
    assert loads == [ITEMS // SHARD_SIZE + 1]  # every block of the stage, in one load
    assert state.status is RequestStatus.COMPLETED and not state.nothing_to_resume

    tasks = read_stage_tasks(store, request_id, "work")  # committed: every shard rewritten
    assert len(tasks) == ITEMS
    assert all(t.status == "PENDING" and t.output is None and t.stale_attempts == 1 for t in tasks.values())
    assert read_stage_tasks(store, request_id, "plan")[0].status == "SUCCEEDED"

    third, invoker3 = fresh(store)
    third.resume(request_id)
    assert sorted(invoker3.tasks) == [("work", i, 2) for i in range(ITEMS)]  # plan is not run again
    # A late duplicate of a first-run attempt changes nothing.
    third.apply(request_id, [TaskSucceeded("work", 0, 1, {"v": "stale"})])
    complete(third, invoker3, request_id)
    final = third.load(request_id, full=True)
    assert final.status is RequestStatus.COMPLETED
    assert all(t.status is TaskStatus.SUCCEEDED and t.output["attempt"] == 2 for t in final.tasks["work"].values())
    total = final.task("total")
    assert total is not None and total.attempt == 2


def test_a_running_request_is_not_reset(tmp_path: Path) -> None:
    orch, invoker = fresh(LocalStore(tmp_path / "store"))
    request_id = orch.create({}).request_id
    assert invoker.tasks == [("plan", None, 1)]
    with pytest.raises(ConflictError, match=r"is RUNNING; tasks of stage 'plan' \(1 running\)"):
        orch.reset(request_id, ["plan"])
    assert orch.load(request_id).stages["plan"].running == 1
