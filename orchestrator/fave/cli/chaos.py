"""``fave chaos``: run a pipeline again and again under injected faults, and check that nothing broke.

One fault-free reference run, then ``runs`` runs under the faults (``fave.local.faults``). Every run is driven the
way a user drives one: a ``fave resume`` process (a new orchestrator and local runtime on the same store),
started again after each injected crash until the request ends. The crash is a real process death
(``os._exit`` at the effect point): no cleanup runs, the request's lease is left behind naming the dead pid,
and the next driver on this host takes it over at once, exactly as after a ``kill -9``.

Invariants, checked on the store after every run (and ``counts`` also after every crash):

* ``completed``: the request ended COMPLETED;
* ``counts``: every stage's counts equal a count over its tasks, and its total the number of its tasks (a
  completion applied twice, e.g. a duplicate delivery counted again, breaks it);
* ``settled``: nothing is left INIT, PENDING or RUNNING (request, stages, tasks);
* ``final``: final.json equals the reference run's, once the fields named by ``ignore_fields`` are dropped at
  any depth (for outputs with fields that legitimately differ between runs: pids, attempt numbers, times);
* ``ended``: each driver process either finished or crashed by injection (no other exit status, no hang),
  and the request ended within ``max_resumes`` resumes.

Each driver gets its own seed, derived from the base seed, the run and the resume (a resumed driver must
not replay the crash that killed the previous one), so a whole session is reproducible from its base seed
as far as thread timing allows.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fave_shared.errors import NotFoundError
from fave_shared.store import ObjectStore

from fave.core.dag import Pipeline
from fave.keys import final_key, state_key
from fave.local.faults import CRASH_EXIT_CODE, ENV_VAR, KINDS, FaultSpec, parse_report
from fave.persistence import parse_state, read_stage_tasks
from fave.service import Orchestrator

__all__ = ["ChaosReport", "RunReport", "Violation", "check_request", "derive_seed", "run_chaos", "strip_fields"]

INVARIANTS = ("completed", "counts", "settled", "final", "ended")
_UNSETTLED = ("INIT", "PENDING", "RUNNING")
_TASK_COUNTS = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str


@dataclass
class RunReport:
    run: int
    """0 is the fault-free reference run."""
    request_id: str
    seeds: list[int] = field(default_factory=list)
    status: str = ""
    resumes: int = 0
    crashes: list[str] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    wall_s: float = 0.0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "request_id": self.request_id,
            "seeds": self.seeds,
            "status": self.status,
            "resumes": self.resumes,
            "crashes": self.crashes,
            "injected": self.injected,
            "wall_s": round(self.wall_s, 3),
            "ok": self.ok,
            "violations": [{"invariant": v.invariant, "detail": v.detail} for v in self.violations],
        }


@dataclass
class ChaosReport:
    pipeline: str
    faults: str
    seed: int
    store: str
    ignore_fields: list[str] = field(default_factory=list)
    reference: RunReport | None = None
    runs: list[RunReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reference is not None and self.reference.ok and all(r.ok for r in self.runs)

    def failures(self) -> list[str]:
        """One line per broken invariant: ``run 2: final: ...`` (the reference run is ``reference``)."""
        lines = []
        for report in ([self.reference] if self.reference else []) + self.runs:
            name = "reference run" if report.run == 0 else f"run {report.run}"
            lines += [f"{name}: {v.invariant}: {v.detail}" for v in report.violations]
        return lines

    def to_json(self) -> dict[str, Any]:
        totals = dict.fromkeys(KINDS, 0)
        for report in self.runs:
            for kind, n in report.injected.items():
                totals[kind] += n
        return {
            "pipeline": self.pipeline,
            "faults": self.faults,
            "seed": self.seed,
            "store": self.store,
            "ignore_fields": self.ignore_fields,
            "ok": self.ok,
            "reference": self.reference.to_json() if self.reference else None,
            "runs": [r.to_json() for r in self.runs],
            "injected": totals,
            "resumes": sum(r.resumes for r in self.runs),
            "failures": self.failures(),
        }


def derive_seed(base: int, run: int, attempt: int) -> int:
    """The seed of one driver process of a session (distinct per run and per resume)."""
    digest = hashlib.blake2b(f"{base}/{run}/{attempt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 2**31


# ---- invariants ---------------------------------------------------------------------------------------


def strip_fields(value: Any, names: Sequence[str]) -> Any:
    """``value`` without the dict keys in ``names``, at any depth."""
    if isinstance(value, dict):
        return {k: strip_fields(v, names) for k, v in value.items() if k not in names}
    if isinstance(value, list):
        return [strip_fields(v, names) for v in value]
    return value


def first_difference(a: Any, b: Any, path: str = "final") -> str | None:
    """Where two JSON values first differ (``final.clips[2].end_s: 4.9 != 5.0``), or None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}: {'missing' if key not in a else 'present'} here, " + (
                    "present in the reference" if key not in a else "missing in the reference"
                )
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} elements, the reference has {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if a != b:
        return f"{path}: {_short(a)} != reference {_short(b)}"
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_counts(store: ObjectStore, request_id: str) -> list[Violation]:
    """``counts``: every stage's counts equal a count over its committed tasks."""
    doc = parse_state(request_id, store.get(state_key(request_id)).data)
    found: list[Violation] = []
    for name, stage in doc.stages.items():
        tasks = read_stage_tasks(store, request_id, name)
        counted = Counter(task.status.lower() for task in tasks.values())
        for status in _TASK_COUNTS:
            if getattr(stage, status) != counted.get(status, 0):
                found.append(
                    Violation(
                        "counts",
                        f"stage {name}: {status} is {getattr(stage, status)} but "
                        f"{counted.get(status, 0)} of its tasks are {status.upper()}",
                    )
                )
        if stage.total is not None and tasks and stage.total != len(tasks):
            found.append(Violation("counts", f"stage {name}: total is {stage.total} but it has {len(tasks)} tasks"))
    return found


def check_request(
    store: ObjectStore, request_id: str, reference_final: Any = None, ignore_fields: Sequence[str] = ()
) -> list[Violation]:
    """Every invariant of an ended run but ``ended`` (see the module docs); ``reference_final`` None skips
    ``final``."""
    doc = parse_state(request_id, store.get(state_key(request_id)).data)
    found: list[Violation] = []
    if doc.status != "COMPLETED":
        reason = f": {doc.failure.reason}" if doc.failure else ""
        found.append(Violation("completed", f"request {request_id} is {doc.status}{reason}"))
    found += check_counts(store, request_id)
    unsettled = [f"request {doc.status}"] if doc.status in _UNSETTLED else []
    for name, stage in doc.stages.items():
        if doc.status == "COMPLETED" and stage.status in _UNSETTLED:
            unsettled.append(f"stage {name} {stage.status}")
        left = [i for i, t in read_stage_tasks(store, request_id, name).items() if t.status in _UNSETTLED]
        if left and doc.status not in _UNSETTLED:
            shown = ", ".join(map(str, left[:5])) + (" ..." if len(left) > 5 else "")
            unsettled.append(f"stage {name} task(s) {shown} not finished")
    if unsettled:
        found.append(Violation("settled", "; ".join(unsettled)))
    if reference_final is not None and doc.status == "COMPLETED":
        try:
            final = json.loads(store.get(final_key(request_id)).data)
        except NotFoundError:
            found.append(Violation("final", f"request {request_id} is COMPLETED without final.json"))
        else:
            diff = first_difference(strip_fields(final, ignore_fields), strip_fields(reference_final, ignore_fields))
            if diff:
                found.append(Violation("final", diff))
    return found


# ---- running ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverExit:
    code: int | None
    """None: killed after ``timeout_s``."""
    stderr: str

    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"


def run_driver(command: list[str], env: Mapping[str, str], timeout_s: float) -> DriverExit:
    """Run one ``fave resume`` process to its end (or kill it after ``timeout_s``).

    Its output goes to a file, not a pipe: its local Lambda environments inherit the descriptors and may
    outlive it for a moment after a crash; waiting for them to close a pipe would wait for them too."""
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=dict(env), stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            code: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        err.seek(0)
        return DriverExit(code, err.read().decode(errors="replace"))


Driver = Callable[[list[str], Mapping[str, str], float], DriverExit]


class Chaos:
    """One chaos session on one store (see the module docs)."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: ObjectStore,
        spec: FaultSpec,
        *,
        request_input: Mapping[str, Any],
        ignore_fields: Sequence[str] = (),
        max_resumes: int = 50,
        driver_timeout_s: float = 600.0,
        driver: Driver = run_driver,
        on_run: Callable[[RunReport], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.spec = spec
        self.seed = spec.seed if spec.seed is not None else int.from_bytes(os.urandom(4), "big") % 2**31
        self.request_input = dict(request_input)
        self.ignore_fields = list(ignore_fields)
        self.max_resumes = max_resumes
        self.driver_timeout_s = driver_timeout_s
        self.driver = driver
        self.on_run = on_run
        self.env = {k: v for k, v in os.environ.items() if k != ENV_VAR}

    def run(self, runs: int) -> ChaosReport:
        faults = str(self.spec.with_seed(self.seed))
        report = ChaosReport(str(self.pipeline.path), faults, self.seed, self.store.uri, self.ignore_fields)
        report.reference = self._one(0)
        self._report(report.reference)
        if not report.reference.ok:
            return report  # nothing to compare with
        reference_final = json.loads(self.store.get(final_key(report.reference.request_id)).data)
        for run in range(1, runs + 1):
            result = self._one(run, reference_final)
            report.runs.append(result)
            self._report(result)
        return report

    def _report(self, result: RunReport) -> None:
        if self.on_run is not None:
            self.on_run(result)

    def _command(self, request_id: str, seed: int | None) -> list[str]:
        faults = "none" if seed is None else str(self.spec.with_seed(seed))
        return [
            sys.executable,
            "-m",
            "fave.cli.main",
            "resume",
            request_id,
            "--store",
            self.store.uri,
            "--pipeline",
            str(self.pipeline.path),
            "--faults",
            faults,
        ]

    def _one(self, run: int, reference_final: Any = None) -> RunReport:
        started = time.monotonic()
        request_id = Orchestrator(self.pipeline, self.store).create(self.request_input, start=False).request_id
        result = RunReport(run, request_id)
        for attempt in range(self.max_resumes + 1):
            seed = None if run == 0 else derive_seed(self.seed, run, attempt)
            if seed is not None:
                result.seeds.append(seed)
            ended = self.driver(self._command(request_id, seed), self.env, self.driver_timeout_s)
            for kind, n in parse_report(ended.stderr).items():
                result.injected[kind] += n
            if ended.code == CRASH_EXIT_CODE and run > 0:
                result.crashes.append(_crash_point(ended.stderr))
                result.violations += [
                    Violation(v.invariant, f"after crash {len(result.crashes)}: {v.detail}")
                    for v in check_counts(self.store, request_id)
                ]
                if attempt < self.max_resumes:
                    result.resumes += 1
                continue
            if ended.code is None:
                result.violations.append(Violation("ended", f"driver hung: killed after {self.driver_timeout_s:g} s"))
            elif ended.code not in (0, 1):  # 1: the request FAILED or was CANCELLED (``completed`` says so)
                result.violations.append(Violation("ended", f"driver exited {ended.code}: {ended.last_line()}"))
            break
        else:
            result.violations.append(
                Violation("ended", f"still not ended after {self.max_resumes} resumes (crashes: {len(result.crashes)})")
            )
        try:
            result.status = parse_state(request_id, self.store.get(state_key(request_id)).data).status
            result.violations += check_request(self.store, request_id, reference_final, self.ignore_fields)
        except NotFoundError:
            result.violations.append(Violation("completed", f"request {request_id} has no state.json"))
        result.wall_s = time.monotonic() - started
        return result


def _crash_point(stderr: str) -> str:
    marker = "fave: injected crash after "
    for line in reversed(stderr.splitlines()):
        if line.startswith(marker):
            return line[len(marker) :].split(" (", 1)[0]
    return "?"


# ---- output -------------------------------------------------------------------------------------------

_COLUMNS = ("run", "request", "resumes", *KINDS, "wall", "result")
_HEAD = {"crash_after_effect": "crash", "duplicate": "dup"}


def _cells(report: RunReport) -> list[str]:
    injected = ["-" if report.run == 0 else str(report.injected[k]) for k in KINDS]
    result = "ok" if report.ok else "FAIL " + ",".join(dict.fromkeys(v.invariant for v in report.violations))
    return [
        "ref" if report.run == 0 else str(report.run),
        report.request_id,
        str(report.resumes),
        *injected,
        f"{report.wall_s:.1f}s",
        result,
    ]


def _widths() -> list[int]:
    widths = [len(_HEAD.get(c, c)) for c in _COLUMNS]
    widths[0] = max(widths[0], 3)
    widths[1] = 26  # request ids are ULIDs: 26 characters
    return widths


def print_header(report_faults: str, seed: int, out: TextIO) -> None:
    print(f"chaos: faults {report_faults} (base seed {seed})", file=out)
    print(_row([_HEAD.get(c, c) for c in _COLUMNS]), file=out, flush=True)


def _row(cells: list[str]) -> str:
    """Cells padded to the header's widths: the request id and the result left-aligned, numbers right."""
    left = (1, len(cells) - 1)
    padded = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, _widths(), strict=True))]
    return "  ".join(padded).rstrip()


def print_run(report: RunReport, out: TextIO) -> None:
    print(_row(_cells(report)), file=out, flush=True)


def print_summary(report: ChaosReport, out: TextIO) -> None:
    failures = report.failures()
    runs = len(report.runs)
    if not failures:
        resumes = sum(r.resumes for r in report.runs)
        print(f"chaos: every invariant held in {runs} run(s) ({resumes} resume(s) after injected crashes)", file=out)
        return
    for line in failures:
        print(f"chaos: {line}", file=out)
    broken = sum(not r.ok for r in report.runs)
    print(f"chaos: {broken} of {runs} run(s) broke an invariant; store kept: {report.store}", file=out)


def run_chaos(
    pipeline: Pipeline,
    store: ObjectStore,
    spec: FaultSpec,
    runs: int,
    *,
    request_input: Mapping[str, Any],
    ignore_fields: Sequence[str] = (),
    max_resumes: int = 50,
    driver_timeout_s: float = 600.0,
    out: TextIO | None = None,
) -> ChaosReport:
    """A whole session; with ``out``, the table is printed there as runs end."""
    chaos = Chaos(
        pipeline,
        store,
        spec,
        request_input=request_input,
        ignore_fields=ignore_fields,
        max_resumes=max_resumes,
        driver_timeout_s=driver_timeout_s,
        on_run=(lambda r: print_run(r, out)) if out is not None else None,
    )
    if out is not None:
        print_header(str(spec.with_seed(chaos.seed)), chaos.seed, out)
    report = chaos.run(runs)
    if out is not None:
        print_summary(report, out)
    return report


def default_store_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fave-chaos-"))
