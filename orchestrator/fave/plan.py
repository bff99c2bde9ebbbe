"""``fave run --dry-run``: what a request of a pipeline would invoke and what it could cost, without running it.

Pure functions over the loaded ``Pipeline`` and the facts its template gives about each function (MemorySize,
Timeout): no store, no runtime. Prices come from ``fave.pricing``.

The cost range per stage is Lambda requests + GB-seconds (MemorySize x billed duration):

* low: every task succeeds at its first attempt in ``LOW_DURATION_S`` (100 ms): a floor, not a forecast;
* high: every task uses all its attempts (1 + the stage's ``retry.max_attempts``), each running to the stage's
  timeout, capped by the function's Timeout (Lambda stops the function there, so it bills no longer).

A fanned-out stage's size comes from an upstream stage's output (``for_each: STAGE.FIELD``), which no request
input can tell before the run: it is ``items`` when the caller gives it, else unknown, and then the total is a
lower bound (the unknown stages count for nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fave.core.dag import Pipeline
from fave.pricing import Prices

__all__ = ["LOW_DURATION_S", "FunctionFacts", "Plan", "StagePlan", "build_plan"]

LOW_DURATION_S = 0.1
"""The low end's duration per task: a short call (Lambda bills by the millisecond, so any floor is a guess)."""


@dataclass(frozen=True)
class FunctionFacts:
    """What the template says of one function (``AWS::Serverless::Function`` MemorySize and Timeout)."""

    memory_mb: int
    timeout_s: float


@dataclass(frozen=True)
class StagePlan:
    stage: str
    function: str
    mode: str
    needs: tuple[str, ...]
    fan_out: str | None
    """``STAGE.FIELD`` the stage fans out over; None for a single-task stage."""
    invocations: int | None
    """Tasks expected (each at least one Lambda invocation); None: a fan-out of unknown size."""
    memory_mb: int
    timeout_s: float
    """The longest one attempt is billed: the stage's timeout, capped by the function's Timeout."""
    max_attempts: int
    """The stage's ``retry.max_attempts``: retries after the first attempt."""
    cost_low: float | None
    cost_high: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "function": self.function,
            "mode": self.mode,
            "needs": list(self.needs),
            "for_each": self.fan_out,
            "invocations": self.invocations,
            "memory_mb": self.memory_mb,
            "timeout_s": self.timeout_s,
            "max_attempts": self.max_attempts,
            "cost_usd": {"low": self.cost_low, "high": self.cost_high},
        }


@dataclass(frozen=True)
class Plan:
    pipeline: str
    input: Mapping[str, Any]
    profile: str
    stages: tuple[StagePlan, ...]
    total_low: float
    total_high: float
    complete: bool
    """False when a stage's size is unknown: the totals are then lower bounds."""
    assumptions: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "input": dict(self.input),
            "profile": self.profile,
            "stages": [s.as_json() for s in self.stages],
            "total_cost_usd": {"low": self.total_low, "high": self.total_high, "complete": self.complete},
            "assumptions": list(self.assumptions),
        }


def build_plan(
    pipeline: Pipeline,
    functions: Mapping[str, FunctionFacts],
    prices: Prices,
    *,
    request_input: Mapping[str, Any],
    items: int | None = None,
    stages: Sequence[str] = (),
) -> Plan:
    """The plan of one request of ``pipeline`` with ``request_input`` (already validated). ``functions``: the
    template's facts for every function a stage names (``KeyError`` otherwise). ``items``: the size assumed for
    every fan-out. ``stages``: only these (a ``--stage`` selection, as the engine scopes it); () for all."""
    if items is not None and items < 0:
        raise ValueError(f"items must be >= 0, got {items}")
    chosen = set(stages) if stages else set(pipeline.order)
    planned = tuple(_stage_plan(pipeline, name, functions, prices, items) for name in pipeline.order if name in chosen)
    complete = all(s.invocations is not None for s in planned)
    profile = request_input.get("profile")
    return Plan(
        pipeline=pipeline.name,
        input=request_input,
        profile=profile if isinstance(profile, str) else "default",
        stages=planned,
        total_low=sum(s.cost_low or 0.0 for s in planned),
        total_high=sum(s.cost_high or 0.0 for s in planned),
        complete=complete,
        assumptions=_assumptions(items, complete),
    )


def _stage_plan(
    pipeline: Pipeline, name: str, functions: Mapping[str, FunctionFacts], prices: Prices, items: int | None
) -> StagePlan:
    spec = pipeline.stages[name]
    facts = functions[spec.function]
    invocations = 1 if spec.for_each is None else items
    timeout_s = min(spec.timeout_s, facts.timeout_s)
    retries = spec.retry.max_attempts
    low = high = None
    if invocations is not None:
        low = prices.lambda_cost(invocations, invocations * LOW_DURATION_S * 1000, facts.memory_mb)
        attempts = invocations * (1 + retries)
        high = prices.lambda_cost(attempts, attempts * timeout_s * 1000, facts.memory_mb)
    return StagePlan(
        stage=name,
        function=spec.function,
        mode=spec.mode,
        needs=spec.needs,
        fan_out=None if spec.for_each is None else str(spec.for_each),
        invocations=invocations,
        memory_mb=facts.memory_mb,
        timeout_s=timeout_s,
        max_attempts=retries,
        cost_low=low,
        cost_high=high,
    )


def _assumptions(items: int | None, complete: bool) -> tuple[str, ...]:
    notes = [
        f"low: each task succeeds at its first attempt in {LOW_DURATION_S * 1000:.0f} ms",
        "high: each task uses every attempt (1 + retry.max_attempts), each billed for the stage's timeout "
        "capped by the function's Timeout",
        "Lambda requests + GB-seconds (MemorySize x duration) at fave.pricing's prices (FAVE_PRICES overrides)",
        "a fan-out's size comes from an upstream stage's output: the input cannot tell it before the run",
        "not counted: the orchestrator's own invocations, S3 and SQS requests, an abandoned attempt still "
        "running past the stage's timeout, cached stages (counted as if they run)",
    ]
    if items is not None:
        notes.append(f"every fan-out assumed to have {items} item(s) (--items)")
    if not complete:
        notes.append("a fan-out of unknown size counts for nothing: the total is a lower bound (give --items N)")
    return tuple(notes)
