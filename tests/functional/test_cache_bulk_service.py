"""The bulk result cache at the service level: a hand-driven invoker (with a code digest, so the stage
is cached), failures, resume, cancel, reset and reloads in fresh orchestrators."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import pytest
from fave import cache
from fave.core.model import RequestStatus, TaskFailed, TaskSucceeded
from fave.persistence import read_stage_tasks
from fave.service import Orchestrator
from fave_shared.store import LocalStore
from support.pipelines import make_pipeline
from test_cache_packs import WIDE  # type: ignore[import-not-found]


class Hand:
    """An invoker that records what it was asked to run (with the input as sent); the test answers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None, int, Any]] = []

    def invoke_async(self, function: str, payload: Any) -> str:
        doc = json.loads(payload.data)
        task = doc["task"]
        self.sent.append((task["stage"], task["item"], task["attempt"], doc.get("input")))
        return "id"

    def functions(self) -> frozenset[str]:
        return frozenset({"Plan", "Work", "Total"})

    def code_digest(self, function: str) -> str:
        return f"code-of-{function}"

    def close(self) -> None:
        """Nothing to release."""


def orchestrator(store: LocalStore, hand: Hand) -> Orchestrator:
    return Orchestrator(make_pipeline(WIDE), store, hand)  # type: ignore[arg-type]


def step(orch: Orchestrator, hand: Hand, rid: str, items: list[Any], fail: set[int] = frozenset()) -> Any:  # type: ignore[assignment]
    """Answer everything sent (and the orchestrator's own inbox) until nothing is left; returns the state and
    the input the fan-in got (None if it was not invoked)."""
    state = None
    total_input = None
    for _ in range(50):
        events: list[Any] = []
        while True:
            try:
                got_rid, event = orch.inbox.get_nowait()
            except queue.Empty:
                break
            if got_rid == rid:
                events.append(event)
        sent, hand.sent = hand.sent, []
        for stage, item, attempt, task_input in sent:
            if stage == "plan":
                events.append(TaskSucceeded("plan", None, attempt, {"items": items}))
            elif stage == "work":
                if item in fail:
                    events.append(TaskFailed("work", item, attempt, "Boom", "no", terminal=True))
                else:
                    events.append(TaskSucceeded("work", item, attempt, {"w": items[item]}))
            else:
                total_input = task_input
                events.append(TaskSucceeded("total", None, attempt, "done"))
        if not events:
            break
        state = orch.apply(rid, events)
    return state, total_input


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def first_run(store: LocalStore, items: list[Any]) -> str:
    hand, orch, rid = a_request(store)
    state, _ = step(orch, hand, rid, items)
    assert state.status is RequestStatus.COMPLETED
    return rid


L1 = [f"e{i}" for i in range(300)]


def a_request(store: LocalStore) -> tuple[Hand, Orchestrator, str]:
    """A new request of WIDE with its own invoker (nothing sent yet but its plan)."""
    hand = Hand()
    orch = orchestrator(store, hand)
    return hand, orch, orch.create({}).request_id


def test_harness_second_run_hits(store: LocalStore) -> None:
    first_run(store, L1)
    hand, orch, rid = a_request(store)
    items = [*L1[:5], "new", *L1[6:]]
    state, total_input = step(orch, hand, rid, items)
    assert state.status is RequestStatus.COMPLETED
    assert total_input["needs"]["work"] == [{"w": e} for e in items]
    docs = read_stage_tasks(store, rid, "work")
    assert sorted(i for i, d in docs.items() if not d.cached) == [5]


def check_done(store: LocalStore, rid: str, items: list[Any], total_input: Any) -> None:
    assert total_input is not None and total_input["needs"]["work"] == [{"w": e} for e in items]
    docs = read_stage_tasks(store, rid, "work")
    assert len(docs) == len(items)
    assert all(d.status == "SUCCEEDED" and d.output == {"w": items[i]} for i, d in docs.items())


@pytest.mark.parametrize("fresh", [False, True])
def test_failed_miss_then_resume(store: LocalStore, fresh: bool) -> None:
    first_run(store, L1)
    hand, orch, rid = a_request(store)
    items = [*L1[:5], "new5", *L1[6:250], "new250", *L1[251:]]
    state, _ = step(orch, hand, rid, items, fail={250})
    assert state.status is RequestStatus.FAILED
    docs = read_stage_tasks(store, rid, "work")
    assert len(docs) == 300 and docs[250].status == "FAILED" and docs[5].status == "SUCCEEDED"
    assert sum(d.status == "SUCCEEDED" for d in docs.values()) == 299
    work = state.stages["work"]
    assert (work.succeeded, work.failed) == (299, 1)
    if fresh:
        hand = Hand()
        orch = orchestrator(store, hand)
    state = orch.resume(rid)
    state, total_input = step(orch, hand, rid, items)
    assert state.status is RequestStatus.COMPLETED
    check_done(store, rid, items, total_input)
    # and a third run of the same list takes everything from the pack
    hand = Hand()
    orch = orchestrator(store, hand)
    rid3 = orch.create({}).request_id
    state, _ = step(orch, hand, rid3, items)
    check_done(store, rid3, items, total_input)
    assert all(d.cached for d in read_stage_tasks(store, rid3, "work").values())


@pytest.mark.parametrize("fresh", [False, True])
def test_cancel_mid_stage_then_resume(store: LocalStore, fresh: bool) -> None:
    first_run(store, L1)
    hand, orch, rid = a_request(store)
    items = [*L1[:5], "new5", *L1[6:250], "new250", *L1[251:]]
    plan = [s for s in hand.sent if s[0] == "plan"]
    hand.sent = []
    state = orch.apply(rid, [TaskSucceeded("plan", None, plan[0][2], {"items": items})])
    assert sorted(s[1] for s in hand.sent) == [5, 250]
    hand.sent = []
    state = orch.cancel(rid)
    assert state.status is RequestStatus.CANCELLED
    docs = read_stage_tasks(store, rid, "work")
    assert sum(d.status == "SUCCEEDED" for d in docs.values()) == 298
    if fresh:
        hand = Hand()
        orch = orchestrator(store, hand)
    orch.resume(rid)
    state, total_input = step(orch, hand, rid, items)
    assert state.status is RequestStatus.COMPLETED
    check_done(store, rid, items, total_input)


@pytest.mark.parametrize("fresh", [False, True])
def test_reset_then_resume(store: LocalStore, fresh: bool) -> None:
    first_run(store, L1)
    hand, orch, rid = a_request(store)
    items = [*L1[:5], "new5", *L1[6:]]
    state, _ = step(orch, hand, rid, items)
    assert state.status is RequestStatus.COMPLETED
    if fresh:
        hand = Hand()
        orch = orchestrator(store, hand)
    state, _ = orch.reset(rid, ["work"], downstream=True)
    assert state.stages["work"].pending == 300
    docs = read_stage_tasks(store, rid, "work")
    assert all(d.status == "PENDING" for d in docs.values()), {d.status for d in docs.values()}
    orch.resume(rid)
    state, total_input = step(orch, hand, rid, items)
    assert state.status is RequestStatus.COMPLETED
    check_done(store, rid, items, total_input)


def test_reload_mid_stage(store: LocalStore) -> None:
    first_run(store, L1)
    hand, orch, rid = a_request(store)
    items = [*L1[:5], "new5", *L1[6:250], "new250", *L1[251:]]
    plan = [s for s in hand.sent if s[0] == "plan"]
    hand.sent = []
    orch.apply(rid, [TaskSucceeded("plan", None, plan[0][2], {"items": items})])
    misses = [(s[1], s[2]) for s in hand.sent]
    hand.sent = []
    fresh_hand = Hand()
    fresh = orchestrator(store, fresh_hand)
    state = fresh.apply(rid, [TaskSucceeded("work", i, a, {"w": items[i]}) for i, a in misses])
    state, total_input = step(fresh, fresh_hand, rid, items)
    assert state.status is RequestStatus.COMPLETED
    check_done(store, rid, items, total_input)
    read = cache.read_pack(store, next(iter(store.list(cache.PACK_PREFIX)))[len(cache.PACK_PREFIX) : -5])
    assert read.elements == items


def test_duplicates_and_moves(store: LocalStore) -> None:
    a, b, c = "A", "B", "C"
    lists = [[a, a, b], [a, a, b], [a, b, a], [b, a, a, c], [a], [a, b, a, c, c]]
    for items in lists:
        hand = Hand()
        orch = orchestrator(store, hand)
        rid = orch.create({}).request_id
        state, total_input = step(orch, hand, rid, items)
        assert state.status is RequestStatus.COMPLETED
        check_done(store, rid, items, total_input)


BIG = 9_000


def test_parked_outputs_gone_are_misses_and_written_again(store: LocalStore) -> None:
    items = [f"{i:04d}" + "x" * BIG for i in range(40)]  # outputs beyond the inline limit: parked
    rid1 = first_run(store, items)
    pack_key = next(iter(store.list(cache.PACK_PREFIX)))
    read = cache.read_pack(store, pack_key[len(cache.PACK_PREFIX) : -5])
    assert read.parked and json.loads(store.get(pack_key).data)["parked"] is True  # recorded: no 1 MB scan to tell
    hand = Hand()
    orch = orchestrator(store, hand)
    rid2 = orch.create({}).request_id
    state, _ = step(orch, hand, rid2, items)
    assert all(d.cached for d in read_stage_tasks(store, rid2, "work").values())
    # the first request's parked outputs go (its retention): the rows are stale, every item runs again
    for key in list(store.list(f"requests/{rid1}/")):
        if "/output-" in key:
            store.delete(key)
    hand = Hand()
    orch = orchestrator(store, hand)
    rid3 = orch.create({}).request_id
    state, _ = step(orch, hand, rid3, items)
    assert state.status is RequestStatus.COMPLETED
    assert not any(d.cached for d in read_stage_tasks(store, rid3, "work").values())
    hand = Hand()
    orch = orchestrator(store, hand)
    rid4 = orch.create({}).request_id
    state, _ = step(orch, hand, rid4, items)
    docs = read_stage_tasks(store, rid4, "work")
    assert all(d.cached and d.cached_from == rid3 for d in docs.values())


@pytest.mark.parametrize("seed", range(10))
def test_fuzz_lists(store: LocalStore, seed: int) -> None:
    import random

    rnd = random.Random(seed)
    pool = [f"p{i}" for i in range(150)]
    seen: set[str] = set()
    items = rnd.sample(pool, 100)
    for _ in range(10):
        op = rnd.choice(["dup", "move", "shrink", "grow", "change", "same", "fail"])
        items = list(items)
        if op == "dup":
            for _ in range(rnd.randint(1, 5)):
                items[rnd.randrange(len(items))] = rnd.choice(items)
        elif op == "move":
            i, j = rnd.randrange(len(items)), rnd.randrange(len(items))
            items.insert(j, items.pop(i))
        elif op == "shrink":
            del items[rnd.randrange(len(items)) :][: rnd.randint(1, 20)]
            items = items or ["p0"]
        elif op == "grow":
            items += rnd.sample(pool, rnd.randint(1, 30))
        elif op == "change":
            for _ in range(rnd.randint(1, 10)):
                items[rnd.randrange(len(items))] = rnd.choice(pool)
        fail = set()
        if op == "fail":
            new = [i for i, e in enumerate(items) if e not in seen]
            fail = set(new[:1])
        hand = Hand()
        orch = orchestrator(store, hand)
        rid = orch.create({}).request_id
        expect = sum(e not in seen for e in items)
        state, total_input = step(orch, hand, rid, items, fail=fail)
        ran = sum(not d.cached for d in read_stage_tasks(store, rid, "work").values())
        assert ran == expect, (op, ran, expect)
        if fail:
            assert state.status is RequestStatus.FAILED
            orch.resume(rid)
            state, total_input = step(orch, hand, rid, items)
        assert state.status is RequestStatus.COMPLETED, op
        check_done(store, rid, items, total_input)
        seen.update(items)


def test_a_code_change_while_the_stage_runs_writes_no_pack_for_the_new_code(store: LocalStore) -> None:
    """Outputs taken from the old code's pack (and tasks that may have run either code) must not become rows of
    the new code's pack: the next run of the new code runs every item."""
    first_run(store, L1)
    hand, orch, rid = a_request(store)
    items = [*L1[:-1], "changed"]
    # plan, then the stage starts: 299 hits from the old code's pack, one miss dispatched
    orch.apply(rid, [TaskSucceeded("plan", None, 1, {"items": items})])
    (work,) = [(item, attempt) for stage, item, attempt, _ in hand.sent if stage == "work"]
    hand.sent = []
    hand.code_digest = lambda function: f"new-code-of-{function}"  # type: ignore[method-assign]
    orch.apply(rid, [TaskSucceeded("work", work[0], work[1], {"w": "changed"})])
    packs = list(store.list(cache.PACK_PREFIX))
    assert len(packs) == 1  # the old code's only
    again = Hand()
    again.code_digest = lambda function: f"new-code-of-{function}"  # type: ignore[method-assign]
    orch2 = orchestrator(store, again)
    rid2 = orch2.create({}).request_id
    state, _ = step(orch2, again, rid2, items)
    assert state.status is RequestStatus.COMPLETED
    assert not any(d.cached for d in read_stage_tasks(store, rid2, "work").values())


def test_a_stage_ending_in_another_process_keys_only_the_elements_its_pack_list_lacks(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request resumed elsewhere (every Lambda step) has its held items back as tasks and no lookup of its own:
    its pack write reads the pack and compares the list by position, keying only what differs (1, not 300)."""
    first_run(store, L1)
    hand, orch, rid = a_request(store)
    items = [*L1[:7], "changed", *L1[8:]]
    plan = [s for s in hand.sent if s[0] == "plan"]
    hand.sent = []
    orch.apply(rid, [TaskSucceeded("plan", None, plan[0][2], {"items": items})])
    ((_, item, attempt, _),) = [s for s in hand.sent if s[0] == "work"]
    keyed: list[int] = []
    real = cache.item_keys

    def counting(pack: str, inputs: Any, *args: Any) -> dict[int, str]:
        keyed.extend(inputs)
        return real(pack, inputs, *args)

    monkeypatch.setattr(cache, "item_keys", counting)
    elsewhere_hand = Hand()
    elsewhere = orchestrator(store, elsewhere_hand)
    elsewhere.apply(rid, [TaskSucceeded("work", item, attempt, {"w": "changed"})])
    state, _ = step(elsewhere, elsewhere_hand, rid, items)
    assert state.status is RequestStatus.COMPLETED and item == 7
    assert keyed == [7]
    read = cache.read_pack(store, next(iter(store.list(cache.PACK_PREFIX)))[len(cache.PACK_PREFIX) : -len(".json")])
    assert read.elements == items and read.row(read.key(read.row_at(7))) == ({"w": "changed"}, rid)
    monkeypatch.setattr(cache, "item_keys", real)
    again, orch2, rid2 = a_request(store)
    step(orch2, again, rid2, items)
    assert not any(not d.cached for d in read_stage_tasks(store, rid2, "work").values())
