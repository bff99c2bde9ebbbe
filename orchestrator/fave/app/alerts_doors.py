"""Alerts on AWS (issue 14, requirement 6): the orchestrator Lambda fires what ``fave worker`` fires
(``fave.alerts``), from the bundled pipeline.yaml's ``operations.alerts``, without ever waiting on a webhook.

Firing and delivering are two invocations:

* firing (``request_ended`` when a step ends a request, ``on_tick`` on the schedule tick): the orchestrator
  claims the event's marker ``alerts/sent/{id}`` (``if_none_match``: the marker ``fave worker`` uses too, so
  an event is fired once whichever of them sees it first, and every later tick finds it claimed) and invokes
  ITSELF asynchronously with ``{"fave_alert": alert}``: one Lambda API call, never a webhook round trip.
* delivering (``deliver``, the handler's ``alert`` kind): POSTs the alert to the webhook with a short timeout
  and RAISES if that fails, so Lambda's own asynchronous retries (two, ``EventInvokeConfig``) and then the
  dead-letter queue (``OrchestratorDeadLetterQueue``) take over. A delivered alert's marker records
  ``delivered_at``, and a retry or duplicate of an event already delivered is dropped.

So the marker dedupes *firing* (at most one delivery event per alert) while *delivery* is at least once: on
Lambda a failed POST must be retried by Lambda, which a marker taken as "sent" before the POST (the worker's
at-most-once, ``fave.alerts``) would defeat. A duplicate reaches the webhook only if the POST succeeded and
the marker's update after it failed. The command (``alerts.command``) has nowhere to run on Lambda: it is
logged and skipped.

Throttling: a request's state counts each stage's throttled invocations (``StageState.throttled``). The tick
compares those counts with the previous tick's (``index/alerts/throttles/{pipeline}.json``, written only
while something throttles): a stage throttled again within ``STREAK_GAP_S`` of the last time continues its
streak, and a streak older than ``throttle_sustained`` fires once (its id names the streak's start).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from fave_shared.errors import ConflictError, FaveError, NotFoundError, RetryableError, ValidationError
from fave_shared.store import ObjectStore
from fave_shared.store.jsonio import get_json

from fave.alerts import Alert, queue_alert, request_alert, throttle_alert
from fave.app.context import SELF_FUNCTION, AppContext
from fave.app.observability import current_meter, logger
from fave.core.model import RequestState
from fave.core.operations import Alerts
from fave.keys import alert_sent_key
from fave.queue import AdmissionQueue

__all__ = [
    "ALERT_EVENT",
    "STREAK_GAP_S",
    "AlertDeliveryError",
    "advance_streaks",
    "alert_event",
    "deliver",
    "fire",
    "on_tick",
    "request_ended",
    "throttle_watch_key",
]

#: The key of the event the orchestrator sends itself to deliver an alert.
ALERT_EVENT = "fave_alert"
#: Per webhook POST: short, the delivering invocation does nothing else, and Lambda retries a failure.
DELIVERY_TIMEOUT_S = 5.0
#: Throttles seen further apart than this end a streak. The orchestrator sees throttles at the schedule's
#: ticks only (rate(1 minute) by default), so this spans three of them (the worker's gap is 60 s).
STREAK_GAP_S = 180.0


class AlertDeliveryError(RetryableError):
    """The webhook did not take the alert: raised out of the handler so that Lambda retries the event."""


def configured(context: AppContext) -> Alerts | None:
    """The pipeline's ``operations.alerts`` if they name a webhook or a command, else None."""
    alerts = context.pipeline.operations.alerts
    return alerts if alerts.enabled else None


def alert_event(alert: Alert) -> dict[str, Any]:
    """The asynchronous self-invocation that delivers ``alert``."""
    return {ALERT_EVENT: alert.to_json()}


# ---- firing (the invocation that noticed the event) ----------------------------------------------------------


def fire(context: AppContext, alert: Alert) -> bool:
    """Claim ``alert``'s marker and hand the alert to an asynchronous invocation of this function; False if
    the event was fired already (by any orchestrator or worker). Off Lambda (no self-invoker) it is delivered
    here, once, its failure logged. Never raises for a store, invoke or webhook failure: it logs it."""
    store = context.store
    doc = {"event": alert.event, "id": alert.id, "at": alert.at, "by": "lambda"}
    try:
        store.put(alert_sent_key(alert.id), json.dumps(doc).encode(), if_none_match=True)
    except ConflictError:
        return False
    except FaveError as exc:
        logger.error("alert not fired: its marker could not be written", extra={"alert": alert.id, "error": str(exc)})
        return False
    invoker = context.self_invoker
    try:
        if invoker is None:
            deliver(context, alert.to_json())
        else:
            invoker.invoke_async(SELF_FUNCTION, alert_event(alert))
        current_meter().count("AlertsFired")
    except Exception as exc:  # the claim stands: a lost alert is logged, never fired twice
        logger.error("alert lost: it could not be handed over", extra={"alert": alert.id, "error": str(exc)})
    return True


def request_ended(context: AppContext, state: RequestState) -> None:
    """A step ended ``state``'s request: fire ``request_failed`` / ``budget_exceeded`` if it failed."""
    try:
        if configured(context) is None:
            return
        alert = request_alert(state, context.pipeline.name)
        if alert is not None:
            fire(context, _stamped(context, alert))
    except Exception:
        logger.exception("alerts: could not look at an ended request", extra={"request_id": state.request_id})


def on_tick(context: AppContext, states: Mapping[str, RequestState | None]) -> None:
    """The schedule tick: fire ``queue_stuck`` if the admission queue's oldest due entry waited past
    ``queue_stuck_after``, and ``throttle_sustained`` for throttling streaks longer than ``throttle_sustained``.
    ``states``: the active requests after the tick (None: busy, another invocation holds it)."""
    try:
        alerts = configured(context)
    except Exception:  # the tick itself loaded the pipeline: this cannot fail but must never fail the tick
        logger.exception("alerts: no configuration")
        return
    if alerts is None:
        return
    name = context.pipeline.name
    now = context.clock.now()
    try:
        stats = AdmissionQueue(context.store, name, clock=context.clock.now).stats(now)
        stuck = queue_alert(stats, name, alerts.queue_stuck_after_s, now)
        if stuck is not None:
            fire(context, _stamped(context, stuck))
    except Exception:
        logger.exception("alerts: could not check the queue")
    try:
        for alert in _watch_throttles(context.store, name, states, now, alerts.throttle_sustained_s):
            fire(context, _stamped(context, alert))
    except Exception:
        logger.exception("alerts: could not check throttling")


def _stamped(context: AppContext, alert: Alert) -> Alert:
    return Alert(alert.event, alert.id, alert.text, alert.fields, alert.at or context.clock.now())


def throttle_watch_key(pipeline: str) -> str:
    """The tick's memory of throttling: per request the counts it saw, per stage the streak."""
    return f"index/alerts/throttles/{pipeline}.json"


def _watch_throttles(
    store: ObjectStore, pipeline: str, states: Mapping[str, RequestState | None], now: float, sustained_s: float
) -> list[Alert]:
    counts: dict[str, dict[str, int]] = {}
    for request_id, state in states.items():
        if state is not None:
            seen = {name: st.throttled for name, st in state.stages.items() if st.throttled > 0}
            if seen:
                counts[request_id] = seen
    if not counts:
        return []  # no active request was ever throttled: no I/O (a stale streak ends by its gap next time)
    key = throttle_watch_key(pipeline)
    try:
        previous, _ = get_json(store, key)
    except (NotFoundError, ValidationError):
        previous = {}
    if not isinstance(previous, dict):
        previous = {}
    before: Mapping[str, Mapping[str, int]] = previous.get("counts", {})
    for request_id, state in states.items():
        if state is None and request_id in before:
            counts[request_id] = dict(before[request_id])  # busy now: keep what was seen of it
    fresh: dict[str, tuple[int, str]] = {}  # stage -> (new throttles since the last tick, a request with them)
    for request_id, seen in counts.items():
        for stage, n in seen.items():
            new = n - int(before.get(request_id, {}).get(stage, 0))
            if new > 0:
                total, top = fresh.get(stage, (0, request_id))
                fresh[stage] = (total + new, top)
    streaks, alerts = advance_streaks(previous.get("streaks", {}), fresh, now, pipeline, sustained_s)
    if counts != before or streaks != previous.get("streaks"):  # a PUT per tick only while throttling goes on
        doc = {"at": now, "counts": counts, "streaks": streaks}
        store.put(key, json.dumps(doc).encode(), content_type="application/json")
    return alerts


def advance_streaks(
    streaks: Mapping[str, Mapping[str, Any]],
    fresh: Mapping[str, tuple[int, str]],
    now: float,
    pipeline: str,
    sustained_s: float,
) -> tuple[dict[str, dict[str, Any]], list[Alert]]:
    """Streaks after this tick (a stage with new throttles continues or starts one; one without, past the gap,
    ends it) and the alerts of streaks that have just lasted ``sustained_s``."""
    out: dict[str, dict[str, Any]] = {}
    alerts: list[Alert] = []
    for stage in set(streaks) | set(fresh):
        streak = dict(streaks.get(stage, {}))
        new, request_id = fresh.get(stage, (0, str(streak.get("request_id", ""))))
        last = float(streak.get("last", 0.0))
        if new <= 0:
            if streak and now - last <= STREAK_GAP_S:
                out[stage] = streak
            continue
        if not streak or now - last > STREAK_GAP_S:
            streak = {"first": now, "count": 0, "fired": False}
        streak.update(last=now, count=int(streak["count"]) + new, request_id=request_id)
        if not streak["fired"] and now - float(streak["first"]) >= sustained_s:
            streak["fired"] = True
            first = float(streak["first"])
            alerts.append(throttle_alert(pipeline, request_id, stage, first=first, now=now, count=streak["count"]))
        out[stage] = streak
    return out, alerts


# ---- delivering (the invocation with the alert event) --------------------------------------------------------


def deliver(context: AppContext, doc: Any) -> dict[str, Any]:
    """Deliver one alert event: POST it to the webhook (``AlertDeliveryError`` if that fails, for Lambda to
    retry), then mark it delivered. ``ValidationError`` for an event that is not an alert."""
    if not isinstance(doc, Mapping):
        raise ValidationError(f"{ALERT_EVENT}: expected an object")
    try:
        alert = Alert.from_json(doc)
    except ValueError as exc:
        raise ValidationError(f"{ALERT_EVENT}.{exc}") from None
    logger.set_correlation_id(str(alert.fields.get("request_id") or alert.id))
    store = context.store
    key = alert_sent_key(alert.id)
    try:
        marker, _ = get_json(store, key)
    except (NotFoundError, ValidationError):
        marker = {}
    if isinstance(marker, Mapping) and marker.get("delivered_at"):
        logger.info("alert already delivered: dropped", extra={"alert": alert.id})
        return {"alert": alert.id, "delivered": False, "duplicate": True}
    alerts = context.pipeline.operations.alerts  # the deployed pipeline's webhook, never one the event names
    if alerts.command:
        logger.warning("alerts.command does not run on Lambda: skipped", extra={"alert": alert.id})
    if not alerts.webhook:
        return {"alert": alert.id, "delivered": False}
    _post(alerts.webhook, alert)
    done = {"event": alert.event, "id": alert.id, "at": alert.at, "by": "lambda", "delivered_at": context.clock.now()}
    try:
        store.put(key, json.dumps(done).encode(), content_type="application/json")
    except FaveError as exc:  # delivered all the same: a retry of this event would post it again
        logger.warning("alert delivered, its marker not updated", extra={"alert": alert.id, "error": str(exc)})
    current_meter().count("AlertsDelivered")
    logger.info("alert delivered", extra={"alert": alert.id, "event": alert.event})
    return {"alert": alert.id, "delivered": True}


def _post(webhook: str, alert: Alert) -> None:
    request = urllib.request.Request(
        webhook,
        data=json.dumps(alert.body()).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "fave-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_S) as response:  # the pipeline's own URL
            status = response.status
    except urllib.error.HTTPError as exc:
        raise AlertDeliveryError(f"alert {alert.id}: the webhook answered {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise AlertDeliveryError(f"alert {alert.id}: the webhook could not be reached: {exc}") from None
    if not 200 <= status < 300:
        raise AlertDeliveryError(f"alert {alert.id}: the webhook answered {status}")
