"""Thread isolation under load: one timeout watchdog per busy slot (not one timer entry per invocation), and
every invocation still timed out at its own deadline, however many ran on the slot before it and however
long the slot was idle.

Real handlers (tests/fixtures/runtime/functions/threaded: EchoThread, Timeout 1 s) in a real LocalRuntime.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fave.invoke import InvokeResult
from fave.invoke.base import EncodedPayload
from fave.local.runtime import LocalRuntime
from fave.local.template import Template

WAIT_S = 15
TIMEOUT_S = 1.0  # EchoThread's Timeout


@pytest.fixture
def runtime(runtime_template: Template, envelopes: queue.Queue[dict[str, Any]]) -> Iterator[LocalRuntime]:
    with LocalRuntime(runtime_template, destination_handlers={"FanIn": envelopes.put}, max_environments=1) as rt:
        yield rt


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def error_type(result: InvokeResult) -> str:
    assert result.function_error == "Unhandled", result
    return str(result.payload["errorType"])


def test_a_busy_slot_sets_one_watchdog_per_timeout_not_one_timer_per_invocation(
    runtime: LocalRuntime, envelopes: queue.Queue[dict[str, Any]]
) -> None:
    count = 2_000
    before = runtime.timer_stats()["scheduled"]
    started = time.monotonic()
    ids = {runtime.invoke_async("EchoThread", {"n": n}) for n in range(count)}
    received = [envelopes.get(timeout=WAIT_S) for _ in range(count)]
    elapsed = time.monotonic() - started
    assert {e["requestContext"]["requestId"] for e in received} == ids
    assert all(e["requestContext"]["condition"] == "Success" for e in received)
    # One watchdog, looked at again once per timeout period while the slot stays busy (plus one re-arm when
    # an invocation starts just as the watchdog disarms).
    assert runtime.timer_stats()["scheduled"] - before <= 2 * (elapsed / TIMEOUT_S + 2)
    # Nothing runs: the watchdog disarms at the deadline it was set for, and holds nothing after.
    wait_until(lambda: runtime.timer_stats()["held"] == 0, "the idle slot's watchdog to disarm")


def test_each_invocation_times_out_at_its_own_deadline(
    runtime: LocalRuntime, envelopes: queue.Queue[dict[str, Any]]
) -> None:
    # Quick invocations for longer than the timeout: the watchdog set for the first one fires while later ones
    # run, and must look again at whatever runs then rather than time it out.
    started = time.monotonic()
    quick = 0
    while time.monotonic() - started < 1.5 * TIMEOUT_S:
        assert runtime.invoke_sync("EchoThread", {"n": quick}).ok
        quick += 1
    assert runtime.stats()["EchoThread"].timeouts == 0

    started = time.monotonic()
    assert error_type(runtime.invoke_sync("EchoThread", {"sleep": 3})) == "Sandbox.Timedout"
    assert TIMEOUT_S * 0.9 < time.monotonic() - started < TIMEOUT_S + 0.8

    # The stuck handler keeps its thread; a new slot serves the next invocations, and times them out too,
    # after the slot was idle long enough for its watchdog to disarm.
    assert runtime.invoke_sync("EchoThread", {"n": "after"}).payload["event"] == {"n": "after"}
    wait_until(lambda: runtime.timer_stats()["held"] == 0, "the watchdog to disarm")
    started = time.monotonic()
    request_id = runtime.invoke_async("EchoThread", {"sleep": 3})
    envelope = envelopes.get(timeout=WAIT_S)
    assert TIMEOUT_S * 0.9 < time.monotonic() - started < TIMEOUT_S + 0.8
    assert envelope["requestContext"]["requestId"] == request_id
    assert envelope["requestContext"]["condition"] == "RetriesExhausted"
    assert envelope["responsePayload"]["errorType"] == "Sandbox.Timedout"
    stats = runtime.stats()["EchoThread"]
    assert (stats.timeouts, stats.invocations) == (2, quick + 3)


def test_a_pre_encoded_payload_is_sent_as_encoded(runtime: LocalRuntime) -> None:
    payload = EncodedPayload({"text": "héllo", "n": [1, 2]})
    result = runtime.invoke_sync("EchoThread", payload)
    assert result.payload["event"] == {"text": "héllo", "n": [1, 2]}
    assert payload.data == '{"text":"héllo","n":[1,2]}'.encode()
