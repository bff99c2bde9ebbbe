"""Logs and metrics of the orchestrator function (Powertools Logger, Metrics as EMF).

* Logger: structured JSON; the correlation id is the fave request id being worked on.
* Metrics (namespace ``POWERTOOLS_METRICS_NAMESPACE``, default ``fave``): ``TasksDispatched``,
  ``TasksSucceeded``, ``TasksFailed`` (for good, after retries), ``TasksRetried``, ``TasksTimedOut``,
  ``RequestsStarted``, ``RequestsCompleted``, ``RequestsFailed``, ``RequestsCancelled``, ``UploadsRejected``,
  and ``StageDuration`` (seconds, dimension ``stage``) when a stage succeeds.
* Traces: Lambda's active tracing (template.yaml ``Tracing: Active``) records every invocation in X-Ray. The
  X-Ray SDK (Powertools' Tracer) is not used: it is in maintenance mode and its import alone took 0.2 s of
  every cold start.

One ``Meter`` per invocation collects the counts; ``publish`` hands them to Powertools under a lock and
flushes one EMF document (plus one per stage duration), so invocations that share a process (tests
deliver destinations from several threads) never mix or race on Powertools' shared metric set.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import Counter
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from fave.core.model import Notify, NotifyKind, RequestState
from fave.invoke.base import Invoker, InvokeResult

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "fave"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "fave"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

_publish_lock = threading.Lock()

# Notify kinds that are counted as they are, one metric each.
_COUNTED = {
    NotifyKind.RETRY: "TasksRetried",
    NotifyKind.TASK_FAILED: "TasksFailed",
    NotifyKind.TIMEOUT: "TasksTimedOut",
    NotifyKind.REQUEST_COMPLETED: "RequestsCompleted",
    NotifyKind.REQUEST_FAILED: "RequestsFailed",
    NotifyKind.REQUEST_CANCELLED: "RequestsCancelled",
}


class Meter:
    """Counts and durations of one invocation of the orchestrator function."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.stage_durations: list[tuple[str, float]] = []

    def count(self, name: str, value: int = 1) -> None:
        if value:
            self.counts[name] += value

    def notify(self, request_id: str, note: Notify, state: RequestState) -> None:
        """``Orchestrator.on_notify``: what the engine reported after a commit."""
        name = _COUNTED.get(note.kind)
        if name is not None:
            self.count(name)
        if note.kind is NotifyKind.STAGE_SUCCEEDED and note.stage is not None:
            stage = state.stages.get(note.stage)
            if stage is not None and stage.started_at is not None and stage.finished_at is not None:
                self.stage_durations.append((note.stage, stage.finished_at - stage.started_at))
        if note.kind.is_trouble:
            logger.info(
                note.kind,
                extra={"request_id": request_id, "stage": note.stage, "item": note.item, "detail": note.detail},
            )

    def publish(self) -> None:
        """Write everything counted as CloudWatch EMF on stdout (nothing if nothing was counted)."""
        if not self.counts and not self.stage_durations:
            return
        with _publish_lock:
            for name, value in sorted(self.counts.items()):
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
            if self.counts:
                metrics.flush_metrics()
            for stage, seconds in self.stage_durations:
                with single_metric(
                    name="StageDuration", unit=MetricUnit.Seconds, value=round(seconds, 3), namespace=NAMESPACE
                ) as metric:
                    metric.add_dimension(name="service", value=SERVICE)
                    metric.add_dimension(name="stage", value=stage)


class MeteredInvoker:
    """An ``Invoker`` that counts each dispatch (``TasksDispatched``) before passing it on."""

    def __init__(self, inner: Invoker, meter: Meter) -> None:
        self.inner = inner
        self.meter = meter

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        self.meter.count("TasksDispatched")
        return self.inner.invoke_sync(function, payload)

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        self.meter.count("TasksDispatched")
        return self.inner.invoke_async(function, payload)

    def functions(self) -> frozenset[str]:
        return self.inner.functions()

    def code_digest(self, function: str) -> str | None:
        return self.inner.code_digest(function)

    def close(self) -> None:
        """Nothing: the inner invoker belongs to the execution environment, not to one invocation."""


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("fave_meter", default=None)


def current_meter() -> Meter:
    """The meter of the invocation running on this thread (a throwaway one outside an invocation)."""
    meter = _meter.get()
    return meter if meter is not None else Meter()


def start_meter() -> tuple[Meter, contextvars.Token[Meter | None]]:
    meter = Meter()
    return meter, _meter.set(meter)


def stop_meter(token: contextvars.Token[Meter | None]) -> None:
    _meter.reset(token)
