"""``evolve``: the engine's fast ``dataclasses.replace`` must give exactly what ``replace`` gives; ``negative_at``'s
fast path must find what the plain rule finds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fave.core.model import StageState, StageStatus, Task, TaskStatus, evolve, negative_at
from hypothesis import given
from hypothesis import strategies as st


def test_evolve_equals_replace_and_leaves_the_original_alone() -> None:
    task = Task(status=TaskStatus.RUNNING, attempt=2, deadline=10.0, output={"x": 1})
    changed = evolve(task, status=TaskStatus.SUCCEEDED, deadline=None, output={"y": 2})
    assert changed == replace(task, status=TaskStatus.SUCCEEDED, deadline=None, output={"y": 2})
    assert task.status is TaskStatus.RUNNING and task.output == {"x": 1}
    stage = StageState(status=StageStatus.RUNNING, total=3, pending=3)
    assert evolve(stage, pending=2, running=1) == replace(stage, pending=2, running=1)


def test_evolve_refuses_unknown_fields_and_keeps_instances_frozen() -> None:
    with pytest.raises(TypeError, match="no field"):
        evolve(Task(), stauts=TaskStatus.FAILED)
    with pytest.raises(AttributeError):
        evolve(Task(), attempt=1).attempt = 2  # type: ignore[misc]


@given(st.lists(st.integers(min_value=-3, max_value=40), max_size=200), st.booleans())
def test_negative_at_finds_every_negative_position_in_order(values: list[int], as_tuple: bool) -> None:
    seq = tuple(values) if as_tuple else values
    assert negative_at(seq) == [i for i, v in enumerate(values) if v < 0]
    assert negative_at(iter(values)) == [i for i, v in enumerate(values) if v < 0]


def test_negative_at_few_misses_among_many_and_other_negatives() -> None:
    rows = list(range(10_000))
    for i in range(0, 10_000, 100):
        rows[i] = -1
    assert negative_at(rows) == list(range(0, 10_000, 100))  # the fast path
    rows[5] = -2  # not only -1s: the general pass
    assert negative_at(rows) == sorted([*range(0, 10_000, 100), 5])
