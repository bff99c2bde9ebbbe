"""The orchestrator end to end on the local runtime: real handlers in warm worker processes, real store."""

from __future__ import annotations

import os
import threading
import time

import pytest
from fave.core.model import RequestStatus, TaskStatus
from fave.keys import final_key, input_key, state_key
from fave.persistence import read_stage_tasks
from fave_shared.store import CountingStore, LocalStore, ObjectStore
from support.demo import TEXT, demo_orchestrator, read_json, run_demo

WORDS = TEXT.split()


def test_sync_chain_fanout_per_item_chaining_and_fan_in(local_store: ObjectStore) -> None:
    state = run_demo(local_store)
    assert state.status is RequestStatus.COMPLETED
    final = read_json(local_store, final_key(state.request_id))
    assert final["text"] == " ".join(w.upper() + "!" for w in WORDS)
    assert final["missing"] == []
    doc = read_json(local_store, state_key(state.request_id))
    assert doc["status"] == "COMPLETED"
    assert doc["stages"]["shout"]["succeeded"] == len(WORDS)
    assert doc["stages"]["measure"]["total"] == len(WORDS)
    assert doc["stages"]["words"]["task"]["output"]["greeting"] == "hello"  # template Environment reached
    assert all(s["duration_s"] is not None for s in doc["stages"].values())
    assert read_stage_tasks(local_store, state.request_id, "measure")[0].status == "SUCCEEDED"


def test_profile_config_reaches_the_stage(local_store: ObjectStore) -> None:
    state = run_demo(local_store, {"profile": "loud"})
    assert read_json(local_store, final_key(state.request_id))["text"].startswith("THE!! ")


def test_failures_are_retried_then_succeed(local_store: ObjectStore) -> None:
    state = run_demo(local_store, {"fail": {"fox": 2}})
    assert state.status is RequestStatus.COMPLETED
    final = read_json(local_store, final_key(state.request_id))
    assert final["attempts"][WORDS.index("fox")] == 3
    task = state.task("shout", WORDS.index("fox"))
    assert task is not None and task.attempt == 3 and task.status is TaskStatus.SUCCEEDED


def test_exhausted_retries_fail_the_request_naming_stage_item_error(local_store: ObjectStore) -> None:
    state = run_demo(local_store, {"fail": {"fox": 9}})
    assert state.status is RequestStatus.FAILED
    reason = read_json(local_store, state_key(state.request_id))["failure"]["reason"]
    assert f"stage 'shout' item {WORDS.index('fox')}" in reason
    assert "ValueError" in reason and "3 attempts" in reason


def test_terminal_error_is_not_retried(local_store: ObjectStore) -> None:
    state = run_demo(local_store, {"bad_word": "dog"})
    assert state.status is RequestStatus.FAILED
    task = state.task("shout", WORDS.index("dog"))
    assert task is not None and task.attempt == 1 and task.error_type == "TerminalError"


def test_stage_timeout_times_out_and_fails_no_task_hangs(local_store: ObjectStore) -> None:
    # measure: stage timeout 2 s, function Timeout 5 s. Sleeping 8 s, no attempt can succeed late
    # (the engine would rightly accept a late success of a timed-out attempt).
    state = run_demo(local_store, {"slow_word": "fox", "sleep_s": 8})
    assert state.status is RequestStatus.FAILED
    failure = read_json(local_store, state_key(state.request_id))["failure"]
    assert failure["stage"] == "measure" and failure["error_type"] == "States.Timeout"


def test_large_outputs_travel_by_reference(local_store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAVE_PAYLOAD_THRESHOLD", "50000")
    state = run_demo(local_store, {"pad_word": "fox", "pad_bytes": 300_000})
    assert state.status is RequestStatus.COMPLETED
    task = state.task("shout", WORDS.index("fox"))
    assert task is not None and set(task.output) == {"$ref", "$size"}  # a marker, with the value's size
    measured = state.task("measure", WORDS.index("fox"))
    assert measured is not None and measured.output["padding_seen"] == 300_000


def test_warm_environments_are_reused(local_store: ObjectStore) -> None:
    state = run_demo(local_store)
    pids = {t.output["pid"] for t in state.tasks["shout"].values()}
    assert len(pids) <= 2  # max_concurrency 2 -> at most two warm environments did all nine words


def test_cancel_from_another_orchestrator_stops_the_run(local_store: ObjectStore) -> None:
    driver = demo_orchestrator(local_store)
    # measure's items run together (an I/O-bound function scales to them): 1 s each keeps it running past 0.5 s.
    state = driver.create({"text": TEXT, "sleep_s": 1.0})
    result: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("state", driver.drive(state.request_id, tick_s=0.02, poll_s=0.1))
    )
    thread.start()
    time.sleep(0.5)
    other = demo_orchestrator(local_store)
    try:
        other.cancel(state.request_id, "enough")
    finally:
        other.close()
    thread.join(timeout=20)
    driver.close()
    assert not thread.is_alive()
    final_state = result["state"]
    assert getattr(final_state, "status", None) is RequestStatus.CANCELLED
    assert read_json(local_store, state_key(state.request_id))["cancel_reason"] == "enough"


def test_a_large_input_is_stored_once_not_copied_into_every_task(local_store: ObjectStore) -> None:
    counting = CountingStore(local_store)
    blob = "x" * 1_000_000
    state = run_demo(counting, {"blob": blob})  # 1 words + 9 shouts + 9 measures + 1 join tasks
    assert state.status is RequestStatus.COMPLETED
    assert state.input_ref == input_key(state.request_id)
    assert read_json(local_store, input_key(state.request_id))["blob"] == blob
    # Every task carried the 1 MB request before: 20 offloaded copies (plus one in every state.json rewrite).
    assert counting.stats.bytes_written < 1_500_000, counting.stats
    assert len(local_store.get(state_key(state.request_id)).data) < 10_000
    joined = state.task("join")
    assert joined is not None and joined.output["text"] == " ".join(w.upper() + "!" for w in WORDS)


def test_a_run_sweeps_the_temp_files_of_writes_that_died(local_store: LocalStore) -> None:
    local_store.put("warm/up.json", b"{}")  # creates .fave/tmp
    tmp = local_store.root / ".fave" / "tmp"
    orphan, fresh = tmp / "0123456789abcdef.tmp", tmp / "fedcba9876543210.tmp"
    orphan.write_bytes(b"half an object")
    fresh.write_bytes(b"a write in progress")
    two_hours_ago = time.time() - 7200
    os.utime(orphan, (two_hours_ago, two_hours_ago))

    assert run_demo(local_store).status is RequestStatus.COMPLETED
    assert not orphan.exists() and fresh.exists()
