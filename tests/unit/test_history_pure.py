"""The pure parts of the run history (fave.history): a stage's summary from its tasks, and quantiles from the
fixed-bucket histogram that summaries add up bucket by bucket."""

from __future__ import annotations

import pytest
from fave.core.model import Attempt, Task, TaskStatus
from fave.history import DURATION_BUCKETS, Summary, quantile, summarize_stage
from fave.metrics import aggregate


def test_a_stages_summary_counts_attempts_retries_failures_and_durations() -> None:
    tasks = [
        Task(TaskStatus.SUCCEEDED, attempt=1, dispatched_at=10.0, finished_at=10.3),
        # failed twice (0.2 s, then 4 s), succeeded on the third attempt in 0.3 s
        Task(
            TaskStatus.SUCCEEDED,
            attempt=3,
            dispatched_at=20.0,
            finished_at=20.3,
            history=(Attempt(1, 11.0, 11.2, "E", "e"), Attempt(2, 12.0, 16.0, "E", "e")),
        ),
        # failed for good: its last attempt is in its history too (the engine's with_failed_attempt)
        Task(
            TaskStatus.FAILED,
            attempt=1,
            dispatched_at=30.0,
            finished_at=31.0,
            history=(Attempt(1, 30.0, 31.0, "E", "e"),),
        ),
        Task(TaskStatus.SUCCEEDED, attempt=0, cached=True),  # from the result cache: ran nothing
        Task(TaskStatus.PENDING),  # never ran (the request failed first)
    ]
    s = summarize_stage(tasks)
    assert (s.tasks, s.succeeded, s.failed, s.cached) == (5, 3, 1, 1)
    assert s.attempts == 1 + 3 + 1
    assert s.retries == 2
    assert s.failed_attempts == 3
    assert sum(s.buckets) == 5  # 0.3, 0.2, 4.0, 0.3, 1.0
    assert s.duration_sum_s == pytest.approx(0.3 + 0.2 + 4.0 + 0.3 + 1.0)
    assert len(s.buckets) == len(DURATION_BUCKETS) + 1


def test_quantiles_interpolate_within_a_bucket_like_histogram_quantile() -> None:
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    i = DURATION_BUCKETS.index(1)  # the bucket (0.5, 1]
    counts[i] = 10
    assert quantile(counts, 0.5) == pytest.approx(0.75)
    assert quantile(counts, 1.0) == pytest.approx(1.0)
    counts[-1] = 90  # longer than the last bound
    assert quantile(counts, 0.95) == DURATION_BUCKETS[-1]
    assert quantile([0] * len(counts), 0.5) is None


def test_the_report_of_no_requests_has_every_key_and_no_made_up_numbers() -> None:
    doc = aggregate([], 0.0, 86400.0)
    assert doc["requests"]["ended"] == 0 and doc["requests"]["failure_rate"] is None
    assert doc["cost"]["per_request_usd"] is None and doc["stages"] == {} and doc["per_day"] == []


def test_the_report_counts_statuses_days_and_rates() -> None:
    day = 86400.0
    runs = [
        Summary("A" * 26, "p", "COMPLETED", 0.0, 1.0, 11.0, ledger={"cost_usd": 0.5, "invocations": 3}),
        Summary("B" * 26, "p", "FAILED", 0.0, 1.0, day + 5.0, error_type="budget_exceeded"),
        Summary("C" * 26, "p", "COMPLETED", 0.0, day + 1.0, day + 31.0),
    ]
    doc = aggregate(runs, 0.0, 2 * day)
    assert doc["requests"] | {"error_types": None} == {
        "ended": 3,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
        "budget_exceeded": 1,
        "failure_rate": pytest.approx(1 / 3, abs=1e-6),
        "error_types": None,
        "duration_s": {"p50": 10.0, "p95": 30.0},
    }
    assert doc["throughput_per_day"] == 1.0  # 2 completed in a window of 2 days
    assert [(d["day"], d["completed"], d["failed"]) for d in doc["per_day"]] == [
        ("1970-01-01", 1, 0),
        ("1970-01-02", 1, 1),
    ]
    assert doc["cost"]["per_request_usd"] == 0.5 and doc["cost"]["per_day_usd"] == 0.25
