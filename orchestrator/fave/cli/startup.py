"""``fave bench startup``: what a short command costs from exec to exit, against the bare interpreter in the
same run.

Runs, in turn, ``repeat`` times each: the interpreter alone (``python -c pass``), ``fave --help``, ``fave run``
of ``benchmarks/chain/pipeline.yaml`` (three no-op synchronous stages in thread isolation, on a local store in a
temporary directory), and the same with ``FAVE_PARSE_CACHE=0``: the first run of a pipeline, which validates it
(``fave.local.parsed``; the other runs take it from the cache). For each: the process wall time (exec to exit,
what a person waits for) and its CPU time (user + system of the child). Then ``-X importtime`` of the same
``fave run``: how much of it is spent importing. Figures are medians.

Bytecode: the children keep their bytecode cache under a temporary ``PYTHONPYCACHEPREFIX`` (warmed by one run
first), so the figures are those of an installed fave whatever ``PYTHONDONTWRITEBYTECODE`` says here, and
nothing is written in the source tree; the parse cache too (``FAVE_CACHE_DIR``), not the user's.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
CHAIN_PIPELINE = ROOT / "benchmarks" / "chain" / "pipeline.yaml"
TARGET_RUN_S = 0.25
"""Issue 10's floor for ``fave run`` of this chain (process wall)."""

_TOP_LEVEL_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| \S")


def _fave_command() -> list[str]:
    """The ``fave`` console script of this interpreter's environment, else ``python -m fave.cli``."""
    script = Path(sys.executable).with_name("fave")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fave.cli"]


def _child_env(tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "FAVE_PARSE_CACHE")}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tmp, "pycache"))
    env["FAVE_CACHE_DIR"] = str(Path(tmp, "cache"))
    return env


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(process wall s, child CPU s, the finished process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, done


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:])
        raise RuntimeError(f"{what} exited {done.returncode}: {tail}")


def import_seconds(importtime_stderr: str) -> float:
    """Seconds spent importing, from ``-X importtime`` output: the cumulative times of top-level imports."""
    total_us = 0
    for line in importtime_stderr.splitlines():
        match = _TOP_LEVEL_IMPORT.match(line)
        if match:
            total_us += int(match.group(1))
    return total_us / 1e6


def startup(repeat: int = 11) -> dict[str, Any]:
    """Measure (see the module docs); raises ``RuntimeError`` if a command fails."""
    fave = _fave_command()
    with tempfile.TemporaryDirectory(prefix="fave-startup-") as tmp:
        env = _child_env(tmp)
        uncached = {**env, "FAVE_PARSE_CACHE": "0"}
        store = str(Path(tmp, "store"))
        run = [*fave, "run", str(CHAIN_PIPELINE), "--pipeline", str(CHAIN_PIPELINE), "--store", store, "--json"]
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "help": [*fave, "--help"],
            "run": run,
            "first": run,
        }
        _check(_timed(run, env)[2], "fave run")  # writes the bytecode cache and the parse cache
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name, command in commands.items():
                wall, cpu, done = _timed(command, uncached if name == "first" else env)
                _check(done, name)
                walls[name].append(wall)
                cpus[name].append(cpu)
        final = json.loads(done.stdout)  # the last fave run's status document (uncached: a full one)
        if final.get("status") != "COMPLETED":
            raise RuntimeError(f"fave run of the chain ended {final.get('status')}")
        imports = []
        for _ in range(max(1, repeat // 2)):
            _, _, done = _timed([sys.executable, "-X", "importtime", "-m", "fave.cli", *run[len(fave) :]], env)
            _check(done, "fave run -X importtime")
            imports.append(import_seconds(done.stderr))

    def median(values: list[float]) -> float:
        return round(float(statistics.median(values)), 4)

    return {
        "repeat": repeat,
        "pipeline": str(CHAIN_PIPELINE.relative_to(ROOT)),
        "python_s": median(walls["python"]),
        "help_s": median(walls["help"]),
        "run_s": median(walls["run"]),
        "run_min_s": round(min(walls["run"]), 4),
        "run_max_s": round(max(walls["run"]), 4),
        "run_cpu_s": median(cpus["run"]),
        "first_run_s": median(walls["first"]),
        "first_run_cpu_s": median(cpus["first"]),
        "help_cpu_s": median(cpus["help"]),
        "python_cpu_s": median(cpus["python"]),
        "run_import_s": median(imports),
        "target_run_s": TARGET_RUN_S,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def print_startup(result: dict[str, Any]) -> None:
    print(f"start-up, median of {result['repeat']} (process wall, exec to exit; CPU = user + system):")
    print(f"  python -c pass {result['python_s']:7.3f} s wall  {result['python_cpu_s']:6.3f} s CPU")
    print(f"  fave --help    {result['help_s']:7.3f} s wall  {result['help_cpu_s']:6.3f} s CPU")
    print(
        f"  fave run       {result['run_s']:7.3f} s wall  {result['run_cpu_s']:6.3f} s CPU  "
        f"({result['run_min_s']:.3f}-{result['run_max_s']:.3f} s; {result['run_import_s']:.3f} s importing; "
        f"{result['pipeline']}, target {result['target_run_s']} s)"
    )
    print(
        f"  first fave run {result['first_run_s']:7.3f} s wall  {result['first_run_cpu_s']:6.3f} s CPU  "
        "(FAVE_PARSE_CACHE=0: the pipeline validated, as the first run of a new or edited pipeline does)"
    )
    print(f"  machine: {result['cpus']} CPUs, load average {result['load_avg_1m']} when done")
