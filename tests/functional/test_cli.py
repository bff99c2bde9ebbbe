"""The ``fave`` command as a user runs it: a real process, the demo pipeline, a local store directory.

Covers the machine-readable contract (run/status/list --json), graph, --detach, bad input (exit 2, one
line) and the crash test: SIGKILL ``fave run`` in the middle of the fan-out, ``fave resume``, same final.json.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from fave.core.model import RequestStatus, TaskStatus
from fave.keys import final_key
from fave.local.orchestrator import load_local_pipeline
from fave.persistence import list_request_ids
from fave.service import Orchestrator
from fave.status import status_document
from fave_shared.errors import NotFoundError
from fave_shared.store import LocalStore
from support import e2e
from support.demo import DEMO, MEASURE_2S, TEXT, demo_variant

LONG_TEXT = " ".join(f"{w}{i}" for i in range(3) for w in TEXT.split())  # 27 words


def fave(*args: str, store: Path, check_code: int | None = None) -> e2e.Result:
    """``fave ARGS`` with ``FAVE_STORE=store``, run to its end."""
    proc = e2e.fave(*args, env=e2e.child_env({"FAVE_STORE": str(store)}), timeout=120)
    if check_code is not None:
        assert proc.code == check_code, proc.stderr
    return proc


def demo_args(source: Path, request: dict[str, Any], pipeline: Path = DEMO) -> list[str]:
    return ["run", str(source), "--pipeline", str(pipeline), "--input", json.dumps(request)]


def demo_run(store: Path, source: Path, request: dict[str, Any], *extra: str, pipeline: Path = DEMO) -> e2e.Result:
    return fave(*demo_args(source, request, pipeline), *extra, store=store)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    # The demo pipeline ignores video_uri, but `fave run` requires its SOURCE to exist.
    path = tmp_path / "source.txt"
    path.write_text("demo\n")
    return path


def test_run_status_list_json_contract(tmp_path: Path, source: Path) -> None:
    store = tmp_path / "store"
    ok = demo_run(store, source, {"text": TEXT}, "--json")
    assert ok.code == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert {"request_id", "status", "stages", "final"} <= set(doc)
    assert doc["status"] == "COMPLETED"
    assert doc["stages"]["shout"] == {**doc["stages"]["shout"], "status": "SUCCEEDED", "total": 9, "succeeded": 9}
    assert doc["final"]["text"].startswith("THE! QUICK! ")
    assert "[shout] 9/9 (100.0%) SUCCEEDED" in ok.stderr  # live per-stage progress
    assert f"request {doc['request_id']}" in ok.stderr

    failed = demo_run(store, source, {"text": TEXT, "bad_word": "dog"}, "--json")
    assert failed.code == 1
    bad = json.loads(failed.stdout)
    assert bad["status"] == "FAILED" and "stage 'shout' item 8" in bad["failure"]

    status = json.loads(fave("status", doc["request_id"], "--json", store=store, check_code=0).stdout)
    assert {k: status[k] for k in ("request_id", "status", "stages", "final")} == {
        k: doc[k] for k in ("request_id", "status", "stages", "final")
    }
    text_status = fave("status", bad["request_id"], store=store, check_code=0).stdout
    assert "FAILED" in text_status and "TerminalError" in text_status

    rows = json.loads(fave("list", "--json", store=store, check_code=0).stdout)
    assert [r["request_id"] for r in rows] == [bad["request_id"], doc["request_id"]]  # newest first
    assert all({"request_id", "status", "created_at"} <= set(r) for r in rows)
    only_failed = json.loads(fave("list", "--status", "FAILED", "--json", store=store, check_code=0).stdout)
    assert [r["request_id"] for r in only_failed] == [bad["request_id"]]


def test_graph_text_and_mermaid(tmp_path: Path) -> None:
    text = fave("graph", "--pipeline", str(DEMO), store=tmp_path, check_code=0).stdout
    assert "* join" in text and "measure  <- shout[k]" in text
    mermaid = fave("graph", "--pipeline", str(DEMO), "--format", "mermaid", store=tmp_path, check_code=0).stdout
    assert mermaid.startswith("flowchart TD")
    assert "shout -. per item .-> measure" in mermaid and "words --> shout" in mermaid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no/such/video.mp4"], "no such file: no/such/video.mp4"),
        (["run", "{source}", "--input", "{not json"], "--input is not valid JSON"),
        (["run", "{source}", "--input", "[1]"], "--input must be a JSON object"),
        (["run", "{source}", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "{source}", "--pipeline", "{missing}"], "missing.yaml"),
        (["status", "01J0000000000000000000000Z"], "no request 01J0000000000000000000000Z"),
        (["status", "../../etc/passwd"], "not a request id"),
        (["resume", "not-an-id"], "not a request id"),
        (["cancel", "01J0000000000000000000000Z"], "no request"),
        (["list", "--status", "DONE"], "invalid choice: 'DONE'"),
        (["bench", "fanout", "--items", "0"], "--items must be at least 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_problem(
    tmp_path: Path, source: Path, args: list[str], message: str
) -> None:
    store = tmp_path / "store"
    slots = {"{source}": str(source), "{missing}": str(tmp_path / "missing.yaml")}
    filled = [slots.get(a, a) for a in args]
    if filled[0] == "run" and "--pipeline" not in filled:
        filled += ["--pipeline", str(DEMO)]
    proc = fave(*filled, store=store)
    assert proc.code == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fave: error: ") and message in lines[0], proc.stderr
    assert proc.stdout == ""
    # Nothing was created for a refused request.
    assert not (store / "requests").exists()


def test_detach_returns_at_once_and_a_background_driver_finishes(tmp_path: Path, source: Path) -> None:
    store = tmp_path / "store"
    proc = demo_run(store, source, {"text": TEXT}, "--detach", "--json")
    assert proc.code == 0, proc.stderr
    request_id = json.loads(proc.stdout)["request_id"]
    assert json.loads(proc.stdout)["status"] in ("INIT", "RUNNING")
    status = wait_for(store, request_id, lambda d: d["status"] in ("COMPLETED", "FAILED"), timeout=60)
    assert status["status"] == "COMPLETED"
    assert status["final"]["text"].startswith("THE! ")
    assert (store / "logs" / f"{request_id}.log").is_file()


def wait_for(store: Path, request_id: str, predicate: Any, timeout: float) -> dict[str, Any]:
    """Poll the document `fave status --json` prints, read in-process: quick enough to catch a fan-out
    half-way. Returns it once ``predicate`` holds."""

    def reached() -> dict[str, Any] | None:
        with contextlib.suppress(NotFoundError):
            doc = status_document(LocalStore(store), request_id)
            return doc if predicate(doc) else None
        return None

    doc: dict[str, Any] = e2e.wait_for(reached, timeout=timeout, what=f"request {request_id} to get there")
    return doc


@pytest.fixture
def patient_demo(tmp_path: Path) -> Path:
    """The demo pipeline with measure at most 2 at a time and a 60 s timeout: its slow items queue for two warm
    environments (an I/O-bound function would otherwise scale to all its items at once: the fan-out would end in
    one step, where these tests need it under way for seconds) and must not time out waiting."""
    return demo_variant(tmp_path / "patient-demo", (MEASURE_2S, "mode: async, timeout: 60s, max_concurrency: 2}"))


def test_sigkill_during_fanout_then_resume_gives_the_same_final(
    tmp_path: Path, source: Path, patient_demo: Path
) -> None:
    request = {"text": LONG_TEXT, "sleep_s": 0.3}  # measure sleeps 0.3 s per word: the fan-out takes a while
    reference_store = tmp_path / "reference"
    reference = demo_run(reference_store, source, request, "--json", pipeline=patient_demo)
    assert reference.code == 0, reference.stderr
    expected = json.loads(reference.stdout)["final"]

    store = tmp_path / "store"
    logs = tmp_path / "run"
    env = e2e.child_env({"FAVE_STORE": str(store)})
    run = e2e.start_fave(*demo_args(source, request, patient_demo), env=env, log_dir=logs)
    try:
        request_id = _request_id_from(logs / "stderr")
        wait_for(
            store,
            request_id,
            lambda d: d["stages"]["shout"]["succeeded"] == 27 and 3 <= d["stages"]["measure"]["succeeded"] < 20,
            timeout=60,
        )
    finally:
        e2e.crash(run)  # SIGKILL: the process group and its worker processes
    assert run.returncode == -signal.SIGKILL

    local = LocalStore(store)
    before = Orchestrator(load_local_pipeline(patient_demo), local).load(request_id, full=True)
    assert before.status is RequestStatus.RUNNING
    done_before = {i: t for i, t in before.tasks["measure"].items() if t.status is TaskStatus.SUCCEEDED}
    assert 3 <= len(done_before) < 27

    resumed = fave("resume", request_id, "--json", store=store)
    assert resumed.code == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["status"] == "COMPLETED"
    assert doc["final"] == expected
    assert json.loads(local.get(final_key(request_id)).data) == expected

    after = Orchestrator(load_local_pipeline(patient_demo), local).load(request_id, full=True)
    for i, task in done_before.items():  # resume re-ran only what had not succeeded
        again = after.tasks["measure"][i]
        assert (again.attempt, again.finished_at, again.output) == (task.attempt, task.finished_at, task.output)
    assert all(t.status is TaskStatus.SUCCEEDED for t in after.tasks["measure"].values())
    assert after.resumes == 1


def test_a_second_driver_of_a_running_request_is_refused_and_dispatches_nothing(
    tmp_path: Path, source: Path, patient_demo: Path
) -> None:
    store = tmp_path / "store"
    logs = tmp_path / "run"
    env = e2e.child_env({"FAVE_STORE": str(store)})
    # Slow enough that the two refused resumes are done while it still runs, even on a loaded machine.
    run = e2e.start_fave(*demo_args(source, {"text": TEXT, "sleep_s": 1.5}, patient_demo), env=env, log_dir=logs)
    try:
        request_id = _request_id_from(logs / "stderr")
        wait_for(store, request_id, lambda d: d["stages"]["measure"]["running"] > 0, timeout=60)
        before = status_document(LocalStore(store), request_id)
        for command in (("resume", request_id), ("resume", request_id, "--detach")):
            second = fave(*command, store=store)
            assert second.code == 2, second.describe()
            assert "being driven by another process" in second.stderr and "Traceback" not in second.stderr
            assert len(second.stderr.strip().splitlines()) == 1
        after = status_document(LocalStore(store), request_id)
        # The refused resume re-ran nothing: no task went back to PENDING, no attempt was added.
        assert after["stages"]["measure"]["succeeded"] >= before["stages"]["measure"]["succeeded"]
        assert run.wait(timeout=120) == 0
    finally:
        if run.poll() is None:
            e2e.crash(run)
    final = Orchestrator(load_local_pipeline(patient_demo), LocalStore(store)).load(request_id, full=True)
    assert final.status is RequestStatus.COMPLETED and final.resumes == 0
    assert all(t.attempt == 1 for t in final.tasks["measure"].values())  # nothing dispatched twice


def _request_id_from(log: Path, timeout: float = 30) -> str:
    def printed() -> str | None:
        lines = log.read_text().splitlines() if log.exists() else []
        return next((line.split()[1] for line in lines if line.startswith("request ")), None)

    request_id: str = e2e.wait_for(printed, timeout=timeout, what=f"fave run to print its request id in {log}")
    return request_id


def test_a_killed_bench_request_is_an_ordinary_request_that_resume_finishes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    items = 10_000  # its fan-out runs for half a second: the id is read in-process, not by a `fave list`
    bench = e2e.start_fave(
        "bench", "fanout", "--items", str(items), "--store", str(store), env=None, log_dir=tmp_path / "bench"
    )
    try:
        (rid,) = e2e.wait_for(lambda: list_request_ids(LocalStore(store)), timeout=60, what="the bench request")
        # Completions are committed in big batches, so "half-way" is: fanned out, not finished.
        wait_for(store, rid, lambda d: d["stages"]["work"]["status"] == "RUNNING", 60)
    finally:
        e2e.crash(bench)
    assert bench.returncode == -signal.SIGKILL
    assert json.loads(fave("status", rid, "--json", store=store, check_code=0).stdout)["status"] == "RUNNING"
    done = json.loads(fave("resume", rid, "--json", store=store, check_code=0).stdout)
    assert done["status"] == "COMPLETED"
    assert done["final"] == {"count": items, "sum": items * (items - 1) // 2}


def test_an_unreadable_request_is_reported_and_does_not_hide_the_others(tmp_path: Path, source: Path) -> None:
    store = tmp_path / "store"
    good = json.loads(demo_run(store, source, {"text": "a b"}, "--json").stdout)["request_id"]
    bad = json.loads(demo_run(store, source, {"text": "c d"}, "--json").stdout)["request_id"]
    local = LocalStore(store)
    local.put(f"requests/{bad}/metadata/state.json", b"\x00 not json")
    local.put("index/requests/README.txt", b"a stray file in the index")

    listed = fave("list", "--json", store=store, check_code=0)
    rows = {row["request_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {good, bad}
    assert rows[good]["status"] == "COMPLETED"
    assert rows[bad]["status"] == "UNREADABLE" and "state.json is unreadable" in rows[bad]["error"]
    assert json.loads(fave("list", "--json", "--status", "unreadable", store=store).stdout)[0]["request_id"] == bad

    status = fave("status", bad, store=store, check_code=1)
    assert status.stderr.count("\n") == 1 and bad in status.stderr and "Traceback" not in status.stderr
    assert json.loads(fave("status", good, "--json", store=store, check_code=0).stdout)["status"] == "COMPLETED"


def test_bench_api_times_post_requests_through_the_entry_point(tmp_path: Path) -> None:
    result = fave("bench", "api", "--requests", "5", "--json", store=tmp_path, check_code=0)
    figures = json.loads(result.stdout)
    assert figures["requests"] == 5 and figures["kicks"] == 6  # every POST kicked its first step, none ran it
    assert 0 < figures["p50_s"] <= figures["p95_s"] <= figures["max_s"]
    assert figures["store_requests_per_post"] <= 6
    fave("bench", "api", "--requests", "0", store=tmp_path, check_code=2)
