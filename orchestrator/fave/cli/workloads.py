"""``fave bench workloads``: the peer workloads (issue 10), each against a same-run baseline without fave.

Every workload runs its pipeline (``benchmarks/workloads/*.yaml``, one shared template.yaml) through the real
local driver, as ``fave run`` does (``local_orchestrator``, then ``create`` / ``Start`` / ``drive`` under the
request's lease; ``resume`` for W4), on a temporary local store. Its baseline calls the same handler modules
without fave (``fave.cli.baselines``), in the same process, right before it. Figures are measured, never
asserted; each result says which of its figures the ratio compares (``metric``).

* W1 chain: three synchronous no-op stages, ``chain_repeats`` requests in a row on one warm orchestrator
  against the three handler calls in a loop; plus one ``fave run`` process against a Python process making the
  three calls.
* W2 fan-out: plan -> N no-op asynchronous tasks -> reduce, N = 100, 1,000, 10,000, against a bare
  ``ThreadPoolExecutor`` making the N calls (with as many threads as the runtime gives the function).
* W3: N tasks sleeping ``sleep_ms`` each, ``max_concurrency`` 32, in worker processes and in thread isolation,
  against ``ThreadPoolExecutor(32)``; and once more in worker processes with the runtime's core gate off
  (``max_environments``, which ``fave run`` does not set), to show what the gate costs an I/O-bound stage.
* W4: N tasks, items ``i % 10 == 0`` fail and retries are off, so the request FAILS; then ``resume``. Twice: all
  items dispatched at once, failing their first attempt; and 32 at a time, failing while a bug is there that is
  fixed before the resume. Counts which item bodies ran in each run (the function's ledger file), against a
  thread pool running what an ideal resume would (each item without a successful body in the first run, once).
* W4R: the same items with one immediate retry (completes in-run), against the same run without failures.

CPU per task (W2): ``orchestrator_cpu_per_task_us`` is this process's CPU time during the run (every thread: the
driver, the local runtime's slot threads, the no-op bodies) minus what the function bodies alone take (the same
calls one after another in one thread, measured in the same run), divided by N. That is everything fave adds on
top of running the functions, the local Lambda emulator's share included (payload JSON, destination envelopes,
thread hand-offs), which on AWS the Lambda service would spend instead. ``driver_cpu_per_task_us`` is the part
spent in the driving thread alone (``time.thread_time``: engine decisions, persistence, dispatch), the
orchestrator function's own share. ``cpu_ratio`` compares the whole process's CPU with the bare thread pool's.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fave_shared.store import ObjectStore

from fave.cli import baselines
from fave.cli.measured import Measured, driver, measure, measure_one, resume, start_new
from fave.cli.measured import reported_s as _s
from fave.local.orchestrator import open_any_store
from fave.local.template import load_template

ROOT = Path(__file__).resolve().parents[3]
WORKLOADS_DIR = ROOT / "benchmarks" / "workloads"
FUNCTIONS_DIR = WORKLOADS_DIR / "functions"
W1_PIPELINE = WORKLOADS_DIR / "w1-chain.yaml"
W2_PIPELINE = WORKLOADS_DIR / "w2-fanout.yaml"
W4R_PIPELINE = WORKLOADS_DIR / "w4r-fail-retry.yaml"
CHAIN = ("a", "b", "c")

NAMES = ("W1", "W2", "W3", "W4", "W4R")


@dataclass(frozen=True)
class Sizes:
    """The workloads' sizes at a ``--scale`` (1 = the issue's figures)."""

    chain_repeats: int = 50
    fanout: tuple[int, ...] = (100, 1_000, 10_000)
    sleep_items: int = 200
    sleep_ms: int = 50
    max_concurrency: int = 32  # fixed in w3-*.yaml, w4-*-cap32.yaml and the template's ReservedConcurrentExecutions
    fail_items: int = 1_000
    fail_every: int = 10

    @classmethod
    def at(cls, scale: float) -> Sizes:
        def scaled(n: int) -> int:
            return max(1, round(n * scale))

        full = cls()
        return cls(
            chain_repeats=scaled(full.chain_repeats),
            fanout=tuple(scaled(n) for n in full.fanout),
            sleep_items=scaled(full.sleep_items),
            fail_items=max(full.fail_every, scaled(full.fail_items)),
        )


def _expect(run: Measured, status: str, what: str) -> None:
    if run.status != status:
        raise RuntimeError(f"{what}: request {run.request_id} ended {run.status}, not {status}: {run.failure}")


def _ratio(fave: float, baseline: float) -> float | None:
    """fave / baseline, from the figures as reported (rounded), so that a reader gets the same."""
    return round(fave / baseline, 2) if baseline > 0 else None


def _pool_limit(function: str) -> int:
    """How many of ``function``'s invocations the local runtime runs at once (so the baseline gets as many)."""
    spec = load_template(WORKLOADS_DIR / "template.yaml").functions[function]
    return spec.reserved_concurrency or os.cpu_count() or 1


# ---- the workloads ------------------------------------------------------------------------------------


def w1_chain(sizes: Sizes, store: ObjectStore) -> list[dict[str, Any]]:
    request = {"video_uri": None}
    step = baselines.load_handler(FUNCTIONS_DIR, "step")
    expected = baselines.chain(step, CHAIN, store.uri, request)
    loop = baselines.timed(
        lambda: [baselines.chain(step, CHAIN, store.uri, request) for _ in range(sizes.chain_repeats)]
    )
    runs: list[Measured] = []
    with driver(W1_PIPELINE, store) as (orchestrator, counting):
        for _ in range(sizes.chain_repeats):
            run = measure_one(orchestrator, counting, start_new(request))
            _expect(run, "COMPLETED", "W1")
            runs.append(run)
    walls = [r.wall_s for r in runs]
    per_request = statistics.median(walls)
    base_per_request = loop.wall_s / sizes.chain_repeats
    fave_ms, base_ms = round(per_request * 1000, 6), round(base_per_request * 1000, 6)
    process, base_process = _fave_run_process(store), _python_process()
    same = all(r.final == expected for r in runs) and process["final"] == base_process["final"] == expected
    return [
        {
            "name": "W1",
            "case": f"chain of 3 sync stages x{sizes.chain_repeats}",
            "metric": "per_request_ms",
            "fave": {
                "requests": len(runs),
                "per_request_ms": fave_ms,
                "first_request_ms": round(walls[0] * 1000, 3),
                "max_request_ms": round(max(walls) * 1000, 3),
                "overhead_ms": round((per_request - base_per_request) * 1000, 3),
                "driver_cpu_per_request_ms": round(statistics.median(r.driver_cpu_s for r in runs) * 1000, 3),
                "store_requests_per_request": round(statistics.mean(r.store_requests for r in runs), 1),
                "fave_run_process_wall_s": process["wall_s"],
            },
            "baseline": {
                "kind": "the three handler calls in a loop; a python process making them once",
                "per_request_ms": base_ms,
                "process_wall_s": base_process["wall_s"],
            },
            "ratio": _ratio(fave_ms, base_ms),
            "process_ratio": _ratio(process["wall_s"], base_process["wall_s"]),
            "results_equal": same,
            "result": expected,
        }
    ]


def _fave_run_process(store: ObjectStore) -> dict[str, Any]:
    """One ``fave run`` of the chain as a process, timed from outside (interpreter start and imports included)."""
    # `fave run` wants an existing SOURCE (it becomes video_uri); the chain ignores it.
    command = [sys.executable, "-m", "fave.cli.main", "run", str(W1_PIPELINE), "--pipeline", str(W1_PIPELINE)]
    command += ["--store", store.uri, "--faults", "none", "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"W1: fave run exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return {"wall_s": round(wall, 3), "final": json.loads(done.stdout)["final"]}


_CHAIN_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("step", sys.argv[1])
step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step)
needs, out = {}, None
for stage in ("a", "b", "c"):
    event = {"fave": 1, "task": {"request_id": "baseline", "stage": stage, "item": None, "attempt": 1},
             "store": "", "input": {"request": {}, "needs": needs, "config": {}}}
    out = step.handler(event, None)
    needs = {stage: out}
print(json.dumps(out))
"""


def _python_process() -> dict[str, Any]:
    """W1's baseline process: a Python interpreter that loads the step handler and makes the three calls."""
    command = [sys.executable, "-c", _CHAIN_SCRIPT, str(FUNCTIONS_DIR / "step.py")]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return {"wall_s": round(time.perf_counter() - started, 3), "final": json.loads(done.stdout)}


def w2_fanout(sizes: Sizes, store: ObjectStore) -> list[dict[str, Any]]:
    workers = _pool_limit("NoopFunction")
    results = []
    for n in sizes.fanout:
        request = {"items": n, "video_uri": None}
        same_work = functools.partial(baselines.fan_out, FUNCTIONS_DIR, "noop", store.uri, request)
        bodies = baselines.timed(functools.partial(same_work, 0))  # the function bodies alone, one after another
        base = baselines.timed(functools.partial(same_work, workers))
        run = measure(W2_PIPELINE, store, start_new(request))
        _expect(run, "COMPLETED", f"W2 N={n}")
        expected = {"count": n, "sum": n * (n - 1) // 2}
        results.append(
            {
                "name": "W2",
                "case": f"N={n}",
                "metric": "wall_s",
                "fave": {
                    **run.figures(),
                    "items": n,
                    "tasks_per_s": round(n / run.wall_s, 1),
                    "cpu_per_task_us": round(run.cpu_s / n * 1e6, 1),
                    "orchestrator_cpu_per_task_us": round((run.cpu_s - bodies.cpu_s) / n * 1e6, 1),
                    "driver_cpu_per_task_us": round(run.driver_cpu_s / n * 1e6, 1),
                    "requests_per_task": round(run.store_requests / n, 4),
                    "bytes_per_task": round(run.store_bytes / n, 1),
                },
                "baseline": {
                    "kind": f"ThreadPoolExecutor({workers}) making the same N calls (plus plan and reduce)",
                    "wall_s": _s(base.wall_s),
                    "cpu_s": _s(base.cpu_s),
                    "cpu_per_task_us": round(base.cpu_s / n * 1e6, 1),
                    "bodies_cpu_per_task_us": round(bodies.cpu_s / n * 1e6, 2),
                },
                "ratio": _ratio(_s(run.wall_s), _s(base.wall_s)),
                "cpu_ratio": _ratio(_s(run.cpu_s), _s(base.cpu_s)),
                "results_equal": run.final == base.value == expected,
            }
        )
    return results


@dataclass(frozen=True)
class SleepCase:
    """One way W3 runs: the function's isolation, and whether the runtime's core gate applies."""

    label: str
    isolation: str
    gated: bool = True

    @property
    def pipeline(self) -> Path:
        return WORKLOADS_DIR / f"w3-sleep-{self.isolation}.yaml"

    @property
    def function(self) -> str:
        return f"Sleep{self.isolation.capitalize()}Function"


W3_CASES = (
    SleepCase("process", "process"),
    SleepCase("thread", "thread"),
    # What `fave run` does not do: an explicit max_environments turns the core gate off, so every one of the
    # 32 environments the template allows starts (a cold start each) and sleeps at once.
    SleepCase("process, no core gate", "process", gated=False),
)


def w3_sleep(sizes: Sizes, store: ObjectStore) -> list[dict[str, Any]]:
    request = {"items": sizes.sleep_items, "sleep_ms": sizes.sleep_ms, "video_uri": None}
    workers = sizes.max_concurrency
    base = baselines.timed(lambda: baselines.fan_out(FUNCTIONS_DIR, "sleep", store.uri, request, workers))
    ideal = math.ceil(sizes.sleep_items / workers) * sizes.sleep_ms / 1000
    results = []
    for case in W3_CASES:
        options = None if case.gated else {"max_environments": sizes.max_concurrency}
        run = measure(case.pipeline, store, start_new(request), runtime_options=options)
        _expect(run, "COMPLETED", f"W3 {case.label}")
        environments = run.functions.get(case.function, {}).get("cold_starts", 0)
        results.append(
            {
                "name": "W3",
                "case": f"{sizes.sleep_items} x {sizes.sleep_ms} ms, {case.label}",
                "metric": "wall_s",
                "fave": {
                    **run.figures(),
                    "isolation": case.isolation,
                    "core_gate": case.gated,
                    "environments": environments if case.isolation == "process" else None,
                    "max_concurrency": sizes.max_concurrency,
                },
                "baseline": {
                    "kind": f"ThreadPoolExecutor({workers}) making the same calls",
                    "wall_s": _s(base.wall_s),
                    "ideal_wall_s": round(ideal, 3),
                },
                "ratio": _ratio(_s(run.wall_s), _s(base.wall_s)),
                "results_equal": run.final == base.value,
            }
        )
    return results


def _ledger(path: Path) -> list[tuple[int, int, bool]]:
    """The flaky function's executions so far: (item, attempt, succeeded)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        item, attempt, outcome = line.split()
        rows.append((int(item), int(attempt), outcome == "ok"))
    return rows


@dataclass(frozen=True)
class FailCase:
    """One way W4 fails: how its pipeline dispatches and what makes its failing items fail."""

    label: str
    pipeline: Path
    fixed_before_resume: bool  # the items fail while a file exists (a bug), removed before the resume


W4_CASES = (
    # The case: every item dispatched at once (attempt 1), the failing ones fail that attempt only.
    FailCase("all dispatched at once, fail their first attempt", WORKLOADS_DIR / "w4-fail-resume.yaml", False),
    # The same items 32 at a time. Failing on a first attempt would fail the resume too (items the first run
    # never reached get their first attempt then), so these fail while a bug is there, fixed before the resume.
    FailCase("max_concurrency 32, bug fixed before resume", WORKLOADS_DIR / "w4-fail-resume-cap32.yaml", True),
)


def w4_resume(sizes: Sizes, store: ObjectStore, scratch: Path) -> list[dict[str, Any]]:
    return [_w4_case(case, i, sizes, store, scratch) for i, case in enumerate(W4_CASES)]


def _w4_case(case: FailCase, number: int, sizes: Sizes, store: ObjectStore, scratch: Path) -> dict[str, Any]:
    n, every = sizes.fail_items, sizes.fail_every
    ledger, bug = scratch / f"w4-{number}-ledger.txt", scratch / f"w4-{number}-bug"
    request: dict[str, Any] = {"items": n, "fail_every": every, "ledger": str(ledger), "video_uri": None}
    if case.fixed_before_resume:
        bug.touch()
        request["fail_while"] = str(bug)
    failing = [i for i in range(n) if i % every == 0]
    first = measure(case.pipeline, store, start_new(request))
    _expect(first, "FAILED", f"W4 ({case.label}) first run")
    first_rows = _ledger(ledger)
    bug.unlink(missing_ok=True)
    again = measure(case.pipeline, store, resume(first.request_id))
    _expect(again, "COMPLETED", f"W4 ({case.label}) resume")
    resume_rows = _ledger(ledger)[len(first_rows) :]
    ran_first = {item for item, _, _ in first_rows}
    succeeded_first = {item for item, _, ok in first_rows if ok}
    ran_on_resume = Counter(item for item, _, _ in resume_rows)
    # What an ideal resume runs: every item without a successful body in the first run, once.
    ideal = [i for i in range(n) if i not in succeeded_first]
    flaky = baselines.load_handler(FUNCTIONS_DIR, "flaky")
    fixed = {"items": n, "fail_every": every}
    events = [baselines.task_event(store.uri, "work", fixed, item=i, attempt=2) for i in ideal]
    base = baselines.timed(lambda: baselines.pool_map(flaky, events, sizes.max_concurrency))
    return {
        "name": "W4",
        "case": f"{n} items, {len(failing)} fail, no retry; {case.label}; resume",
        "metric": "resume_wall_s",
        "fave": {
            "request_id": first.request_id,
            "first_run_status": first.status,
            "first_run_wall_s": _s(first.wall_s),
            "first_run_bodies": len(first_rows),
            "first_run_failed_bodies": sum(1 for _, _, ok in first_rows if not ok),
            "status": again.status,
            "resume_wall_s": _s(again.wall_s),
            "resume_bodies": sum(ran_on_resume.values()),
            "ideal_resume_bodies": len(ideal),
            "failing_items": len(failing),
            "reran_items": len(ran_first & set(ran_on_resume)),
            "reran_after_success": len(succeeded_first & set(ran_on_resume)),
            "first_run_on_resume": len(set(ran_on_resume) - ran_first),
            "items_run_twice_on_resume": sum(1 for c in ran_on_resume.values() if c > 1),
            "max_concurrency": sizes.max_concurrency if case.fixed_before_resume else None,
        },
        "baseline": {
            "kind": f"ThreadPoolExecutor({sizes.max_concurrency}) running what an ideal resume runs (once each)",
            "wall_s": _s(base.wall_s),
            "bodies": len(ideal),
        },
        "ratio": _ratio(_s(again.wall_s), _s(base.wall_s)),
        "results_equal": again.final == {"count": n, "sum": n * (n - 1) // 2},
    }


def w4r_retry(sizes: Sizes, store: ObjectStore, scratch: Path) -> list[dict[str, Any]]:
    n, every = sizes.fail_items, sizes.fail_every
    ledgers = {name: scratch / f"w4r-{name}.txt" for name in ("clean", "flaky")}
    clean = measure(W4R_PIPELINE, store, start_new({"items": n, "fail_every": 0, "ledger": str(ledgers["clean"])}))
    _expect(clean, "COMPLETED", "W4R without failures")
    flaky = measure(W4R_PIPELINE, store, start_new({"items": n, "fail_every": every, "ledger": str(ledgers["flaky"])}))
    _expect(flaky, "COMPLETED", "W4R with failures")
    base = baselines.timed(
        lambda: baselines.fan_out(
            FUNCTIONS_DIR, "flaky", store.uri, {"items": n, "fail_every": every}, sizes.max_concurrency, retries=1
        )
    )
    expected = {"count": n, "sum": n * (n - 1) // 2}
    return [
        {
            "name": "W4R",
            "case": f"{n} items, {math.ceil(n / every)} fail once, retried in-run",
            "metric": "wall_s",
            "fave": {
                **flaky.figures(),
                "bodies": len(_ledger(ledgers["flaky"])),
                "expected_bodies": n + math.ceil(n / every),
            },
            "baseline": {
                "kind": "the same fave run without failures",
                "wall_s": _s(clean.wall_s),
                "bodies": len(_ledger(ledgers["clean"])),
                "thread_pool_wall_s": _s(base.wall_s),
            },
            "ratio": _ratio(_s(flaky.wall_s), _s(clean.wall_s)),
            "results_equal": flaky.final == clean.final == base.value == expected,
        }
    ]


# ---- the session --------------------------------------------------------------------------------------


def parse_only(text: str | None) -> list[str]:
    """``--only W1,W4`` -> ["W1", "W4"] (any case, in the order of ``NAMES``); raises ValueError naming the
    unknown ones."""
    if text is None:
        return list(NAMES)
    wanted = {part.strip().upper() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(NAMES))
    if unknown or not wanted:
        named = ", ".join(unknown) if unknown else "(none)"
        raise ValueError(f"--only: unknown workload {named} (known: {', '.join(NAMES)})")
    return [name for name in NAMES if name in wanted]


def warm_up(store: ObjectStore) -> None:
    """One small unmeasured fan-out, so the first measured workload does not pay this process's imports."""
    _expect(measure(W2_PIPELINE, store, start_new({"items": 10, "video_uri": None})), "COMPLETED", "warm-up")


def run_workloads(names: list[str], scale: float = 1.0) -> dict[str, Any]:
    """Run the named workloads on a temporary local store; the report ``--json`` prints."""
    sizes = Sizes.at(scale)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fave-workloads-") as tmp:
        store = open_any_store(str(Path(tmp) / "store"))
        scratch = Path(tmp)
        warm_up(store)
        for name in names:
            if name == "W1":
                results += w1_chain(sizes, store)
            elif name == "W2":
                results += w2_fanout(sizes, store)
            elif name == "W3":
                results += w3_sleep(sizes, store)
            elif name == "W4":
                results += w4_resume(sizes, store, scratch)
            elif name == "W4R":
                results += w4r_retry(sizes, store, scratch)
    return {
        "scale": scale,
        "sizes": {
            "chain_repeats": sizes.chain_repeats,
            "fanout": list(sizes.fanout),
            "sleep_items": sizes.sleep_items,
            "sleep_ms": sizes.sleep_ms,
            "max_concurrency": sizes.max_concurrency,
            "fail_items": sizes.fail_items,
            "fail_every": sizes.fail_every,
        },
        "cpus": os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "total_s": round(time.perf_counter() - started, 2),
        "workloads": results,
    }
