"""Alerts (issue 14 requirement 6): a Slack-compatible webhook and a command, fired once per event (also across a
restart: the marker in the store), delivered in the background with bounded retries. Against a real local HTTP
receiver (``http.server`` in a thread) that fails its first posts, and a real shell command that writes files."""

from __future__ import annotations

import json
import logging
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fave.alerts import Alerter
from fave.core.model import Failure, RequestState, RequestStatus
from fave.core.operations import Alerts
from fave.keys import ALERTS_SENT_PREFIX
from fave_shared.store import LocalStore

REQUEST = "01KJKB3Q00CV45NK0000000001"


class Receiver:
    """A webhook endpoint: answers 500 to its first ``fail_first`` posts, then 200; keeps every body."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.posts: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.release.wait(30)
                receiver.posts.append(body)
                ok = len(receiver.posts) > receiver.fail_first
                self.send_response(200 if ok else 500)
                self.end_headers()
                self.wfile.write(b"ok" if ok else b"down")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def failed(error_type: str = "Boom", message: str = "it broke", resumes: int = 0) -> RequestState:
    return RequestState(
        request_id=REQUEST,
        input={},
        pipeline_digest="d",
        created_at=1.0,
        status=RequestStatus.FAILED,
        finished_at=2.0,
        failure=Failure("shout", 3, error_type, message, attempts=2),
        resumes=resumes,
    )


def alerter(store: LocalStore, webhook: str | None, command: str | None = None, **kw: Any) -> Alerter:
    return Alerter(webhook, command, store, pipeline="demo", backoff_s=0.02, **kw)


def test_a_failed_request_is_posted_once_after_the_receiver_recovers(receiver: Receiver, store: LocalStore) -> None:
    a = alerter(store, receiver.url)
    a.request_ended(failed())
    a.request_ended(failed())  # the same event again: not sent twice
    a.close()
    assert len(receiver.posts) == 3  # two refused, the third taken
    body = receiver.posts[-1]
    assert all(p == body for p in receiver.posts)  # the same alert each time
    assert "text" in body and REQUEST in body["text"] and "it broke" in body["text"]
    assert body["blocks"][0]["type"] == "section"
    assert body["fave"]["event"] == "request_failed"
    assert body["fave"]["request_id"] == REQUEST and body["fave"]["pipeline"] == "demo"
    assert body["fave"]["error_type"] == "Boom" and body["fave"]["stage"] == "shout"
    assert [x.event for x in a.delivered] == ["request_failed"]

    # A restarted worker (a new Alerter over the same store) sees the same failure: the marker stops it.
    again = alerter(store, receiver.url)
    again.request_ended(failed())
    again.close()
    assert len(receiver.posts) == 3
    assert len(list(store.list(ALERTS_SENT_PREFIX))) == 1

    # A resume that fails again is another event.
    again = alerter(store, receiver.url)
    again.request_ended(failed(resumes=1))
    again.close()
    assert len(receiver.posts) == 4


def test_a_budget_stop_is_its_own_alert_and_a_success_none(receiver: Receiver, store: LocalStore) -> None:
    receiver.fail_first = 0
    a = alerter(store, receiver.url)
    a.request_ended(failed("budget_exceeded", "max_cost_usd"))
    done = RequestState(REQUEST, {}, "d", 1.0, status=RequestStatus.COMPLETED, finished_at=2.0, resumes=5)
    a.request_ended(done)
    a.close()
    assert [p["fave"]["event"] for p in receiver.posts] == ["budget_exceeded"]
    assert "budget exceeded" in receiver.posts[0]["text"]


def test_the_command_gets_the_json_on_stdin_and_the_event_in_its_environment(tmp_path: Path, store: LocalStore) -> None:
    out = tmp_path / "alert.json"
    env = tmp_path / "alert.env"
    command = f"cat > {shlex.quote(str(out))}; env | grep '^FAVE_ALERT_' | sort > {shlex.quote(str(env))}"
    a = alerter(store, None, command)
    a.request_ended(failed())
    a.close()
    body = json.loads(out.read_text())
    assert body["fave"]["event"] == "request_failed" and body["fave"]["request_id"] == REQUEST
    variables = dict(line.split("=", 1) for line in env.read_text().splitlines())
    assert variables["FAVE_ALERT_EVENT"] == "request_failed"
    assert variables["FAVE_ALERT_REQUEST_ID"] == REQUEST
    assert variables["FAVE_ALERT_PIPELINE"] == "demo"
    assert variables["FAVE_ALERT_ID"] == body["fave"]["id"]


def test_a_failing_command_is_retried(tmp_path: Path, store: LocalStore) -> None:
    tries = tmp_path / "tries"
    # Fails until it has run three times.
    command = f"echo x >> {shlex.quote(str(tries))}; test $(wc -l < {shlex.quote(str(tries))}) -ge 3"
    a = alerter(store, None, command)
    a.request_ended(failed())
    a.close()
    assert len(tries.read_text().splitlines()) == 3
    assert [x.event for x in a.delivered] == ["request_failed"]


def test_delivery_gives_up_after_its_retries_and_says_so(
    receiver: Receiver, store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_first = 1000
    a = alerter(store, receiver.url, retries=3)
    with caplog.at_level(logging.WARNING, logger="fave.alerts"):
        a.request_ended(failed())
        a.close()
    assert len(receiver.posts) == 3
    assert a.delivered == []
    assert any("giving up" in r.getMessage() for r in caplog.records)


def test_a_hanging_receiver_never_blocks_the_caller(receiver: Receiver, store: LocalStore) -> None:
    receiver.fail_first = 0
    receiver.release.clear()  # the receiver holds every post until released
    a = alerter(store, receiver.url)
    caller = threading.Thread(target=lambda: [a.request_ended(failed(resumes=n)) for n in range(5)])
    caller.start()
    caller.join(10)
    assert not caller.is_alive()  # returned while the first post is still held by the receiver
    assert receiver.posts == []
    receiver.release.set()
    a.close()
    assert len(receiver.posts) == 5


def test_a_stuck_queue_alerts_once_per_stuck_entry(receiver: Receiver, store: LocalStore) -> None:
    from fave.queue_model import QueueStats

    receiver.fail_first = 0
    now = [10_000.0]

    def stats(oldest_age_s: float | None) -> QueueStats:
        return QueueStats(
            depth=3,
            depth_by_priority={1: 0, 2: 0, 3: 3, 4: 0, 5: 0},
            due=3,
            cooling_down=0,
            paused=0,
            claimed=0,
            running=0,
            failed=0,
            oldest_age_s=oldest_age_s,
            completed_24h=0,
            drain_rate_per_h=None,
            est_drain_s=None,
        )

    a = alerter(store, receiver.url, queue_stuck_after_s=600, clock=lambda: now[0])
    a.queue_checked(stats(None))
    a.queue_checked(stats(599.0))
    for _ in range(3):  # the same entry, checked again and again as it waits longer
        now[0] += 30
        a.queue_checked(stats(600.0 + now[0] - 10_030.0))
    now[0] += 5000
    a.queue_checked(stats(700.0))  # another entry (due later), stuck too
    a.close()
    assert [p["fave"]["event"] for p in receiver.posts] == ["queue_stuck", "queue_stuck"]
    assert receiver.posts[0]["fave"]["depth"] == 3


def test_throttling_alerts_once_it_has_lasted_the_threshold(receiver: Receiver, store: LocalStore) -> None:
    receiver.fail_first = 0
    now = [0.0]
    a = alerter(store, receiver.url, throttle_sustained_s=300, clock=lambda: now[0])
    for t in range(0, 290, 20):  # throttled for 280 s: not yet
        now[0] = float(t)
        a.throttled(REQUEST, "shout", 2)
    now[0] = 400.0  # a gap of 120 s: the streak ended; a new one starts
    a.throttled(REQUEST, "shout", 1)
    for t in range(420, 760, 20):  # 340 s of throttling since 400
        now[0] = float(t)
        a.throttled(REQUEST, "shout", 1)
    a.throttled(REQUEST, "measure", 0)  # another stage, not throttled
    a.close()
    assert [p["fave"]["event"] for p in receiver.posts] == ["throttle_sustained"]
    assert receiver.posts[0]["fave"]["stage"] == "shout" and receiver.posts[0]["fave"]["since"] == 400.0


def test_from_operations_takes_pipeline_yaml_alerts(receiver: Receiver, store: LocalStore) -> None:
    assert Alerter.from_operations(Alerts(), store) is None
    assert Alerter.from_operations(None, store) is None
    a = Alerter.from_operations(Alerts(webhook=receiver.url, queue_stuck_after_s=60.0), store, pipeline="demo")
    assert a is not None
    assert a.queue_stuck_after_s == 60.0 and a.webhook == receiver.url
    a.close()
