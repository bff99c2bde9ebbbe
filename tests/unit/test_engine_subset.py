"""Subset runs (``fave run --stage``) and stage fingerprints (``fave rerun``) in the pure engine (issue 13,
requirement 4). No store, no invoker."""

from __future__ import annotations

import pytest
from fave.core.engine import Engine
from fave.core.model import (
    CodeDigests,
    Fingerprint,
    InvalidEvent,
    Invoke,
    RequestStatus,
    Reset,
    Resume,
    StageStatus,
    Start,
    TaskFailed,
    TaskSucceeded,
    WriteFinal,
)
from support.engine_harness import Harness
from support.pipelines import CHAIN, FANOUT, make_pipeline


def subset(pipeline_text: str, *stages: str) -> Harness:
    h = Harness(make_pipeline(pipeline_text))
    h.state = h.engine.new_request("01JTESTREQUEST0000000000000", {"n": 5}, h.now, stages=stages)
    return h


def test_a_subset_runs_the_selected_stage_and_what_it_needs_then_completes_with_its_outputs() -> None:
    h = subset(FANOUT, "work")
    assert h.state.selection == ("work",) and h.state.scope == ("plan", "work")
    (plan,) = h.invokes(h.send(Start()))
    work = h.invokes(h.succeed(plan, {"items": [10, 20]}))
    assert sorted((w.stage, w.item) for w in work) == [("work", 0), ("work", 1)]  # no 'post' joins item by item
    h.succeed(work[0], {"v": 0})
    commands = h.succeed(work[1], {"v": 1})
    assert not h.invokes(commands)
    # Completed without the final stage: final.json holds the selected stages' outputs keyed by stage.
    assert h.state.status is RequestStatus.COMPLETED
    assert WriteFinal({"work": [{"v": 0}, {"v": 1}]}) in commands
    assert h.state.final == {"work": [{"v": 0}, {"v": 1}]}
    assert {n: s.status for n, s in h.state.stages.items()} == {
        "plan": StageStatus.SUCCEEDED,
        "work": StageStatus.SUCCEEDED,
        "post": StageStatus.PENDING,
        "reduce": StageStatus.PENDING,
    }
    assert "post" not in h.state.tasks and "reduce" not in h.state.tasks
    assert h.state.nothing_to_resume
    assert h.send(Resume()) == []  # nothing to run: the stages outside the selection are not owed


def test_a_subset_of_a_chain_stops_at_the_selected_stage() -> None:
    h = subset(CHAIN, "a", "a")
    assert h.state.selection == ("a",) and h.state.scope == ("a",)
    (a,) = h.invokes(h.send(Start()))
    commands = h.succeed(a, {"x": 1})
    assert h.invokes(commands) == [] and h.state.status is RequestStatus.COMPLETED
    assert WriteFinal({"a": {"x": 1}}) in commands


def test_selecting_the_final_stage_is_a_whole_run() -> None:
    h = subset(CHAIN, "c")
    assert h.state.selection == ("c",) and h.state.scope == ()
    (a,) = h.invokes(h.send(Start()))
    (b,) = h.invokes(h.succeed(a, 1))
    (c,) = h.invokes(h.succeed(b, 2))
    assert WriteFinal({"answer": 3}) in h.succeed(c, {"answer": 3})  # the final stage's output, as always


def test_an_unknown_stage_is_refused_naming_it() -> None:
    engine = Engine(make_pipeline(CHAIN))
    with pytest.raises(InvalidEvent, match="unknown stage 'nope'"):
        engine.new_request("01JTESTREQUEST0000000000000", {}, 0.0, stages=["b", "nope"])


def test_reset_and_resume_of_a_subset_keep_the_selection() -> None:
    h = subset(FANOUT, "work")
    (plan,) = h.invokes(h.send(Start()))
    for w in h.invokes(h.succeed(plan, {"items": [1, 2]})):
        h.succeed(w, {"v": w.item})
    assert h.state.status is RequestStatus.COMPLETED
    h.send(Reset(("work",)))
    rerun = h.invokes(h.send(Resume()))
    assert sorted((i.stage, i.item) for i in rerun) == [("work", 0), ("work", 1)]
    for w in rerun:
        commands = h.succeed(w, {"v": -w.item})
    assert h.state.status is RequestStatus.COMPLETED and h.state.selection == ("work",)
    assert WriteFinal({"work": [{"v": 0}, {"v": -1}]}) in commands
    assert h.state.stages["post"].status is StageStatus.PENDING and "post" not in h.state.tasks


def test_a_failed_subset_fails_and_a_resume_finishes_only_the_subset() -> None:
    h = subset(CHAIN, "b")
    (a,) = h.invokes(h.send(Start()))
    (b,) = h.invokes(h.succeed(a, 1))
    h.send(TaskFailed("b", None, b.attempt, "Boom", "no", terminal=True))
    assert h.state.status is RequestStatus.FAILED and not h.state.nothing_to_resume
    (again,) = h.invokes(h.send(Resume()))
    assert again.stage == "b"
    commands = h.succeed(again, 2)
    assert h.state.status is RequestStatus.COMPLETED and WriteFinal({"b": 2}) in commands
    assert h.state.stages["c"].status is StageStatus.PENDING


def test_a_stage_records_its_fingerprint_when_it_succeeds_with_the_code_it_was_given() -> None:
    pipeline = make_pipeline(
        """
        name: fp
        final: b
        profiles: {big: {a: {size: 9}}}
        stages:
          a: {function: A, mode: sync, config: {size: 1, keep: true}}
          b: {function: B, needs: [a], mode: sync}
        """
    )
    engine = Engine(pipeline)
    state = engine.new_request("01JTESTREQUEST0000000000000", {"profile": "big"}, 0.0)
    state, commands = engine.decide(state, Start(), 0.0)
    assert state.stages["a"].fingerprint is None  # running: nothing recorded yet
    (a,) = [c for c in commands if isinstance(c, Invoke)]
    state, commands = engine.decide_all(
        state, [CodeDigests({"A": "sha-a"}), TaskSucceeded("a", None, a.attempt, 1)], 1.0
    )
    assert state.stages["a"].fingerprint == Fingerprint("A", "sha-a", {"size": 9, "keep": True}, None)
    (b,) = [c for c in commands if isinstance(c, Invoke)]
    state, _ = engine.decide(state, TaskSucceeded("b", None, b.attempt, 2), 2.0)  # no code given: unknown
    assert state.stages["b"].fingerprint == Fingerprint("B", None, {}, None)
    assert engine.fingerprint("a", "default", {"A": "x"}) == Fingerprint("A", "x", {"size": 1, "keep": True}, None)
