"""The run history: one small summary per ended request, and day packs that keep reading it cheap.

When a request reaches a terminal status, ``record`` writes ``index/history/{day}/{id}.{resumes}.json``: its
pipeline, status, failure type, times, per-stage task counts, retries, failed attempts, a fixed-bucket
histogram of attempt durations per stage, and its ledger (if the engine kept one). ``fave metrics`` and the
Prometheus exporter (``fave.metrics``) aggregate these.

Why day packs: with 10,000 requests, reading every summary is 10,000 GETs per ``fave metrics``. A reader
folds what it read of a day into ``index/history/packs/{day}.json`` (conditional writes: two readers never
lose each other's work), so the next read of that day costs the pack plus the summaries written since. Once a
day is over (plus ``SEAL_MARGIN_S`` for late writers) its pack is *sealed*: it is the whole day, and a read
of that day is one GET and no listing. ``fave metrics --since 7d`` therefore costs O(days), not O(requests).

The day of a summary is the day it is *recorded* (the writer's clock), not its ``finished_at``: a summary is
then never written into a day that is already sealed, as long as writers' clocks are within the margin of
the readers'. Readers filter on ``finished_at`` (which is never later than the record time).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fave_shared.errors import ConflictError, NotFoundError
from fave_shared.store import ObjectStore

from fave.core.model import RequestState, Task, TaskStatus
from fave.keys import history_day_prefix, history_pack_key, history_summary_key

__all__ = [
    "DURATION_BUCKETS",
    "SEAL_MARGIN_S",
    "ReadStats",
    "StageSummary",
    "Summaries",
    "Summary",
    "day_end",
    "day_of",
    "days_between",
    "latest_runs",
    "quantile",
    "read",
    "read_day",
    "record",
    "summarize",
]

log = logging.getLogger(__name__)

DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
"""Upper bounds (seconds) of the attempt-duration histogram; one more bucket holds the longer ones. Fixed, so
summaries of every request add up bucket by bucket (and match the Prometheus histogram's ``le`` labels)."""

SEAL_MARGIN_S = 900.0
"""A day's pack is sealed (read without listing) once the day ended this long ago: room for writers whose
clock is behind the reader's."""

SCHEMA = 1
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class StageSummary:
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    cached: int = 0
    attempts: int = 0
    """Attempts that ran (a task taken from the result cache ran none)."""
    retries: int = 0
    """Attempts beyond each task's first."""
    failed_attempts: int = 0
    buckets: tuple[int, ...] = ()
    """Attempt durations: counts per ``DURATION_BUCKETS`` bucket, the last for longer ones (not cumulative)."""
    duration_sum_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        buckets = list(self.buckets)
        while buckets and buckets[-1] == 0:  # most attempts are short: the long buckets are mostly empty
            buckets.pop()
        doc["buckets"] = buckets
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StageSummary:
        return cls(
            tasks=int(doc.get("tasks", 0)),
            succeeded=int(doc.get("succeeded", 0)),
            failed=int(doc.get("failed", 0)),
            cached=int(doc.get("cached", 0)),
            attempts=int(doc.get("attempts", 0)),
            retries=int(doc.get("retries", 0)),
            failed_attempts=int(doc.get("failed_attempts", 0)),
            buckets=tuple(int(n) for n in doc.get("buckets", ())),
            duration_sum_s=float(doc.get("duration_sum_s", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """What the history keeps of one ended run of a request."""

    request_id: str
    pipeline: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float
    resumes: int = 0
    error_type: str | None = None
    failure: str | None = None
    stages: Mapping[str, StageSummary] = field(default_factory=dict)
    ledger: Mapping[str, Any] | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.started_at is None else max(0.0, self.finished_at - self.started_at)

    @property
    def cost_usd(self) -> float | None:
        value = (self.ledger or {}).get("cost_usd")
        return float(value) if isinstance(value, int | float) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": SCHEMA,
            "request_id": self.request_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "error_type": self.error_type,
            "failure": self.failure,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "resumes": self.resumes,
            "stages": {name: s.to_json() for name, s in self.stages.items()},
            "ledger": dict(self.ledger) if self.ledger is not None else None,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Summary:
        ledger = doc.get("ledger")
        return cls(
            request_id=str(doc["request_id"]),
            pipeline=str(doc.get("pipeline") or ""),
            status=str(doc["status"]),
            created_at=float(doc["created_at"]),
            started_at=None if doc.get("started_at") is None else float(doc["started_at"]),
            finished_at=float(doc["finished_at"]),
            resumes=int(doc.get("resumes", 0)),
            error_type=doc.get("error_type"),
            failure=doc.get("failure"),
            stages={name: StageSummary.from_json(s) for name, s in (doc.get("stages") or {}).items()},
            ledger=dict(ledger) if isinstance(ledger, Mapping) else None,
        )


# ---- summarizing a state (pure) ------------------------------------------------------------------------


def _bucket(seconds: float) -> int:
    return bisect.bisect_left(DURATION_BUCKETS, seconds)


def _attempt_durations(task: Task) -> Iterator[float]:
    """How long each attempt of ``task`` that ended took: those in its history, and its last one."""
    seen = set()
    for past in task.history:
        seen.add(past.attempt)
        if past.started_at is not None:
            yield max(0.0, past.ended_at - past.started_at)
    ended = task.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) and not task.cached
    if ended and task.attempt not in seen and task.dispatched_at is not None and task.finished_at is not None:
        yield max(0.0, task.finished_at - task.dispatched_at)


def summarize_stage(tasks: Iterable[Task], cached_in_bulk: int = 0) -> StageSummary:
    """``cached_in_bulk``: tasks taken from the cache in bulk and not among ``tasks`` (``CachedItems``): each is
    one SUCCEEDED, cached task that made no attempt."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    n = succeeded = cached = cached_in_bulk
    failed = attempts = retries = failed_attempts = 0
    total = 0.0
    ended_ok, ended_failed = TaskStatus.SUCCEEDED, TaskStatus.FAILED
    buckets = DURATION_BUCKETS
    for task in tasks:
        if not task.history and not task.cached:  # almost every task: what the general case below works out
            n += 1
            status = task.status
            ran = task.attempt
            attempts += ran
            if ran > 1:
                retries += ran - 1
            if status is ended_ok or status is ended_failed:
                if status is ended_ok:
                    succeeded += 1
                else:
                    failed += 1
                    failed_attempts += 1
                if task.dispatched_at is not None and task.finished_at is not None:
                    seconds = max(0.0, task.finished_at - task.dispatched_at)
                    counts[bisect.bisect_left(buckets, seconds)] += 1
                    total += seconds
            continue
        n += 1
        succeeded += task.status is TaskStatus.SUCCEEDED
        failed += task.status is TaskStatus.FAILED
        cached += task.cached
        ran = 0 if task.cached else task.attempt
        attempts += ran
        retries += max(0, ran - 1)
        failed_attempts += len(task.history) + (
            task.status is TaskStatus.FAILED and not any(a.attempt == task.attempt for a in task.history)
        )
        for seconds in _attempt_durations(task):
            counts[_bucket(seconds)] += 1
            total += seconds
    return StageSummary(n, succeeded, failed, cached, attempts, retries, failed_attempts, tuple(counts), total)


def summarize(
    state: RequestState,
    pipeline_name: str,
    tasks: Mapping[str, Iterable[Task]],
    *,
    now: float,
    ledger: Mapping[str, Any] | None = None,
) -> Summary:
    """The summary of an ended request, from its state, every task of each stage (``tasks``) and its ledger
    as state.json holds it (``fave.core.budget.Ledger.as_json``: invocations, gb_s, s3_requests, cost_usd)."""
    failure = state.failure
    return Summary(
        request_id=state.request_id,
        pipeline=pipeline_name,
        status=state.status.value,
        created_at=state.created_at,
        started_at=state.started_at,
        finished_at=state.finished_at if state.finished_at is not None else now,
        resumes=state.resumes,
        error_type=failure.error_type if failure is not None else None,
        failure=failure.message[:300] if failure is not None else state.cancel_reason,
        stages={name: summarize_stage(tasks.get(name, ()), _in_bulk(state, name)) for name in state.stages},
        ledger=dict(ledger) if isinstance(ledger, Mapping) else None,
    )


def _in_bulk(state: RequestState, stage: str) -> int:
    bulk = state.bulk_cached.get(stage)
    return bulk.count if bulk is not None else 0


def quantile(buckets: Iterable[int], q: float) -> float | None:
    """The ``q`` quantile of a ``DURATION_BUCKETS`` histogram, linear within its bucket (as Prometheus's
    ``histogram_quantile``); None when it is empty. Beyond the last bound: the last bound."""
    counts = list(buckets)
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(DURATION_BUCKETS):
                return float(DURATION_BUCKETS[-1])
            lo = DURATION_BUCKETS[i - 1] if i else 0.0
            hi = DURATION_BUCKETS[i]
            return float(lo + (hi - lo) * (rank - seen) / count)
        seen += count
    return float(DURATION_BUCKETS[-1])


# ---- writing -------------------------------------------------------------------------------------------


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def day_end(day: str) -> float:
    return (datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=1)).timestamp()


def days_between(since: float, until: float) -> list[str]:
    """Every UTC day from ``since``'s to ``until``'s, oldest first."""
    first = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(until, UTC).date()
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _all_tasks(store: ObjectStore, state: RequestState) -> dict[str, list[Task]]:
    """Every task of each stage: the loaded ones, and for a fanned-out stage not wholly loaded (``partial``)
    the committed ones read from the store (once per request, when it ends)."""
    from fave.persistence import read_stage_tasks, task_from_doc

    out: dict[str, list[Task]] = {}
    for name in state.stages:
        if name in state.partial:
            out[name] = [task_from_doc(doc) for doc in read_stage_tasks(store, state.request_id, name).values()]
        else:
            out[name] = list(state.tasks.get(name, {}).values())
    return out


def _ledger(state: RequestState, rates: Any) -> dict[str, Any] | None:
    """The request's ledger as state.json has it: its counts and their cost at ``rates`` (the engine's
    ``fave.core.budget.Rates``; None: the default prices)."""
    ledger = getattr(state, "ledger", None)
    if ledger is None or not hasattr(ledger, "as_json"):
        return None
    if rates is None:
        from fave.core.budget import Rates

        rates = Rates()
    doc = ledger.as_json(rates)
    return dict(doc) if isinstance(doc, Mapping) else None


def record(
    store: ObjectStore, state: RequestState, pipeline_name: str, *, now: float | None = None, rates: Any = None
) -> str:
    """Write the summary of ``state`` (a request in a terminal status) into the history; return its key, or
    "" when nothing was written. ``rates``: the engine's (``Orchestrator.engine.rates``), to price the
    ledger as state.json does. Never raises: the history is an index, and a request that ended must not fail
    because its summary could not be written (the failure is logged)."""
    if not state.status.terminal:
        return ""
    now = time.time() if now is None else now
    try:
        summary = summarize(state, pipeline_name, _all_tasks(store, state), now=now, ledger=_ledger(state, rates))
        key = history_summary_key(day_of(now), state.request_id, state.resumes)
        store.put(key, json.dumps(summary.to_json(), separators=(",", ":")).encode(), content_type=_JSON)
        return key
    except Exception:
        log.exception("could not record request %s in the run history", state.request_id)
        return ""


# ---- reading -------------------------------------------------------------------------------------------


@dataclass
class ReadStats:
    """What a ``read`` did (``fave metrics --json``'s ``index``): days read, of which sealed, summaries read one
    by one, packs written."""

    days: int = 0
    sealed_days: int = 0
    summaries_read: int = 0
    packs_written: int = 0


def _read_pack(store: ObjectStore, day: str) -> tuple[dict[str, Any], str | None]:
    try:
        blob = store.get(history_pack_key(day))
    except NotFoundError:
        return {"v": SCHEMA, "day": day, "sealed": False, "summaries": {}}, None
    try:
        doc = json.loads(blob.data)
        if isinstance(doc, dict) and isinstance(doc.get("summaries"), dict):
            return doc, blob.etag
    except ValueError:
        pass
    log.warning("history pack of %s is unreadable: rebuilding it", day)
    return {"v": SCHEMA, "day": day, "sealed": False, "summaries": {}}, blob.etag


def _read_day(store: ObjectStore, day: str, now: float, stats: ReadStats) -> Iterable[Mapping[str, Any]]:
    """Every summary document recorded on ``day``: from its pack, plus (unless the pack is sealed) those
    written since, which are then folded into the pack."""
    pack, etag = _read_pack(store, day)
    docs: dict[str, Any] = pack["summaries"]
    if pack.get("sealed"):
        stats.sealed_days += 1
        return docs.values()
    prefix = history_day_prefix(day)
    added = 0
    for key in store.list(prefix):
        name = key[len(prefix) :]
        if name in docs:
            continue
        with contextlib.suppress(NotFoundError):
            try:
                docs[name] = json.loads(store.get(key).data)
                added += 1
            except ValueError:
                log.warning("history summary %s is unreadable: left out", key)
    stats.summaries_read += added
    seal = now >= day_end(day) + SEAL_MARGIN_S
    # An empty day is left without a pack (a listing and a GET per read) so that reading never creates a store.
    if added or (seal and etag is not None):
        pack["sealed"] = seal
        body = json.dumps(pack, separators=(",", ":")).encode()
        try:
            if etag is None:
                store.put(history_pack_key(day), body, if_none_match=True, content_type=_JSON)
            else:
                store.put(history_pack_key(day), body, if_match=etag, content_type=_JSON)
            stats.packs_written += 1
        except ConflictError:
            pass  # another reader folded the day in meanwhile: its pack is as good, and the next read uses it
        except Exception as exc:  # a read-only store (credentials, permissions): read without packing
            log.warning("could not pack the run history of %s (%s): reading it summary by summary", day, exc)
    return docs.values()


def read_day(store: ObjectStore, day: str, *, now: float | None = None, stats: ReadStats | None = None) -> Summaries:
    """The summaries recorded on ``day`` and whether that day is sealed (they will never change)."""
    now = time.time() if now is None else now
    stats = stats if stats is not None else ReadStats()
    stats.days += 1
    before, written = stats.sealed_days, stats.packs_written
    out = []
    for doc in _read_day(store, day, now, stats):
        try:
            out.append(Summary.from_json(doc))
        except (KeyError, TypeError, ValueError):
            continue
    was_sealed = stats.sealed_days > before
    packed = was_sealed or stats.packs_written > written
    return Summaries(out, sealed=was_sealed or now >= day_end(day) + SEAL_MARGIN_S, packed=packed)


@dataclass(frozen=True, slots=True)
class Summaries:
    items: list[Summary]
    sealed: bool
    """The day is over (and its margin): its summaries will not change."""
    packed: bool = True
    """The day has a pack (False: an empty day that has none yet)."""


def _seal_empty(store: ObjectStore, day: str, stats: ReadStats) -> None:
    body = json.dumps({"v": SCHEMA, "day": day, "sealed": True, "summaries": {}}).encode()
    try:
        store.put(history_pack_key(day), body, if_none_match=True, content_type=_JSON)
        stats.packs_written += 1
    except ConflictError:
        pass  # another reader got there first: its pack is the day's
    except Exception as exc:  # a read-only store: the next read lists the day again
        log.warning("could not pack the run history of %s (%s)", day, exc)


def latest_runs(summaries: Iterable[Summary]) -> list[Summary]:
    """The latest run of each request (a request resumed after it ended has a summary per run), oldest first."""
    latest: dict[str, Summary] = {}
    for summary in summaries:
        kept = latest.get(summary.request_id)
        if kept is None or (summary.resumes, summary.finished_at) > (kept.resumes, kept.finished_at):
            latest[summary.request_id] = summary
    return sorted(latest.values(), key=lambda s: (s.finished_at, s.request_id))


def read(
    store: ObjectStore,
    since: float,
    until: float | None = None,
    *,
    pipeline: str | None = None,
    now: float | None = None,
    stats: ReadStats | None = None,
) -> list[Summary]:
    """The latest summary of each request that ended in ``[since, until]`` (of ``pipeline``, if given),
    oldest first. Reads O(days) objects once the days before today are packed (``_read_day``)."""
    now = time.time() if now is None else now
    until = now if until is None else until
    stats = stats if stats is not None else ReadStats()
    found: list[Summary] = []
    empty: list[str] = []
    any_history = False
    # The record day is never earlier than finished_at: a run that ended in the window was recorded on one of
    # the window's days or later (up to now).
    for day in days_between(since, max(until, now)):
        got = read_day(store, day, now=now, stats=stats)
        any_history = any_history or bool(got.items)
        if got.sealed and not got.packed and not got.items:
            empty.append(day)
        for summary in got.items:
            if since <= summary.finished_at <= until and (pipeline is None or summary.pipeline == pipeline):
                found.append(summary)
    if any_history:
        # Empty days get a sealed pack too (one GET instead of a listing and a GET), but only in a store that
        # has a history: reading an empty or absent store writes nothing.
        for day in empty:
            _seal_empty(store, day, stats)
    return latest_runs(found)


def window_days(since: float, until: float) -> float:
    """The length of ``[since, until]`` in days (at least a day: "per day" of a shorter window is its total)."""
    return max(1.0, (until - since) / 86400.0) if math.isfinite(until - since) else 1.0
