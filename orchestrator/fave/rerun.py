"""``fave rerun``'s plan, make-like: which stages of an ended request must run again, and why.

A stage records a fingerprint when it succeeds (``core.model.Fingerprint``: its function, that function's code
digest, its config with the request's profile applied, the list it fans out over). The plan compares each with
today's (pipeline.yaml read again, the code hashed again):

* a stage whose fingerprint changed runs again ("code changed: ExtractFunction", "config changed:
  split.max_clip_s 10 -> 8"); so does one whose code is unknown (an invoker that cannot tell), and one that
  succeeded before fingerprints were recorded: nothing says it is up to date;
* a stage that needs a stage that runs again runs again too ("needs split, which re-runs"): its input may
  change. With ``cache: true`` its tasks whose input comes out unchanged are taken from the result cache;
* a stage that did not succeed (the request FAILED or was CANCELLED, or a reset left it PENDING) runs, as a
  resume would run it;
* a subset run (``fave run --stage``) plans only the stages it runs.

Applying it is the reset machinery: ``Reset`` of the changed stages with everything downstream, then a
``Resume``. A request whose pipeline gained or lost stages since it ran is refused (``RerunRefusedError`` naming the
stage): its state has no place for a new stage, and a stage gone may have fed the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fave_shared.errors import ValidationError

from fave.core.dag import Pipeline
from fave.core.model import Fingerprint, RequestState, StageStatus

__all__ = ["RerunPlan", "RerunRefusedError", "StagePlan", "check_same_stages", "plan_rerun"]


class RerunRefusedError(ValidationError):
    """The request cannot be re-run as it is (it has not ended, its pipeline gained or lost a stage)."""


@dataclass(frozen=True, slots=True)
class StagePlan:
    """One stage of the plan: whether it runs again, and why (or ``unchanged``)."""

    stage: str
    runs: bool
    reasons: tuple[str, ...]
    changed: bool = False
    """Its own fingerprint changed (or cannot be compared): a ``Reset`` names it."""
    cached: bool = False
    """It runs only because something it needs runs, and it has ``cache: true``: its tasks whose input comes
    out unchanged are taken from the result cache."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "runs": self.runs,
            "reasons": list(self.reasons),
            "changed": self.changed,
            "from_cache_if_unchanged": self.cached,
        }


@dataclass(frozen=True, slots=True)
class RerunPlan:
    request_id: str
    status: str
    stages: tuple[StagePlan, ...]
    selection: tuple[str, ...] = ()

    @property
    def reset(self) -> tuple[str, ...]:
        """The stages to ``Reset`` (with downstream): those whose own fingerprint changed and that succeeded
        (the others run on the resume anyway)."""
        return tuple(s.stage for s in self.stages if s.changed)

    @property
    def runs(self) -> tuple[str, ...]:
        return tuple(s.stage for s in self.stages if s.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "selection": list(self.selection) or None,
            "runs": list(self.runs),
            "reset": list(self.reset),
            "stages": [s.to_json() for s in self.stages],
        }

    def lines(self) -> list[str]:
        """The plan for a person: one line per stage."""
        width = max((len(s.stage) for s in self.stages), default=0)
        out = []
        for s in self.stages:
            verdict = "would run" if s.runs else "unchanged"
            why = "; ".join(s.reasons) if s.runs else ""
            out.append(f"  {s.stage:<{width}}  {verdict:<9}  {why}".rstrip())
        return out


def check_same_stages(pipeline: Pipeline, request_id: str, recorded: Iterable[str]) -> None:
    """``RerunRefusedError`` naming a stage added to or removed from the pipeline since the request ran."""
    had = list(recorded)
    added = [name for name in pipeline.order if name not in had]
    removed = [name for name in had if name not in pipeline.stages]
    if added:
        raise RerunRefusedError(
            f"stage {_names(added)} {'was' if len(added) == 1 else 'were'} added to pipeline '{pipeline.name}' since "
            f"request {request_id} ran: it has no state for {'it' if len(added) == 1 else 'them'}; start a new "
            "request (fave run; cache: true stages reuse their results)"
        )
    if removed:
        raise RerunRefusedError(
            f"stage {_names(removed)} {'was' if len(removed) == 1 else 'were'} removed from pipeline "
            f"'{pipeline.name}' since request {request_id} ran; start a new request (fave run)"
        )


def plan_rerun(pipeline: Pipeline, state: RequestState, today: Mapping[str, Fingerprint]) -> RerunPlan:
    """What re-running ``state`` (a request that has ended) would run, stage by stage, and why."""
    if not state.status.terminal:
        raise RerunRefusedError(
            f"request {state.request_id} is {state.status.value}: rerun a request that has ended "
            "(fave wait, or fave cancel first)"
        )
    check_same_stages(pipeline, state.request_id, state.stages)
    plans: dict[str, StagePlan] = {}
    for name in pipeline.order:
        if not state.in_scope(name):
            continue
        spec = pipeline.stages[name]
        st = state.stages[name]
        upstream = [f"needs {need}, which re-runs" for need in spec.needs if need in plans and plans[need].runs]
        if st.status is not StageStatus.SUCCEEDED:
            why = "not run yet" if st.status is StageStatus.PENDING else f"did not succeed ({st.status.value})"
            plans[name] = StagePlan(name, True, (why, *upstream))
            continue
        own = _changes(name, st.fingerprint, today[name])
        if own:
            plans[name] = StagePlan(name, True, (*own, *upstream), changed=True)
        elif upstream:
            cached = spec.cache and not state.no_cache
            note = ("cache: true: tasks whose input comes out unchanged are taken from the cache",) if cached else ()
            plans[name] = StagePlan(name, True, (*upstream, *note), cached=cached)
        else:
            plans[name] = StagePlan(name, False, ("unchanged",))
    return RerunPlan(state.request_id, state.status.value, tuple(plans.values()), state.selection)


def _changes(stage: str, before: Fingerprint | None, now: Fingerprint) -> list[str]:
    """Why a stage's output may differ from the one it made with ``before`` (empty: it would not). Config paths
    are named from the stage, as in pipeline.yaml: ``split.max_clip_s``."""
    if before is None:
        return ["no fingerprint recorded (it ran before fave recorded them)"]
    if before.function != now.function:
        return [f"function changed: {before.function} -> {now.function}"]
    reasons = []
    if before.code is None or now.code is None:
        reasons.append(f"code unknown: {now.function} (its digest is not available, so it cannot be compared)")
    elif before.code != now.code:
        reasons.append(f"code changed: {now.function}")
    if before.for_each != now.for_each:
        reasons.append(f"fans out over {now.for_each or 'nothing'} now (was {before.for_each or 'nothing'})")
    reasons.extend(
        f"config changed: {path} {_show(old)} -> {_show(new)}"
        for path, old, new in _diff(stage, before.config, now.config)
    )
    return reasons


_UNSET = object()


def _diff(prefix: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(dotted path, old, new) for every leaf that differs between two configs (mappings compared key by key)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[tuple[str, Any, Any]] = []
        for key in [*old, *(k for k in new if k not in old)]:
            path = f"{prefix}.{key}"
            out.extend(_diff(path, old.get(key, _UNSET), new.get(key, _UNSET)))
        return out
    if _canonical(old) == _canonical(new):
        return []
    return [(prefix, old, new)]


def _canonical(value: Any) -> str:
    return "<unset>" if value is _UNSET else json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
