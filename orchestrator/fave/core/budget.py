"""What a request has spent, and whether it may spend more: pure, like the rest of the core.

* ``Ledger``: invocations started (a throttled one is taken back: it did not run), billed milliseconds per
  function (dispatch to completion: an upper bound of what Lambda bills, which excludes the time an event
  waits in its queue), and the S3 requests the orchestrator made for the request (counted by the service's
  store, ``StoreRequests``).
* ``Rates``: Lambda and S3 prices and each function's MemorySize: the ledger's cost in US dollars. The core
  imports no price table; ``fave.pricing`` fills this in (``Orchestrator``).
* ``exceeded(budget, ledger, rates, since, now)``: the first limit the request has reached, or None. The
  engine asks before it dispatches; reaching one ends the request FAILED with ``budget_exceeded: <limit>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from immutables import Map

from fave.core.operations import Budget

__all__ = ["BUDGET_EXCEEDED", "Ledger", "Rates", "billed_ms", "exceeded"]

BUDGET_EXCEEDED = "budget_exceeded"
"""The failure's error type when a budget stops a request (its message names the limit)."""


def billed_ms(seconds: float) -> int:
    """Lambda bills duration rounded up to the millisecond (at least 1)."""
    return max(1, math.ceil(seconds * 1000))


@dataclass(frozen=True, slots=True)
class Rates:
    """Prices (us-east-1 on-demand defaults, ``fave.pricing``) and MemorySize per function."""

    request_usd: float = 0.20 / 1e6
    gb_second_usd: float = 0.0000166667
    s3_put_usd: float = 0.005 / 1000
    s3_get_usd: float = 0.0004 / 1000
    memory_mb: Mapping[str, int] = field(default_factory=dict)
    default_memory_mb: int = 128
    """Lambda's default MemorySize: a function whose size is unknown is priced at it."""

    def memory_of(self, function: str) -> int:
        return self.memory_mb.get(function, self.default_memory_mb)


@dataclass(frozen=True, slots=True)
class Ledger:
    invocations: int = 0
    billed_ms: Map[str, int] = field(default_factory=Map)
    """Function -> billed milliseconds of its attempts that ended (success, failure or timeout)."""
    s3_puts: int = 0
    """PUT, POST, COPY and LIST requests (priced alike), refused conditional writes included."""
    s3_gets: int = 0
    """GET, HEAD and the rest."""

    def gb_s(self, rates: Rates) -> float:
        return sum(ms / 1000 * rates.memory_of(fn) / 1024 for fn, ms in self.billed_ms.items())

    def cost_usd(self, rates: Rates) -> float:
        return (
            self.invocations * rates.request_usd
            + self.gb_s(rates) * rates.gb_second_usd
            + self.s3_puts * rates.s3_put_usd
            + self.s3_gets * rates.s3_get_usd
        )

    def as_json(self, rates: Rates) -> dict[str, Any]:
        """state.json's ``ledger``: the counts, and what they cost at ``rates``."""
        return {
            "invocations": self.invocations,
            "billed_ms": dict(self.billed_ms.items()),
            "gb_s": round(self.gb_s(rates), 6),
            "s3_requests": self.s3_puts + self.s3_gets,
            "s3_puts": self.s3_puts,
            "s3_gets": self.s3_gets,
            "cost_usd": round(self.cost_usd(rates), 8),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> Ledger:
        if not doc:
            return cls()
        return cls(
            invocations=int(doc.get("invocations", 0)),
            billed_ms=Map({str(k): int(v) for k, v in (doc.get("billed_ms") or {}).items()}),
            s3_puts=int(doc.get("s3_puts", 0)),
            s3_gets=int(doc.get("s3_gets", 0)),
        )


def exceeded(
    budget: Budget,
    ledger: Ledger,
    rates: Rates | None,
    since: float | None,
    now: float,
    *,
    dispatching: bool,
) -> str | None:
    """The first limit of ``budget`` that ``ledger`` (or the time since ``since``, the request's latest start
    or resume) has reached: ``"max_invocations"``, ``"max_wall"``, ``"max_cost_usd"``; None if none has.
    ``max_invocations`` counts only when another invocation is about to start (``dispatching``): a request
    that needs exactly that many is within its budget."""
    if dispatching and budget.max_invocations is not None and ledger.invocations >= budget.max_invocations:
        return "max_invocations"
    if budget.max_wall_s is not None and since is not None and now - since >= budget.max_wall_s:
        return "max_wall"
    if budget.max_cost_usd is not None and ledger.cost_usd(rates or Rates()) >= budget.max_cost_usd:
        return "max_cost_usd"
    return None
