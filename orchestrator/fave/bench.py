"""``fave bench``: measured figures, never timed tests.

``fanout``: start -> plan -> N no-op async tasks -> reduce, through the real engine, persistence, store and
local runtime (the no-op functions run as in-process threads so the figure is the orchestration's).
Reports wall seconds, tasks/s, store requests and state bytes (read + written) per task, and the seconds
spent inside the orchestrator's steps. The bench request is an ordinary request in the chosen store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fave_shared.store import CountingStore, ObjectStore

from .wiring import local_orchestrator, open_any_store, store_uri

ROOT = Path(__file__).resolve().parents[2]
FANOUT_PIPELINE = ROOT / "benchmarks" / "fanout" / "pipeline.yaml"


@contextlib.contextmanager
def _bench_store(spec: str | None) -> Iterator[ObjectStore]:
    if spec == "moto":
        import boto3
        from moto import mock_aws

        with mock_aws():
            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket="fave-bench")
            from fave_shared.store import S3Store

            yield S3Store(client, "fave-bench")
        return
    if spec is None:
        with tempfile.TemporaryDirectory(prefix="fave-bench-") as tmp:
            yield open_any_store(tmp)
        return
    yield open_any_store(store_uri(spec))


def fanout(items: int, store: ObjectStore) -> dict[str, Any]:
    """Run one fan-out request of ``items`` no-op tasks and measure it."""
    counting = CountingStore(store)
    orchestrator = local_orchestrator(FANOUT_PIPELINE, counting)
    busy = 0.0
    original_apply = orchestrator.apply

    def timed_apply(*args: Any, **kwargs: Any) -> Any:
        nonlocal busy
        started = time.perf_counter()
        try:
            return original_apply(*args, **kwargs)
        finally:
            busy += time.perf_counter() - started

    orchestrator.apply = timed_apply  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        state = orchestrator.create({"items": items, "video_uri": None})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
        wall = time.perf_counter() - started
    finally:
        orchestrator.close()
    stats = counting.stats
    final = state.final
    if state.status.value != "COMPLETED" or not isinstance(final, dict) or final.get("count") != items:
        raise RuntimeError(f"bench request {state.request_id} ended {state.status.value}: {final}")
    return {
        "items": items,
        "request_id": state.request_id,
        "status": state.status.value,
        "wall_s": round(wall, 4),
        "orchestration_s": round(busy, 4),
        "tasks_per_s": round(items / wall, 1),
        "requests_per_task": round(stats.requests / items, 4),
        "bytes_per_task": round((stats.bytes_read + stats.bytes_written) / items, 1),
        "store": store.uri,
    }


def run_bench(args: argparse.Namespace) -> int:
    if args.bench != "fanout":
        print(f"fave: error: unknown benchmark {args.bench!r}", file=sys.stderr)
        return 2
    if args.items < 1:
        print("fave: error: --items must be at least 1", file=sys.stderr)
        return 2
    with _bench_store(args.store) as store:
        result = fanout(args.items, store)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"fan-out of {result['items']} tasks: {result['wall_s']:.3f} s wall "
            f"({result['orchestration_s']:.3f} s in orchestrator steps), {result['tasks_per_s']:.0f} tasks/s, "
            f"{result['requests_per_task']:.3f} store requests/task, {result['bytes_per_task']:.0f} B/task"
        )
    return 0
