"""What pipeline.yaml says about running a pipeline day and night (issue 14): caps across requests, budgets,
staleness and alerts. Pure data, checked where it is built; the file format is ``fave.pipeline``'s.

* ``Budget``: limits of one request (each optional). The engine enforces them (``fave.core.budget``); a request
  or queue entry may override the pipeline's default.
* ``Alerts``: where alerts go and when the two time-based ones fire (``fave.alerts`` delivers them).
* ``Operations``: the above, ``max_requests_in_flight`` (per pipeline: what a worker or the AWS queue drain
  admits at once), ``stale_after_s`` (a keyed queue entry whose last success is older is queued again) and
  ``function_caps`` (per function, across every request: the local runtime's limit, and the template's
  ``ReservedConcurrentExecutions`` on AWS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_MAX_REQUESTS_IN_FLIGHT", "Alerts", "Budget", "Operations", "OperationsError"]

DEFAULT_MAX_REQUESTS_IN_FLIGHT = 4
"""Requests of one pipeline a worker runs at once unless the pipeline says otherwise: enough to keep a
2-core machine busy across a request's sequential stages without one request's fan-out starving the rest."""

BUDGET_FIELDS = ("max_wall", "max_invocations", "max_cost_usd")


class OperationsError(ValueError):
    """An invalid operations setting: ``where`` and why (the loader reports it like a ``DagError``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def _positive(where: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise OperationsError(where, f"must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits of one request; None: no limit. ``max_wall_s`` counts from the request's start (a resume does not
    restart it: a budget caps what a request may cost in all, and a resume with a raised budget continues)."""

    max_wall_s: float | None = None
    max_invocations: int | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        _positive("field 'max_wall'", self.max_wall_s)
        _positive("field 'max_invocations'", self.max_invocations)
        _positive("field 'max_cost_usd'", self.max_cost_usd)

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.max_wall_s, self.max_invocations, self.max_cost_usd))

    def merged(self, override: Budget) -> Budget:
        """This budget with ``override``'s limits where it sets them (a request's or queue entry's)."""
        return Budget(
            max_wall_s=override.max_wall_s if override.max_wall_s is not None else self.max_wall_s,
            max_invocations=override.max_invocations if override.max_invocations is not None else self.max_invocations,
            max_cost_usd=override.max_cost_usd if override.max_cost_usd is not None else self.max_cost_usd,
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (state.json, queue entries): the limits set, under their pipeline.yaml names."""
        out: dict[str, Any] = {}
        if self.max_wall_s is not None:
            out["max_wall_s"] = self.max_wall_s
        if self.max_invocations is not None:
            out["max_invocations"] = self.max_invocations
        if self.max_cost_usd is not None:
            out["max_cost_usd"] = self.max_cost_usd
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Budget:
        """The inverse of ``as_dict``."""
        if not doc:
            return cls()
        return cls(
            max_wall_s=doc.get("max_wall_s"),
            max_invocations=doc.get("max_invocations"),
            max_cost_usd=doc.get("max_cost_usd"),
        )


@dataclass(frozen=True, slots=True)
class Alerts:
    """Where alerts go (a Slack-compatible webhook, a command, both or neither) and the thresholds of the two
    alerts that are about time: a queue entry waiting longer than ``queue_stuck_after_s``, throttling that lasts
    longer than ``throttle_sustained_s``."""

    webhook: str | None = None
    command: str | None = None
    queue_stuck_after_s: float = 3600.0
    throttle_sustained_s: float = 300.0

    def __post_init__(self) -> None:
        _positive("field 'alerts.queue_stuck_after'", self.queue_stuck_after_s)
        _positive("field 'alerts.throttle_sustained'", self.throttle_sustained_s)

    @property
    def enabled(self) -> bool:
        return bool(self.webhook or self.command)


@dataclass(frozen=True, slots=True)
class Operations:
    max_requests_in_flight: int = DEFAULT_MAX_REQUESTS_IN_FLIGHT
    stale_after_s: float | None = None
    budget: Budget = field(default_factory=Budget)
    alerts: Alerts = field(default_factory=Alerts)
    function_caps: Mapping[str, int] = field(default_factory=dict)
    """Function logical id -> the most invocations of it running at once, across every request."""

    def __post_init__(self) -> None:
        if self.max_requests_in_flight < 1:
            raise OperationsError("field 'operations.max_requests_in_flight'", "must be at least 1")
        _positive("field 'operations.stale_after'", self.stale_after_s)
        for function, cap in self.function_caps.items():
            if cap < 1:
                raise OperationsError(f"field 'functions.{function}.max_concurrency'", "must be at least 1")
