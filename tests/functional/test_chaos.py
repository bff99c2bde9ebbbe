"""``fave chaos`` and ``--faults`` through the real CLI (child processes, real crashes), and chaos catching a
broken invariant.

The session runs tests/fixtures/demo/chaos.yaml: the demo functions with 2 s stage timeouts (a lost delivery
costs one timeout) and a retry budget of 6. Its final.json has ``attempts`` (each item's shout attempt),
which faults legitimately change: the sessions ignore it.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

from fave.cli.chaos import Chaos, DriverExit, check_request, run_driver
from fave.core.model import RequestStatus
from fave.keys import final_key, lease_key, state_key
from fave.lease import LEASE_TTL_S
from fave.local.faults import CRASH_EXIT_CODE, KINDS, REPORT_PREFIX, FaultSpec, parse_report
from fave.local.orchestrator import load_local_pipeline, local_orchestrator
from fave_shared.store import LocalStore, ObjectStore
from support.e2e import child_env, fave

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "tests" / "fixtures" / "demo" / "chaos.yaml"
TEXT = "the quick brown fox jumps"
INPUT = json.dumps({"text": TEXT})
# Rates high enough that three runs all but surely see duplicates (~40 deliveries), throttles (~40 invokes) and
# crashes (~300 effects), which the test checks so that a kind that stops happening does not pass quietly.
# Drops cost a stage timeout each, so they are rare here (tests/functional/test_faults.py proves them).
# Decisions are seeded per task attempt, but how steps batch depends on timing: a session is not exactly
# repeatable, so nothing below depends on the exact counts.
SPEC = "duplicate=0.3,drop=0.05,delay=0-300ms,crash_after_effect=0.03,throttle=0.2,seed=7"
SESSION_TIMEOUT_S = 120


def env() -> dict[str, str]:
    return {k: v for k, v in child_env().items() if k != "FAVE_FAULTS"}


def test_a_short_chaos_session_holds_every_invariant(tmp_path: Path) -> None:
    started = time.monotonic()
    result = fave(
        "chaos",
        "--pipeline",
        str(CHAOS),
        "--runs",
        "3",
        "--faults",
        SPEC,
        "--input",
        INPUT,
        "--ignore-fields",
        "attempts",
        "--store",
        str(tmp_path / "store"),
        "--json",
        env=env(),
        timeout=SESSION_TIMEOUT_S,
    )
    assert result.code == 0, result.describe()
    report = result.json
    assert report["ok"] and report["failures"] == []
    assert report["reference"]["status"] == "COMPLETED" and report["reference"]["resumes"] == 0
    assert [r["status"] for r in report["runs"]] == ["COMPLETED"] * 3
    assert all(r["injected"] for r in report["runs"])
    assert set(report["injected"]) == set(KINDS)
    happened = {kind for kind, n in report["injected"].items() if n > 0}
    assert happened >= {"duplicate", "delay", "throttle", "crash_after_effect"}, report["injected"]
    crashes = [c for r in report["runs"] for c in r["crashes"]]
    assert report["resumes"] == len(crashes) >= 1  # each injected crash was a real process death, resumed
    store = LocalStore(tmp_path / "store")
    for run in report["runs"]:
        assert store.head(lease_key(run["request_id"])) is None  # the last driver released what crashes left
    print(f"chaos session: {time.monotonic() - started:.1f} s, injected {report['injected']}, crashes {crashes}")


def test_chaos_fails_naming_the_run_and_the_invariant(tmp_path: Path) -> None:
    # Lost deliveries time out and are retried, so final.json's attempts differ from the reference run's:
    # without --ignore-fields attempts, the final comparison must fail, and say where. (Throttles would not do:
    # a throttled invocation did not run and spends no attempt.)
    result = fave(
        "chaos",
        "--pipeline",
        str(CHAOS),
        "--runs",
        "1",
        "--faults",
        "drop=0.4,seed=3",
        "--input",
        INPUT,
        "--store",
        str(tmp_path / "store"),
        env=env(),
        timeout=SESSION_TIMEOUT_S,
    )
    assert result.code == 1, result.describe()
    assert "chaos: run 1: final: final.attempts[" in result.stdout, result.describe()
    assert "chaos: 1 of 1 run(s) broke an invariant" in result.stdout
    assert "FAIL final" in result.stdout  # the table's result column


# A driver whose engine is broken: a duplicate completion of a task that already succeeded is counted again.
BROKEN_ENGINE = textwrap.dedent(
    """
    import sys
    from fave.core import engine

    original = engine._Tx.task_succeeded

    def task_succeeded(self, ev):
        task = self.get(ev.stage, 0 if ev.item is None else ev.item)
        if task is not None and task.status is engine.TaskStatus.SUCCEEDED:
            st = self.stage(ev.stage)
            self.set_stage(ev.stage, engine.evolve(st, succeeded=st.succeeded + 1))
            return
        original(self, ev)

    engine._Tx.task_succeeded = task_succeeded
    from fave.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def broken_driver(command: list[str], environ: Mapping[str, str], timeout_s: float) -> DriverExit:
    assert command[1:3] == ["-m", "fave.cli.main"], command
    return run_driver([command[0], "-c", BROKEN_ENGINE, *command[3:]], environ, timeout_s)


def test_chaos_catches_an_engine_that_counts_a_duplicate_twice(local_store: LocalStore) -> None:
    store = local_store
    chaos = Chaos(
        load_local_pipeline(CHAOS),
        store,
        FaultSpec(duplicate=1.0, seed=1),
        request_input={"text": TEXT},
        ignore_fields=["attempts"],
        driver=broken_driver,
    )
    report = chaos.run(1)
    assert report.reference is not None and report.reference.ok  # no duplicates, nothing to miscount
    assert not report.ok
    failures = report.failures()
    assert any(f.startswith("run 1: counts: stage shout: succeeded is ") for f in failures), failures
    assert report.to_json()["runs"][0]["ok"] is False


def demo_request(store: ObjectStore) -> str:
    orchestrator = local_orchestrator(CHAOS, store, faults="none", runtime_options={"async_retry_delays_s": (0.05,)})
    try:
        state = orchestrator.create({"text": TEXT})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()
    assert state.status is RequestStatus.COMPLETED
    return state.request_id


def test_check_request_names_what_is_left_unsettled_or_miscounted(local_store: LocalStore) -> None:
    store = local_store
    request_id = demo_request(store)
    reference = json.loads(store.get(final_key(request_id)).data)
    assert check_request(store, request_id, reference) == []
    doc = json.loads(store.get(state_key(request_id)).data)

    join = doc["stages"]["join"]
    join["task"]["status"] = "RUNNING"  # counts kept consistent: only "settled" is broken
    join["running"], join["succeeded"] = 1, 0
    store.put(state_key(request_id), json.dumps(doc).encode())
    found = check_request(store, request_id, reference)
    assert [(v.invariant, v.detail) for v in found] == [("settled", "stage join task(s) 0 not finished")]

    join["status"] = "RUNNING"
    join["running"] = 0  # and now the counts lie too
    store.put(state_key(request_id), json.dumps(doc).encode())
    found = check_request(store, request_id, {**reference, "text": "other"})
    assert {v.invariant for v in found} == {"counts", "settled", "final"}
    assert "stage join: running is 0 but 1 of its tasks are RUNNING" in [v.detail for v in found]


def test_an_injected_crash_is_a_real_process_death_and_resume_takes_over(tmp_path: Path) -> None:
    store_dir = str(tmp_path / "store")
    common = ["--pipeline", str(CHAOS), "--input", INPUT, "--store", store_dir]

    # 1. The first effect of `fave run` is creating the request: the process dies right after it.
    crashed = fave("run", str(CHAOS), *common, "--faults", "crash_after_effect=1,seed=1", env=env())
    assert crashed.code == CRASH_EXIT_CODE, crashed.describe()
    assert "fave: injected crash after state.json commit" in crashed.stderr
    assert parse_report(crashed.stderr)["crash_after_effect"] == 1
    store = LocalStore(store_dir)
    (request_id,) = {k.split("/")[1] for k in store.list("requests/") if k.endswith("state.json")}
    assert json.loads(store.get(state_key(request_id)).data)["status"] == "INIT"

    # 2. FAVE_FAULTS works too: this resume takes the lease, commits the start, and dies holding the lease.
    again = fave("resume", request_id, "--store", store_dir, env={**env(), "FAVE_FAULTS": "crash_after_effect=1"})
    assert again.code == CRASH_EXIT_CODE, again.describe()
    assert f"`fave resume {request_id}` continues the request" in again.stderr
    lease = json.loads(store.get(lease_key(request_id)).data)  # no cleanup ran: the lease is still there...
    assert not Path(f"/proc/{lease['pid']}").exists()  # ...naming a process that is gone

    # 3. A plain resume takes the dead driver's lease over at once (not after its ttl) and completes.
    started = time.monotonic()
    done = fave("resume", request_id, "--store", store_dir, "--json", env=env())
    assert done.code == 0, done.describe()
    assert time.monotonic() - started < LEASE_TTL_S
    assert done.json["status"] == "COMPLETED"
    assert REPORT_PREFIX not in done.stderr  # no faults, no report
    assert check_request(store, request_id) == []


def test_bad_fault_specs_are_refused_in_one_line(tmp_path: Path) -> None:
    store_dir = str(tmp_path / "store")
    common = ["--pipeline", str(CHAOS), "--input", INPUT, "--store", store_dir]
    bad = fave("run", str(CHAOS), *common, "--faults", "drop=2", env=env())
    assert bad.code == 2 and bad.stderr.strip().splitlines() == [
        "fave: error: --faults: key 'drop' must be a probability from 0 to 1 (or 0-100%), got '2'"
    ]
    from_env = fave("run", str(CHAOS), *common, env={**env(), "FAVE_FAULTS": "dup=1"})
    assert from_env.code == 2 and len(from_env.stderr.strip().splitlines()) == 1
    assert from_env.stderr.startswith("fave: error: FAVE_FAULTS: unknown key 'dup'")
    assert not list(LocalStore(store_dir).list(""))  # refused before anything was stored
    nothing = fave("chaos", "--pipeline", str(CHAOS), "--faults", "none", env=env())
    assert nothing.code == 2 and "nothing to inject" in nothing.stderr
    runs = fave("chaos", "--pipeline", str(CHAOS), "--faults", "drop=0.1", "--runs", "0", env=env())
    assert runs.code == 2 and "--runs must be at least 1" in runs.stderr


def test_a_driver_that_hangs_or_fails_breaks_ended(local_store: LocalStore) -> None:
    def failing_driver(command: list[str], environ: Mapping[str, str], timeout_s: float) -> DriverExit:
        if "none" in command:  # the reference run drives normally
            return run_driver(command, environ, timeout_s)
        return run_driver([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], environ, 5)

    chaos = Chaos(
        load_local_pipeline(CHAOS),
        local_store,
        FaultSpec(drop=0.1),
        request_input={"text": TEXT},
        driver=failing_driver,
    )
    report = chaos.run(1)
    failures = report.failures()
    assert "run 1: ended: driver exited 3: boom" in failures, failures
    assert any(f.startswith("run 1: completed: request ") and "is INIT" in f for f in failures), failures
    assert any(f.startswith("run 1: settled: request INIT") for f in failures), failures
    assert os.environ.get("FAVE_FAULTS") is None or "FAVE_FAULTS" not in chaos.env
