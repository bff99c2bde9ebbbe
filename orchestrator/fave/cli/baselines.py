"""The same work as a ``fave bench workloads`` workload, without fave: the functions' handlers called directly.

Each baseline calls the very handler modules the workload's functions run (``benchmarks/workloads/functions``),
with the event fields they read, in this process: in a loop (a chain) or on a bare ``ThreadPoolExecutor`` (a
fan-out). No JSON, no store, no invoker: the floor the orchestration is compared with.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


@functools.cache
def load_handler(functions_dir: Path, module: str) -> Handler:
    """``handler`` of ``functions_dir/module.py``, imported once under a private name (not ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(f"_fave_baseline_{module}", functions_dir / f"{module}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {functions_dir / module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    handler: Handler = loaded.handler
    return handler


def task_event(
    store_uri: str,
    stage: str,
    request: dict[str, Any],
    *,
    item: int | None = None,
    attempt: int = 1,
    needs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The invocation payload fave would send (the fields the workload handlers read)."""
    value: dict[str, Any] = {"request": request, "needs": needs or {}, "config": {}}
    if item is not None:
        value["item"] = item
        value["index"] = item
    task = {"request_id": "baseline", "stage": stage, "item": item, "attempt": attempt}
    return {"fave": 1, "task": task, "store": store_uri, "input": value}


@dataclass(frozen=True)
class Timed:
    """What a baseline returned, its wall time and this process's CPU time (every thread) while it ran."""

    value: Any
    wall_s: float
    cpu_s: float


def timed(work: Callable[[], Any]) -> Timed:
    cpu, started = time.process_time(), time.perf_counter()
    value = work()
    return Timed(value, time.perf_counter() - started, time.process_time() - cpu)


def chain(handler: Handler, stages: Sequence[str], store_uri: str, request: dict[str, Any]) -> Any:
    """Call ``handler`` once per stage, each with the previous stage's output as its need."""
    needs: dict[str, Any] = {}
    output: Any = None
    for stage in stages:
        output = handler(task_event(store_uri, stage, request, needs=needs), None)
        needs = {stage: output}
    return output


def pool_map(handler: Handler, events: Iterable[dict[str, Any]], workers: int, *, retries: int = 0) -> list[Any]:
    """Run ``handler`` over ``events`` on a ``ThreadPoolExecutor(workers)`` (``workers=0``: in this thread, one
    after another), results in order. An event whose call raises is called again, at once, up to ``retries``
    times with the next attempt number (then it raises)."""

    def call(event: dict[str, Any]) -> Any:
        for extra in range(retries + 1):
            try:
                return handler(event, None)
            except Exception:
                if extra == retries:
                    raise
                event = {**event, "task": {**event["task"], "attempt": event["task"]["attempt"] + 1}}
        raise AssertionError("unreachable")

    if workers == 0:
        return [call(event) for event in events]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(call, events))


def fan_out(
    functions_dir: Path,
    task_module: str,
    store_uri: str,
    request: dict[str, Any],
    workers: int,
    *,
    retries: int = 0,
) -> Any:
    """plan -> N calls of ``task_module`` on a thread pool -> reduce: a workload's fan-out without fave."""
    plan, task, reduce = (load_handler(functions_dir, m) for m in ("plan", task_module, "reduce"))
    items = plan(task_event(store_uri, "plan", request), None)["items"]
    events = (task_event(store_uri, "work", request, item=i) for i in range(len(items)))
    outputs = pool_map(task, events, workers, retries=retries)
    return reduce(task_event(store_uri, "reduce", request, needs={"work": outputs}), None)
