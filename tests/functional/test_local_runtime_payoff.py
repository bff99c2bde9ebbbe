"""LocalRuntime starts another environment of a function only if it pays off (``FunctionPool._pays_off``): its
cold start (0.8 s here, as measured) must be shorter than what the queued work would wait for a busy warm
environment. One invocation queued behind a warm one that frees up in 0.3 s waits for it, even with a core free;
a long queue still scales out. Real worker processes (tests/fixtures/runtime, functions/basic/slow_start.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fave.local.runtime import LocalRuntime
from fave.local.template import Template


@pytest.fixture
def runtime(runtime_template: Template) -> Iterator[LocalRuntime]:
    slow = dataclasses.replace(
        runtime_template.functions["Sleepy"], logical_id="SlowStart", handler="slow_start.handler", timeout_s=20
    )
    template = dataclasses.replace(runtime_template, functions={"SlowStart": slow})
    with LocalRuntime(template, cores=2, environment_limits={"SlowStart": 8}) as made:
        made.invoke_sync("SlowStart", {"s": 0})  # the cold start (measured: 0.8 s and more)
        made.invoke_sync("SlowStart", {"s": 0.3})  # a warm invocation (measured: 0.3 s)
        yield made


def together(runtime: LocalRuntime, n: int) -> set[int]:
    """``n`` invocations of 0.3 s submitted at once; the pids that ran them."""
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: runtime.invoke_sync("SlowStart", {"s": 0.3}), range(n)))
    assert all(r.ok for r in results), [r.payload for r in results]
    return {r.payload["pid"] for r in results}


def test_one_queued_invocation_waits_for_the_warm_environment_instead_of_a_slower_cold_start(
    runtime: LocalRuntime,
) -> None:
    assert runtime.gate is not None and runtime.gate.cores == 2  # a core is free: the gate alone would start one
    pids = together(runtime, 2)
    assert len(pids) == 1
    assert runtime.stats()["SlowStart"].cold_starts == 1


def test_a_long_queue_still_gets_more_environments(runtime: LocalRuntime) -> None:
    # Eight of 0.3 s behind one warm environment: 2.1 s of waiting for the last, against a 0.8 s cold start.
    pids = together(runtime, 8)
    assert len(pids) >= 2
    assert runtime.stats()["SlowStart"].cold_starts >= 2
