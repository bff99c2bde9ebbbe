"""Alerts from the orchestrator Lambda (issue 14, requirement 6 on AWS): what ``fave worker`` fires, from the
pipeline's ``operations.alerts``, fired by the invocation that notices the event as an asynchronous invocation of
the orchestrator itself (``{"fave_alert": ...}``), which POSTs the webhook and raises if that fails, so that
Lambda's asynchronous retries deliver it.

Real handler, the tier's S3, the demo's stage functions on the local runtime. The webhook is a real HTTP server
on a thread that answers 500 to the first POST. The orchestrator's asynchronous self-invocations of alerts go
through ``LambdaAsync``: Lambda's asynchronous invocation of a function (the event, then two retries of a failed
one, then the dead-letter queue, as the template's ``EventInvokeConfig`` sets it). On ``--tier iam`` every
store write and self-invoke is made with the orchestrator's own role."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from fave.app.alerts_doors import ALERT_EVENT, STREAK_GAP_S, advance_streaks, throttle_watch_key
from fave.invoke.base import Invoker, ThrottledInvocationError
from fave.keys import alert_sent_key
from fave.queue import AdmissionQueue
from fave_shared.store.jsonio import get_json
from support.app_lambda import DEMO, ORCHESTRATOR, OrchestratorLambda, configure_app
from support.events import load_event, tick_event
from support.tiers import Tier

#: Lambda's asynchronous invocation: the event, then ``MaximumRetryAttempts: 2`` retries (template.yaml).
LAMBDA_ATTEMPTS = 3


class Webhook:
    """A Slack-compatible webhook on a thread: records every POST body; answers 500 to the first ``fail``."""

    def __init__(self, fail: int = 1) -> None:
        self.fail = fail
        self.posts = 0
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with hook._lock:
                    hook.posts += 1
                    failing = hook.posts <= hook.fail
                    if not failing:
                        hook.received.append(json.loads(body))
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [b["fave"] for b in self.received if event is None or b["fave"]["event"] == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LambdaAsync:
    """The orchestrator function invoked asynchronously by itself: step events run as the harness runs them;
    alert events run on a thread of their own, each up to ``LAMBDA_ATTEMPTS`` times while it raises (Lambda's
    retries), then into ``dead_letters``."""

    def __init__(self, lam: OrchestratorLambda) -> None:
        self.lam = lam
        self.attempts: list[tuple[str, str]] = []  # (alert id, "ok" or the error)
        self.dead_letters: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        if ALERT_EVENT not in payload:
            return str(self.lam.invoke_async(function, payload))
        assert function == ORCHESTRATOR, function
        thread = threading.Thread(target=self._run, args=(json.loads(json.dumps(payload)),), daemon=True)
        self._threads.append(thread)
        thread.start()
        return f"alert-{len(self._threads)}"

    def _run(self, payload: dict[str, Any]) -> None:
        alert_id = payload[ALERT_EVENT]["id"]
        for _ in range(LAMBDA_ATTEMPTS):
            try:
                self.lam.invoke(payload)
            except Exception as exc:
                self.attempts.append((alert_id, repr(exc)))
                time.sleep(0.05)
                continue
            self.attempts.append((alert_id, "ok"))
            return
        self.dead_letters.append(payload)

    def settle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.lam.settle(timeout)
            running = [t for t in self._threads if t.is_alive()]
            if not running:
                return
            for thread in running:
                thread.join(max(0.01, deadline - time.monotonic()))
            assert time.monotonic() < deadline, "alert invocations still running"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        raise AssertionError("the orchestrator never invokes itself synchronously")

    def functions(self) -> frozenset[str]:
        return frozenset({ORCHESTRATOR})

    def code_digest(self, function: str) -> str | None:
        return None

    def close(self) -> None:
        return None


class Reserved:
    """The stage invoker with ``ShoutFunction`` at ReservedConcurrentExecutions 0 while ``throttling``: Lambda
    then refuses every invoke of it with 429, which ``LambdaInvoker`` raises as ``ThrottledInvocationError``."""

    def __init__(self, inner: Invoker) -> None:
        self.inner = inner
        self.throttling = False
        self.refused = 0

    def _check(self, function: str) -> None:
        if self.throttling and function == "ShoutFunction":
            self.refused += 1
            raise ThrottledInvocationError(f"{function}: TooManyRequestsException (429): Rate Exceeded.")

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        self._check(function)
        return self.inner.invoke_sync(function, payload)

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        self._check(function)
        return self.inner.invoke_async(function, payload)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


Serve = Callable[..., tuple[OrchestratorLambda, LambdaAsync, Reserved]]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(fail=1)
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture
def alerting(orchestrator_lambda: OrchestratorLambda, tier: Tier, tmp_path: Path, webhook: Webhook) -> Serve:
    """``serve(**operations)``: the orchestrator function of the demo with ``operations`` and alerts to
    ``webhook``, self-invoking through ``LambdaAsync``, its shout function behind ``Reserved``."""

    def serve(**operations: Any) -> tuple[OrchestratorLambda, LambdaAsync, Reserved]:

        lam = orchestrator_lambda
        raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
        raw["template"] = str(DEMO.parent / raw.get("template", "template.yaml"))
        raw["defaults"] = {**raw.get("defaults", {}), **operations.pop("defaults", {})}
        alerts = {"webhook": webhook.url, **operations.pop("alerts", {})}
        raw["operations"] = {**operations, "alerts": alerts}
        path = tmp_path / "demo-alerts.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        async_lambda = LambdaAsync(lam)
        reserved = Reserved(tier.orchestrator_invoker(lam.runtime))
        configure_app(lam, tier, path, invoker=reserved, self_invoker_of=async_lambda)
        return lam, async_lambda, reserved

    return serve


def tick(lam: OrchestratorLambda, async_lambda: LambdaAsync, advance_s: float = 1.0) -> Any:
    lam.clock.advance(advance_s)
    result = lam.invoke(tick_event())
    async_lambda.settle()
    return result


def marker(lam: OrchestratorLambda, alert_id: str) -> dict[str, Any]:
    value, _ = get_json(lam.store, alert_sent_key(alert_id))
    return dict(value)


def test_a_failed_request_fires_one_alert_delivered_by_lambdas_retry(alerting: Serve, webhook: Webhook) -> None:
    lam, async_lambda, _ = alerting()
    request_id = lam.start("alpha beta", extra={"bad_word": "beta"})
    assert lam.wait(request_id, tick=True)["status"] == "FAILED"
    async_lambda.settle()

    (alert,) = webhook.events()
    assert alert["event"] == "request_failed" and alert["request_id"] == request_id
    assert alert["stage"] == "shout" and alert["pipeline"] == "demo"
    # The first POST got a 500: the alert invocation raised and Lambda's retry delivered it.
    attempts = [outcome for alert_id, outcome in async_lambda.attempts if alert_id == alert["id"]]
    assert len(attempts) == 2 and "AlertDeliveryError" in attempts[0] and attempts[1] == "ok", attempts
    assert webhook.posts == 2 and not async_lambda.dead_letters
    assert marker(lam, alert["id"])["delivered_at"]

    # Once per event: later ticks see the request ended; a duplicate of the event (Lambda delivers at least
    # once) is dropped by its marker.
    tick(lam, async_lambda)
    tick(lam, async_lambda)
    duplicate = lam.invoke({ALERT_EVENT: {"event": alert["event"], "id": alert["id"], "text": "again"}})
    assert duplicate == {"alert": alert["id"], "delivered": False, "duplicate": True}
    assert len(webhook.events()) == 1 and webhook.posts == 2


def test_a_request_stopped_by_its_budget_fires_budget_exceeded(alerting: Serve, webhook: Webhook) -> None:
    lam, async_lambda, _ = alerting(budget={"max_invocations": 2})
    request_id = lam.start("one two three four")
    doc = lam.wait(request_id, tick=True)
    assert doc["status"] == "FAILED", doc
    async_lambda.settle()
    (alert,) = webhook.events()
    assert alert["event"] == "budget_exceeded" and alert["request_id"] == request_id
    assert alert["error_type"] == "budget_exceeded" and "max_invocations" in alert["message"]
    assert not webhook.events("request_failed")


def test_a_request_that_completes_fires_nothing(alerting: Serve, webhook: Webhook) -> None:
    lam, async_lambda, _ = alerting()
    request_id = lam.start("fine words")
    assert lam.wait(request_id, tick=True)["status"] == "COMPLETED"
    tick(lam, async_lambda)
    assert webhook.posts == 0 and not async_lambda.attempts


def post_queue(lam: OrchestratorLambda, texts: list[str]) -> list[str]:
    """``POST /queue`` as API Gateway sends it: one entry per text; their ids."""
    event = load_event("http-status.json")
    event["routeKey"] = event["requestContext"]["routeKey"] = "POST /queue"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/queue"
    event["requestContext"]["http"]["method"] = "POST"
    event.pop("pathParameters", None)
    body = {"entries": [{"input": {"video_uri": lam.source_uri, "extra": {"text": text}}} for text in texts]}
    event["body"] = json.dumps(body)
    event["headers"]["content-type"] = "application/json"
    event["headers"]["content-length"] = str(len(event["body"].encode()))
    response = lam.invoke(event)
    assert response["statusCode"] == 202, response
    return [entry["id"] for entry in json.loads(response["body"])["entries"]]


def test_a_stuck_queue_fires_at_the_tick_once(alerting: Serve, webhook: Webhook) -> None:
    # One request at a time, and it stays RUNNING (its shouts' completions are held, their timeout is an hour):
    # the second entry is due and cannot be admitted.
    lam, async_lambda, _ = alerting(
        max_requests_in_flight=1, alerts={"queue_stuck_after": "10m"}, defaults={"timeout": "1h"}
    )
    lam.hold()
    first, second = post_queue(lam, ["entry one", "entry two"])
    tick(lam, async_lambda, 60.0)  # admits the first; the second has waited a minute: not stuck
    queue = AdmissionQueue(lam.store, "demo", clock=lam.clock.now)
    assert queue.get(first).status == "RUNNING" and queue.get(second).status == "QUEUED"
    assert webhook.posts == 0

    tick(lam, async_lambda, 11 * 60.0)
    (alert,) = webhook.events("queue_stuck")
    assert alert["pipeline"] == "demo" and alert["depth"] == 1 and alert["oldest_age_s"] >= 600
    assert queue.get(second).status == "QUEUED"
    tick(lam, async_lambda, 60.0)
    tick(lam, async_lambda, 60.0)
    assert len(webhook.events("queue_stuck")) == 1  # the same entry still stuck: the same event
    assert marker(lam, alert["id"])["delivered_at"]
    assert webhook.posts == 2  # the first POST failed, Lambda's retry delivered it


def test_sustained_throttling_fires_once_per_stretch(alerting: Serve, webhook: Webhook) -> None:
    lam, async_lambda, reserved = alerting(alerts={"throttle_sustained": "2m"})
    reserved.throttling = True
    request_id = lam.start("slow lane")
    for _ in range(2):  # throttled for a minute and then two: short of the threshold at the first tick
        tick(lam, async_lambda, 60.0)
        assert not webhook.events("throttle_sustained")
    tick(lam, async_lambda, 60.0)
    tick(lam, async_lambda, 60.0)
    assert reserved.refused >= 4
    (alert,) = webhook.events("throttle_sustained")
    assert alert["stage"] == "shout" and alert["request_id"] == request_id and alert["throttles"] >= 3
    watch, _ = get_json(lam.store, throttle_watch_key("demo"))
    assert watch["streaks"]["shout"]["fired"] is True

    reserved.throttling = False  # reserved concurrency raised: the request runs through
    assert lam.wait(request_id, tick=True)["status"] == "COMPLETED"
    async_lambda.settle()
    assert len(webhook.events("throttle_sustained")) == 1
    assert not webhook.events("request_failed")


def test_streaks_fire_once_per_stretch_and_a_gap_starts_a_new_one() -> None:
    fires: list[str] = []
    streaks: dict[str, Any] = {}
    # Throttled at every tick for 6 minutes: one alert (at 5 min); then quiet past the gap; then again.
    times = [60.0 * n for n in range(7)] + [60.0 * n for n in range(7 + 4, 7 + 4 + 7)]
    for now in times:
        streaks, alerts = advance_streaks(streaks, {"shout": (2, "r1")}, now, "demo", 300.0)
        fires += [a.id for a in alerts]
    assert fires == ["throttle_sustained:demo:shout:0", f"throttle_sustained:demo:shout:{11 * 60}"]
    # A tick without new throttles keeps the streak within the gap, ends it past the gap.
    streaks, _ = advance_streaks(streaks, {}, times[-1] + STREAK_GAP_S, "demo", 300.0)
    assert streaks["shout"]["count"] == 14
    streaks, alerts = advance_streaks(streaks, {}, times[-1] + STREAK_GAP_S + 1, "demo", 300.0)
    assert streaks == {} and alerts == []
