"""state.json is the only commit point: a step that did not commit leaves nothing visible, on every store.

Two writers that change different task shards of one request, and a writer that dies between its shard
writes and its state.json write, must not leave half a step behind (a task that looks SUCCEEDED while the
counts, the stage status and the dispatches that follow from it were never committed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fave import persistence as persistence_module
from fave.core.dag import Pipeline
from fave.core.engine import Engine
from fave.core.model import (
    Event,
    Invoke,
    MissingData,
    RequestState,
    Start,
    TaskFailed,
    TaskStatus,
    TaskSucceeded,
    Tick,
)
from fave.keys import state_key
from fave.persistence import LIST_BLOCK, SEGMENT_BYTES, SEGMENT_SHARDS, SHARD_SIZE, Persistence, read_stage_tasks
from fave_shared.errors import ConflictError
from fave_shared.store import ObjectStore
from support.pipelines import make_pipeline

PIPELINE = """
    name: commits
    final: reduce
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async}
      reduce: {function: Reduce, needs: [work], mode: sync}
"""
ITEMS = 300  # three shards of 128
NOW = 1_000.0


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(PIPELINE)


def step(persistence: Persistence, state: RequestState, *events: Event) -> RequestState:
    while True:  # as the service does: load the blocks a decision asks for, and decide again
        try:
            decided, _ = persistence.engine.decide_all(state, events, NOW)
        except MissingData as missing:
            state = persistence.load_more(state, missing)
            continue
        return persistence.commit(decided)


def fanned_out(store: ObjectStore, pipeline: Pipeline) -> tuple[Persistence, RequestState]:
    persistence = Persistence(store, pipeline, Engine(pipeline))
    state = persistence.create(persistence.engine.new_request("01J0000000000000000000TEST", {}, NOW))
    state = step(persistence, state, Start())
    state = step(
        persistence,
        state,
        TaskSucceeded("plan", None, 1, {"items": list(range(ITEMS))}, {"plan.items": tuple(range(ITEMS))}),
    )
    assert state.stages["work"].running == ITEMS
    return persistence, state


def done(item: int) -> TaskSucceeded:
    return TaskSucceeded("work", item, 1, {"v": item})


def statuses(store: ObjectStore, request_id: str) -> dict[int, str]:
    return {i: t.status for i, t in read_stage_tasks(store, request_id, "work").items()}


def test_the_loser_of_a_commit_race_leaves_no_shard_behind(store: ObjectStore, pipeline: Pipeline) -> None:
    first, state = fanned_out(store, pipeline)
    second = Persistence(store, pipeline, Engine(pipeline))
    theirs = second.load(state.request_id, NOW)

    step(first, state, done(0))  # shard 0, commits
    with pytest.raises(ConflictError):
        step(second, theirs, done(200))  # shard 1 written, state.json refused

    seen = statuses(store, state.request_id)
    assert seen[0] == "SUCCEEDED"
    assert seen[200] == "RUNNING"  # the loser's completion is not half-applied
    reloaded = Persistence(store, pipeline, Engine(pipeline)).load(state.request_id, NOW)
    assert reloaded.stages["work"].succeeded == 1
    # The loser re-applies on the fresh state, as the orchestrator does after a conflict.
    step(second, second.load(state.request_id, NOW), done(200))
    assert statuses(store, state.request_id)[200] == "SUCCEEDED"


class CrashBeforeCommit:
    """A store whose state.json write never happens (the process died just before it)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        if key.endswith("metadata/state.json"):
            raise SystemExit("crash")
        return self.inner.put(key, data, **kwargs)


def test_a_crash_between_shard_writes_and_the_commit_shows_nothing_of_the_step(
    store: ObjectStore, pipeline: Pipeline
) -> None:
    _, state = fanned_out(store, pipeline)
    doomed = Persistence(CrashBeforeCommit(store), pipeline, Engine(pipeline))  # type: ignore[arg-type]
    doomed_state = doomed.load(state.request_id, NOW)
    # Every item but one succeeds in this step: had it committed, 'work' would be one item from done.
    with pytest.raises(SystemExit):
        step(doomed, doomed_state, *(done(i) for i in range(ITEMS - 1)))

    after = Persistence(store, pipeline, Engine(pipeline)).load(state.request_id, NOW)
    assert after.version == state.version
    assert after.stages["work"].succeeded == 0 and after.stages["work"].running == ITEMS
    assert set(statuses(store, state.request_id).values()) == {TaskStatus.RUNNING.value}


def test_superseded_shards_are_deleted_and_state_names_the_live_ones(store: ObjectStore, pipeline: Pipeline) -> None:
    persistence, state = fanned_out(store, pipeline)
    prefix = f"requests/{state.request_id}/metadata/tasks/work/"
    assert len(list(store.list(prefix))) == 1  # the dispatch changed the 3 shards: one segment holds them
    for item in (0, 1, 128, 129):
        state = step(persistence, state, done(item))
    live = sorted(store.list(prefix))
    # Shards 0 and 1 were rewritten on their own (their last versions only are kept); the segment stays for
    # shard 2, which no commit changed since.
    assert len(live) == 3
    raw = store.get(state_key(state.request_id)).data.decode()
    assert all(key.rsplit("/", 1)[1].split(".")[1] in raw for key in live)
    assert statuses(store, state.request_id)[129] == "SUCCEEDED"
    assert statuses(store, state.request_id)[299] == "RUNNING"


def test_a_segment_goes_when_no_shard_is_left_in_it(store: ObjectStore, pipeline: Pipeline) -> None:
    persistence, state = fanned_out(store, pipeline)
    prefix = f"requests/{state.request_id}/metadata/tasks/work/"
    (segment,) = store.list(prefix)
    state = step(persistence, state, done(0))  # shard 0 leaves the segment; 1 and 2 are still read from it
    assert segment in set(store.list(prefix))
    reloaded = Persistence(store, pipeline, Engine(pipeline)).load(state.request_id, NOW, full=True)
    assert reloaded.tasks["work"][0].status is TaskStatus.SUCCEEDED
    assert reloaded.tasks["work"][200].status is TaskStatus.RUNNING
    state = step(persistence, state, done(130), done(280))  # shards 1 and 2 in a new segment: the old one is empty
    live = set(store.list(prefix))
    assert segment not in live and len(live) == 2
    assert statuses(store, state.request_id)[280] == "SUCCEEDED"


def dispatched_wide(store: ObjectStore, pipeline: Pipeline, items: int) -> tuple[Persistence, RequestState]:
    """A request whose plan succeeded with ``items`` elements: their tasks dispatched (every shard written)."""
    persistence = Persistence(store, pipeline, Engine(pipeline, change_block=SHARD_SIZE))
    state = persistence.create(persistence.engine.new_request("01J0000000000000000000TEST", {}, NOW))
    state = step(persistence, state, Start())
    listing = tuple(range(items))
    state = step(persistence, state, TaskSucceeded("plan", None, 1, {"items": list(listing)}, {"plan.items": listing}))
    return persistence, state


def test_a_step_that_changes_many_shards_writes_few_objects_and_loads_back(
    store: ObjectStore, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(persistence_module, "SEGMENT_BYTES", 0)  # segments by count alone (as full shards are)
    items = SHARD_SIZE * (2 * SEGMENT_SHARDS + 3)  # 35 shards: segments of 16, 16 and 3
    persistence, state = dispatched_wide(store, pipeline, items)
    prefix = f"requests/{state.request_id}/metadata/tasks/work/"
    assert len(list(store.list(prefix))) == 3
    finished = [done(i) for i in range(0, items, 7)]  # touches every shard
    state = step(persistence, state, *finished)
    assert len(list(store.list(prefix))) == 3
    fresh = Persistence(store, pipeline, Engine(pipeline, change_block=SHARD_SIZE))
    whole = fresh.load(state.request_id, NOW, full=True)
    ok = {e.item for e in finished}
    assert {i for i, t in whole.tasks["work"].items() if t.status is TaskStatus.SUCCEEDED} == ok
    assert whole.stages["work"].succeeded == len(ok)
    # A decision that needs one late block reads it from its segment alone (partial loads).
    head = fresh.load(state.request_id, NOW)
    late = items - 1
    after = step(fresh, head, done(late))
    assert after.stages["work"].succeeded == len(ok) + (late not in ok)
    assert statuses(store, state.request_id)[late] == "SUCCEEDED"


def test_small_shards_share_a_segment_up_to_its_size_and_full_ones_sixteen_to_an_object(
    store: ObjectStore, pipeline: Pipeline
) -> None:
    items = SHARD_SIZE * (2 * SEGMENT_SHARDS + 3)
    persistence, state = dispatched_wide(store, pipeline, items)
    prefix = f"requests/{state.request_id}/metadata/tasks/work/"

    def written() -> list[int]:  # the size of each object the last step wrote (its version)
        version = f"{state.version:06d}"
        return [len(store.get(k).data) for k in store.list(prefix) if k.rsplit("/", 1)[1].split(".")[1][:6] == version]

    dispatched = written()  # 35 shards of running tasks, ~14 KB each: 2 objects of at most ~320 KB, not 3 of 16
    assert len(dispatched) == 2 and max(dispatched) <= SEGMENT_BYTES + 16 * 1024, dispatched
    # Every task done with an output of ~300 bytes (~55 KB a shard): 16 shards to an object, as by count alone.
    state = step(persistence, state, *(TaskSucceeded("work", i, 1, {"v": "x" * 300}) for i in range(items)))
    assert len(written()) == 3
    fresh = Persistence(store, pipeline, Engine(pipeline, change_block=SHARD_SIZE))
    whole = fresh.load(state.request_id, NOW, full=True)
    assert whole.stages["work"].succeeded == items
    assert all(task.output == {"v": "x" * 300} for task in whole.tasks["work"].values())


def test_the_shards_of_a_step_that_crashed_are_collected_and_a_step_in_progress_is_not(
    store: ObjectStore, pipeline: Pipeline
) -> None:
    _, state = fanned_out(store, pipeline)
    doomed = Persistence(CrashBeforeCommit(store), pipeline, Engine(pipeline))  # type: ignore[arg-type]
    prefix = f"requests/{state.request_id}/metadata/tasks/work/"
    committed = set(store.list(prefix))  # one segment: the dispatch changed the 3 shards together
    with pytest.raises(SystemExit):
        step(doomed, doomed.load(state.request_id, NOW), done(0), done(200))  # shards 0 and 1, never committed
    orphans = set(store.list(prefix)) - committed
    assert len(orphans) == 1  # the two shards in one segment
    survivor = Persistence(store, pipeline, Engine(pipeline))
    # Until the next commit, the orphans cannot be told from the shards of a step still in progress.
    assert survivor.collect_garbage(state.request_id) == []

    state = step(survivor, survivor.load(state.request_id, NOW), done(130))  # the next commit (shard 1)
    in_progress = f"{prefix}00002.{state.version + 1:06d}deadbeef.json"  # another writer's step, mid-way
    store.put(in_progress, b"{}")
    collected = survivor.collect_garbage(state.request_id)

    assert collected == sorted(orphans) and in_progress not in collected
    # The first segment (still holding shards 0 and 2), shard 1's new object, and the step in progress.
    assert len(list(store.list(prefix))) == 3
    reloaded = Persistence(store, pipeline, Engine(pipeline)).load(state.request_id, NOW)
    assert reloaded.stages["work"].succeeded == 1  # nothing committed was touched


def test_a_reloaded_request_still_sees_its_single_tasks_retries_and_deadlines(store: ObjectStore) -> None:
    # A driver that reloads a request every step (the Lambda orchestrator, fave serve) ticks from the loaded
    # state: a single task's pending retry and running deadline must be in its indexes, or the retry never
    # starts and the timeout never fires.
    pipeline = make_pipeline(PIPELINE)
    # Grouped as the service groups tasks (an engine of another block size reloads as a legacy state, whole).
    persistence = Persistence(store, pipeline, Engine(pipeline, change_block=SHARD_SIZE))
    state = persistence.create(persistence.engine.new_request("01J0000000000000000000TEST", {}, NOW))
    state = step(persistence, state, Start())
    state = step(persistence, state, TaskFailed("plan", None, 1, "Boom", "first attempt"))
    plan = state.task("plan")
    assert plan is not None and plan.status is TaskStatus.PENDING and plan.retry_at is not None
    reloaded = persistence.load(state.request_id, NOW)
    assert reloaded.retry_due.get(("plan", 0)) == plan.retry_at
    after, commands = persistence.engine.decide(reloaded, Tick(), plan.retry_at + 0.001)
    assert [c.attempt for c in commands if isinstance(c, Invoke)] == [2]
    running = persistence.commit(after)
    again = persistence.load(running.request_id, plan.retry_at)
    task = again.task("plan")
    assert task is not None and again.running.get(("plan", 0)) == task.deadline is not None


def test_a_request_stored_in_the_schema_2_layout_still_loads_and_commits(
    store: ObjectStore, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Schema 2: one object per shard, fan-out lists in blocks of 128, no ``fanout_blocks`` in state.json.
    monkeypatch.setattr(persistence_module, "SEGMENT_SHARDS", 1)
    monkeypatch.setattr(persistence_module, "SEGMENT_BYTES", 0)
    old = Persistence(store, pipeline, Engine(pipeline, change_block=SHARD_SIZE, list_block=SHARD_SIZE))
    state = old.create(old.engine.new_request("01J0000000000000000000TEST", {}, NOW))
    state = step(old, state, Start())
    listing = tuple(range(ITEMS))
    state = step(old, state, TaskSucceeded("plan", None, 1, {"items": list(listing)}, {"plan.items": listing}))
    doc = json.loads(store.get(state_key(state.request_id)).data)
    del doc["fanout_blocks"]
    doc["schema_version"] = 2
    store.put(state_key(state.request_id), json.dumps(doc).encode())
    prefix = f"requests/{state.request_id}/metadata/"
    assert len(list(store.list(prefix + "tasks/work/"))) == 3 and len(list(store.list(prefix + "items/"))) == 3
    monkeypatch.undo()

    new = Persistence(store, pipeline, Engine(pipeline, change_block=SHARD_SIZE, list_block=LIST_BLOCK))
    state = step(new, new.load(state.request_id, NOW), done(5), done(290))
    assert state.stages["work"].succeeded == 2
    whole = Persistence(store, pipeline, Engine(pipeline, change_block=SHARD_SIZE)).load(
        state.request_id, NOW, full=True
    )
    assert whole.items["plan.items"].block == SHARD_SIZE
    assert [whole.items["plan.items"].item("plan.items", i) for i in (0, 200, 299)] == [0, 200, 299]
    assert {i for i, t in whole.tasks["work"].items() if t.status is TaskStatus.SUCCEEDED} == {5, 290}


class GetCounting:
    """A store that counts the reads of each key."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.gets: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str) -> Any:
        self.gets[key] = self.gets.get(key, 0) + 1
        return self.inner.get(key)


def test_a_page_over_a_segments_shards_reads_it_once(store: ObjectStore, pipeline: Pipeline) -> None:
    from fave.status import stage_page

    _, state = fanned_out(store, pipeline)  # the dispatch wrote the 3 shards as one segment
    counting = GetCounting(store)
    page = stage_page(counting, state.request_id, "work", limit=ITEMS)  # type: ignore[arg-type]
    assert len(page["items"]) == ITEMS and {row["status"] for row in page["items"]} == {"RUNNING"}
    segment_reads = [n for key, n in counting.gets.items() if "/metadata/tasks/work/" in key]
    assert segment_reads == [1]  # not once per shard


def test_a_bad_shard_in_a_segment_fails_only_who_asks_for_it(store: ObjectStore, pipeline: Pipeline) -> None:
    _, state = fanned_out(store, pipeline)
    (key,) = store.list(f"requests/{state.request_id}/metadata/tasks/work/")
    segment = json.loads(store.get(key).data)
    segment["shards"]["2"]["tasks"]["256"]["attempt"] = "one"  # shard 2 is corrupt, 0 and 1 are fine
    store.put(key, json.dumps(segment).encode())
    objects: dict[str, Any] = {}
    raw = json.loads(store.get(state_key(state.request_id)).data)
    token = raw["stages"]["work"]["shard_tokens"][0]
    shard0 = persistence_module.read_shard_object(store, state.request_id, "work", 0, token, objects=objects)
    assert shard0.tasks[0].status == "RUNNING"
    entry = raw["stages"]["work"]["shard_tokens"][2]
    with pytest.raises(persistence_module.CorruptStateError, match="work/2 is unreadable"):
        persistence_module.read_shard_object(store, state.request_id, "work", 2, entry, objects=objects)
