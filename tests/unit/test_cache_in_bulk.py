"""Tasks taken from the result cache in bulk are held as arrays, not as a ``Task`` each (``CachedItems``; issue 13,
requirement 6: a re-run of 10,000 items of which 9,900 are cached must not cost 9,900 tasks). The engine asks once
with the whole list (``CacheLookup.elements``), keeps the hits out of the stage's task map, and every reader still
sees them as SUCCEEDED cached tasks: ``RequestState.task``, the fan-in's input, the pack of the run, a reset. Pure."""

from __future__ import annotations

from typing import Any

import pytest
from fave.core.engine import Engine
from fave.core.model import (
    CachedItems,
    CacheLookup,
    Invoke,
    RequestState,
    RequestStatus,
    Reset,
    Start,
    TasksCached,
    TaskStatus,
    TaskSucceeded,
    WriteCachePack,
)
from support.pipelines import make_pipeline

PIPELINE = make_pipeline(
    """
    name: bulk-held
    final: join
    stages:
      plan: {function: P, mode: sync}
      work: {function: W, needs: [plan], for_each: plan.items, mode: async, cache: true}
      join: {function: J, needs: [work], mode: sync}
    """
)
ITEMS = ("a", "b", "c", "d", "e")
NOW = 1000.0
SOURCES = ("01JSOURCEA", "01JSOURCEB")


def answer(hits: dict[int, tuple[Any, int]], count: int) -> CachedItems:
    source_of = tuple(hits[i][1] if i in hits else -1 for i in range(count))
    outputs = tuple(hits[i][0] if i in hits else None for i in range(count))
    return CachedItems(0.0, SOURCES, source_of, outputs)


def decide(engine: Engine, state: RequestState, events: list[Any], hits: dict[int, tuple[Any, int]]) -> Any:
    asked: list[tuple[Any, ...] | None] = []
    events = list(events)
    for _ in range(5):
        try:
            new, commands = engine.decide_all(state, events, NOW)
            return new, commands, asked
        except CacheLookup as ask:
            asked.append(ask.elements)
            assert ask.elements is not None  # no per-item needs, nothing downstream per item: a bulk lookup
            events.insert(0, TasksCached(ask.stage, {}, bulk=answer(hits, len(ask.elements))))
    raise AssertionError("still asking")


def started(hits: dict[int, tuple[Any, int]]) -> tuple[Engine, RequestState, list[Any], list[Any]]:
    engine = Engine(PIPELINE)
    state = engine.new_request("01JTESTREQUEST0000000000000", {}, NOW)
    state, commands, _ = decide(engine, state, [Start()], hits)
    (plan,) = [c for c in commands if isinstance(c, Invoke)]
    event = TaskSucceeded("plan", None, plan.attempt, {"items": list(ITEMS)}, {"plan.items": ITEMS})
    state, commands, asked = decide(engine, state, [event], hits)
    return engine, state, commands, asked


HITS = {0: ({"w": "a"}, 0), 2: ({"w": "c"}, 1), 4: ({"w": "e"}, 0)}


def test_the_hits_of_a_bulk_lookup_are_held_as_arrays_and_read_as_cached_tasks() -> None:
    _, state, commands, asked = started(HITS)
    assert asked == [ITEMS]  # one lookup, with the whole list
    assert sorted(c.item for c in commands if isinstance(c, Invoke)) == [1, 3]
    assert sorted(state.tasks["work"]) == [1, 3]  # only the misses are Task objects
    held = state.bulk_cached["work"]
    assert held.count == 3 and held.at == NOW
    hit = state.task("work", 2)
    assert hit is not None and hit.status is TaskStatus.SUCCEEDED and hit.cached and hit.attempt == 0
    assert (hit.output, hit.cached_from, hit.finished_at) == ({"w": "c"}, "01JSOURCEB", NOW)
    work = state.stages["work"]
    assert (work.total, work.succeeded, work.running, work.pending) == (5, 3, 2, 0)


def test_the_fan_in_gets_the_held_outputs_and_the_misses_outputs_in_order_and_the_pack_gets_the_list() -> None:
    engine, state, commands, _ = started(HITS)
    misses = [c for c in commands if isinstance(c, Invoke)]
    done = [TaskSucceeded("work", c.item, c.attempt, {"w": ITEMS[c.item or 0]}) for c in misses]
    state, commands, _ = decide(engine, state, done, HITS)
    (join,) = [c for c in commands if isinstance(c, Invoke)]
    assert join.input["needs"]["work"] == [{"w": item} for item in ITEMS]
    (pack,) = [c for c in commands if isinstance(c, WriteCachePack)]
    assert pack.bulk is state.bulk_cached["work"] and pack.elements == ITEMS
    assert sorted(pack.rows) == [1, 3]  # the held items' rows are the pack's already


def test_a_late_report_for_a_held_item_changes_nothing() -> None:
    engine, state, _, _ = started(HITS)
    again, commands, _ = decide(engine, state, [TaskSucceeded("work", 0, 1, {"w": "other"})], HITS)
    assert commands == [] and again.bulk_cached is state.bulk_cached and again.task("work", 0) == state.task("work", 0)


def test_every_item_held_succeeds_the_stage_in_the_decision_that_starts_it() -> None:
    every = {i: ({"w": item}, 0) for i, item in enumerate(ITEMS)}
    _, state, commands, _ = started(every)
    assert state.stages["work"].status.value == "SUCCEEDED" and not state.tasks["work"]
    (join,) = [c for c in commands if isinstance(c, Invoke)]
    assert join.stage == "join" and join.input["needs"]["work"] == [{"w": item} for item in ITEMS]


def test_no_hit_at_all_makes_every_task_as_before_and_asks_nothing_more() -> None:
    _, state, commands, asked = started({})
    assert asked == [ITEMS] and "work" not in state.bulk_cached
    assert sorted(c.item for c in commands if isinstance(c, Invoke)) == list(range(len(ITEMS)))


@pytest.mark.parametrize("downstream", [False, True])
def test_a_reset_makes_the_held_items_tasks_again_and_pending(downstream: bool) -> None:
    engine, state, commands, _ = started(HITS)
    done = [TaskSucceeded("work", c.item, c.attempt, {"w": "x"}) for c in commands if isinstance(c, Invoke)]
    state, commands, _ = decide(engine, state, done, HITS)
    (join,) = [c for c in commands if isinstance(c, Invoke)]
    state, _, _ = decide(engine, state, [TaskSucceeded("join", None, join.attempt, "joined")], HITS)
    assert state.status is RequestStatus.COMPLETED and state.final == "joined"
    state, _, _ = decide(engine, state, [Reset(("work",), downstream=downstream)], HITS)
    assert "work" not in state.bulk_cached
    work = state.tasks["work"]
    assert sorted(work) == list(range(len(ITEMS))) and {t.status for t in work.values()} == {TaskStatus.PENDING}
    assert state.stages["work"].pending == len(ITEMS) and state.stages["work"].succeeded == 0


def test_a_pack_finds_a_key_by_its_first_64_bits_and_tells_apart_keys_that_share_them() -> None:
    import hashlib

    from fave import cache

    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    twin = keys[7][:16] + "0" * 48  # shares keys[7]'s first 64 bits
    keys.append(twin)
    pack = cache.Pack("".join(keys), [{"i": i} for i in range(len(keys))], [0] * len(keys), ["r1"])
    assert [pack.find(k) for k in keys] == list(range(len(keys)))
    assert pack.find(hashlib.sha256(b"absent").hexdigest()) == -1
    assert pack.find(keys[7][:16] + "f" * 48) == -1  # the same first 64 bits, another key
    assert pack.row(keys[3]) == ({"i": 3}, "r1")
    holes = cache.Pack(keys[0] + "-" * 64, [{"i": 0}, None], [0, -1], ["r1"])  # a position with no output
    assert holes.find(keys[0]) == 0 and holes.find("-" * 64) == -1
