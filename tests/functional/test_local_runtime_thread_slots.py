"""How many threads a thread-isolated function gets: one while its handlers compute, up to its limit once they
wait (``FunctionPool.THREAD_START`` / ``THREAD_WAIT_S``, fave.local.pool's module docs).

Real handlers (tests/fixtures/runtime/functions/threaded: EchoThread, which echoes or sleeps) in a real
LocalRuntime; the threads counted are the slot threads the pool started (named after the function).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fave.local.pool import FunctionPool
from fave.local.runtime import LocalRuntime
from fave.local.template import Template

WAIT_S = 15
LIMIT = 8


_BEFORE: set[threading.Thread] = set()


def slot_threads() -> int:
    """This test's runtime's slot threads: those of EchoThread started since the runtime was (a timed-out slot of
    an earlier test in this process may still be running its handler)."""
    return sum(t.name == "fave-local-EchoThread" and t not in _BEFORE for t in threading.enumerate())


@pytest.fixture
def runtime(runtime_template: Template, envelopes: queue.Queue[dict[str, Any]]) -> Iterator[LocalRuntime]:
    _BEFORE.clear()
    _BEFORE.update(threading.enumerate())
    with LocalRuntime(runtime_template, destination_handlers={"FanIn": envelopes.put}, max_environments=LIMIT) as rt:
        yield rt


def run_all(runtime: LocalRuntime, envelopes: queue.Queue[dict[str, Any]], events: list[dict[str, Any]]) -> int:
    """Invoke every event at once, wait for all of them; the most slot threads seen meanwhile."""
    ids = {runtime.invoke_async("EchoThread", event) for event in events}
    most = 0
    received = []
    while len(received) < len(events):
        most = max(most, slot_threads())
        try:
            received.append(envelopes.get(timeout=0.01))
        except queue.Empty:
            continue
    assert {e["requestContext"]["requestId"] for e in received} == ids
    assert all(e["requestContext"]["condition"] == "Success" for e in received)
    return max(most, slot_threads())


def test_quick_handlers_get_one_thread_not_the_limit(
    runtime: LocalRuntime, envelopes: queue.Queue[dict[str, Any]]
) -> None:
    assert run_all(runtime, envelopes, [{"n": n} for n in range(3_000)]) == FunctionPool.THREAD_START == 1


def test_handlers_that_wait_get_threads_up_to_the_limit(
    runtime: LocalRuntime, envelopes: queue.Queue[dict[str, Any]]
) -> None:
    # Each sleeps: on one thread the 24 would take 24 rounds; once a few calls were seen to wait,
    # the rest wait together.
    assert run_all(runtime, envelopes, [{"n": n, "sleep": 0.1} for n in range(24)]) == LIMIT
    assert runtime.stats()["EchoThread"].timeouts == 0


def test_one_long_call_is_enough_to_add_threads(runtime: LocalRuntime, envelopes: queue.Queue[dict[str, Any]]) -> None:
    # Nothing has finished yet (no calls to judge by): calls running for THREAD_STUCK_S are waiting on something.
    assert run_all(runtime, envelopes, [{"n": n, "sleep": 0.6} for n in range(LIMIT)]) == LIMIT


def test_a_pool_that_grew_for_waiting_handlers_keeps_its_threads_for_quick_ones(
    runtime: LocalRuntime, envelopes: queue.Queue[dict[str, Any]]
) -> None:
    # Threads already started serve whatever comes next (warm slots); none are added for quick work.
    assert run_all(runtime, envelopes, [{"n": n, "sleep": 0.1} for n in range(24)]) == LIMIT
    assert run_all(runtime, envelopes, [{"n": n} for n in range(500)]) == LIMIT
