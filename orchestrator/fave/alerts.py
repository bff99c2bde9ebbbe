"""Alerts: a Slack-compatible webhook and/or a command, once per event, never in the caller's way.

Events: a request failed, a request's budget was exceeded (a failure whose error type is ``budget_exceeded``:
that alert instead of "request failed"), the admission queue is stuck (its oldest due entry waited longer than
``queue_stuck_after_s``) and throttling is sustained (a stage kept being throttled for ``throttle_sustained_s``).

Once per event, across restarts and workers: before delivering, the alerter creates the marker
``alerts/sent/{event}`` with ``if_none_match``; whoever creates it delivers, everyone else drops the event.
That makes delivery at most once per event: a delivery that fails after every retry is logged, not retried
by the next worker (an alert storm after a restart is worse than a lost alert that the log still has).

The caller's thread only puts the event on a queue; one daemon thread writes the marker and delivers, with
bounded exponential back-off (``RETRIES`` attempts), so a dead webhook never blocks the orchestrator.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fave_shared.errors import ConflictError
from fave_shared.store import ObjectStore

from fave.core.model import RequestState, RequestStatus
from fave.keys import alert_sent_key

__all__ = ["BUDGET_EXCEEDED", "Alert", "Alerter", "queue_alert", "request_alert", "throttle_alert"]

log = logging.getLogger(__name__)

BUDGET_EXCEEDED = "budget_exceeded"
RETRIES = 5
"""Delivery attempts per target (webhook, command) before an alert is given up (and logged)."""
BACKOFF_S = 0.5
"""The first retry's delay; each further one doubles, up to ``BACKOFF_MAX_S``."""
BACKOFF_MAX_S = 30.0
TIMEOUT_S = 10.0
"""Per webhook POST or command run."""
THROTTLE_GAP_S = 60.0
"""Throttles further apart than this end a streak of throttling (the next one starts a new streak)."""


@dataclass(frozen=True, slots=True)
class Alert:
    event: str
    """``request_failed``, ``budget_exceeded``, ``queue_stuck`` or ``throttle_sustained``."""
    id: str
    """Names the occurrence: the same event found again (another worker, a restart) has the same id."""
    text: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    at: float = 0.0

    def body(self) -> dict[str, Any]:
        """The webhook's JSON: Slack's ``text`` and ``blocks``, and fave's own fields under ``fave``."""
        return {
            "text": self.text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": self.text}}],
            "fave": {"event": self.event, "id": self.id, "at": self.at, **self.fields},
        }

    def to_json(self) -> dict[str, Any]:
        """The alert as JSON (what the Lambda orchestrator sends itself to deliver it: ``fave.app.alerts_doors``)."""
        return {"event": self.event, "id": self.id, "text": self.text, "fields": dict(self.fields), "at": self.at}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Alert:
        """``ValueError`` naming the field for a document ``to_json`` did not write."""
        for name in ("event", "id", "text"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                raise ValueError(f"{name}: expected a non-empty string")
        fields = doc.get("fields", {})
        if not isinstance(fields, Mapping):
            raise ValueError("fields: expected an object")
        at = doc.get("at", 0.0)
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise ValueError("at: expected a number")
        return cls(doc["event"], doc["id"], doc["text"], dict(fields), float(at))


# ---- what an event is (pure: the worker's Alerter and the Lambda orchestrator both use these) -----------------


def request_alert(state: RequestState, pipeline: str | None) -> Alert | None:
    """The alert for a request that ended: ``budget_exceeded`` or ``request_failed``; None unless it FAILED."""
    if state.status is not RequestStatus.FAILED:
        return None
    failure = state.failure
    error_type = failure.error_type if failure is not None else "unknown"
    message = failure.message if failure is not None else ""
    budget = error_type == BUDGET_EXCEEDED or message.startswith(BUDGET_EXCEEDED)
    event = "budget_exceeded" if budget else "request_failed"
    where = failure.describe() if failure is not None else "failed"
    named = f" ({pipeline})" if pipeline else ""
    head = "budget exceeded" if budget else "failed"
    return Alert(
        event,
        f"{event}:{state.request_id}:{state.resumes}",
        f":rotating_light: fave request `{state.request_id}`{named} {head}: {where}"[:2900],
        {
            "pipeline": pipeline,
            "request_id": state.request_id,
            "error_type": error_type,
            "message": message[:1000],
            "stage": failure.stage if failure is not None else None,
        },
    )


def queue_alert(stats: Any, pipeline: str | None, stuck_after_s: float, now: float) -> Alert | None:
    """The alert for a queue whose oldest due entry (``fave.queue.QueueStats`` or its JSON) waited longer than
    ``stuck_after_s``; None if none did. Named by the stuck entry, so once per stuck entry."""

    def get(name: str) -> Any:
        return stats.get(name) if isinstance(stats, Mapping) else getattr(stats, name, None)

    age = get("oldest_age_s")
    if age is None or float(age) < stuck_after_s:
        return None
    oldest = get("oldest_id") or f"t{round(now - float(age))}"
    depth = get("depth")
    name = pipeline or "-"
    return Alert(
        "queue_stuck",
        f"queue_stuck:{name}:{oldest}",
        f":hourglass: fave queue of `{name}` is stuck: its oldest entry has waited "
        f"{float(age) / 60:.0f} min ({depth} waiting)",
        {"pipeline": pipeline, "oldest_age_s": float(age), "depth": depth, "oldest": oldest},
    )


def throttle_alert(pipeline: str | None, request_id: str, stage: str, *, first: float, now: float, count: int) -> Alert:
    """The alert for a streak of throttles of ``stage`` that began at ``first``: once per streak."""
    name = pipeline or "-"
    return Alert(
        "throttle_sustained",
        f"throttle_sustained:{name}:{stage}:{round(first)}",
        f":snail: fave stage `{stage}` of `{name}` has been throttled for "
        f"{(now - first) / 60:.0f} min ({count} throttled invocations)",
        {"pipeline": pipeline, "request_id": request_id, "stage": stage, "throttles": count, "since": first},
    )


@dataclass
class _Streak:
    first: float
    last: float
    count: int


class Alerter:
    """Fires alerts for what a worker sees. Every public method returns at once and never raises."""

    def __init__(
        self,
        webhook: str | None,
        command: str | None,
        store: ObjectStore,
        *,
        pipeline: str | None = None,
        queue_stuck_after_s: float = 3600.0,
        throttle_sustained_s: float = 300.0,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.webhook = webhook
        self.command = command
        self.store = store
        self.pipeline = pipeline
        self.queue_stuck_after_s = queue_stuck_after_s
        self.throttle_sustained_s = throttle_sustained_s
        self.retries = max(1, retries)
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.delivered: list[Alert] = []
        """Alerts delivered to every target (for tests and the worker's log)."""
        self._streaks: dict[str, _Streak] = {}
        self._queue: queue.Queue[Alert | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._deliver_all, name="fave-alerts", daemon=True)
        self._thread.start()

    @classmethod
    def from_operations(cls, alerts: Any, store: ObjectStore, *, pipeline: str | None = None) -> Alerter | None:
        """An alerter for ``pipeline.operations.alerts`` (``fave.core.operations.Alerts``), or None when it
        names neither a webhook nor a command."""
        if alerts is None or not (getattr(alerts, "webhook", None) or getattr(alerts, "command", None)):
            return None
        return cls(
            alerts.webhook,
            alerts.command,
            store,
            pipeline=pipeline,
            queue_stuck_after_s=float(getattr(alerts, "queue_stuck_after_s", 3600.0)),
            throttle_sustained_s=float(getattr(alerts, "throttle_sustained_s", 300.0)),
        )

    # ---- what the worker reports ----------------------------------------------------------------------

    def request_ended(self, state: RequestState) -> None:
        """A request reached a terminal status: alert if it failed (its budget, or anything else)."""
        try:
            alert = request_alert(state, self.pipeline)
            if alert is not None:
                self._fire(alert)
        except Exception:
            log.exception("alerts: could not look at request %s", getattr(state, "request_id", "?"))

    def queue_checked(self, stats: Any) -> None:
        """The admission queue's stats (``fave.queue.QueueStats``): alert if its oldest due entry has waited
        longer than ``queue_stuck_after_s``. Once per stuck entry (named by the time it became due)."""
        try:
            alert = queue_alert(stats, self.pipeline, self.queue_stuck_after_s, self.clock())
            if alert is not None:
                self._fire(alert)
        except Exception:
            log.exception("alerts: could not look at the queue's stats")

    def throttled(self, request_id: str, stage: str, n: int = 1) -> None:
        """``n`` invocations of ``stage`` were throttled just now (``n`` = 0: none are any more). Alert when a
        streak of throttles (none more than ``THROTTLE_GAP_S`` apart) has lasted ``throttle_sustained_s``:
        once per streak."""
        try:
            now = self.clock()
            streak = self._streaks.get(stage)
            if n <= 0:
                self._streaks.pop(stage, None)
                return
            if streak is None or now - streak.last > THROTTLE_GAP_S:
                streak = self._streaks[stage] = _Streak(now, now, 0)
            streak.last = now
            streak.count += n
            if now - streak.first < self.throttle_sustained_s:
                return
            self._fire(
                throttle_alert(self.pipeline, request_id, stage, first=streak.first, now=now, count=streak.count)
            )
        except Exception:
            log.exception("alerts: could not count throttles of %s", stage)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (for up to ``timeout`` seconds), then stop the delivery thread."""
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- delivery (the background thread) -------------------------------------------------------------

    def _fire(self, alert: Alert) -> None:
        if self._closing.is_set():
            log.warning("alerts: closed, dropped %s", alert.id)
            return
        self._queue.put(Alert(alert.event, alert.id, alert.text, alert.fields, alert.at or self.clock()))

    def _deliver_all(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            try:
                self._deliver(alert)
            except Exception:
                log.exception("alerts: delivering %s failed", alert.id)

    def _claim(self, alert: Alert) -> bool:
        """Create the event's marker: True if this alerter is the first to (so it delivers)."""
        doc = {"event": alert.event, "id": alert.id, "at": alert.at, "pid": os.getpid()}
        try:
            self.store.put(alert_sent_key(alert.id), json.dumps(doc).encode(), if_none_match=True)
        except ConflictError:
            return False
        return True

    def _deliver(self, alert: Alert) -> None:
        if not self._claim(alert):
            log.info("alerts: %s was already sent", alert.id)
            return
        ok = True
        if self.webhook:
            ok &= self._retrying(alert, "webhook", self._post)
        if self.command:
            ok &= self._retrying(alert, "command", self._run)
        if ok:
            self.delivered.append(alert)

    def _retrying(self, alert: Alert, target: str, send: Callable[[Alert], None]) -> bool:
        delay = self.backoff_s
        for attempt in range(1, self.retries + 1):
            try:
                send(alert)
                return True
            except Exception as exc:
                if attempt == self.retries:
                    log.error("alerts: %s to the %s failed %d times, giving up: %s", alert.id, target, attempt, exc)
                    return False
                log.warning("alerts: %s to the %s failed (attempt %d): %s", alert.id, target, attempt, exc)
                if self._closing.is_set():  # closing: retry quickly (close() has a deadline of its own)
                    time.sleep(min(delay, 0.2))
                else:
                    self._closing.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        return False

    def _post(self, alert: Alert) -> None:
        assert self.webhook is not None
        request = urllib.request.Request(
            self.webhook,
            data=json.dumps(alert.body()).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "fave-alerts"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # the operator's configured URL
            if not 200 <= response.status < 300:
                raise urllib.error.HTTPError(self.webhook, response.status, "not 2xx", response.headers, None)

    def _run(self, alert: Alert) -> None:
        assert self.command is not None
        env = {
            **os.environ,
            "FAVE_ALERT_EVENT": alert.event,
            "FAVE_ALERT_ID": alert.id,
            "FAVE_ALERT_TEXT": alert.text,
            "FAVE_ALERT_PIPELINE": str(alert.fields.get("pipeline") or ""),
            "FAVE_ALERT_REQUEST_ID": str(alert.fields.get("request_id") or ""),
        }
        done = subprocess.run(  # the operator's own command (pipeline.yaml), run as written
            self.command,
            shell=True,
            input=json.dumps(alert.body()).encode(),
            env=env,
            timeout=self.timeout_s,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-300:]
            raise RuntimeError(f"exit {done.returncode}: {tail}")
