"""The pure parts of the run history (fave.history): a stage's summary from its tasks, and quantiles from the
fixed-bucket histogram that summaries add up bucket by bucket."""

from __future__ import annotations

import bisect
from dataclasses import replace

import pytest
from fave.core.model import Attempt, Task, TaskStatus
from fave.history import DURATION_BUCKETS, StageSummary, Summary, quantile, summarize_stage
from fave.metrics import aggregate
from hypothesis import given
from hypothesis import strategies as st


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


def reference_summary(tasks: list[Task]) -> StageSummary:
    """``summarize_stage`` written plainly, one rule per line (the module's has a fast path for the common task)."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    n = succeeded = failed = cached = attempts = retries = failed_attempts = 0
    total = 0.0
    for task in tasks:
        n += 1
        succeeded += task.status is TaskStatus.SUCCEEDED
        failed += task.status is TaskStatus.FAILED
        cached += task.cached
        ran = 0 if task.cached else task.attempt
        attempts += ran
        retries += max(0, ran - 1)
        failed_attempts += len(task.history) + (
            task.status is TaskStatus.FAILED and not any(a.attempt == task.attempt for a in task.history)
        )
        durations = [max(0.0, a.ended_at - a.started_at) for a in task.history if a.started_at is not None]
        ended = task.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) and not task.cached
        seen = {a.attempt for a in task.history}
        if ended and task.attempt not in seen and task.dispatched_at is not None and task.finished_at is not None:
            durations.append(max(0.0, task.finished_at - task.dispatched_at))
        for seconds in durations:
            counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
            total += seconds
    return StageSummary(n, succeeded, failed, cached, attempts, retries, failed_attempts, tuple(counts), total)


TIME = st.none() | st.floats(0, 1e4)
TASKS = st.builds(
    Task,
    status=st.sampled_from(TaskStatus),
    attempt=st.integers(0, 4),
    dispatched_at=TIME,
    finished_at=TIME,
    cached=st.booleans(),
    history=st.lists(
        st.builds(Attempt, st.integers(1, 4), TIME, st.floats(0, 1e4), st.just("E"), st.just("e")), max_size=2
    ).map(tuple),
)


@given(st.lists(TASKS, max_size=8))
def test_the_summary_is_the_plain_rules_whatever_the_tasks(tasks: list[Task]) -> None:
    got, want = summarize_stage(tasks), reference_summary(tasks)
    assert replace(got, duration_sum_s=0.0) == replace(want, duration_sum_s=0.0)
    assert got.duration_sum_s == pytest.approx(want.duration_sum_s)
