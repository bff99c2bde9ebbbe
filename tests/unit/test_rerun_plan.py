"""``fave rerun``'s plan (``fave.rerun.plan_rerun``) on states the pure engine made: which stages run again, and
the reasons it gives."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fave.core.engine import Engine
from fave.core.model import CodeDigests, Invoke, StageStatus, Start, TaskFailed, TaskSucceeded
from fave.rerun import RerunRefusedError, plan_rerun
from support.engine_harness import Harness
from support.pipelines import make_pipeline

PIPELINE = """
    name: plan
    final: d
    profiles: {fast: {b: {clip_s: 8}}}
    stages:
      a: {function: A, mode: sync}
      b: {function: B, needs: [a], mode: sync, config: {clip_s: 10, lang: en}}
      c: {function: C, needs: [b], mode: sync, cache: true}
      d: {function: D, needs: [a, c], mode: sync}
"""
CODE = {"A": "a1", "B": "b1", "C": "c1", "D": "d1"}


def finished(fail: str | None = None, profile: str = "default", stages: tuple[str, ...] = ()) -> Harness:
    """A request run through the engine with ``CODE`` (failing stage ``fail`` if given)."""
    h = Harness(make_pipeline(PIPELINE))
    h.state = h.engine.new_request("01JTESTREQUEST0000000000000", {"profile": profile}, h.now, stages=stages)
    pending = h.invokes(h.send(Start()))
    while pending:
        inv = pending.pop(0)
        if inv.stage == fail:
            h.send(TaskFailed(inv.stage, None, inv.attempt, "Boom", "no", terminal=True))
            continue
        h.state, commands = h.engine.decide_all(h.state, [CodeDigests(CODE), _success(inv)], h.now)
        pending.extend(h.invokes(commands))
    return h


def _success(inv: Invoke) -> TaskSucceeded:
    return TaskSucceeded(inv.stage, inv.item, inv.attempt, {"from": inv.stage})


def plan(h: Harness, code: dict[str, str | None] | None = None, text: str = PIPELINE) -> dict[str, tuple[str, ...]]:
    """The stages the plan runs, with its reasons, for today's pipeline ``text`` and ``code``."""
    pipeline = make_pipeline(text)
    engine = Engine(pipeline)
    today = {name: engine.fingerprint(name, h.state.profile, code or CODE) for name in pipeline.order}
    result = plan_rerun(pipeline, h.state, today)
    return {s.stage: s.reasons for s in result.stages if s.runs}


def test_nothing_changed_nothing_runs() -> None:
    h = finished()
    assert plan(h) == {}


def test_a_code_change_reruns_the_stage_and_everything_that_needs_it_with_the_reasons() -> None:
    h = finished()
    assert plan(h, {**CODE, "B": "b2"}) == {
        "b": ("code changed: B",),
        "c": ("needs b, which re-runs", "cache: true: tasks whose input comes out unchanged are taken from the cache"),
        "d": ("needs c, which re-runs",),
    }


def test_a_config_change_names_the_value_before_and_after_with_the_profile_applied() -> None:
    h = finished(profile="fast")
    changed = PIPELINE.replace("fast: {b: {clip_s: 8}}", "fast: {b: {clip_s: 6}}")
    assert plan(h, text=changed)["b"] == ("config changed: b.clip_s 8 -> 6",)
    added = PIPELINE.replace("lang: en}", "lang: en, beam: 4}")
    assert plan(h, text=added)["b"] == ("config changed: b.beam (unset) -> 4",)
    # A value the profile overrides anyway changes nothing for this request.
    assert plan(h, text=PIPELINE.replace("clip_s: 10", "clip_s: 12")) == {}


def test_unknown_code_and_a_missing_fingerprint_count_as_changed() -> None:
    h = finished()
    assert plan(h, {**CODE, "D": None})["d"][0].startswith("code unknown: D")
    st = h.state.stages["a"]
    h.state = replace(h.state, stages=h.state.stages.set("a", replace(st, fingerprint=None)))
    assert set(plan(h)) == {"a", "b", "c", "d"} and plan(h)["a"][0].startswith("no fingerprint recorded")


def test_a_failed_request_reruns_what_did_not_succeed_and_what_changed() -> None:
    h = finished(fail="c")
    assert h.state.status.value == "FAILED"
    assert plan(h) == {"c": ("did not succeed (FAILED)",), "d": ("not run yet", "needs c, which re-runs")}
    assert set(plan(h, {**CODE, "A": "a2"})) == {"a", "b", "c", "d"}


def test_a_subset_request_plans_only_its_stages() -> None:
    h = finished(stages=("b",))
    assert h.state.scope == ("a", "b") and h.state.stages["c"].status is StageStatus.PENDING
    assert plan(h, {**CODE, "C": "c2"}) == {}  # c is not part of the run
    assert plan(h, {**CODE, "A": "a2"}) == {"a": ("code changed: A",), "b": ("needs a, which re-runs",)}


def test_refused_while_running_and_for_a_pipeline_that_gained_a_stage() -> None:
    h = Harness(make_pipeline(PIPELINE))
    h.send(Start())
    with pytest.raises(RerunRefusedError, match="is RUNNING"):
        plan(h)
    done = finished()
    grown = PIPELINE.replace(
        "d: {function: D, needs: [a, c]",
        "e: {function: A, needs: [a], mode: sync}\n      d: {function: D, needs: [a, c, e]",
    )
    with pytest.raises(RerunRefusedError, match="stage 'e' was added"):
        plan(done, text=grown)
