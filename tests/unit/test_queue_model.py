"""The admission queue's rules, as pure functions (``fave.queue_model``): what claim, start, finish, release and
retry make of an entry, the cooldown's exponential backoff up to max attempts, and the stats of a queue."""

from __future__ import annotations

from typing import Any

import pytest
from fave.queue_model import (
    BACKOFF_CAP_S,
    Entry,
    QueueError,
    backoff_s,
    check_priority,
    claimable,
    on_claim,
    on_finished,
    on_release,
    on_retry,
    on_started,
    queue_stats,
)

T0 = 1_800_000_000.0
REQUEST = "01J0000000000000000000000A"


def entry(**changes: Any) -> Entry:
    base: dict[str, Any] = {
        "id": "01J00000000000000000000001",
        "key": None,
        "input": {"x": 1},
        "priority": 3,
        "status": "QUEUED",
        "attempts": 0,
        "max_attempts": 3,
        "created_at": T0,
        "not_before": T0,
        "every_s": None,
        "request_id": None,
        "worker": None,
        "error": None,
        "budget": None,
        "paused": False,
    }
    return Entry(**{**base, **changes})


def running(e: Entry, now: float = T0) -> Entry:
    return on_started(on_claim(e, "w1", now), REQUEST, now)


def test_backoff_doubles_from_a_minute_and_is_capped() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [60.0, 120.0, 240.0, 480.0]
    assert backoff_s(30) == BACKOFF_CAP_S


def test_a_failed_run_cools_down_then_the_last_attempt_fails_the_entry() -> None:
    e = running(entry())
    e = on_finished(e, "FAILED", T0 + 10, "boom")
    assert (e.status, e.attempts, e.not_before, e.error, e.request_id) == ("QUEUED", 1, T0 + 70, "boom", None)
    assert not claimable(e, T0 + 69) and claimable(e, T0 + 70)
    e = on_finished(running(e, T0 + 70), "FAILED", T0 + 80)
    assert (e.status, e.attempts, e.not_before) == ("QUEUED", 2, T0 + 80 + 120)
    e = on_finished(running(e, T0 + 200), "FAILED", T0 + 210)
    assert (e.status, e.attempts) == ("FAILED", 3)
    assert not claimable(e, T0 + 10_000)


@pytest.mark.parametrize(("status", "error"), [("CANCELLED", None), ("FAILED", "budget_exceeded: max_wall")])
def test_a_cancel_or_a_budget_stop_is_not_retried(status: str, error: str | None) -> None:
    e = on_finished(running(entry()), status, T0, error)
    assert (e.status, e.attempts) == ("FAILED", 1)


def test_success_is_done_or_for_a_recurring_entry_due_again_every_s_later() -> None:
    done = on_finished(running(entry()), "COMPLETED", T0 + 5)
    assert (done.status, done.last_success_at) == ("DONE", T0 + 5)
    failed_once = on_finished(running(entry(every_s=86400.0)), "FAILED", T0)
    again = on_finished(running(failed_once, T0 + 60), "COMPLETED", T0 + 65)
    assert (again.status, again.not_before, again.attempts, again.request_id) == ("QUEUED", T0 + 65 + 86400, 0, None)


def test_claimable_skips_paused_future_and_live_claims_and_takes_expired_ones() -> None:
    assert claimable(entry(), T0)
    assert not claimable(entry(paused=True), T0)
    assert not claimable(entry(not_before=T0 + 1), T0)
    claimed = on_claim(entry(), "w1", T0, lease_s=30)
    assert not claimable(claimed, T0 + 29)
    assert claimable(claimed, T0 + 31)  # its worker died before starting it
    assert not claimable(on_started(claimed, REQUEST, T0 + 1), T0 + 10_000)


def test_release_counts_no_attempt_and_a_running_entry_keeps_its_request() -> None:
    released = on_release(running(entry()), T0 + 1)
    assert (released.status, released.attempts, released.request_id, released.worker) == ("QUEUED", 0, REQUEST, None)
    assert claimable(released, T0 + 1)
    with pytest.raises(QueueError):
        on_release(entry(), T0)


def test_started_needs_a_claim_and_is_idempotent_for_the_same_request() -> None:
    with pytest.raises(QueueError, match="CLAIMED"):
        on_started(entry(), REQUEST, T0)
    once = running(entry())
    assert on_started(once, REQUEST, T0 + 5) is once


def test_retry_makes_a_failed_entry_due_now_with_attempts_from_zero() -> None:
    failed = entry(status="FAILED", attempts=3, error="x")
    again = on_retry(failed, T0 + 9)
    assert (again.status, again.attempts, again.not_before, again.error) == ("QUEUED", 0, T0 + 9, None)
    with pytest.raises(QueueError, match="running"):
        on_retry(running(entry()), T0)


def test_every_version_of_an_entry_differs_so_etags_cannot_repeat() -> None:
    e = entry()
    versions = [e, on_claim(e, "w", T0), on_release(on_claim(e, "w", T0), T0)]
    assert len({v.version for v in versions}) == 3
    assert Entry.from_json(versions[-1].to_json()) == versions[-1]


@pytest.mark.parametrize("bad", [0, 6, "1", True, None])
def test_priority_is_one_to_five(bad: object) -> None:
    with pytest.raises(QueueError, match="priority"):
        check_priority(bad)


def test_stats_depth_by_priority_oldest_due_and_drain_estimate() -> None:
    now = T0 + 1000
    entries = [
        entry(id="01J00000000000000000000001", priority=1, created_at=T0),
        entry(id="01J00000000000000000000002", priority=1, created_at=T0 + 500),
        entry(id="01J00000000000000000000003", priority=5, created_at=T0 - 50, paused=True),
        entry(id="01J00000000000000000000004", priority=2, not_before=now + 60),
        running(entry(id="01J00000000000000000000005")),
    ]
    completions = [now - 7200 + i * 720 for i in range(10)]  # 10 in the last two hours: 5 an hour
    stats = queue_stats(entries, completions, now, failed=2)
    assert dict(stats.depth_by_priority) == {1: 2, 2: 1, 3: 0, 4: 0, 5: 1}
    assert (stats.depth, stats.due, stats.cooling_down, stats.paused, stats.running) == (4, 2, 1, 1, 1)
    assert stats.oldest_age_s == 1000  # the paused one is older but waits for no worker
    assert stats.drain_rate_per_h == pytest.approx(5.0)
    assert stats.est_drain_s == pytest.approx(3 / 5 * 3600)  # paused entries are not counted as draining
    assert stats.to_json()["depth_by_priority"]["1"] == 2
    empty = queue_stats([], [], now)
    assert (empty.oldest_age_s, empty.drain_rate_per_h, empty.est_drain_s) == (None, None, None)
