"""``fave wait ID`` and ``fave logs ID [-f]`` as a user runs them, on requests started with ``fave run --detach``
(a background driver): wait's exit codes (0 COMPLETED, 1 FAILED, 2 unknown id, 124 --timeout), the request's
log read back from its store (a local directory, and S3 through a moto server), ``-f`` following it to its end.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fave.ids import new_request_id
from fave_shared.store import LocalStore, S3Store
from support import e2e
from support.demo import DEMO, TEXT
from support.stores import BUCKET

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.txt"
    path.write_text("demo\n")
    return path


def fave(*args: str, env: dict[str, str], timeout: float = 120) -> e2e.Result:
    return e2e.fave(*args, env=env, timeout=timeout)


def detach(source: Path, request: dict[str, Any], env: dict[str, str], *extra: str) -> str:
    started = fave(
        "run", str(source), "--pipeline", str(DEMO), "--input", json.dumps(request), "--detach", *extra, env=env
    )
    assert started.code == 0, started.describe()
    return started.stdout.strip()


def ended_log(request_id: str, env: dict[str, str]) -> str:
    """``fave logs ID`` once the detached driver has written its last line: it commits the terminal state first
    (which ends ``fave wait``), then logs that it ended, a moment later."""

    def ended() -> str | None:
        logs = fave("logs", request_id, env=env)
        assert logs.code == 0, logs.describe()
        return logs.stdout if "driver ended: request " in logs.stdout else None

    text: str = e2e.wait_for(ended, timeout=30, interval=0.2, what=f"the driver of {request_id} to log its end")
    return text


def test_wait_blocks_until_completed_then_exits_0_and_logs_show_the_stages(tmp_path: Path, source: Path) -> None:
    env = e2e.child_env({"FAVE_STORE": str(tmp_path / "store")})
    request_id = detach(source, {"text": TEXT, "sleep_s": 0.1}, env)
    waited = fave("wait", request_id, "--json", env=env)
    assert waited.code == 0, waited.describe()
    doc = waited.json
    assert doc["status"] == "COMPLETED" and doc["final"]["text"].startswith("THE! ")

    lines = ended_log(request_id, env).splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    stamps = [line.split(" ", 1)[0] for line in lines]
    assert stamps == sorted(stamps)  # in time order
    body = [STAMP.sub("", line) for line in lines]
    assert re.fullmatch(r"driver started: fave resume \(pid \d+\)", body[0])  # the --detach driver
    for name, total in (("words", 1), ("shout", 9), ("measure", 9), ("join", 1)):
        assert f"[{name}] {total}/{total} (100.0%) SUCCEEDED" in body
    assert "[join] stage_started" in body and "request completed" in body
    assert body[-1] == "driver ended: request COMPLETED"

    text = fave("wait", request_id, env=env)  # already ended: at once, the status block of fave status
    assert text.code == 0 and text.stdout.startswith(f"request {request_id}: COMPLETED")


def test_wait_exits_1_for_a_failed_request_and_its_log_names_the_failure(tmp_path: Path, source: Path) -> None:
    env = e2e.child_env({"FAVE_STORE": str(tmp_path / "store")})
    request_id = detach(source, {"text": TEXT, "bad_word": "dog"}, env)
    waited = fave("wait", request_id, env=env)
    assert waited.code == 1, waited.describe()
    assert f"request {request_id}: FAILED" in waited.stdout
    log = ended_log(request_id, env)
    assert "[shout #8] task_failed" in log and "request failed: stage 'shout' item 8" in log
    assert log.rstrip().endswith("driver ended: request FAILED")


def test_wait_for_an_unknown_or_malformed_id_exits_2(tmp_path: Path) -> None:
    env = e2e.child_env({"FAVE_STORE": str(tmp_path / "store")})
    for command in ("wait", "logs"):
        unknown = fave(command, new_request_id(), env=env)
        assert unknown.code == 2, unknown.describe()
        assert unknown.stderr.startswith("fave: error: no request ") and unknown.stderr.count("\n") == 1
        malformed = fave(command, "not-an-id", env=env)
        assert malformed.code == 2 and "not a request id" in malformed.stderr
    assert fave("wait", new_request_id(), "--timeout", "-1", env=env).code == 2


def test_wait_timeout_exits_124_and_follow_ends_with_the_request(tmp_path: Path, source: Path) -> None:
    store = tmp_path / "store"
    env = e2e.child_env({"FAVE_STORE": str(store)})
    # measure's environments start at once (an I/O-bound function scales to its limit), so the words run together:
    # one of them sleeps 1.5 s (under measure's 2 s timeout), so the stage is seen part-way (8/9) for that long.
    request_id = detach(source, {"text": TEXT, "sleep_s": 1.5, "slow_word": "lazy"}, env)
    follower = subprocess.Popen(
        e2e.fave_command("logs", request_id, "-f"),
        cwd=e2e.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = time.monotonic()
        timed_out = fave("wait", request_id, "--timeout", "0.5", env=env)
        assert timed_out.code == 124, timed_out.describe()
        assert 0.4 < time.monotonic() - started < 30
        assert f"timed out after 0.5s: request {request_id} is RUNNING" in timed_out.stderr
        assert f"request {request_id}: RUNNING" in timed_out.stdout  # the status as it was
        assert follower.poll() is None  # following a running request: still there

        assert fave("wait", request_id, env=env).code == 0
        out, err = follower.communicate(timeout=30)  # -f ends by itself once the request has ended
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err
    lines = [STAMP.sub("", line) for line in out.splitlines()]
    assert lines[0].startswith("driver started: fave resume")
    assert any(re.fullmatch(r"\[measure\] [1-8]/9 \(\d+\.\d%\) RUNNING", line) for line in lines)  # seen part-way
    assert "[measure] 9/9 (100.0%) SUCCEEDED" in lines
    assert lines[-1] == "driver ended: request COMPLETED"
    assert out == fave("logs", request_id, env=env).stdout  # followed = read afterwards, line for line
    assert any(LocalStore(store).list(f"requests/{request_id}/logs/"))


def test_logs_of_a_detached_run_on_an_s3_store(
    server_store: S3Store, moto_server: str, tmp_path: Path, source: Path
) -> None:
    env = e2e.child_env({"AWS_ENDPOINT_URL": moto_server})  # aws_env's fake credentials are in os.environ
    store = f"s3://{BUCKET}/logs-test"
    request_id = detach(source, {"text": TEXT}, env, "--store", store)
    assert fave("wait", request_id, "--store", store, "--timeout", "120", env=env).code == 0
    logs = fave("logs", request_id, "--store", store, env=env)
    assert logs.code == 0, logs.describe()
    body = [STAMP.sub("", line) for line in logs.stdout.splitlines()]
    assert "[shout] 9/9 (100.0%) SUCCEEDED" in body and body[-1] == "driver ended: request COMPLETED"
    keys = list(server_store.list(f"logs-test/requests/{request_id}/logs/"))
    assert keys and all(k.endswith(".log") for k in keys)


def test_logs_of_a_request_no_driver_wrote_says_so(tmp_path: Path) -> None:
    from fave.local.orchestrator import load_local_pipeline
    from fave.service import Orchestrator

    store = tmp_path / "store"
    state = Orchestrator(load_local_pipeline(DEMO), LocalStore(store)).create({"text": "a"}, start=False)
    logs = fave("logs", state.request_id, env=e2e.child_env({"FAVE_STORE": str(store)}))
    assert logs.code == 0 and logs.stdout == ""
    assert f"no log lines for request {state.request_id}" in logs.stderr


def test_a_fan_out_of_5000_tasks_writes_a_handful_of_log_objects(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = e2e.child_env({"FAVE_STORE": str(store)})
    pipeline = e2e.ROOT / "benchmarks" / "fanout" / "pipeline.yaml"
    run = fave("run", "--pipeline", str(pipeline), "--input", '{"items": 5000}', "--json", env=env)
    assert run.code == 0, run.describe()
    request_id = run.json["request_id"]
    keys = list(LocalStore(store).list(f"requests/{request_id}/logs/"))
    assert 1 <= len(keys) <= 20, keys  # batched per driver step with new lines, not one write per task
    body = [STAMP.sub("", line) for line in fave("logs", request_id, env=env).stdout.splitlines()]
    assert "[work] 5000/5000 (100.0%) SUCCEEDED" in body and len(body) < 100
