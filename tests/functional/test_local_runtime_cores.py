"""LocalRuntime's core gate: environments beyond a function's first only while a core is free.

Real worker processes on tests/fixtures/runtime/template.yaml ("Dozy" is a copy of "Sleepy" under another
name, so two functions compete for the cores). Sleeps are short and the assertions are about counts
(environments started); only the thread-isolation test bounds an elapsed time, by a wide margin.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from fave.invoke import InvokeResult
from fave.local.runtime import LocalRuntime
from fave.local.template import Template


@pytest.fixture(scope="module")
def cores_template(runtime_template: Template) -> Template:
    """The runtime fixture template with Sleepy, Echo and EchoThread, and Dozy: a copy of Sleepy."""
    base = runtime_template
    dozy = dataclasses.replace(base.functions["Sleepy"], logical_id="Dozy")
    functions = {name: base.functions[name] for name in ("Sleepy", "Echo", "EchoThread")}
    return dataclasses.replace(base, functions={**functions, "Dozy": dozy})


@pytest.fixture
def runtimes(cores_template: Template) -> Iterator[list[LocalRuntime]]:
    made: list[LocalRuntime] = []
    yield made
    for runtime in made:
        runtime.close()


def runtime_with(runtimes: list[LocalRuntime], template: Template, **kwargs: Any) -> LocalRuntime:
    runtime = LocalRuntime(template, env_overrides={"BUCKET": "b"}, **kwargs)
    runtimes.append(runtime)
    return runtime


def call_all(runtime: LocalRuntime, calls: list[tuple[str, dict[str, Any]]], stagger_s: float = 0.0) -> list[Any]:
    """Invoke every (function, event) concurrently (``stagger_s`` apart); the payloads, in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures: list[Future[InvokeResult]] = []
        for function, event in calls:
            futures.append(pool.submit(runtime.invoke_sync, function, event))
            time.sleep(stagger_s)
        results = [f.result(timeout=60) for f in futures]
    assert all(r.ok for r in results), [r.payload for r in results]
    return [r.payload for r in results]


def wait_until_idle(runtime: LocalRuntime) -> None:
    assert runtime.gate is not None
    deadline = time.monotonic() + 10
    while runtime.gate.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.gate.active == 0, "the gate lost count of its slots"


def test_gate_is_on_by_default_and_off_with_an_explicit_environment_limit(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    default = runtime_with(runtimes, cores_template)
    assert default.gate is not None and default.gate.cores == (os.cpu_count() or 1)
    assert runtime_with(runtimes, cores_template, max_environments=2).gate is None
    both = runtime_with(runtimes, cores_template, max_environments=2, cores=3)
    assert both.gate is not None and both.gate.cores == 3


def test_on_a_saturated_machine_invocations_wait_for_the_warm_environment(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=4, cores=1)
    payloads = call_all(runtime, [("Sleepy", {"s": 0.3})] * 4)
    assert len({p["pid"] for p in payloads}) == 1
    assert runtime.stats()["Sleepy"].cold_starts == 1
    wait_until_idle(runtime)


def test_with_free_cores_a_function_scales_to_its_limit(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=3, cores=8)
    payloads = call_all(runtime, [("Sleepy", {"s": 0.6})] * 3)
    assert len({p["pid"] for p in payloads}) == 3
    assert runtime.stats()["Sleepy"].cold_starts == 3
    wait_until_idle(runtime)


def test_every_function_gets_its_first_environment_even_when_busy(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=4, cores=1)
    call_all(runtime, [("Sleepy", {"s": 0.3}), ("Sleepy", {"s": 0.3}), ("Dozy", {"s": 0.3}), ("Dozy", {"s": 0.3})])
    stats = runtime.stats()
    assert (stats["Sleepy"].cold_starts, stats["Dozy"].cold_starts) == (1, 1)
    wait_until_idle(runtime)


def test_a_function_does_not_take_a_second_core_before_another_gets_its_first(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    # Submitted together from one thread, as one orchestrator step does: Sleepy twice, then Dozy. Two cores
    # are enough for one environment each, not for a second Sleepy. Dozy keeps its core until Sleepy's
    # environment has taken the queued invocation, so no core frees up while Sleepy still has a queue.
    runtime = runtime_with(runtimes, cores_template, max_environments=4, cores=2)
    for function, seconds in (("Sleepy", 0.3), ("Sleepy", 0.3), ("Dozy", 0.8)):
        runtime.invoke_async(function, {"s": seconds})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = runtime.stats()
        if (stats["Sleepy"].invocations, stats["Dozy"].invocations) == (2, 1):
            break
        time.sleep(0.02)
    assert (stats["Sleepy"].errors, stats["Dozy"].errors) == (0, 0)
    assert (stats["Sleepy"].cold_starts, stats["Dozy"].cold_starts) == (1, 1)
    wait_until_idle(runtime)


def test_a_refused_scale_up_happens_when_a_core_frees(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=2, cores=2)
    # Dozy and Sleepy take both cores; Sleepy's queue waits. When Dozy's environment goes idle, a core is
    # free and Sleepy, with work still queued (6 x 0.6 s), gets its second environment.
    calls = [("Dozy", {"s": 0.3}), *[("Sleepy", {"s": 0.6})] * 6]
    payloads = call_all(runtime, calls, stagger_s=0.02)
    stats = runtime.stats()
    assert stats["Dozy"].cold_starts == 1
    assert stats["Sleepy"].cold_starts == 2
    assert len({p["pid"] for p in payloads[1:]}) == 2
    wait_until_idle(runtime)


def test_thread_isolation_is_not_gated(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=4, cores=1)
    started = time.monotonic()
    call_all(runtime, [("EchoThread", {"sleep": 0.4})] * 4)
    # Gated to one slot they would take 1.6 s one after another; thread slots cost no cold start.
    assert time.monotonic() - started < 1.2
    assert runtime.gate is not None and runtime.gate.active == 0  # thread slots never count


# -- pre-warming ------------------------------------------------------------------------------------------


def wait_for_pids(runtime: LocalRuntime, function: str, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (pids := runtime.environment_pids()[function]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


def test_first_invocation_prewarms_the_functions_after_it(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    runtime = runtime_with(runtimes, cores_template, cores=2, prewarm=["Echo", "Sleepy", "Dozy"])
    assert runtime.environment_pids() == {"Sleepy": [], "Echo": [], "EchoThread": [], "Dozy": []}
    call_all(runtime, [("Sleepy", {"s": 0.1})])
    dozy = wait_for_pids(runtime, "Dozy")
    assert len(dozy) == 1, "Dozy, after Sleepy in the list, was not pre-warmed"
    assert runtime.environment_pids()["Echo"] == []  # before the first function invoked: not needed again
    # The warm environment serves the first invocation: no second cold start.
    assert call_all(runtime, [("Dozy", {"s": 0.1})])[0]["pid"] == dozy[0]
    assert runtime.stats()["Dozy"].cold_starts == 1
    wait_until_idle(runtime)


def test_prewarming_waits_for_a_free_core(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, cores=1, prewarm=["Sleepy", "Dozy"])
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(runtime.invoke_sync, "Sleepy", {"s": 0.8})
        time.sleep(0.4)  # Sleepy's environment holds the only core: Dozy must not start yet
        assert runtime.environment_pids()["Dozy"] == [] or busy.done()
        assert busy.result(timeout=30).ok
    assert len(wait_for_pids(runtime, "Dozy")) == 1  # started once the core was free
    wait_until_idle(runtime)


def test_no_prewarming_without_the_gate(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=2, prewarm=["Sleepy", "Dozy"])
    call_all(runtime, [("Sleepy", {"s": 0.1})])
    time.sleep(0.5)
    assert runtime.environment_pids()["Dozy"] == []
    with pytest.raises(ValueError, match="prewarm: no function Nope"):
        runtime_with(runtimes, cores_template, prewarm=["Nope"])
