"""Drive one request as ``fave run`` / ``fave resume`` do, on a local orchestrator, and measure it: wall, CPU
(the process's and the driving thread's), store requests and bytes, how it ended, the functions' cold starts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fave_shared.store import CountingStore, ObjectStore

from fave.core.model import RequestState, Start
from fave.keys import final_key
from fave.local.orchestrator import local_orchestrator
from fave.service import Orchestrator


def reported_s(seconds: float) -> float:
    """Seconds as reported: to the microsecond (a baseline can take a fraction of a millisecond)."""
    return round(seconds, 6)


@dataclass(frozen=True)
class Measured:
    """One driven request: how it ended and what it cost."""

    request_id: str
    status: str
    wall_s: float
    cpu_s: float  # this process, every thread (functions in worker processes are not in it)
    driver_cpu_s: float  # the driving thread only
    store_requests: int
    store_bytes: int
    final: Any
    failure: str | None
    functions: dict[str, dict[str, int]] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "wall_s": reported_s(self.wall_s),
            "cpu_s": reported_s(self.cpu_s),
            "driver_cpu_s": reported_s(self.driver_cpu_s),
            **({"failure": self.failure} if self.failure else {}),
        }


Begin = Callable[[Orchestrator], RequestState]


def start_new(request_input: dict[str, Any]) -> Begin:
    """What ``fave run`` does: create the request, start it under its lease and drive it to its end."""

    def begin(orchestrator: Orchestrator) -> RequestState:
        state = orchestrator.create(request_input, start=False)
        with orchestrator.hold(state.request_id):
            orchestrator.apply(state.request_id, [Start()])
            return orchestrator.drive(state.request_id)

    return begin


def resume(request_id: str) -> Begin:
    """What ``fave resume`` does for a FAILED request: resume it under its lease and drive it to its end."""

    def begin(orchestrator: Orchestrator) -> RequestState:
        with orchestrator.hold(request_id):
            orchestrator.resume(request_id)
            return orchestrator.drive(request_id)

    return begin


@contextlib.contextmanager
def driver(
    pipeline: Path, store: ObjectStore, runtime_options: dict[str, Any] | None = None
) -> Iterator[tuple[Orchestrator, CountingStore]]:
    """A local orchestrator (as ``fave run`` builds it, faults off whatever $FAVE_FAULTS says), closed after."""
    counting = CountingStore(store)
    orchestrator = local_orchestrator(pipeline, counting, runtime_options=runtime_options, faults="none")
    try:
        yield orchestrator, counting
    finally:
        orchestrator.close()


def measure_one(orchestrator: Orchestrator, counting: CountingStore, begin: Begin) -> Measured:
    """Run ``begin`` on a ``driver``'s orchestrator (it may have driven requests before: W1 keeps it warm)."""
    before = counting.stats
    cpu, thread_cpu, started = time.process_time(), time.thread_time(), time.perf_counter()
    state = begin(orchestrator)
    wall = time.perf_counter() - started
    cpu, thread_cpu = time.process_time() - cpu, time.thread_time() - thread_cpu
    after = counting.stats
    final = None
    if state.status.value == "COMPLETED":
        final = json.loads(counting.inner.get(final_key(state.request_id)).data)
    return Measured(
        request_id=state.request_id,
        status=state.status.value,
        wall_s=wall,
        cpu_s=cpu,
        driver_cpu_s=thread_cpu,
        store_requests=after.requests - before.requests,
        store_bytes=after.bytes_read + after.bytes_written - before.bytes_read - before.bytes_written,
        final=final,
        failure=state.failure.describe() if state.failure else None,
    )


def measure(
    pipeline: Path, store: ObjectStore, begin: Begin, *, runtime_options: dict[str, Any] | None = None
) -> Measured:
    """Drive one request on a fresh orchestrator (a fresh local runtime: its cold starts count)."""
    with driver(pipeline, store, runtime_options) as (orchestrator, counting):
        result = measure_one(orchestrator, counting, begin)
        stats = getattr(orchestrator.invoker, "stats", None)
        if not callable(stats):
            return result
        functions = {
            name: {"invocations": s.invocations, "cold_starts": s.cold_starts}
            for name, s in stats().items()
            if s.invocations
        }
    return dataclasses.replace(result, functions=functions)
