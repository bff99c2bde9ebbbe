"""LocalRuntime's core gate: environments beyond a function's first only while a core is free.

Real worker processes on tests/fixtures/runtime/template.yaml. "Spinny" and "Whirly" are CPU-bound copies of
its "Sleepy" (functions/basic/spin.py: a busy loop; two functions compete for the cores): the gate keeps them
near the core count. "Napper" runs the same handler asleep (``io``): I/O-bound, it scales past the cores up
to its limit, because the gate weighs what the workers' CPU measures, not how many there are. Work is short
and the assertions are about counts (environments started, invocations seen running at once); only the
thread-isolation test bounds an elapsed time, by a wide margin.
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
    """The runtime fixture template's Echo and EchoThread, and Spinny, Whirly and Napper: copies of its Sleepy
    (Timeout: 1) that run spin.handler."""
    base = runtime_template
    spin = {
        name: dataclasses.replace(base.functions["Sleepy"], logical_id=name, handler="spin.handler")
        for name in ("Spinny", "Whirly", "Napper")
    }
    functions = {name: base.functions[name] for name in ("Echo", "EchoThread")}
    return dataclasses.replace(base, functions={**functions, **spin})


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
    payloads = call_all(runtime, [("Spinny", {"s": 0.3})] * 4)
    assert len({p["pid"] for p in payloads}) == 1
    assert runtime.stats()["Spinny"].cold_starts == 1
    wait_until_idle(runtime)


def test_with_free_cores_a_function_scales_to_its_limit(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=3, cores=8)
    payloads = call_all(runtime, [("Spinny", {"s": 0.6})] * 3)
    assert len({p["pid"] for p in payloads}) == 3
    assert runtime.stats()["Spinny"].cold_starts == 3
    wait_until_idle(runtime)


def test_every_function_gets_its_first_environment_even_when_busy(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=4, cores=1)
    call_all(runtime, [("Spinny", {"s": 0.3}), ("Spinny", {"s": 0.3}), ("Whirly", {"s": 0.3}), ("Whirly", {"s": 0.3})])
    stats = runtime.stats()
    assert (stats["Spinny"].cold_starts, stats["Whirly"].cold_starts) == (1, 1)
    wait_until_idle(runtime)


def test_a_function_does_not_take_a_second_core_before_another_gets_its_first(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    # Submitted together from one thread, as one orchestrator step does: Spinny twice, then Whirly. Two cores
    # are enough for one environment each, not for a second Spinny. Whirly keeps its core until Spinny's
    # environment has taken the queued invocation, so no core frees up while Spinny still has a queue.
    runtime = runtime_with(runtimes, cores_template, max_environments=4, cores=2)
    for function, seconds in (("Spinny", 0.3), ("Spinny", 0.3), ("Whirly", 0.8)):
        runtime.invoke_async(function, {"s": seconds})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = runtime.stats()
        if (stats["Spinny"].invocations, stats["Whirly"].invocations) == (2, 1):
            break
        time.sleep(0.02)
    assert (stats["Spinny"].errors, stats["Whirly"].errors) == (0, 0)
    assert (stats["Spinny"].cold_starts, stats["Whirly"].cold_starts) == (1, 1)
    wait_until_idle(runtime)


def test_a_refused_scale_up_happens_when_a_core_frees(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=2, cores=2)
    # Whirly and Spinny take both cores; Spinny's queue waits. When Whirly's environment goes idle, a core is
    # free and Spinny, with work still queued (6 x 0.6 s), gets its second environment.
    calls = [("Whirly", {"s": 0.3}), *[("Spinny", {"s": 0.6})] * 6]
    payloads = call_all(runtime, calls, stagger_s=0.02)
    stats = runtime.stats()
    assert stats["Whirly"].cold_starts == 1
    assert stats["Spinny"].cold_starts == 2
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
    runtime = runtime_with(runtimes, cores_template, cores=2, prewarm=["Echo", "Spinny", "Whirly"])
    assert runtime.environment_pids() == {"Spinny": [], "Echo": [], "EchoThread": [], "Whirly": [], "Napper": []}
    call_all(runtime, [("Spinny", {"s": 0.1})])
    whirly = wait_for_pids(runtime, "Whirly")
    assert len(whirly) == 1, "Whirly, after Spinny in the list, was not pre-warmed"
    assert runtime.environment_pids()["Echo"] == []  # before the first function invoked: not needed again
    # The warm environment serves the first invocation: no second cold start.
    assert call_all(runtime, [("Whirly", {"s": 0.1})])[0]["pid"] == whirly[0]
    assert runtime.stats()["Whirly"].cold_starts == 1
    wait_until_idle(runtime)


def test_prewarming_waits_for_a_free_core(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, cores=1, prewarm=["Spinny", "Whirly"])
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(runtime.invoke_sync, "Spinny", {"s": 0.8})
        time.sleep(0.4)  # Spinny's environment holds the only core: Whirly must not start yet
        assert runtime.environment_pids()["Whirly"] == [] or busy.done()
        assert busy.result(timeout=30).ok
    assert len(wait_for_pids(runtime, "Whirly")) == 1  # started once the core was free
    wait_until_idle(runtime)


def test_no_prewarming_without_the_gate(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    runtime = runtime_with(runtimes, cores_template, max_environments=2, prewarm=["Spinny", "Whirly"])
    call_all(runtime, [("Spinny", {"s": 0.1})])
    time.sleep(0.5)
    assert runtime.environment_pids()["Whirly"] == []
    with pytest.raises(ValueError, match="prewarm: no function Nope"):
        runtime_with(runtimes, cores_template, prewarm=["Nope"])


# -- scaling by measured CPU ------------------------------------------------------------------------------


def most_at_once(payloads: list[Any]) -> int:
    """The most invocations running at the same time, from the wall-clock start and end each one reported."""
    edges = sorted([(p["start"], 1) for p in payloads] + [(p["end"], -1) for p in payloads])
    running = most = 0
    for _, step in edges:  # at a tie an end (-1) sorts first: back to back is not at once
        running += step
        most = max(most, running)
    return most


def test_an_io_bound_function_scales_past_the_cores_up_to_its_limit(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    # The gate's cores are this machine's (the default): Napper waits, using next to no CPU, so once its
    # first invocations are measured it starts environments beyond them, up to the limit.
    cores = os.cpu_count() or 1
    limit = cores + 4
    runtime = runtime_with(runtimes, cores_template, environment_limits={"Napper": limit})
    assert runtime.gate is not None and runtime.gate.cores == cores
    payloads = call_all(runtime, [("Napper", {"s": 0.4, "io": True})] * (3 * limit))
    assert cores < most_at_once(payloads) <= limit
    assert runtime.stats()["Napper"].cold_starts > cores
    wait_until_idle(runtime)


def test_a_cpu_bound_function_stays_near_the_cores_however_high_its_limit(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    # Same limit and work, but spinning: each environment measures a full core, so no cold start beyond the
    # cores is worth it (one more at most: a decision taken before the first measurement).
    runtime = runtime_with(runtimes, cores_template, environment_limits={"Spinny": 8}, cores=2)
    payloads = call_all(runtime, [("Spinny", {"s": 0.3})] * 12)
    assert most_at_once(payloads) <= 3
    assert runtime.stats()["Spinny"].cold_starts <= 3
    wait_until_idle(runtime)


def test_an_io_bound_function_does_not_crowd_out_a_cpu_bound_one(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    # Napper scales past the cores while Spinny spins beside it; Spinny still gets no more than the cores.
    runtime = runtime_with(runtimes, cores_template, environment_limits={"Napper": 8, "Spinny": 8}, cores=2)
    calls = [("Spinny", {"s": 0.3})] * 6 + [("Napper", {"s": 0.3, "io": True})] * 24
    payloads = call_all(runtime, calls)
    assert most_at_once(payloads[:6]) <= 3
    assert most_at_once(payloads[6:]) > 2
    wait_until_idle(runtime)


def test_long_io_bound_invocations_are_measured_while_they_run(
    runtimes: list[LocalRuntime], cores_template: Template
) -> None:
    # Each invocation waits 0.8 s: the figures of the first ones are sampled while they run, so more
    # environments start before any invocation has ended (measured only at their end, none would).
    runtime = runtime_with(runtimes, cores_template, environment_limits={"Napper": 8}, cores=2)
    payloads = call_all(runtime, [("Napper", {"s": 0.8, "io": True})] * 8)
    first_end = min(p["end"] for p in payloads)
    assert sum(p["start"] < first_end for p in payloads) > 2
    wait_until_idle(runtime)


def test_cpu_spent_in_a_child_process_counts(runtimes: list[LocalRuntime], cores_template: Template) -> None:
    # The handler waits while its child spins (ffmpeg's way): the worker itself is idle, its child is not.
    runtime = runtime_with(runtimes, cores_template, environment_limits={"Spinny": 8}, cores=2)
    payloads = call_all(runtime, [("Spinny", {"s": 0.5, "child": True})] * 8)
    assert most_at_once(payloads) <= 3
    wait_until_idle(runtime)
