"""``fave.persistence.shard_json`` writes a task shard a field at a time (each distinct timestamp once): its
bytes are exactly those of encoding the shard's document whole, as persistence did before, for any tasks, and
they read back as the same tasks."""

from __future__ import annotations

import json
from dataclasses import fields

from fave.core.model import Attempt, Task, TaskStatus
from fave.persistence import shard_json, task_from_doc, task_to_json
from fave.statefile import ShardDoc
from hypothesis import given
from hypothesis import strategies as st

WHOLE = json.JSONEncoder(separators=(",", ":"))
TIMES = st.sampled_from([0.0, -0.0, 1795727759.2578168, 1795727819.2578168, 5e-324, 1e300]) | st.floats(allow_nan=False)
TEXT = st.text(max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT | st.integers(), inner, max_size=10),
    max_leaves=12,
)
OPTIONAL_TIME = st.none() | TIMES
TASKS = st.builds(
    Task,
    status=st.sampled_from(TaskStatus),
    attempt=st.integers(min_value=0, max_value=5),
    budget_base=st.integers(min_value=0, max_value=3),
    dispatched_at=OPTIONAL_TIME,
    deadline=OPTIONAL_TIME,
    retry_at=OPTIONAL_TIME,
    finished_at=OPTIONAL_TIME,
    error_type=st.none() | TEXT,
    error=st.none() | TEXT,
    output=JSON,
    first_dispatched_at=OPTIONAL_TIME,
    history=st.lists(st.builds(Attempt, st.integers(1, 5), OPTIONAL_TIME, TIMES, TEXT, TEXT), max_size=2).map(tuple),
    traceback=st.none() | TEXT,
    stale_attempts=st.integers(min_value=0, max_value=2),
    cached=st.booleans(),
    cached_from=st.none() | TEXT,
    throttled=st.integers(min_value=0, max_value=3),
)


def whole(stage: str, shard: int, version: int, tasks: list[tuple[int, Task]]) -> bytes:
    body = {"stage": stage, "shard": shard, "version": version, "tasks": {i: task_to_json(t) for i, t in tasks}}
    return WHOLE.encode(body).encode()


def test_the_strategy_sets_every_field_of_a_task() -> None:
    # A field added to Task (and to task_to_json) must be generated here too, or this test checks less.
    assert set(TASKS.wrapped_strategy.kwargs) == {f.name for f in fields(Task)}  # type: ignore[attr-defined]


@given(stage=TEXT, shard=st.integers(0, 10**6), version=st.integers(0, 10**6), tasks=st.lists(TASKS, max_size=6))
def test_the_same_bytes_as_encoding_the_shard_whole(stage: str, shard: int, version: int, tasks: list[Task]) -> None:
    numbered = [(shard * 128 + i, task) for i, task in enumerate(tasks)]
    data = shard_json(stage, shard, version, numbered)
    assert data == whole(stage, shard, version, numbered)
    doc = ShardDoc.from_json(data)  # and it reads back as the same tasks (JSON's view of them)
    assert whole(stage, shard, version, [(i, task_from_doc(t)) for i, t in doc.tasks.items()]) == data


def test_a_step_s_tasks_share_their_timestamps() -> None:
    now = 1795727759.2578168
    running = Task(TaskStatus.RUNNING, 1, dispatched_at=now, deadline=now + 60, first_dispatched_at=now)
    done = Task(TaskStatus.SUCCEEDED, 1, dispatched_at=now, finished_at=now + 0.5, output={"i": 3, "ok": True})
    zero = Task(TaskStatus.RUNNING, 1, dispatched_at=0.0, deadline=-0.0)
    tasks = [(0, running), (1, done), (2, running), (3, zero), (4, Task())]
    assert shard_json("work", 0, 7, tasks) == whole("work", 0, 7, tasks)
    assert b'"deadline":-0.0' in shard_json("work", 0, 7, tasks)


@given(first=st.lists(TASKS, min_size=1, max_size=6), changed=st.lists(TASKS, min_size=1, max_size=6))
def test_with_a_memo_the_same_bytes_and_an_unchanged_task_is_not_encoded_again(
    first: list[Task], changed: list[Task]
) -> None:
    memo: dict[int, tuple[Task, str]] = {}
    before = list(enumerate(first))
    assert shard_json("work", 0, 1, before, memo) == whole("work", 0, 1, before)
    members = {item: text for item, (_, text) in memo.items()}
    # The next write of the shard: some tasks replaced by new objects (even equal ones), the rest the same.
    after = [(i, changed[i] if i < len(changed) and i % 2 else task) for i, task in before]
    assert shard_json("work", 0, 2, after, memo) == whole("work", 0, 2, after)
    for item, task in after:
        assert memo[item][0] is task
        if task is first[item]:
            assert memo[item][1] is members[item]  # reused, not written again
