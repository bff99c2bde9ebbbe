"""What a worker tells alerts, live metrics and the run history (``fave.alerts``, ``fave.metrics``,
``fave.history``), through ``fave.worker.WorkerHooks``.

Each part is optional: a module that is not there (or whose optional dependency, prometheus-client, is not
installed) is left out, so a worker runs with whatever this installation has. None of them may stop the
worker: ``Worker`` logs what they raise.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from fave_shared.store import ObjectStore

from fave.core.dag import Pipeline
from fave.core.model import RequestState
from fave.worker import WorkerHooks

__all__ = ["OperationsHooks", "operations_hooks"]

log = logging.getLogger("fave.worker")


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class OperationsHooks(WorkerHooks):
    """Alerts (``alerter``), live metrics (``live``) and the run history (``history``), each None when absent."""

    def __init__(self, store: ObjectStore, pipeline: str, *, alerter: Any = None, live: Any = None) -> None:
        self.store = store
        self.pipeline = pipeline
        self.alerter = alerter
        self.live = live
        self.history = _module("fave.history")

    def request_ended(self, state: RequestState) -> None:
        if self.history is not None:  # the index fave metrics reads (idempotent: one object per request's end)
            self.history.record(self.store, state, self.pipeline)
        if self.alerter is not None:
            self.alerter.request_ended(state)

    def queue_checked(self, stats: Any) -> None:
        if self.live is not None:
            self.live.set_queue_depth(int(getattr(stats, "depth", 0)), getattr(stats, "oldest_age_s", None))
        if self.alerter is not None:
            self.alerter.queue_checked(stats)

    def in_flight(self, n: int) -> None:
        if self.live is not None:
            self.live.set_in_flight(n)

    def throttled(self, request_id: str, stage: str, n: int) -> None:
        if self.live is not None:
            self.live.throttled(stage, n)
        if self.alerter is not None:
            self.alerter.throttled(request_id, stage, n)

    def close(self) -> None:
        if self.alerter is not None:
            self.alerter.close()


def operations_hooks(store: ObjectStore, pipeline: Pipeline, *, live_metrics: bool = False) -> OperationsHooks:
    """The hooks for ``pipeline``'s ``operations.alerts`` (an ``Alerter`` when a webhook or command is set) and,
    with ``live_metrics``, a ``fave.metrics.LiveMetrics`` (``hooks.live``) for ``serve_prometheus``."""
    alerter = None
    alerts = _module("fave.alerts")
    operations = getattr(pipeline, "operations", None)
    if alerts is not None and operations is not None:
        alerter = alerts.Alerter.from_operations(operations.alerts, store, pipeline=pipeline.name)
    live = None
    if live_metrics:
        metrics = _module("fave.metrics")
        live = metrics.LiveMetrics() if metrics is not None else None
    return OperationsHooks(store, pipeline.name, alerter=alerter, live=live)
