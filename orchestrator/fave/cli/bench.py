"""``fave bench``: measured figures, never timed tests.

``fanout``: start -> plan -> N no-op async tasks -> reduce, through the real engine, persistence, store and
local runtime (the no-op functions run as in-process threads so the figure is the orchestration's).
Reports wall seconds, tasks/s, store requests and state bytes (read + written) per task (and by kind of
object), the seconds spent inside the orchestrator's steps, CPU per task (every thread of the process, and
the driver thread alone), peak RSS, and a same-run baseline: the no-op handler called as often on a bare
thread pool (``fave.cli.measure``). The bench request is an ordinary request in the chosen store.

``video``: the real video pipeline (pipeline.yaml) on a video (default: the bundled sample), through the
local runtime exactly as ``fave run`` drives it, against ``benchmarks/video/straight.py``: the same stage
bodies called in one process with no orchestration (see that file). Reports both walls and their ratio,
both CPU times (every process, so the figure survives a busy machine better than wall time), per-stage
times from state.json and the straight-line's own per-stage times, and the cold starts per function.

``startup``: ``fave run`` of a 3-stage no-op chain and ``fave --help``, exec to exit, against the bare
interpreter (``fave.cli.startup``).

``workloads``: the peer workloads W1-W4R (``fave.cli.workloads``), each against a same-run baseline without fave.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fave_shared.store import ObjectStore

from fave.cli.measure import KeyKinds, Meter, bare_pool, cpu_count, peak_rss_mb
from fave.keys import final_key, state_key
from fave.local.orchestrator import DEFAULT_PIPELINE, local_orchestrator, open_any_store, store_uri
from fave.persistence import read_stage_tasks
from fave.service import Orchestrator
from fave.statefile import StateDoc

ROOT = Path(__file__).resolve().parents[3]
FANOUT_PIPELINE = ROOT / "benchmarks" / "fanout" / "pipeline.yaml"
FANOUT_NOOP = ROOT / "benchmarks" / "fanout" / "functions" / "noop"
VIDEO_PIPELINE = ROOT / DEFAULT_PIPELINE
STRAIGHT_SCRIPT = ROOT / "benchmarks" / "video" / "straight.py"
API_SCRIPT = ROOT / "benchmarks" / "api" / "post_latency.py"
COST_SCRIPT = ROOT / "benchmarks" / "cost" / "cost.py"
SAMPLE_VIDEO = ROOT / "tests" / "fixtures" / "scenes20.mp4"


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


class StepTimer:
    """Seconds spent inside an orchestrator's steps (``apply``): the orchestration's own cost."""

    def __init__(self) -> None:
        self.seconds = 0.0


def time_steps(orchestrator: Orchestrator) -> StepTimer:
    """Wrap ``orchestrator.apply`` so that every step's duration adds to the returned timer."""
    timer = StepTimer()
    original_apply = orchestrator.apply

    def timed_apply(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_apply(*args, **kwargs)
        finally:
            timer.seconds += time.perf_counter() - started

    orchestrator.apply = timed_apply  # type: ignore[method-assign]
    return timer


def fanout(items: int, store: ObjectStore, *, baseline: bool = True) -> dict[str, Any]:
    """Run one fan-out request of ``items`` no-op tasks and measure it; ``baseline``: then call the no-op
    handler as often on a bare thread pool, in the same process (``fave.cli.measure``)."""
    counting = KeyKinds(store)
    orchestrator = local_orchestrator(FANOUT_PIPELINE, counting)
    busy = time_steps(orchestrator)
    rss_at_start = peak_rss_mb()
    try:
        with Meter() as meter:
            state = orchestrator.create({"items": items, "video_uri": None})
            state = orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()
    wall = meter.wall_s
    stats = counting.stats
    final = state.final
    if state.status.value != "COMPLETED" or not isinstance(final, dict) or final.get("count") != items:
        raise RuntimeError(f"bench request {state.request_id} ended {state.status.value}: {final}")
    result: dict[str, Any] = {
        "items": items,
        "request_id": state.request_id,
        "status": state.status.value,
        "wall_s": round(wall, 4),
        "orchestration_s": round(busy.seconds, 4),
        "tasks_per_s": round(items / wall, 1),
        "requests_per_task": round(stats.requests / items, 4),
        "bytes_per_task": round((stats.bytes_read + stats.bytes_written) / items, 1),
        "store": store.uri,
        # CPU of every thread of this process (driver, runtime slots running the no-op handlers, timer, lease).
        "cpu_s": round(meter.cpu_s, 4),
        "cpu_per_task_us": round(meter.cpu_s / items * 1e6, 1),
        "driver_cpu_per_task_us": round(meter.thread_cpu_s / items * 1e6, 1),
        "peak_rss_mb": round(meter.peak_rss_mb, 1),
        "rss_at_start_mb": round(rss_at_start, 1),
        "store_by_kind": counting.by_kind(),
    }
    if baseline:
        workers = cpu_count()  # the local runtime's concurrency for the no-op function
        bare = bare_pool(items, FANOUT_NOOP, "app.handler", workers)
        result["baseline"] = {
            "kind": f"ThreadPoolExecutor({workers}), one submit per item",
            "wall_s": round(bare.wall_s, 4),
            "cpu_s": round(bare.cpu_s, 4),
            "cpu_per_task_us": round(bare.cpu_s / items * 1e6, 1),
        }
        result["cpu_vs_baseline"] = round(meter.cpu_s / bare.cpu_s, 2) if bare.cpu_s > 0 else None
        result["wall_vs_baseline"] = round(wall / bare.wall_s, 2) if bare.wall_s > 0 else None
    result["cpus"] = os.cpu_count()
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return result


def fanout_repeated(items: int, spec: str | None, repeat: int) -> dict[str, Any]:
    """``fanout`` ``repeat`` times in one store (each run a request of its own, as in a project's store) and the
    run of median CPU per task, with every run's CPU per task and wall under ``runs``: one run on a shared 2-core
    machine moves by tens of percent (other processes, the disk), a median of several moves much less. One store,
    not one per run: deleting a run's files just before the next run makes that run's file creations slower on an
    unjournaled ext4 (its inode allocator steps over recently deleted inodes), which is not the next run's cost."""
    results = []
    with _bench_store(spec) as store:
        for _ in range(repeat):
            results.append(fanout(items, store))
    if repeat == 1:
        return results[0]
    ordered = sorted(results, key=lambda r: r["cpu_per_task_us"])
    median = dict(ordered[(repeat - 1) // 2])
    median["runs"] = {
        "cpu_per_task_us": [r["cpu_per_task_us"] for r in results],
        "driver_cpu_per_task_us": [r["driver_cpu_per_task_us"] for r in results],
        "wall_s": [r["wall_s"] for r in results],
    }
    return median


# ---- video ------------------------------------------------------------------------------------------


def _cpu_s() -> tuple[float, float]:
    """(this process, its reaped children) user + system CPU seconds so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def stage_times(store: ObjectStore, request_id: str) -> dict[str, dict[str, Any]]:
    """Per stage, from state.json and the task shards: ``start_s`` (after the request was created),
    ``span_s`` (stage start to end), ``tasks``, ``busy_s`` (sum of task dispatch-to-finish times, each task's
    last attempt) and ``max_task_s``. Dispatch-to-finish includes the time a task waits for a free execution
    environment and its cold start."""
    doc = StateDoc.from_json(store.get(state_key(request_id)).data)
    out: dict[str, dict[str, Any]] = {}
    for name, stage in doc.stages.items():
        tasks = list(read_stage_tasks(store, request_id, name).values())
        runs = [t.finished_at - t.dispatched_at for t in tasks if t.finished_at and t.dispatched_at]
        started, finished = stage.started_at, stage.finished_at
        out[name] = {
            "status": stage.status,
            "start_s": round(started - doc.created_at, 3) if started else None,
            "span_s": round(finished - started, 3) if started and finished else None,
            "tasks": len(tasks),
            "attempts": sum(t.attempt for t in tasks),
            "busy_s": round(sum(runs), 3),
            "max_task_s": round(max(runs, default=0.0), 3),
        }
    return out


def _answer(final: Any) -> dict[str, Any]:
    """The deterministic part of a video answer: matching scenes (in order) and clip boundaries."""
    if not isinstance(final, dict):
        return {}
    return {
        "scenes": [(s.get("start_s"), s.get("end_s")) for s in final.get("scenes") or []],
        "clips": [(c.get("start_s"), c.get("end_s")) for c in final.get("clips") or []],
    }


def video_fave_run(video: str, query: str, profile: str, store: ObjectStore) -> dict[str, Any]:
    """One ``fave run`` of the video pipeline, driven in this process as the CLI drives it, measured."""
    cpu_before = _cpu_s()
    orchestrator = local_orchestrator(VIDEO_PIPELINE, store)
    busy = time_steps(orchestrator)
    cold_starts: dict[str, int] = {}
    try:
        started = time.perf_counter()
        # no_cache: every repeat runs every stage (the result cache would answer the second one at once)
        state = orchestrator.create({"video_uri": video, "query": query, "profile": profile}, no_cache=True)
        state = orchestrator.drive(state.request_id)
        wall = time.perf_counter() - started
        stats = getattr(orchestrator.invoker, "stats", None)
        if callable(stats):
            cold_starts = {name: s.cold_starts for name, s in stats().items() if s.invocations}
    finally:
        orchestrator.close()  # stops (and reaps) the worker processes, so their CPU time is counted
    cpu_after = _cpu_s()
    if state.status.value != "COMPLETED":
        failure = state.failure.describe() if state.failure else state.status.value
        raise RuntimeError(f"bench request {state.request_id} ended {state.status.value}: {failure}")
    final = json.loads(store.get(final_key(state.request_id)).data)
    return {
        "request_id": state.request_id,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu_after[0] - cpu_before[0] + cpu_after[1] - cpu_before[1], 3),
        "orchestration_s": round(busy.seconds, 3),
        "cold_starts": cold_starts,
        "stages": stage_times(store, state.request_id),
        "answer": _answer(final),
    }


def video_straight_run(video: str, query: str, profile: str, clips: str) -> dict[str, Any]:
    """One run of benchmarks/video/straight.py in a fresh process (so it pays its imports and model loads)."""
    command = [sys.executable, str(STRAIGHT_SCRIPT), video, "--query", query, "--profile", profile]
    command += ["--clips", clips, "--pipeline", str(VIDEO_PIPELINE), "--json"]
    cpu_before = _cpu_s()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    outside = time.perf_counter() - started
    cpu_after = _cpu_s()
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:])
        raise RuntimeError(f"straight-line run failed ({done.returncode}): {tail}")
    result: dict[str, Any] = json.loads(done.stdout)
    return {
        "wall_s": result["wall_s"],
        "process_wall_s": round(outside, 3),
        "cpu_s": round(cpu_after[1] - cpu_before[1], 3),
        "import_s": result["import_s"],
        "stages": result["stages"],
        "answer": _answer(result["final"]),
    }


def video(
    store: ObjectStore,
    *,
    video_path: str,
    query: str,
    profile: str = "default",
    clips: str = "parallel",
    repeat: int = 1,
) -> dict[str, Any]:
    """Alternate fave and straight-line runs ``repeat`` times each; figures are the medians."""
    fave_runs: list[dict[str, Any]] = []
    straight_runs: list[dict[str, Any]] = []
    for i in range(repeat):
        # Alternate which side goes first, so neither always gets the warmer page cache.
        if i % 2 == 0:
            straight_runs.append(video_straight_run(video_path, query, profile, clips))
            fave_runs.append(video_fave_run(video_path, query, profile, store))
        else:
            fave_runs.append(video_fave_run(video_path, query, profile, store))
            straight_runs.append(video_straight_run(video_path, query, profile, clips))

    def median(runs: list[dict[str, Any]], field: str) -> float:
        return round(float(statistics.median(float(r[field]) for r in runs)), 3)

    fave_wall, straight_wall = median(fave_runs, "wall_s"), median(straight_runs, "wall_s")
    fave_cpu, straight_cpu = median(fave_runs, "cpu_s"), median(straight_runs, "cpu_s")
    typical = sorted(fave_runs, key=lambda r: r["wall_s"])[len(fave_runs) // 2]
    typical_straight = sorted(straight_runs, key=lambda r: r["wall_s"])[len(straight_runs) // 2]
    return {
        "video": video_path,
        "query": query,
        "profile": profile,
        "clips": len(typical["answer"].get("clips", [])),
        "straight_clips_mode": clips,
        "repeat": repeat,
        "wall_s": fave_wall,
        "straight_wall_s": straight_wall,
        "ratio": round(fave_wall / straight_wall, 3),
        "cpu_s": fave_cpu,
        "straight_cpu_s": straight_cpu,
        "cpu_ratio": round(fave_cpu / straight_cpu, 3),
        "orchestration_s": median(fave_runs, "orchestration_s"),
        "same_answer": all(r["answer"] == straight_runs[0]["answer"] for r in fave_runs + straight_runs),
        "request_id": typical["request_id"],
        "stages": typical["stages"],
        "straight_stages": typical_straight["stages"],
        "cold_starts": typical["cold_starts"],
        "runs": [
            {"side": side, **{k: r[k] for k in ("wall_s", "cpu_s")}}
            for pair in zip(fave_runs, straight_runs, strict=True)
            for side, r in zip(("fave", "straight"), pair, strict=True)
        ],
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "store": store.uri,
    }


def _print_video(result: dict[str, Any]) -> None:
    print(
        f"video pipeline on {Path(result['video']).name} ({result['clips']} clips), query {result['query']!r}, "
        f"median of {result['repeat']}:"
    )
    print(
        f"  fave run      {result['wall_s']:7.2f} s wall  {result['cpu_s']:7.2f} s CPU  "
        f"({result['orchestration_s']:.2f} s in orchestrator steps)"
    )
    print(
        f"  straight-line {result['straight_wall_s']:7.2f} s wall  {result['straight_cpu_s']:7.2f} s CPU  "
        f"(one process, {result['straight_clips_mode']} clips)"
    )
    print(f"  ratio         {result['ratio']:7.3f} wall  {result['cpu_ratio']:7.3f} CPU")
    print(f"  same answer: {'yes' if result['same_answer'] else 'NO'}; cold starts: {result['cold_starts']}")
    header = f"{'stage':<11} {'fave: start':>11} {'span':>7} {'tasks':>5} {'busy':>7} {'max':>6}"
    print(f"  {header}   straight: busy   span")
    for name, row in result["stages"].items():
        other = result["straight_stages"].get(name, {})
        start = "-" if row["start_s"] is None else f"{row['start_s']:.2f}"
        span = "-" if row["span_s"] is None else f"{row['span_s']:.2f}"
        print(
            f"  {name:<11} {start:>11} {span:>7} {row['tasks']:>5} {row['busy_s']:7.2f} {row['max_task_s']:6.2f}"
            f"   {other.get('busy_s', 0.0):14.2f} {other.get('span_s', 0.0):6.2f}"
        )
    print(f"  machine: {result['cpus']} CPUs, load average {result['load_avg_1m']} when done")


def run_video_bench(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        print("fave: error: --repeat must be at least 1", file=sys.stderr)
        return 2
    video_path = Path(args.video or SAMPLE_VIDEO).expanduser()
    if not video_path.is_file():
        print(f"fave: error: no such file: {args.video}", file=sys.stderr)
        return 2
    if args.store == "moto":
        # The stage functions run in worker processes, which cannot reach an in-process moto.
        print("fave: error: bench video needs a DIR or s3:// store (in-process moto is not shared)", file=sys.stderr)
        return 2
    with _bench_store(args.store) as store:
        result = video(
            store,
            video_path=str(video_path.resolve()),
            query=args.query,
            profile=args.profile,
            clips=args.clips,
            repeat=args.repeat,
        )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_video(result)
    return 0


def run_workloads_bench(args: argparse.Namespace) -> int:
    from fave.cli.workloads import parse_only, run_workloads
    from fave.cli.workloads_table import print_report

    try:
        names = parse_only(args.only)
    except ValueError as exc:
        print(f"fave: error: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.scale <= 10:
        print("fave: error: --scale must be more than 0 and at most 10", file=sys.stderr)
        return 2
    try:
        report = run_workloads(names, args.scale)
    except RuntimeError as exc:  # a workload's request did not end as it must (W4's first run must fail...)
        print(f"fave: error: bench workloads: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def run_startup_bench(args: argparse.Namespace) -> int:
    from fave.cli.startup import print_startup, startup

    if args.repeat < 1:
        print("fave: error: --repeat must be at least 1", file=sys.stderr)
        return 2
    result = startup(args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_startup(result)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    if args.bench == "video":
        return run_video_bench(args)
    if args.bench == "startup":
        return run_startup_bench(args)
    if args.bench == "incremental":
        from fave.cli.bench_incremental import run_incremental_bench

        return run_incremental_bench(args)
    if args.bench == "workloads":
        return run_workloads_bench(args)
    if args.bench == "cost":
        # A separate process: the fave command never imports the Lambda entry points (fave.app).
        command = [sys.executable, str(COST_SCRIPT), "--items", str(args.items), "--arrival", args.arrival]
        command += ["--invoke-latency-ms", str(args.invoke_latency_ms), "--batch-size", str(args.batch_size)]
        return subprocess.run([*command, *(["--json"] * args.json)], check=False, cwd=ROOT).returncode
    if args.bench == "api":
        if args.requests < 1:
            print("fave: error: --requests must be at least 1", file=sys.stderr)
            return 2
        # A separate process: the fave command never imports the Lambda entry points (fave.app).
        command = [sys.executable, str(API_SCRIPT), "--requests", str(args.requests), *(["--json"] * args.json)]
        return subprocess.run(command, check=False, cwd=ROOT).returncode
    if args.bench != "fanout":
        print(f"fave: error: unknown benchmark {args.bench!r}", file=sys.stderr)
        return 2
    if args.items < 1:
        print("fave: error: --items must be at least 1", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("fave: error: --repeat must be at least 1", file=sys.stderr)
        return 2
    result = fanout_repeated(args.items, args.store, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"fan-out of {result['items']} tasks: {result['wall_s']:.3f} s wall "
            f"({result['orchestration_s']:.3f} s in orchestrator steps), {result['tasks_per_s']:.0f} tasks/s, "
            f"{result['requests_per_task']:.3f} store requests/task, {result['bytes_per_task']:.0f} B/task"
        )
        if "runs" in result:
            runs = result["runs"]
            print(
                f"  median of {len(runs['cpu_per_task_us'])} runs by CPU/task; all runs: "
                f"{', '.join(f'{v:.0f}' for v in runs['cpu_per_task_us'])} us/task, "
                f"{', '.join(f'{v:.2f}' for v in runs['wall_s'])} s wall"
            )
        base = result["baseline"]
        print(
            f"  CPU {result['cpu_per_task_us']:.0f} us/task (driver thread {result['driver_cpu_per_task_us']:.0f}), "
            f"peak RSS {result['peak_rss_mb']:.0f} MB; bare thread pool, same handler: "
            f"{base['cpu_per_task_us']:.0f} us/task, {base['wall_s']:.3f} s wall "
            f"({result['cpu_vs_baseline']}x CPU); load average {result['load_avg_1m']} on {result['cpus']} CPUs"
        )
    return 0
