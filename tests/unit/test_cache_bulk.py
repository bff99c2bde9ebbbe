"""The engine's side of the result cache in bulk (``fave.cache``'s packs): a cached fanned-out stage asks for all
its fresh tasks at once (``CacheLookup``), records the hits of one ``TasksCached`` answer SUCCEEDED in the same
decision (never invoked), dispatches the rest, wakes the same items downstream and asks for those in bulk too,
and asks for a pack of its run when it succeeds. Pure: no I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fave.core.engine import Engine
from fave.core.model import (
    CacheLookup,
    Cancel,
    Invoke,
    RequestState,
    RequestStatus,
    Start,
    TaskFailed,
    TasksCached,
    TaskStatus,
    TaskSucceeded,
    WriteCache,
    WriteCachePack,
)
from support.pipelines import make_pipeline

PIPELINE = make_pipeline(
    """
    name: bulk
    final: join
    stages:
      plan: {function: P, mode: sync}
      work: {function: W, needs: [plan], for_each: plan.items, mode: async, cache: true}
      check: {function: C, needs: [work], for_each: plan.items, mode: async, cache: true}
      join: {function: J, needs: [check], mode: sync, cache: true}
    """
)
ITEMS = ("a", "b", "c", "d")
NOW = 1000.0


def decide(engine: Engine, state: RequestState, events: list[Any]) -> tuple[RequestState, list[Any]]:
    """Decide as the service does: answer every ``CacheLookup`` from ``answers`` and decide again."""
    events = list(events)
    for _ in range(10):
        try:
            return engine.decide_all(state, events, NOW)
        except CacheLookup as ask:
            events.insert(0, TasksCached(ask.stage, {i: ANSWERS.get((ask.stage, i)) for i in ask.inputs}))
            ASKED.append((ask.stage, sorted(ask.inputs)))
    raise AssertionError("still asking")


ANSWERS: dict[tuple[str, int], Any] = {}
ASKED: list[tuple[str, list[int]]] = []


@pytest.fixture(autouse=True)
def _fresh() -> None:
    ANSWERS.clear()
    ASKED.clear()


def started() -> tuple[Engine, RequestState, list[Any]]:
    engine = Engine(PIPELINE)
    state = engine.new_request("01JTESTREQUEST0000000000000", {}, NOW)
    state, commands = decide(engine, state, [Start()])
    (plan,) = [c for c in commands if isinstance(c, Invoke)]
    event = TaskSucceeded("plan", None, plan.attempt, {"items": list(ITEMS)}, {"plan.items": ITEMS})
    state, commands = decide(engine, state, [event])
    return engine, state, commands


def test_a_stage_asks_for_every_task_at_once_and_hits_never_dispatch() -> None:
    ANSWERS.update({("work", 0): ({"w": "a"}, "01JSOURCE"), ("work", 2): ({"w": "c"}, "01JSOURCE")})
    ANSWERS.update({("check", 0): ({"ok": "a"}, "01JSOURCE")})
    _, state, commands = started()
    # work asked once for its 4 tasks; its 2 hits woke check's items 0 and 2, asked in bulk in the same decision
    assert ASKED == [("work", [0, 1, 2, 3]), ("check", [0, 2])]
    invoked = sorted((c.stage, c.item) for c in commands if isinstance(c, Invoke))
    assert invoked == [("check", 2), ("work", 1), ("work", 3)]
    hit = state.task("work", 0)
    assert hit is not None and hit.status is TaskStatus.SUCCEEDED and hit.cached and hit.attempt == 0
    assert hit.cached_from == "01JSOURCE" and hit.output == {"w": "a"}
    work = state.stages["work"]
    assert (work.succeeded, work.running, work.pending) == (2, 2, 0)
    assert (state.stages["check"].succeeded, state.stages["check"].running) == (1, 1)
    assert not [c for c in commands if isinstance(c, WriteCache)]  # a hit is not written again


def test_a_stage_wholly_in_the_cache_succeeds_in_the_decision_that_starts_it_and_asks_for_its_pack() -> None:
    for i, item in enumerate(ITEMS):
        ANSWERS[("work", i)] = ({"w": item}, "01JSOURCE")
        ANSWERS[("check", i)] = ({"ok": item}, "01JSOURCE")
    _, state, commands = started()
    assert state.stages["work"].status.value == "SUCCEEDED" and state.stages["check"].status.value == "SUCCEEDED"
    assert [(c.stage, c.item) for c in commands if isinstance(c, Invoke)] == [("join", None)]
    packs = [c for c in commands if isinstance(c, WriteCachePack)]
    assert [p.stage for p in packs] == ["work", "check"]
    work = packs[0]
    assert sorted(work.rows) == [0, 1, 2, 3] and work.rows[1][1:] == ({"w": "b"}, "01JSOURCE")
    assert work.rows[1][0]["item"] == "b"  # the task's input: what its key is made of
    assert packs[1].item_needs == ("work",)


def test_no_cache_asks_nothing_and_dispatches_everything() -> None:
    engine = Engine(PIPELINE)
    state = engine.new_request("01JTESTREQUEST0000000000000", {}, NOW)
    state, commands = decide(engine, replace(state, no_cache=True), [Start()])
    (plan,) = [c for c in commands if isinstance(c, Invoke)]
    event = TaskSucceeded("plan", None, plan.attempt, {"items": list(ITEMS)}, {"plan.items": ITEMS})
    state, commands = decide(engine, state, [event])
    assert ASKED == []
    assert len([c for c in commands if isinstance(c, Invoke)]) == 4


def test_a_fresh_success_then_completes_the_stage_and_its_pack_names_this_request() -> None:
    ANSWERS.update({("work", i): ({"w": ITEMS[i]}, "01JSOURCE") for i in (0, 1, 2)})
    engine, state, commands = started()
    (last,) = [c for c in commands if isinstance(c, Invoke) and c.stage == "work"]
    state, commands = decide(engine, state, [TaskSucceeded("work", 3, last.attempt, {"w": "d"})])
    (pack,) = [c for c in commands if isinstance(c, WriteCachePack)]
    assert pack.rows[3][1:] == ({"w": "d"}, state.request_id) and pack.rows[0][2] == "01JSOURCE"
    assert state.status is RequestStatus.RUNNING


def test_a_fanned_out_stage_stores_its_outputs_in_its_pack_even_when_the_request_fails() -> None:
    engine, state, commands = started()  # nothing in the cache: every work task is dispatched
    work = {c.item: c for c in commands if isinstance(c, Invoke) and c.stage == "work"}
    state, commands = decide(engine, state, [TaskSucceeded("work", 0, work[0].attempt, {"w": "a"})])
    assert not [c for c in commands if isinstance(c, (WriteCache, WriteCachePack))]  # its pack, when it ends
    failed = TaskFailed("work", 1, work[1].attempt, "ValueError", "no", terminal=True)
    state, commands = decide(engine, state, [failed])
    assert state.status is RequestStatus.FAILED
    (pack,) = [c for c in commands if isinstance(c, WriteCachePack)]  # check had no success: no pack
    assert pack.stage == "work" and pack.rows == {0: ({"item": "a", "needs": {}}, {"w": "a"}, state.request_id)}
    assert pack.shared["item"] == "a" and pack.shared["needs"] == {}


def test_a_cancelled_request_stores_what_its_fanned_out_stages_computed() -> None:
    engine, state, commands = started()
    work = {c.item: c for c in commands if isinstance(c, Invoke) and c.stage == "work"}
    state, _ = decide(engine, state, [TaskSucceeded("work", 2, work[2].attempt, {"w": "c"})])
    state, commands = decide(engine, state, [Cancel("enough")])
    (pack,) = [c for c in commands if isinstance(c, WriteCachePack)]
    assert pack.stage == "work" and sorted(pack.rows) == [2]
