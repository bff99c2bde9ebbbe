"""The admission queue's entries and their transitions, as pure functions of (entry, now).

``fave.queue`` stores entries in the object store and swaps them by compare-and-swap; everything that decides
what an entry becomes (claimed, started, finished, re-queued after a cooldown, released on shutdown) lives here,
free of I/O, so the rules are unit-tested on their own.

An entry's life::

    QUEUED --claim--> CLAIMED --started--> RUNNING --finished(COMPLETED)--> DONE (or QUEUED at now + every_s)
                        |                    |      --finished(FAILED)----> QUEUED after a cooldown
                        |                    |                              (60 s * 2^(attempts-1), at most 1 h)
                        |                    |                              ... FAILED once attempts = max_attempts
                        +--release-----------+--> QUEUED (no attempt counted: a worker shutting down)

A claim carries a lease (``lease_until``): a CLAIMED entry whose lease ran out (its worker died before starting
it) is claimable again. A RUNNING entry has a request; whoever restarts picks the request up (``running()``).
``paused`` is a flag, not a status: a paused entry keeps its status and is never claimed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "CLAIM_LEASE_S",
    "CLOSED",
    "OPEN",
    "STATUSES",
    "Entry",
    "QueueError",
    "QueueStats",
    "backoff_s",
    "check_priority",
    "claimable",
    "on_claim",
    "on_finished",
    "on_release",
    "on_retry",
    "on_started",
    "queue_stats",
]

QUEUED = "QUEUED"
CLAIMED = "CLAIMED"
RUNNING = "RUNNING"
DONE = "DONE"
FAILED = "FAILED"
STATUSES = (QUEUED, CLAIMED, RUNNING, DONE, FAILED)
OPEN = frozenset({QUEUED, CLAIMED, RUNNING})
"""Statuses of an entry that has not ended: a new entry with its key is a duplicate of it."""
CLOSED = frozenset({DONE, FAILED})

BACKOFF_BASE_S = 60.0
BACKOFF_CAP_S = 3600.0
CLAIM_LEASE_S = 300.0
"""How long a claim holds an entry before it is started: a worker that died between claim and start gives
its entries back after this (starting a request takes a few store requests, far less)."""

#: A request that ended like this will end like this again: its entry fails at once, whatever attempts are left.
_NOT_RETRIED = ("budget_exceeded", "cancelled")


class QueueError(ValueError):
    """A queue operation that cannot be done: an unknown entry, a bad priority, an entry in the wrong state."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One queued request-to-be. ``input`` is the pipeline's input (validated before it was queued)."""

    id: str
    key: str | None
    input: Mapping[str, Any]
    priority: int
    status: str
    attempts: int
    max_attempts: int
    created_at: float
    not_before: float
    every_s: float | None
    request_id: str | None
    worker: str | None
    error: str | None
    budget: Mapping[str, Any] | None
    paused: bool
    duplicate: bool = False
    """Set on what ``add`` returns when an open entry with the same key already existed (nothing was added)."""
    lease_until: float | None = None
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    last_success_at: float | None = None
    version: int = 0
    """Bumped on every write, so that no two versions of an entry have the same bytes (hence etag)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("duplicate",)}
        out["input"] = dict(self.input)
        out["budget"] = dict(self.budget) if self.budget is not None else None
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Entry:
        known = {f.name for f in dataclasses.fields(cls)} - {"duplicate"}
        try:
            return cls(**{k: v for k, v in value.items() if k in known})
        except TypeError as exc:
            raise QueueError(f"unreadable queue entry: {exc}") from None

    def evolve(self, now: float, **changes: Any) -> Entry:
        return dataclasses.replace(self, updated_at=now, version=self.version + 1, duplicate=False, **changes)

    @property
    def waiting_since(self) -> float:
        """When the entry became due: its creation, or the end of its cooldown / its scheduled time."""
        return max(self.created_at, self.not_before)


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 5:
        raise QueueError(f"priority: must be an integer from 1 (highest) to 5, got {priority!r}")
    return priority


def backoff_s(attempts: int) -> float:
    """The cooldown after the ``attempts``-th failed run: 60 s, 120 s, 240 s, ... at most an hour."""
    return min(BACKOFF_BASE_S * 2.0 ** max(attempts - 1, 0), BACKOFF_CAP_S)


def claimable(entry: Entry, now: float) -> bool:
    """Due and free: QUEUED past its ``not_before``, or CLAIMED by a worker whose lease ran out; never paused."""
    if entry.paused:
        return False
    if entry.status == QUEUED:
        return entry.not_before <= now
    return entry.status == CLAIMED and (entry.lease_until or 0.0) < now


def on_claim(entry: Entry, worker: str, now: float, lease_s: float = CLAIM_LEASE_S) -> Entry:
    return entry.evolve(now, status=CLAIMED, worker=worker, lease_until=now + lease_s)


def on_started(entry: Entry, request_id: str, now: float) -> Entry:
    if entry.status == RUNNING and entry.request_id == request_id:
        return entry  # said twice (a retried call): nothing changes
    if entry.status != CLAIMED:
        raise QueueError(f"entry {entry.id} is {entry.status}: only a CLAIMED entry can start")
    return entry.evolve(now, status=RUNNING, request_id=request_id, lease_until=None, started_at=now, error=None)


def on_finished(entry: Entry, status: str, now: float, error: str | None = None) -> Entry:
    """What a run's end makes of the entry: ``status`` is the request's (COMPLETED, FAILED, CANCELLED)."""
    if entry.status not in (CLAIMED, RUNNING):
        raise QueueError(f"entry {entry.id} is {entry.status}: only a CLAIMED or RUNNING entry can finish")
    common: dict[str, Any] = {"worker": None, "lease_until": None, "finished_at": now}
    if status == "COMPLETED":
        if entry.every_s is not None:  # a recurring entry: the next run is due every_s after this one ended
            return entry.evolve(
                now,
                status=QUEUED,
                attempts=0,
                not_before=now + entry.every_s,
                request_id=None,
                error=None,
                last_success_at=now,
                **common,
            )
        return entry.evolve(now, status=DONE, error=None, last_success_at=now, **common)
    if status not in ("FAILED", "CANCELLED"):
        raise QueueError(f"status: a run ends COMPLETED, FAILED or CANCELLED, not {status!r}")
    reason = error or ("cancelled" if status == "CANCELLED" else "failed")
    attempts = entry.attempts + 1
    final = attempts >= entry.max_attempts or status == "CANCELLED" or reason.startswith(_NOT_RETRIED)
    if final:
        return entry.evolve(now, status=FAILED, attempts=attempts, error=reason, **common)
    return entry.evolve(
        now,
        status=QUEUED,
        attempts=attempts,
        not_before=now + backoff_s(attempts),
        request_id=None,
        error=reason,
        **common,
    )


def on_release(entry: Entry, now: float) -> Entry:
    """Back to QUEUED, no attempt counted. A RUNNING entry keeps its ``request_id``: whoever claims it next
    resumes that request rather than starting another (what had succeeded never runs twice)."""
    if entry.status not in (CLAIMED, RUNNING):
        raise QueueError(f"entry {entry.id} is {entry.status}: only a CLAIMED or RUNNING entry can be released")
    return entry.evolve(now, status=QUEUED, worker=None, lease_until=None)


def on_retry(entry: Entry, now: float) -> Entry:
    """Due now, attempts from zero: a FAILED entry, or a QUEUED one waiting out a cooldown or its time."""
    if entry.status not in (FAILED, QUEUED, DONE):
        raise QueueError(f"entry {entry.id} is {entry.status}: it is running, there is nothing to retry")
    return entry.evolve(now, status=QUEUED, attempts=0, not_before=now, request_id=None, worker=None, error=None)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """``fave queue stats``: what waits, by priority; how long the oldest due entry has waited; how long the
    queue would take to drain at the rate entries completed over the last day (None before any completed)."""

    depth: int
    depth_by_priority: Mapping[int, int]
    due: int
    cooling_down: int
    paused: int
    claimed: int
    running: int
    failed: int
    oldest_age_s: float | None
    completed_24h: int
    drain_rate_per_h: float | None
    est_drain_s: float | None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["depth_by_priority"] = {str(p): n for p, n in sorted(self.depth_by_priority.items())}
        return out


def queue_stats(entries: Iterable[Entry], completions: Iterable[float], now: float, failed: int = 0) -> QueueStats:
    """Stats of the open ``entries`` and the times of the completions of the last day (``completions``)."""
    depth_by_priority = dict.fromkeys(range(1, 6), 0)
    due = cooling = paused = claimed = running = 0
    oldest: float | None = None
    for entry in entries:
        if entry.status == CLAIMED:
            claimed += 1
        elif entry.status == RUNNING:
            running += 1
        if entry.status != QUEUED:
            continue
        depth_by_priority[entry.priority] = depth_by_priority.get(entry.priority, 0) + 1
        if entry.paused:
            paused += 1
        elif entry.not_before > now:
            cooling += 1
        else:
            due += 1
            oldest = entry.waiting_since if oldest is None else min(oldest, entry.waiting_since)
    times = [t for t in completions if now - 86400.0 <= t <= now]
    rate: float | None = None
    if times:
        span = max(now - min(times), 3600.0)  # at least an hour: one completion a minute ago is no rate
        rate = len(times) / span * 3600.0
    depth = sum(depth_by_priority.values())
    waiting = depth - paused + claimed
    est = waiting / rate * 3600.0 if rate else None
    return QueueStats(
        depth=depth,
        depth_by_priority=depth_by_priority,
        due=due,
        cooling_down=cooling,
        paused=paused,
        claimed=claimed,
        running=running,
        failed=failed,
        oldest_age_s=None if oldest is None else max(now - oldest, 0.0),
        completed_24h=len(times),
        drain_rate_per_h=rate,
        est_drain_s=None if est is None or not math.isfinite(est) else est,
    )
