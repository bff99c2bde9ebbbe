"""Numbers on throughput, latency, failures and cost, from the run history (``fave.history``).

* ``report``: what ``fave metrics`` prints (``--json``: these stable keys) over a window such as the last 7 days.
* ``LiveMetrics``: what only a running worker knows (requests in flight, queue depth, throttles); it updates
  the object, the exporter reads it.
* ``serve_prometheus``: the same counters and histograms in Prometheus's text format (``prometheus_client``,
  imported only here and only when a port is served), for ``fave worker --metrics-port``. Lambda keeps its EMF
  metrics (``fave.app.observability``).

Counters exported to Prometheus must never go down, so the exporter counts the history from a fixed start
(``LOOKBACK_S`` before it started), not over a sliding window; sealed days are immutable and cached in memory,
so a scrape re-reads only the days still open (today's pack and the summaries written since).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fave_shared.store import ObjectStore

from fave.history import (
    DURATION_BUCKETS,
    ReadStats,
    StageSummary,
    Summary,
    day_of,
    days_between,
    latest_runs,
    quantile,
    read,
    read_day,
    window_days,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["LOOKBACK_S", "LiveMetrics", "PrometheusServer", "aggregate", "queue_stats", "report", "serve_prometheus"]

log = logging.getLogger(__name__)

LOOKBACK_S = 30 * 86400.0
"""How far back the exporter's counters start counting when it starts."""

_ENDED = ("COMPLETED", "FAILED", "CANCELLED")


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _add(a: StageSummary, b: StageSummary) -> StageSummary:
    width = max(len(a.buckets), len(b.buckets), len(DURATION_BUCKETS) + 1)
    buckets = [0] * width
    for source in (a.buckets, b.buckets):
        for i, n in enumerate(source):
            buckets[i] += n
    return StageSummary(
        tasks=a.tasks + b.tasks,
        succeeded=a.succeeded + b.succeeded,
        failed=a.failed + b.failed,
        cached=a.cached + b.cached,
        attempts=a.attempts + b.attempts,
        retries=a.retries + b.retries,
        failed_attempts=a.failed_attempts + b.failed_attempts,
        buckets=tuple(buckets),
        duration_sum_s=a.duration_sum_s + b.duration_sum_s,
    )


def _exact_quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of exact values (request durations are kept exactly in the summaries)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def aggregate(summaries: Iterable[Summary], since: float, until: float) -> dict[str, Any]:
    """The ``fave metrics`` document of ``summaries`` (the window ``[since, until]``), without the queue."""
    counts: dict[str, int] = dict.fromkeys(_ENDED, 0)
    error_types: dict[str, int] = defaultdict(int)
    per_day: dict[str, dict[str, Any]] = {}
    stages: dict[str, StageSummary] = {}
    durations: list[float] = []
    costs: list[float] = []
    ledger_totals: dict[str, float] = defaultdict(float)
    pipelines: dict[str, int] = defaultdict(int)
    for s in summaries:
        counts[s.status] = counts.get(s.status, 0) + 1
        pipelines[s.pipeline] += 1
        if s.error_type:
            error_types[s.error_type] += 1
        day = per_day.setdefault(day_of(s.finished_at), {"completed": 0, "failed": 0, "cancelled": 0, "cost_usd": None})
        key = s.status.lower()
        day[key] = day.get(key, 0) + 1
        for name, stage in s.stages.items():
            stages[name] = _add(stages[name], stage) if name in stages else _add(StageSummary(), stage)
        if s.duration_s is not None and s.status == "COMPLETED":
            durations.append(s.duration_s)
        cost = s.cost_usd
        if cost is not None:
            costs.append(cost)
            day["cost_usd"] = round((day["cost_usd"] or 0.0) + cost, 6)
        for field in ("invocations", "gb_s", "s3_requests"):
            value = (s.ledger or {}).get(field)
            if isinstance(value, int | float):
                ledger_totals[field] += value
    ended = sum(counts.values())
    days = window_days(since, until)
    attempts = sum(st.attempts for st in stages.values())
    total_cost = round(sum(costs), 6) if costs else None
    return {
        "since": since,
        "until": until,
        "requests": {
            "ended": ended,
            "completed": counts.get("COMPLETED", 0),
            "failed": counts.get("FAILED", 0),
            "cancelled": counts.get("CANCELLED", 0),
            "budget_exceeded": error_types.get("budget_exceeded", 0),
            "failure_rate": _rate(counts.get("FAILED", 0), ended),
            "error_types": dict(sorted(error_types.items())),
            "duration_s": {
                "p50": _round(_exact_quantile(durations, 0.5)),
                "p95": _round(_exact_quantile(durations, 0.95)),
            },
        },
        "pipelines": dict(sorted(pipelines.items())),
        "throughput_per_day": round(counts.get("COMPLETED", 0) / days, 3),
        "per_day": [{"day": d, **per_day[d]} for d in sorted(per_day)],
        "tasks": {
            "attempts": attempts,
            "retries": sum(st.retries for st in stages.values()),
            "failed_attempts": sum(st.failed_attempts for st in stages.values()),
            "retry_rate": _rate(sum(st.retries for st in stages.values()), attempts),
            "failure_rate": _rate(sum(st.failed_attempts for st in stages.values()), attempts),
        },
        "stages": {
            name: {
                "tasks": st.tasks,
                "cached": st.cached,
                "attempts": st.attempts,
                "retries": st.retries,
                "failed_attempts": st.failed_attempts,
                "retry_rate": _rate(st.retries, st.attempts),
                "failure_rate": _rate(st.failed_attempts, st.attempts),
                "p50_s": _round(quantile(st.buckets, 0.5)),
                "p95_s": _round(quantile(st.buckets, 0.95)),
            }
            for name, st in stages.items()
        },
        "cost": {
            "requests_with_ledger": len(costs),
            "total_usd": total_cost,
            "per_request_usd": round(sum(costs) / len(costs), 6) if costs else None,
            "per_day_usd": round(sum(costs) / days, 6) if costs else None,
            "invocations": int(ledger_totals["invocations"]) if costs else None,
            "gb_s": round(ledger_totals["gb_s"], 3) if costs else None,
            "s3_requests": int(ledger_totals["s3_requests"]) if costs else None,
        },
    }


def queue_stats(store: ObjectStore, pipeline: str | None, now: float | None = None) -> dict[str, Any] | None:
    """The admission queue's stats (``fave.queue``) as JSON, or None when there is no queue to ask."""
    if pipeline is None:
        return None
    try:
        from fave.queue import AdmissionQueue
    except ImportError:
        return None
    try:
        stats: Any = AdmissionQueue(store, pipeline).stats(now)
    except Exception:
        log.exception("could not read the admission queue's stats")
        return None
    if hasattr(stats, "to_json"):
        return dict(stats.to_json())
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    return dict(stats) if isinstance(stats, Mapping) else None


def report(
    store: ObjectStore,
    *,
    since_s: float,
    pipeline: str | None = None,
    now: float | None = None,
    queue: dict[str, Any] | None = None,
    stats: ReadStats | None = None,
) -> dict[str, Any]:
    """``fave metrics --json``: the history of the last ``since_s`` seconds (of ``pipeline``, if given), and the
    queue's depth when ``queue`` is given (``queue_stats``)."""
    now = time.time() if now is None else now
    since = now - since_s
    doc = aggregate(read(store, since, now, pipeline=pipeline, now=now, stats=stats), since, now)
    doc["pipeline"] = pipeline
    doc["queue"] = queue
    return doc


# ---- live numbers --------------------------------------------------------------------------------------


class LiveMetrics:
    """What a running worker knows beyond the history; thread-safe. ``fave.worker`` updates it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.queue_depth: int | None = None
        self.queue_oldest_age_s: float | None = None
        self._throttles: dict[str, int] = defaultdict(int)

    def set_in_flight(self, n: int) -> None:
        with self._lock:
            self.in_flight = n

    def set_queue_depth(self, n: int, oldest_age_s: float | None = None) -> None:
        with self._lock:
            self.queue_depth = n
            self.queue_oldest_age_s = oldest_age_s

    def throttled(self, name: str, n: int = 1) -> None:
        """``n`` invocations of function ``name`` (the ``function`` label; a stage's name will do where the
        function is not known) were refused for its concurrency limit."""
        with self._lock:
            self._throttles[name] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "in_flight": self.in_flight,
                "queue_depth": self.queue_depth,
                "queue_oldest_age_s": self.queue_oldest_age_s,
                "throttles": dict(self._throttles),
            }


# ---- Prometheus ----------------------------------------------------------------------------------------


class _HistoryCache:
    """The summaries since a fixed start, sealed days kept in memory (they never change)."""

    def __init__(self, store: ObjectStore, pipeline: str | None, start: float) -> None:
        self.store = store
        self.pipeline = pipeline
        self.start = start
        self._sealed: dict[str, list[Summary]] = {}
        self._lock = threading.Lock()

    def summaries(self, now: float) -> list[Summary]:
        with self._lock:
            out: list[Summary] = []
            for day in days_between(self.start, now):
                got = self._sealed.get(day)
                if got is None:
                    day_read = read_day(self.store, day, now=now)
                    got = [
                        s
                        for s in day_read.items
                        if s.finished_at >= self.start and (self.pipeline is None or s.pipeline == self.pipeline)
                    ]
                    if day_read.sealed:
                        self._sealed[day] = got
                out.extend(got)
            return latest_runs(out)


class _Collector:
    """A ``prometheus_client`` collector: the history's counters and histograms, and the live numbers."""

    def __init__(self, history: _HistoryCache, live: LiveMetrics | None, clock: Callable[[], float]) -> None:
        self.history = history
        self.live = live
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # collected on each scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        summaries = self.history.summaries(self.clock())
        requests = CounterMetricFamily(
            "fave_requests", "Requests that ended, by pipeline and status", labels=["pipeline", "status"]
        )
        failures = CounterMetricFamily(
            "fave_request_failures", "Requests that failed, by error type", labels=["pipeline", "error_type"]
        )
        attempts = CounterMetricFamily("fave_task_attempts", "Task attempts that ran", labels=["pipeline", "stage"])
        retries = CounterMetricFamily(
            "fave_task_retries", "Attempts beyond a task's first", labels=["pipeline", "stage"]
        )
        failed = CounterMetricFamily("fave_task_failures", "Task attempts that failed", labels=["pipeline", "stage"])
        cost = CounterMetricFamily("fave_cost_usd", "Estimated cost of ended requests (ledgers)", labels=["pipeline"])
        invocations = CounterMetricFamily(
            "fave_invocations", "Invocations of ended requests (ledgers)", labels=["pipeline"]
        )
        task_duration = HistogramMetricFamily(
            "fave_task_duration_seconds", "Duration of task attempts", labels=["pipeline", "stage"]
        )
        request_duration = HistogramMetricFamily(
            "fave_request_duration_seconds", "Wall time of requests that completed", labels=["pipeline"]
        )
        by_status: dict[tuple[str, str], int] = defaultdict(int)
        by_error: dict[tuple[str, str], int] = defaultdict(int)
        stages: dict[tuple[str, str], StageSummary] = {}
        wall: dict[str, list[float]] = defaultdict(list)
        spent: dict[str, float] = defaultdict(float)
        invoked: dict[str, float] = defaultdict(float)
        for s in summaries:
            by_status[(s.pipeline, s.status.lower())] += 1
            if s.error_type:
                by_error[(s.pipeline, s.error_type)] += 1
            for name, st in s.stages.items():
                key = (s.pipeline, name)
                stages[key] = _add(stages.get(key, StageSummary()), st)
            if s.status == "COMPLETED" and s.duration_s is not None:
                wall[s.pipeline].append(s.duration_s)
            ledger = s.ledger or {}
            if isinstance(ledger.get("cost_usd"), int | float):
                spent[s.pipeline] += float(ledger["cost_usd"])
            if isinstance(ledger.get("invocations"), int | float):
                invoked[s.pipeline] += float(ledger["invocations"])
        pipelines = {s.pipeline for s in summaries} | ({self.history.pipeline} if self.history.pipeline else set())
        for p in sorted(pipelines):
            for status in _ENDED:  # every status present from the start: rate() needs the series to exist
                requests.add_metric([p, status.lower()], by_status.get((p, status.lower()), 0))
            cost.add_metric([p], spent.get(p, 0.0))
            invocations.add_metric([p], invoked.get(p, 0.0))
            request_duration.add_metric([p], _histogram(_bucketed(wall.get(p, []))), sum(wall.get(p, [])))
        for (p, error_type), n in sorted(by_error.items()):
            failures.add_metric([p, error_type], n)
        for (p, name), st in sorted(stages.items()):
            attempts.add_metric([p, name], st.attempts)
            retries.add_metric([p, name], st.retries)
            failed.add_metric([p, name], st.failed_attempts)
            task_duration.add_metric([p, name], _histogram(st.buckets), st.duration_sum_s)
        yield from (requests, failures, attempts, retries, failed, cost, invocations, task_duration, request_duration)
        yield from self._live()

    def _live(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.live.snapshot() if self.live is not None else None
        in_flight = GaugeMetricFamily("fave_requests_in_flight", "Requests the worker drives now")
        depth = GaugeMetricFamily("fave_queue_depth", "Admission-queue entries waiting")
        oldest = GaugeMetricFamily("fave_queue_oldest_age_seconds", "How long the oldest due entry has waited")
        throttles = CounterMetricFamily(
            "fave_throttles", "Invocations refused at a concurrency limit", labels=["function"]
        )
        if snap is not None:
            in_flight.add_metric([], snap["in_flight"])
            if snap["queue_depth"] is not None:
                depth.add_metric([], snap["queue_depth"])
            if snap["queue_oldest_age_s"] is not None:
                oldest.add_metric([], snap["queue_oldest_age_s"])
            for name, n in sorted(snap["throttles"].items()):
                throttles.add_metric([name], n)
        yield from (in_flight, depth, oldest, throttles)


def _bucketed(values: list[float]) -> list[int]:
    import bisect

    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for v in values:
        counts[bisect.bisect_left(DURATION_BUCKETS, v)] += 1
    return counts


def _histogram(buckets: Iterable[int]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of a ``DURATION_BUCKETS`` histogram, ``+Inf`` last."""
    counts = list(buckets) + [0] * (len(DURATION_BUCKETS) + 1)
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(DURATION_BUCKETS, counts, strict=False):
        running += n
        out.append((repr(float(bound)), running))
    running += sum(counts[len(DURATION_BUCKETS) :])
    out.append(("+Inf", running))
    return out


class PrometheusServer:
    """A running exporter: call it to stop it; ``port`` is the port it listens on (useful with port 0)."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = int(server.server_port)

    def __call__(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_prometheus(
    port: int,
    store: ObjectStore,
    pipeline: str | None = None,
    live: LiveMetrics | None = None,
    *,
    addr: str = "0.0.0.0",
    clock: Callable[[], float] = time.time,
    lookback_s: float = LOOKBACK_S,
) -> PrometheusServer:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread until the returned object is called."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(_HistoryCache(store, pipeline, clock() - lookback_s), live, clock))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return PrometheusServer(server, thread)
