"""The service's step: commands are performed through one table, in their phase (fave.service).

``WriteFinal`` runs before the commit (final.json must exist once COMPLETED is visible), ``Invoke`` and
``Notify`` after it (nothing is done for a decision that was not persisted), and a command without a performer
is an error raised before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fave.core.model import Notify, NotifyKind, Start, TaskSucceeded
from fave.keys import final_key, state_key
from fave.service import Orchestrator
from fave_shared.errors import FaveError
from fave_shared.store import LocalStore
from support.pipelines import CHAIN, make_pipeline


class Recorder:
    """An invoker that records what it was asked to run (nothing runs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        self.calls.append((function, payload))
        return "id"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        raise AssertionError("never called: synchronous invocations are handed to sync_submit, not run")

    def functions(self) -> frozenset[str]:
        return frozenset({"A", "B", "C"})

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class Unheard:
    """A command no performer knows."""


def orchestrator(tmp_path: Path, store: Any = None) -> tuple[Orchestrator, list[Any], list[Any]]:
    deferred: list[Any] = []
    notes: list[Any] = []
    made = Orchestrator(
        make_pipeline(CHAIN),
        store or LocalStore(tmp_path / "store"),
        Recorder(),
        on_notify=lambda _rid, note, _state: notes.append(note.kind),
        sync_submit=deferred.append,
    )
    return made, deferred, notes


def test_a_command_without_a_performer_fails_the_step_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orch, deferred, notes = orchestrator(tmp_path)
    state = orch.create({}, start=False)
    etag = orch.store.head(state_key(state.request_id))
    real = orch.engine.decide_all

    def with_an_unknown_command(*args: Any) -> Any:
        new_state, commands = real(*args)
        return new_state, [*commands, Unheard()]

    monkeypatch.setattr(orch.engine, "decide_all", with_an_unknown_command)
    with pytest.raises(FaveError, match="no performer for command Unheard"):
        orch.apply(state.request_id, [Start()])
    assert orch.store.head(state_key(state.request_id)) == etag  # not committed
    assert deferred == [] and notes == []  # and nothing performed


class RefusesTheCommit(LocalStore):
    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        if key.endswith("metadata/state.json") and kwargs.get("if_match"):
            raise FaveError("the commit did not happen")
        return super().put(key, data, **kwargs)


def test_the_final_is_written_before_the_commit_and_nothing_is_performed_without_one(tmp_path: Path) -> None:
    orch, deferred, notes = orchestrator(tmp_path)
    state = orch.create({}, start=False)
    rid = state.request_id
    state = orch.apply(rid, [Start()])
    for stage in ("a", "b"):
        assert len(deferred) == 1  # its synchronous invocation was handed over after the commit
        deferred.clear()  # (not run: the test answers for the stage)
        state = orch.apply(rid, [TaskSucceeded(stage, None, 1, {"from": stage})])
    assert [kind for kind in notes if kind is NotifyKind.STAGE_SUCCEEDED] == ["stage_succeeded"] * 2

    # The last stage's success completes the request; this time the commit is refused.
    doomed, doomed_deferred, doomed_notes = orchestrator(tmp_path, RefusesTheCommit(tmp_path / "store"))
    with pytest.raises(FaveError, match="the commit did not happen"):
        doomed.apply(rid, [TaskSucceeded("c", None, 1, {"answer": 42})])
    assert doomed.store.get(final_key(rid)).data == b'{"answer":42}'  # before the commit
    assert doomed_notes == [] and doomed_deferred == []  # after-commit commands never ran
    assert orch.load(rid).status.value == "RUNNING"

    done = orch.apply(rid, [TaskSucceeded("c", None, 1, {"answer": 42})])
    assert done.status.value == "COMPLETED" and NotifyKind.REQUEST_COMPLETED in notes
    assert isinstance(Notify(NotifyKind.RETRY).kind, str)  # a StrEnum: logs and metrics print it as text
