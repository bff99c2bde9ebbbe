"""Per-function concurrency across every invocation (issue 14, requirements 2 and 7): the local runtime's limit
is the smaller of a function's ReservedConcurrentExecutions and the pipeline's ``functions:`` cap, and at that
limit a synchronous invoke is refused the way Lambda refuses it (``ThrottledInvocationError``, a 429) while an
asynchronous one queues. Real worker processes on tests/fixtures/runtime/template.yaml; ``local_orchestrator``
on the demo pipeline (tests/fixtures/cache) with a ``functions:`` cap.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fave.invoke.base import ThrottledInvocationError
from fave.local.orchestrator import UNCAPPED_ENVIRONMENTS, local_orchestrator
from fave.local.runtime import LocalRuntime
from fave.local.template import Template
from fave_shared.store import LocalStore

ROOT = Path(__file__).resolve().parents[2]
CACHED = ROOT / "tests" / "fixtures" / "cache" / "pipeline.yaml"


def reserved(template: Template, function: str, n: int | None) -> Template:
    """``template`` with ``function``'s ReservedConcurrentExecutions set to ``n``."""
    spec = dataclasses.replace(template.functions[function], reserved_concurrency=n)
    return dataclasses.replace(template, functions={**template.functions, function: spec})


@pytest.fixture
def runtimes() -> Iterator[list[LocalRuntime]]:
    made: list[LocalRuntime] = []
    yield made
    for runtime in made:
        runtime.close()


def runtime_with(runtimes: list[LocalRuntime], template: Template, **kwargs: Any) -> LocalRuntime:
    runtime = LocalRuntime(template, env_overrides={"BUCKET": "b"}, **kwargs)
    runtimes.append(runtime)
    return runtime


def invoke_at_once(runtime: LocalRuntime, n: int, seconds: float) -> tuple[int, int]:
    """``n`` synchronous invokes of Sleepy released together from threads: (how many ran, how many throttled)."""
    barrier = threading.Barrier(n)

    def call() -> str:
        barrier.wait()
        try:
            result = runtime.invoke_sync("Sleepy", {"s": seconds})
        except ThrottledInvocationError:
            return "throttled"
        assert result.ok, result.payload
        return "ran"

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(lambda _: call(), range(n)))
    return outcomes.count("ran"), outcomes.count("throttled")


def test_a_sync_invoke_beyond_the_reserved_concurrency_is_throttled(
    runtimes: list[LocalRuntime], runtime_template: Template
) -> None:
    runtime = runtime_with(runtimes, reserved(runtime_template, "Sleepy", 2))
    assert invoke_at_once(runtime, 10, 0.5) == (2, 8)
    assert runtime.stats()["Sleepy"].invocations == 2  # a throttled invoke never ran
    # Once those two are done the function has room again.
    assert invoke_at_once(runtime, 2, 0.05) == (2, 0)


def test_a_functions_cap_limits_like_a_reservation_and_the_smaller_one_wins(
    runtimes: list[LocalRuntime], runtime_template: Template
) -> None:
    capped = runtime_with(runtimes, runtime_template, function_caps={"Sleepy": 3})
    assert capped.limits()["Sleepy"] == 3
    assert invoke_at_once(capped, 10, 0.5) == (3, 7)
    assert (
        runtime_with(runtimes, reserved(runtime_template, "Sleepy", 5), function_caps={"Sleepy": 3}).limits()["Sleepy"]
        == 3
    )
    assert (
        runtime_with(runtimes, reserved(runtime_template, "Sleepy", 2), function_caps={"Sleepy": 4}).limits()["Sleepy"]
        == 2
    )
    with pytest.raises(ValueError, match="function_caps: no function Nope"):
        runtime_with(runtimes, runtime_template, function_caps={"Nope": 1})
    with pytest.raises(ValueError, match="function_caps: must be at least 1"):
        runtime_with(runtimes, runtime_template, function_caps={"Sleepy": 0})


def test_async_invokes_at_the_limit_queue_instead(runtimes: list[LocalRuntime], runtime_template: Template) -> None:
    runtime = runtime_with(runtimes, reserved(runtime_template, "Sleepy", 2))
    for _ in range(8):
        runtime.invoke_async("Sleepy", {"s": 0.1})  # none refused
    deadline = time.monotonic() + 30
    while runtime.stats()["Sleepy"].invocations < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = runtime.stats()["Sleepy"]
    assert (stats.invocations, stats.errors) == (8, 0)
    assert stats.cold_starts <= 2  # never more than two at once


def test_without_an_explicit_limit_nothing_is_throttled(
    runtimes: list[LocalRuntime], runtime_template: Template
) -> None:
    runtime = runtime_with(runtimes, runtime_template, environment_limits={"Sleepy": 2})
    assert runtime.limits()["Sleepy"] == 2
    assert invoke_at_once(runtime, 10, 0.05) == (10, 0)  # beyond the environments: queued, not refused


def test_the_local_orchestrator_applies_the_pipelines_function_caps(tmp_path: Path) -> None:
    text = CACHED.read_text().replace(
        "template: ../demo/template.yaml", f"template: {ROOT}/tests/fixtures/demo/template.yaml"
    )
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(text + "functions:\n  ShoutFunction: {max_concurrency: 1}\n")
    orchestrator = local_orchestrator(pipeline, LocalStore(str(tmp_path / "store")))
    try:
        runtime = orchestrator.invoker
        assert isinstance(runtime, LocalRuntime)
        limits = runtime.limits()
        # The cap (stage shout asks for 2 at once); measure has no max_concurrency; the others are sync stages.
        assert limits["ShoutFunction"] == 1
        assert limits["MeasureFunction"] == UNCAPPED_ENVIRONMENTS
        state = orchestrator.create({"text": "the quick brown fox"})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
        assert state.status.value == "COMPLETED", state.failure
        stats = runtime.stats()
        assert stats["ShoutFunction"].invocations == 4
        assert stats["ShoutFunction"].cold_starts == 1  # one environment at a time, its async events queued
    finally:
        orchestrator.close()
