"""The orchestrator with its state on S3 (moto): the same demo runs as on the local store.

The stage functions run in worker processes, which open the store from its ``s3://`` URI with their own boto3
client, so the S3 here is a ``ThreadedMotoServer`` reached over HTTP (``AWS_ENDPOINT_URL``): in-process moto
lives in one process only. The bench's in-process moto path (thread-isolated functions) is covered too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fave.core.model import RequestStatus, TaskStatus
from fave.keys import final_key, state_key
from fave.persistence import list_request_ids, read_stage_tasks
from fave_shared.store import S3Store
from support.demo import TEXT, demo_orchestrator, read_json, run_demo

WORDS = TEXT.split()


@pytest.fixture
def s3_store(server_store: S3Store, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    # Worker processes inherit the environment: their boto3 clients reach the same moto server.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return server_store


def test_demo_completes_with_state_and_final_on_s3(s3_store: S3Store) -> None:
    state = run_demo(s3_store, {"fail": {"fox": 1}})
    assert state.status is RequestStatus.COMPLETED, state.failure
    final = read_json(s3_store, final_key(state.request_id))
    assert final["text"] == " ".join(w.upper() + "!" for w in WORDS)
    assert final["attempts"][WORDS.index("fox")] == 2  # retried once, counted once
    doc = read_json(s3_store, state_key(state.request_id))
    assert doc["status"] == "COMPLETED" and doc["stages"]["measure"]["succeeded"] == len(WORDS)
    assert read_stage_tasks(s3_store, state.request_id, "shout")[WORDS.index("fox")].attempt == 2
    assert state.request_id in list_request_ids(s3_store)
    # The stage functions wrote their artifacts to the same bucket, under the request's prefix.
    keys = list(s3_store.list(f"requests/{state.request_id}/"))
    assert any("/shout/" in k for k in keys)


def test_crash_before_the_fan_in_then_resume_on_s3(s3_store: S3Store) -> None:
    """Stop driving half-way (the process 'dies': its orchestrator is dropped), resume with a new one."""
    first = demo_orchestrator(s3_store)
    try:
        state = first.create({"text": TEXT})
        request_id = state.request_id
        while (state.stages["shout"].succeeded or 0) < 4:
            state = first.apply(request_id, [first.inbox.get(timeout=30)[1]])
    finally:
        first.close()  # in-flight invocations and queued completions are lost with it
    done = {i for i, t in state.tasks["shout"].items() if t.status is TaskStatus.SUCCEEDED}

    second = demo_orchestrator(s3_store)
    try:
        second.load(request_id)
        second.resume(request_id)
        final_state = second.drive(request_id, tick_s=0.02)
    finally:
        second.close()
    assert final_state.status is RequestStatus.COMPLETED
    assert read_json(s3_store, final_key(request_id))["text"] == " ".join(w.upper() + "!" for w in WORDS)
    for i in done:
        task = final_state.task("shout", i)
        assert task is not None and task.attempt == 1  # not re-run


def test_bench_fanout_on_in_process_moto() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fave.cli.main", "bench", "fanout", "--items", "300", "--store", "moto", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"items", "wall_s", "tasks_per_s", "requests_per_task", "bytes_per_task"} <= set(result)
    assert result["items"] == 300 and result["status"] == "COMPLETED"
    assert 0 < result["requests_per_task"] < 1  # batched: far fewer store requests than tasks
