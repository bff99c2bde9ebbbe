"""The video pipeline end to end through the real CLI, on the bundled sample (tests/fixtures/scenes20.mp4).

Three whole pipeline runs, each in a ``fave`` subprocess with the local runtime's worker processes:

1. ``fave run`` on a local store (module fixture ``sample_run``): the final.json contract, the truth scenes,
   the car query, ``fave status`` agreeing; the "hello", "cat" and "cup" queries re-run only the aggregate
   handler on that run's outputs;
2. the same run killed (SIGKILL, workers included) while the per-clip stages are running, then
   ``fave resume``: same answer, and no task that had succeeded before the kill ran again;
3. the same run with the source and the store on S3 (a ThreadedMotoServer: the stage functions run in
   other processes, which reach it through ``AWS_ENDPOINT_URL``): same answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fave_shared.errors import FaveError
from fave_shared.store import LocalStore, S3Store
from support.e2e import (
    SAMPLE,
    Result,
    StoreView,
    answer,
    check_final_contract,
    check_sample_answer,
    child_env,
    crash,
    fave,
    near,
    only_request,
    rerank,
    span,
    start_fave,
    wait_for,
)
from support.stores import make_s3_client, threaded_moto_server

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

pytestmark = pytest.mark.e2e

QUERY = "find scenes with cars"
PER_CLIP = ("extract", "transcribe", "detect")
STAGES = ("normalize", "audio", "split", "extract", "transcribe", "detect", "aggregate")


@dataclass
class Run:
    """One finished ``fave run --json`` and where it lives."""

    result: Result
    view: StoreView
    request_id: str
    store_arg: str
    env: dict[str, str]

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.result.json
        return doc


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``fave run tests/fixtures/scenes20.mp4 --query "find scenes with cars" --json`` on a local store."""
    store_dir = tmp_path_factory.mktemp("e2e-local") / "store"
    result = fave("run", str(SAMPLE), "--query", QUERY, "--json", "--store", str(store_dir))
    assert result.code == 0, result.describe()
    view = StoreView(LocalStore(store_dir))
    return Run(result, view, result.json["request_id"], str(store_dir), child_env())


def test_run_completes_every_stage_and_writes_the_final_answer(sample_run: Run) -> None:
    doc, rid = sample_run.doc, sample_run.request_id
    assert doc["status"] == "COMPLETED" and doc["failure"] is None
    assert f"request {rid}" in sample_run.result.stderr  # printed first, so a killed run can be resumed
    assert list(doc["stages"]) == list(STAGES)
    for name, stage in doc["stages"].items():
        assert stage["status"] == "SUCCEEDED", (name, stage)
        assert stage["succeeded"] == stage["total"] and stage["failed"] == 0
    assert {doc["stages"][name]["total"] for name in PER_CLIP} == {4}  # one task per clip
    final = sample_run.view.final(rid)
    assert doc["final"] == final  # --json carries exactly final.json
    check_sample_answer(final, rid, QUERY)


def test_clips_are_processed_in_parallel_and_timed_in_state(sample_run: Run) -> None:
    view, rid = sample_run.view, sample_run.request_id
    state = view.state(rid)
    for name in STAGES:
        st = state.stages[name]
        assert st.started_at is not None and st.finished_at is not None and st.duration_s is not None
        assert state.created_at <= st.started_at <= st.finished_at <= (state.finished_at or 0)
    intervals = [
        (task.dispatched_at, task.finished_at, stage, item)
        for stage in PER_CLIP
        for item, task in view.tasks(rid, stage).items()
    ]
    assert all(start is not None and end is not None and start < end for start, end, *_ in intervals)
    overlapping = {
        (a[2], a[3], b[2], b[3])
        for a in intervals
        for b in intervals
        if a[2:] < b[2:] and a[0] < b[1] and b[0] < a[1]  # type: ignore[operator]
    }
    # Two clips of one stage in flight at once, and clip k's later stages alongside another clip's.
    assert any(sa == sb and ia != ib for sa, ia, sb, ib in overlapping), "no two clips of a stage overlapped"
    assert any(sa != sb and ia != ib for sa, ia, sb, ib in overlapping), "no pipelining across stages"


def test_status_agrees_with_the_run(sample_run: Run) -> None:
    rid = sample_run.request_id
    status = fave("status", rid, "--json", "--store", sample_run.store_arg)
    assert status.code == 0, status.describe()
    doc = status.json
    for field in ("request_id", "status", "stages", "final", "failure"):
        assert doc[field] == sample_run.doc[field], field
    text = fave("status", rid, "--store", sample_run.store_arg)
    assert text.code == 0
    assert f"request {rid}: COMPLETED" in text.stdout
    assert "5.00- 10.00s" in text.stdout and "car" in text.stdout


@pytest.mark.parametrize(
    ("query", "expected", "heard"),
    [
        ("hello", (0.0, 5.0), "hello"),
        ("where is the cat", (10.0, 15.0), "cat"),
        ("cup", (15.0, 20.0), None),
    ],
)
def test_other_queries_rank_the_right_scene_first(
    sample_run: Run, query: str, expected: tuple[float, float], heard: str | None
) -> None:
    rid = sample_run.request_id
    final = rerank(sample_run.view, rid, query)
    check_final_contract(final, rid, query)
    assert final["scenes"], f"{query!r} matched nothing"
    assert near(span(final["scenes"][0]), expected), [span(s) for s in final["scenes"]]
    if heard is not None:
        assert heard in (final["scenes"][0]["transcript"] or "").lower()
    # The clips are the run's: re-ranking changes the order of scenes, never the clips.
    assert answer(final)["clips"] == answer(sample_run.view.final(rid))["clips"]


# -- crash and resume ------------------------------------------------------------------------------------


def _per_clip_progress(view: StoreView) -> tuple[str, dict[str, int]] | None:
    """(request id, succeeded count per per-clip stage) once some per-clip tasks succeeded but not all."""
    try:
        rid = only_request(view)
        state = view.state(rid)
    except (AssertionError, FaveError):
        return None  # no request yet, or its state.json not written yet
    done = {name: state.stages[name].succeeded for name in PER_CLIP}
    totals = [state.stages[name].total or 0 for name in PER_CLIP]
    if done["extract"] >= 1 and done["transcribe"] + done["detect"] >= 1 and sum(done.values()) < sum(totals):
        return rid, done
    if state.status not in ("INIT", "RUNNING"):  # INIT: created, its first step not committed yet
        raise AssertionError(f"request {rid} ended ({state.status}) before the per-clip stages were caught")
    return None


def test_crash_during_per_clip_stages_then_resume_gives_the_same_answer(sample_run: Run, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    view = StoreView(LocalStore(store_dir))
    process = start_fave(
        "run", str(SAMPLE), "--query", QUERY, "--json", "--store", str(store_dir), env=None, log_dir=tmp_path / "log"
    )
    try:
        rid, done = wait_for(lambda: _per_clip_progress(view), timeout=300, what="per-clip tasks to succeed")
    finally:
        workers = crash(process)
    assert process.returncode == -9
    assert workers, "the run had no worker processes when it was killed"

    # What the store holds at the moment of the crash: the process was frozen before this read.
    before = {stage: view.tasks(rid, stage) for stage in ("normalize", "audio", "split", *PER_CLIP)}
    succeeded = {(s, i): t for s, tasks in before.items() for i, t in tasks.items() if t.status == "SUCCEEDED"}
    unfinished = {(s, i) for s, tasks in before.items() for i, t in tasks.items() if t.status != "SUCCEEDED"}
    assert view.state(rid).status == "RUNNING"
    assert unfinished, f"nothing was left to do at the crash: {done}"
    assert any(s in ("transcribe", "detect") for s, _ in succeeded), done

    status = fave("status", rid, "--json", "--store", str(store_dir))
    assert status.code == 0 and status.json["status"] == "RUNNING", status.describe()

    resumed = fave("resume", rid, "--json", "--store", str(store_dir))
    assert resumed.code == 0, resumed.describe()
    assert resumed.json["status"] == "COMPLETED"
    final = view.final(rid)
    check_sample_answer(final, rid, QUERY)
    assert answer(final) == answer(sample_run.view.final(sample_run.request_id))

    state = view.state(rid)
    assert state.resumes == 1
    for (stage, item), task in succeeded.items():
        after = view.tasks(rid, stage)[item]
        # Not re-run: same attempt, same dispatch and finish times, same output (keys included).
        assert after.status == "SUCCEEDED"
        assert (after.attempt, after.dispatched_at, after.finished_at) == (
            task.attempt,
            task.dispatched_at,
            task.finished_at,
        ), f"{stage} #{item} ran again"
        assert after.output == task.output
    crashed_at = max(t.finished_at or t.dispatched_at or 0 for tasks in before.values() for t in tasks.values())
    rerun = [(s, i) for s, i in unfinished if (view.tasks(rid, s)[i].dispatched_at or 0) > crashed_at]
    assert sorted(rerun) == sorted(unfinished), "every task unfinished at the crash runs again after resume"


# -- S3 (moto server) ------------------------------------------------------------------------------------

BUCKET = "fave-e2e"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A ThreadedMotoServer of this module's own (no other test resets it under a running pipeline)."""
    with threaded_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3(moto_endpoint: str, aws_env: None, tmp_path: Path) -> tuple[S3Client, dict[str, str]]:
    """A client with a fresh bucket holding ``uploads/scenes20.mp4``, and the environment for ``fave``."""
    client = make_s3_client(moto_endpoint)
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(SAMPLE), BUCKET, "uploads/scenes20.mp4")
    env = child_env(
        {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-config"),
        }
    )
    return client, env


def test_s3_source_and_store_on_moto_give_the_same_answer(sample_run: Run, s3: tuple[S3Client, dict[str, str]]) -> None:
    client, env = s3
    store_uri = f"s3://{BUCKET}/runs"
    result = fave(
        "run", f"s3://{BUCKET}/uploads/scenes20.mp4", "--query", QUERY, "--json", "--store", store_uri, env=env
    )
    assert result.code == 0, result.describe()
    rid = result.json["request_id"]
    assert result.json["status"] == "COMPLETED"

    view = StoreView(S3Store(client, BUCKET, "runs"))
    final = view.final(rid)
    assert result.json["final"] == final
    check_sample_answer(final, rid, QUERY)
    assert answer(final) == answer(sample_run.view.final(sample_run.request_id))
    keys = set(view.store.list(f"requests/{rid}/"))
    assert f"requests/{rid}/input/source.mp4" in keys and f"requests/{rid}/clips/00003.mp4" in keys
    links = [link for scene in final["scenes"] for link in scene["links"]["keyframes"]]
    assert links and all(link.startswith(f"s3://{BUCKET}/runs/requests/{rid}/") for link in links), links

    status = fave("status", rid, "--json", "--store", store_uri, env=env)
    assert status.code == 0, status.describe()
    assert status.json["status"] == "COMPLETED" and status.json["final"] == final
    listed = fave("list", "--json", "--store", store_uri, env=env)
    assert [row["request_id"] for row in listed.json] == [rid]


def test_missing_s3_key_fails_the_request_with_the_reason(s3: tuple[S3Client, dict[str, str]]) -> None:
    client, env = s3
    store_uri = f"s3://{BUCKET}/missing-key"
    source = f"s3://{BUCKET}/uploads/no-such-video.mp4"
    result = fave("run", source, "--json", "--store", store_uri, env=env)
    assert result.code == 1, result.describe()
    doc = result.json
    assert doc["status"] == "FAILED" and doc["final"] is None
    assert doc["failure"] == f"stage 'normalize' failed after 1 attempt: MediaInputError: source not found: {source}"
    state = StoreView(S3Store(client, BUCKET, "missing-key")).state(doc["request_id"])
    assert state.failure is not None and state.failure.error_type == "MediaInputError"
    assert state.failure.attempts == 1  # terminal: not retried
    status = fave("status", doc["request_id"], "--json", "--store", store_uri, env=env)
    assert json.loads(status.stdout)["failure"] == doc["failure"]
