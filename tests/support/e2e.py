"""Helpers for the end-to-end tier (tests/e2e): the real ``fave`` CLI in subprocesses, on real media.

* ``fave(...)`` runs one CLI command to its end (``--json`` output parsed); ``start_fave(...)`` starts one
  in its own process group and ``crash(...)`` kills it (and its worker processes) as a power cut would.
* ``StoreView`` reads a request's state.json, task shards and outputs from any store.
* ``check_sample_answer`` holds what every run on the bundled sample must answer (ground truth in
  tests/fixtures/scenes20.json); ``answer`` is the deterministic part two runs must agree on.
* ``rerank`` re-runs only the aggregate stage's handler on a finished request's outputs, with another
  query: the other sample queries cost a fraction of a second instead of a whole pipeline run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fave.keys import final_key, state_key
from fave.local.orchestrator import load_local_pipeline
from fave.persistence import read_stage_tasks
from fave.statefile import StateDoc, TaskDoc
from fave_shared import refs
from fave_shared.store import ObjectStore

from support.functions import load_handler
from support.scene_media import truth
from support.wer import wer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "fixtures" / "scenes20.mp4"
PIPELINE = ROOT / "pipeline.yaml"
BOUNDARY_TOLERANCE_S = 0.3
MAX_WER = 0.15
RUN_TIMEOUT_S = 600.0
"""A whole pipeline run takes 30-70 s on 2 shared cores; this only stops a hung test."""

# Variables of the caller that would redirect a child's store or S3 client.
_SCRUBBED = ("FAVE_STORE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without store/S3 redirections, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(extra or {})
    return env


def _python(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """This interpreter on ``args`` in ``cwd`` with ``child_env()``, output captured."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def python_probe(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS...`` in a fresh interpreter from the repository root: what a test runs to look at a
    process from the inside (the modules it imported, its collector at exit)."""
    return _python(["-c", code, *args], ROOT, timeout)


_MODULES_PROBE = """
import json, sys
from fave.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def cli_modules(out: Path, *args: str) -> tuple[int, set[str]]:
    """Run fave's ``main(ARGS)`` in a fresh interpreter: (its exit code, every module it imported). ``out``: a
    scratch file for the probe's report."""
    done = python_probe(_MODULES_PROBE, str(out), *args)
    assert out.exists(), done.stderr
    doc = json.loads(out.read_text())
    return doc["code"], set(doc["modules"])


def fave_command(*args: str) -> list[str]:
    """``python -m fave.cli.main ARGS`` with this interpreter (the venv's, whatever PATH says)."""
    return [sys.executable, "-m", "fave.cli.main", *args]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def describe(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def fave(*args: str, env: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT_S) -> Result:
    """Run ``fave ARGS`` from the repository root (so ``pipeline.yaml`` is the default) to its end."""
    done = subprocess.run(
        fave_command(*args),
        cwd=ROOT,
        env=dict(env) if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def pytest_in(folder: Path, timeout: float = 120) -> Result:
    """``pytest -q`` on ``folder``'s tests (a pipeline folder's own), run from that folder as its user would."""
    done = _python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], folder, timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def start_fave(*args: str, env: Mapping[str, str] | None, log_dir: Path) -> subprocess.Popen[bytes]:
    """Start ``fave ARGS`` in its own process group, output to files in ``log_dir`` (no pipe to fill)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "stdout").open("wb") as out, (log_dir / "stderr").open("wb") as err:
        return subprocess.Popen(
            fave_command(*args),
            cwd=ROOT,
            env=dict(env) if env is not None else child_env(),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may contain spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def crash(process: subprocess.Popen[bytes]) -> list[int]:
    """Kill a ``start_fave`` process like a power cut: freeze it (no new state write, no new worker),
    then SIGKILL its process group and every worker process it started (workers run in process groups of
    their own). Returns the worker pids killed."""
    os.killpg(process.pid, signal.SIGSTOP)
    workers = descendants(process.pid)
    os.killpg(process.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in workers):
        if time.monotonic() > deadline:
            raise AssertionError(f"worker processes {workers} survived SIGKILL")
        time.sleep(0.05)
    return workers


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def wait_for(condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- reading a request back ------------------------------------------------------------------------------


class StoreView:
    """Read-only access to one store's requests (state.json, task shards, outputs)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def state(self, request_id: str) -> StateDoc:
        return StateDoc.from_json(self.store.get(state_key(request_id)).data)

    def final(self, request_id: str) -> Any:
        return json.loads(self.store.get(final_key(request_id)).data)

    def tasks(self, request_id: str, stage: str) -> dict[int, TaskDoc]:
        """Every task of a stage by item (a single-task stage's task is item 0)."""
        return read_stage_tasks(self.store, request_id, stage)

    def output(self, request_id: str, stage: str, item: int = 0) -> Any:
        """A succeeded task's output, references resolved."""
        return refs.resolve(self.store, self.tasks(request_id, stage)[item].output)

    def outputs(self, request_id: str, stage: str) -> list[Any]:
        return [refs.resolve(self.store, t.output) for t in self.tasks(request_id, stage).values()]


def only_request(view: StoreView) -> str:
    """The id of the one request in a store (a test's fresh store)."""
    ids = sorted({key.split("/")[1] for key in view.store.list("requests/") if key.endswith("metadata/state.json")})
    assert len(ids) == 1, f"expected one request in {view.store.uri}, found {ids}"
    return ids[0]


# -- what the sample must answer ------------------------------------------------------------------------


def span(item: Mapping[str, Any]) -> tuple[float, float]:
    return float(item["start_s"]), float(item["end_s"])


def near(actual: tuple[float, float], expected: tuple[float, float], tol: float = BOUNDARY_TOLERANCE_S) -> bool:
    return abs(actual[0] - expected[0]) <= tol and abs(actual[1] - expected[1]) <= tol


def check_final_contract(final: Any, request_id: str, query: str | None) -> None:
    """The documented shape of final.json for the video pipeline."""
    assert isinstance(final, dict), final
    assert final["request_id"] == request_id
    assert final["query"] == query
    assert isinstance(final["scenes"], list) and isinstance(final["clips"], list) and final["clips"]
    for scene in final["scenes"]:
        for field in ("start_s", "end_s", "score", "objects", "transcript"):
            assert field in scene, f"scene without {field}: {scene}"
        assert scene["score"] > 0 and scene["start_s"] < scene["end_s"]
        assert isinstance(scene["objects"], dict)
    scores = [s["score"] for s in final["scenes"]]
    assert scores == sorted(scores, reverse=True), "scenes are not best first"
    for clip in final["clips"]:
        for field in ("index", "start_s", "end_s", "objects", "transcript", "speech_detected"):
            assert field in clip, f"clip without {field}: {clip}"
    assert [c["index"] for c in final["clips"]] == list(range(len(final["clips"])))


def check_sample_clips(final: Mapping[str, Any]) -> None:
    """Clips of scenes20.mp4: the truth scenes within 0.3 s, speech transcribed, no words on the silent one."""
    scenes = truth()["scenes"]
    clips = final["clips"]
    got = [span(c) for c in clips]
    assert len(clips) == len(scenes), got
    for clip, scene in zip(clips, scenes, strict=True):
        assert near(span(clip), span(scene)), f"clip {span(clip)} is not scene {span(scene)} within 0.3 s"
        assert not clip.get("missing"), f"clip {clip['index']} is missing {clip['missing']}"
        for label in scene["expected_objects"]:
            if label in ("person", "car", "cat", "cup"):  # the objects the queries rely on
                assert label in clip["objects"], f"{label} not seen in clip {clip['index']}: {clip['objects']}"
    for spoken in truth()["speech"]:
        clip = next(c for c in clips if c["start_s"] - 0.01 <= spoken["start_s"] < c["end_s"])
        error = wer(spoken["text"], clip["transcript"] or "")
        assert error <= MAX_WER, f"WER {error:.0%} on clip {clip['index']}: {clip['transcript']!r}"
        assert clip["speech_detected"]
    silent = next(c for c in clips if near(span(c), (15.0, 20.0)))
    assert not silent["transcript"] and not silent["speech_detected"], f"words on silence: {silent}"


def check_sample_answer(final: Mapping[str, Any], request_id: str, query: str = "find scenes with cars") -> None:
    """Contract + clips + the car query's answer: exactly the 5-10 s street scene."""
    check_final_contract(final, request_id, query)
    check_sample_clips(final)
    scenes = final["scenes"]
    assert len(scenes) == 1, f"expected only the street scene, got {[span(s) for s in scenes]}"
    assert near(span(scenes[0]), (5.0, 10.0)), span(scenes[0])
    assert "car" in scenes[0]["objects"]


def answer(final: Mapping[str, Any]) -> dict[str, Any]:
    """What two runs on the same input must agree on exactly: clip boundaries, which scenes match in which
    order, the words heard, the labels seen (scores are floats from multithreaded inference: not compared)."""
    return {
        "clips": [(c["start_s"], c["end_s"], c["transcript"], sorted(c["objects"])) for c in final["clips"]],
        "scenes": [(s["start_s"], s["end_s"], s.get("clip_index"), sorted(s["objects"])) for s in final["scenes"]],
    }


# -- other queries on a finished request ----------------------------------------------------------------


def rerank(view: StoreView, request_id: str, query: str) -> dict[str, Any]:
    """The aggregate stage's real handler on a finished request's split/transcribe/detect outputs, with
    another query (``fave run`` with that query would compute the same upstream outputs again)."""
    state = view.state(request_id)
    profile = str(state.input.get("profile") or "default")
    payload = {
        "request": {**state.input, "query": query},
        "needs": {
            "split": view.tasks(request_id, "split")[0].output,
            "transcribe": [t.output for t in view.tasks(request_id, "transcribe").values()],
            "detect": [t.output for t in view.tasks(request_id, "detect").values()],
        },
        "config": load_local_pipeline(PIPELINE).stage_config("aggregate", profile),
    }
    event = {
        "fave": 1,
        "task": {"request_id": request_id, "stage": "aggregate", "item": None, "attempt": 1000},
        "store": view.store.uri,
        "input": payload,
    }
    result: dict[str, Any] = refs.resolve(view.store, load_handler("aggregate")(event, None))
    return result
