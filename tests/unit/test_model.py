"""``evolve``: the engine's fast ``dataclasses.replace`` must give exactly what ``replace`` gives."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fave.core.model import StageState, StageStatus, Task, TaskStatus, evolve


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
