"""The run history (issue 14 requirement 5): one summary per ended request, read back through day packs so that
``fave metrics`` stays cheap with 10,000 requests. Real ``LocalStore``; requests counted with
``fave_shared.store.counting.CountingStore``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fave import history
from fave.cli.main import main
from fave.core.budget import Ledger, Rates
from fave.core.model import Attempt, Failure, RequestState, RequestStatus, StageState, Task, TaskStatus
from fave.history import ReadStats, read, record
from fave.keys import HISTORY_PACKS_PREFIX, HISTORY_PREFIX, history_pack_key
from fave.local.orchestrator import local_orchestrator
from fave.metrics import report
from fave_shared.store import LocalStore
from fave_shared.store.counting import CountingStore
from immutables import Map

ROOT = Path(__file__).resolve().parents[2]
CACHED = ROOT / "tests" / "fixtures" / "cache" / "pipeline.yaml"
DAY = 86400.0
START = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


def ended(
    request_id: str,
    finished_at: float,
    *,
    status: RequestStatus = RequestStatus.COMPLETED,
    error_type: str | None = None,
    items: int = 3,
    resumes: int = 0,
) -> RequestState:
    """A request that ended at ``finished_at``: a single-task stage of 2 s and a fan-out of ``items`` tasks of
    0.3 s, the first item retried once (its first attempt failed after 0.2 s)."""
    started = finished_at - 10.0
    first = Task(TaskStatus.SUCCEEDED, attempt=1, dispatched_at=started, finished_at=started + 2.0)
    fan = {
        i: Task(
            TaskStatus.SUCCEEDED,
            attempt=2 if i == 0 else 1,
            dispatched_at=started + 3.0,
            finished_at=started + 3.3,
            history=(Attempt(1, started + 2.5, started + 2.7, "Boom", "boom"),) if i == 0 else (),
        )
        for i in range(items)
    }
    failure = Failure("fan", 0, error_type, f"{error_type}: max_cost_usd") if error_type else None
    return RequestState(
        request_id=request_id,
        input={},
        pipeline_digest="d",
        created_at=started - 1.0,
        status=status,
        started_at=started,
        finished_at=finished_at,
        failure=failure,
        resumes=resumes,
        stages=Map({"first": StageState(total=1), "fan": StageState(total=items)}),
        tasks=Map({"first": Map({0: first}), "fan": Map(fan)}),
    )


def rid(n: int, t: float) -> str:
    """A request id of the store's shape (a ULID: 26 Crockford base32 characters), unique per ``n``."""
    from fave.ids import new_request_id

    return new_request_id(t)[:16] + f"{n:010d}"


def test_ten_thousand_requests_read_in_O_days_objects_once_the_days_are_packed(tmp_path: Path) -> None:
    store = CountingStore(LocalStore(tmp_path / "store"))
    days = 20
    n = 10_000
    for i in range(n):
        t = START + i * days * DAY / n
        status = RequestStatus.FAILED if i % 10 == 0 else RequestStatus.COMPLETED
        state = ended(rid(i, t), t, status=status, error_type="Boom" if i % 10 == 0 else None)
        assert record(store, state, "demo", now=t + 1.0)
    now = START + days * DAY + 3600.0  # the last day has ended (and its margin passed): every day can be sealed

    store.reset()
    first = ReadStats()
    doc = report(store, since_s=(days + 1) * DAY, pipeline="demo", now=now, stats=first)
    built = store.reset()
    assert doc["requests"]["ended"] == n
    assert doc["requests"]["failed"] == n // 10
    assert first.summaries_read == n
    assert built.requests > n  # the first read reads every summary once and packs each day

    second = ReadStats()
    doc2 = report(store, since_s=(days + 1) * DAY, pipeline="demo", now=now, stats=second)
    cost = store.reset()
    assert doc2 == doc
    assert second.summaries_read == 0
    assert second.days == days + 2  # the window spans 22 calendar days (the first and the last partly)
    # O(days): a GET of each day's pack (the empty day before the first too); today, still open, has no pack
    # yet: a GET and a listing.
    assert cost.requests == second.days + 1, cost
    assert second.sealed_days == days + 1

    assert doc["stages"]["fan"]["tasks"] == 3 * n
    assert doc["stages"]["fan"]["retries"] == n
    assert doc["stages"]["fan"]["p50_s"] is not None and 0.25 <= doc["stages"]["fan"]["p50_s"] <= 0.5
    assert 1.0 <= doc["stages"]["first"]["p95_s"] <= 2.5
    assert doc["per_day"][0]["completed"] + doc["per_day"][0]["failed"] == n // days


def test_an_open_day_costs_its_listing_its_pack_and_what_was_written_since(tmp_path: Path) -> None:
    store = CountingStore(LocalStore(tmp_path / "store"))
    t = START + 3600.0
    for i in range(50):
        record(store, ended(rid(i, t), t + i), "demo", now=t + i)
    now = t + 100.0  # the same day: not sealable
    assert len(read(store, t - 60, now=now)) == 50
    for i in range(50, 53):
        record(store, ended(rid(i, t), t + i), "demo", now=t + i)
    store.reset()
    stats = ReadStats()
    assert len(read(store, t - 60, now=now + 10, stats=stats)) == 53
    assert stats.summaries_read == 3  # not the 50 already in the pack
    # the pack, one listing, 3 summaries, and the pack written again
    assert store.reset().requests == 1 + 1 + 3 + 1


def test_a_resumed_request_counts_once_its_latest_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    t = START + 600.0
    request_id = rid(1, t)
    record(store, ended(request_id, t, status=RequestStatus.FAILED, error_type="Boom"), "demo", now=t)
    record(store, ended(request_id, t + 2 * DAY, resumes=1), "demo", now=t + 2 * DAY)  # resumed, two days later
    doc = report(store, since_s=7 * DAY, now=t + 3 * DAY)
    assert doc["requests"]["ended"] == 1
    assert doc["requests"]["completed"] == 1
    # The first run alone is in a window that ends before the resume.
    only_first = read(store, t - DAY, t + DAY, now=t + 3 * DAY)
    assert [(s.request_id, s.status) for s in only_first] == [(request_id, "FAILED")]


def test_pipelines_budget_failures_and_ledgers_are_told_apart(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    t = START + 600.0
    record(store, ended(rid(1, t), t), "demo", now=t)
    record(store, ended(rid(2, t), t + 1, status=RequestStatus.FAILED, error_type="budget_exceeded"), "demo", now=t + 1)
    record(store, ended(rid(3, t), t + 2), "other", now=t + 2)
    doc = report(store, since_s=DAY, pipeline="demo", now=t + 10)
    assert doc["requests"]["ended"] == 2
    assert doc["requests"]["budget_exceeded"] == 1
    assert doc["requests"]["error_types"] == {"budget_exceeded": 1}
    both = report(store, since_s=DAY, now=t + 10)
    assert both["requests"]["ended"] == 3
    assert both["pipelines"] == {"demo": 2, "other": 1}


def test_a_summary_carries_the_ledger_priced_at_the_engines_rates(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    t = START + 600.0
    ledger = Ledger(invocations=4, billed_ms=Map({"F": 2000}), s3_puts=10, s3_gets=10)
    rates = Rates(memory_mb={"F": 1024})
    record(store, replace(ended(rid(1, t), t), ledger=ledger), "demo", now=t, rates=rates)
    record(store, replace(ended(rid(2, t), t + 1), ledger=ledger), "demo", now=t + 1, rates=rates)
    record(store, ended(rid(3, t), t + 2), "demo", now=t + 2, rates=rates)  # a ledger of nothing: costs $0
    doc = report(store, since_s=DAY, now=t + 10)
    each = ledger.cost_usd(rates)
    assert doc["cost"]["requests_with_ledger"] == 3
    assert doc["cost"]["total_usd"] == pytest.approx(2 * each, abs=1e-6)
    assert doc["cost"]["per_request_usd"] == pytest.approx(2 * each / 3, abs=1e-6)
    assert doc["cost"]["per_day_usd"] == pytest.approx(2 * each, abs=1e-6)  # a window of a day
    assert doc["cost"]["invocations"] == 8
    assert doc["cost"]["gb_s"] == pytest.approx(4.0)  # 2 s at 1 GB, twice


def test_reading_an_empty_or_absent_store_writes_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert read(store, START, START + 30 * DAY, now=START + 40 * DAY) == []
    assert not (tmp_path / "store").exists() or list(store.list("")) == []


def test_a_state_that_has_not_ended_is_not_recorded(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    state = ended(rid(1, START), START, status=RequestStatus.RUNNING)
    assert record(store, state, "demo") == ""
    assert list(store.list(HISTORY_PREFIX)) == []


def test_fave_metrics_reads_a_real_run_from_the_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real request of the demo pipeline on the local runtime, recorded as the service will when it ends,
    then ``fave metrics --json`` and its plain-text table."""
    store = LocalStore(tmp_path / "store")
    orchestrator = local_orchestrator(CACHED, store, runtime_options={"async_retry_delays_s": (0.05, 0.05)})
    try:
        state = orchestrator.create({"text": "the quick brown fox"})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
        final = orchestrator.load(state.request_id)  # the head only: fanned-out stages are read by record
    finally:
        orchestrator.close()
    assert final.status is RequestStatus.COMPLETED
    if not list(store.list(HISTORY_PREFIX)):  # the service records it itself once the lead wires it in
        assert record(store, final, "demo-cached")
    assert main(["metrics", "--json", "--since", "24h", "--store", str(tmp_path / "store")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["requests"]["completed"] == 1
    assert doc["index"]["days"] == 2 and doc["index"]["summaries_read"] in (0, 1)
    assert doc["stages"]["shout"]["tasks"] == 4  # one per word, read from the task shards
    assert doc["stages"]["measure"]["p50_s"] is not None
    assert set(doc) >= {"requests", "per_day", "stages", "tasks", "cost", "queue", "throughput_per_day"}
    assert main(["metrics", "--pipeline", str(CACHED), "--store", str(tmp_path / "store")]) == 0
    text = capsys.readouterr().out
    assert "fave metrics of pipeline demo-cached" in text and "shout" in text
    assert main(["metrics", "--pipeline", "nope", "--json", "--store", str(tmp_path / "store")]) == 0
    assert json.loads(capsys.readouterr().out)["requests"]["ended"] == 0


@pytest.mark.parametrize("since", ["soon", "0s", "-1d"])
def test_fave_metrics_refuses_a_bad_window_in_one_line(
    since: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["metrics", f"--since={since}", "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fave: error: --since") and len(err.strip().splitlines()) == 1


def test_fave_metrics_shows_the_admission_queues_depth_for_a_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fave.queue import AdmissionQueue

    store = LocalStore(tmp_path / "store")
    queue = AdmissionQueue(store, "demo-cached")
    queue.add({"text": "one"}, priority=1)
    queue.add({"text": "two"}, priority=3)
    assert main(["metrics", "--json", "--pipeline", str(CACHED), "--store", str(tmp_path / "store")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pipeline"] == "demo-cached"
    assert doc["queue"]["depth"] == 2
    assert main(["metrics", "--pipeline", "demo-cached", "--store", str(tmp_path / "store")]) == 0
    assert "queue depth" in capsys.readouterr().out
    # Without a pipeline there is no one queue to ask.
    assert main(["metrics", "--json", "--store", str(tmp_path / "store")]) == 0
    assert json.loads(capsys.readouterr().out)["queue"] is None


def test_fave_metrics_refuses_a_missing_pipeline_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--pipeline", str(tmp_path / "nope.yaml"), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and len(err.strip().splitlines()) == 1


def test_the_terminal_tables_show_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fave.cli.metrics import _print_rich

    store = LocalStore(tmp_path / "store")
    t = START + 600.0
    record(store, ended(rid(1, t), t), "demo", now=t)
    doc = report(store, since_s=DAY, now=t + 10)
    doc["since_text"] = "24h"
    _print_rich(doc)
    out = capsys.readouterr().out
    assert "first" in out and "fan" in out and "per day" in out


def test_readers_packing_while_a_writer_records_lose_nothing(tmp_path: Path) -> None:
    """Readers fold the open day into its pack with conditional writes while summaries keep arriving: each read
    sees every summary written before it began, and the pack ends up with all of them."""
    import threading

    store = LocalStore(tmp_path / "store")
    t = START + 3600.0
    n = 300
    written = [0]
    done = threading.Event()
    problems: list[str] = []

    def write() -> None:
        for i in range(n):
            record(store, ended(rid(i, t), t + i), "demo", now=t + i)
            written[0] = i + 1
        done.set()

    def read_along() -> None:
        while not done.is_set():
            before = written[0]
            seen = len(read(store, t - 60, now=t + n))
            if seen < before:
                problems.append(f"saw {seen} of {before}")

    threads = [threading.Thread(target=write), *(threading.Thread(target=read_along) for _ in range(3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert problems == []
    assert len(read(store, t - 60, now=t + n)) == n
    pack = json.loads(store.get(history_pack_key(history.day_of(t))).data)
    assert len(pack["summaries"]) == n and pack["sealed"] is False
    # Two readers sealing the day at once: one pack, sealed, with every summary.
    later = history.day_end(history.day_of(t)) + history.SEAL_MARGIN_S + 1
    readers = [threading.Thread(target=read, args=(store, t - 60), kwargs={"now": later}) for _ in range(4)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(60)
    pack = json.loads(store.get(history_pack_key(history.day_of(t))).data)
    assert len(pack["summaries"]) == n and pack["sealed"] is True


class ReadOnly(CountingStore):
    """The real store, with writes refused as S3 refuses them to read-only credentials."""

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        raise PermissionError(f"AccessDenied: {key}")


def test_a_read_only_store_is_read_summary_by_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(tmp_path / "store")
    t = START + 600.0
    for i in range(5):
        record(store, ended(rid(i, t), t + i), "demo", now=t + i)
    stats = ReadStats()
    assert len(read(ReadOnly(store), t - 60, now=t + 3 * DAY, stats=stats)) == 5
    assert stats.packs_written == 0 and stats.summaries_read == 5
    assert "could not pack" in caplog.text


class FailsPacksOnce(CountingStore):
    """The real store, whose first write of a pack fails (a transient S3 error)."""

    failed = False

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        if key.startswith(HISTORY_PACKS_PREFIX) and not self.failed:
            self.failed = True
            raise OSError("503 SlowDown")
        return super().put(key, data, **kwargs)


def test_a_pack_that_could_not_be_written_loses_no_summary(tmp_path: Path) -> None:
    store = FailsPacksOnce(LocalStore(tmp_path / "store"))
    t = START + 600.0
    for i in range(5):
        record(store, ended(rid(i, t), t + i), "demo", now=t + i)
    later = t + 3 * DAY  # the day can be sealed
    assert len(read(store, t - 60, now=later)) == 5
    assert len(read(store, t - 60, now=later)) == 5
    pack = json.loads(store.get(history_pack_key(history.day_of(t))).data)
    assert pack["sealed"] is True and len(pack["summaries"]) == 5
