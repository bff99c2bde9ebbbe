"""Engine behaviour, asserted on commands and state. Pure: no store, no invoker, no sleeping."""

from __future__ import annotations

import pytest
from fave.core.model import (
    TIMEOUT_ERROR,
    Cancel,
    ConflictingEvent,
    InvalidEvent,
    Invoke,
    NotifyKind,
    RequestStatus,
    Resend,
    Reset,
    Resume,
    Sent,
    StageStatus,
    Start,
    TaskFailed,
    TaskStatus,
    TaskSucceeded,
    Tick,
    WriteFinal,
)
from support.engine_harness import Harness
from support.pipelines import CHAIN, FANOUT, make_pipeline


@pytest.fixture
def chain() -> Harness:
    return Harness(make_pipeline(CHAIN))


@pytest.fixture
def fan() -> Harness:
    return Harness(make_pipeline(FANOUT))


def test_start_dispatches_only_the_root_stage(chain: Harness) -> None:
    invokes = chain.invokes(chain.send(Start()))
    assert [(i.stage, i.attempt, i.mode) for i in invokes] == [("a", 1, "sync")]
    assert chain.state.status is RequestStatus.RUNNING
    assert chain.state.stages["b"].status is StageStatus.PENDING


def test_chain_passes_outputs_and_writes_final(chain: Harness) -> None:
    (a,) = chain.invokes(chain.send(Start()))
    (b,) = chain.invokes(chain.succeed(a, {"x": 1}))
    assert b.stage == "b" and b.input["needs"] == {"a": {"x": 1}}
    (c,) = chain.invokes(chain.succeed(b, {"y": 2}))
    commands = chain.succeed(c, {"answer": 42})
    assert WriteFinal({"answer": 42}) in commands
    assert chain.state.status is RequestStatus.COMPLETED


def test_duplicate_completion_is_counted_once(chain: Harness) -> None:
    (a,) = chain.invokes(chain.send(Start()))
    first = chain.succeed(a, {"x": 1})
    again = chain.succeed(a, {"x": 1})
    assert len(chain.invokes(first)) == 1
    assert again == []
    assert chain.state.stages["a"].succeeded == 1


def test_fanout_respects_max_concurrency_and_chains_per_item(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": list(range(7))}))
    assert len(work) == 3 and {w.stage for w in work} == {"work"}
    assert fan.state.stages["work"].total == 7
    # Item k of 'post' starts as soon as work[k] is done; a 'work' slot frees up for the next item.
    nxt = fan.invokes(fan.succeed(work[0], {"v": work[0].item}))
    stages = sorted((i.stage, i.item) for i in nxt)
    assert ("post", work[0].item) in stages
    assert sum(1 for s, _ in stages if s == "work") == 1
    post = next(i for i in nxt if i.stage == "post")
    assert post.input["needs"]["work"] == {"v": work[0].item}
    assert post.input["item"] == work[0].item and post.input["index"] == work[0].item


def run_fanout_to_end(fan: Harness, n: int = 5) -> None:
    pending = fan.invokes(fan.send(Start()))
    while pending:
        inv = pending.pop(0)
        if inv.stage == "plan":
            pending += fan.invokes(fan.succeed(inv, {"items": list(range(n))}))
        elif inv.stage == "reduce":
            fan.succeed(inv, {"total": sum(x["v"] for x in inv.input["needs"]["post"])})
        else:
            pending += fan.invokes(fan.succeed(inv, {"v": inv.input["item"]}))


def test_fanout_runs_to_completion_with_fan_in(fan: Harness) -> None:
    run_fanout_to_end(fan, 5)
    assert fan.state.status is RequestStatus.COMPLETED
    assert fan.state.final == {"total": 10}
    for stage in ("work", "post"):
        st = fan.state.stages[stage]
        assert (st.succeeded, st.total, st.running, st.pending) == (5, 5, 0, 0)


def test_empty_fanout_succeeds_immediately(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    (reduce_,) = fan.invokes(fan.succeed(plan, {"items": []}))
    assert reduce_.stage == "reduce" and reduce_.input["needs"]["post"] == []


def test_retry_waits_for_backoff_then_fails_request_naming_stage_item_error(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": [0]}))
    (w,) = work
    fan.send(TaskFailed("work", w.item, 1, "ValueError", "boom"))
    task = fan.state.task("work", 0)
    assert task is not None and task.status is TaskStatus.PENDING and task.retry_at == fan.now + 1.0
    assert fan.invokes(fan.send(Tick())) == []  # not due yet
    fan.now += 1.0
    (retry,) = fan.invokes(fan.send(Tick()))
    assert retry.attempt == 2
    fan.send(TaskFailed("work", 0, 2, "ValueError", "boom"))
    fan.now += 1.99
    assert fan.invokes(fan.send(Tick())) == []  # second delay is 2 s (backoff_rate 2)
    fan.now += 0.01
    (third,) = fan.invokes(fan.send(Tick()))
    assert third.attempt == 3
    fan.send(TaskFailed("work", 0, 3, "ValueError", "boom"))
    assert fan.state.status is RequestStatus.FAILED
    assert fan.state.failure is not None
    reason = fan.state.failure.describe()
    assert "work" in reason and "item 0" in reason and "ValueError: boom" in reason and "3 attempts" in reason


def test_an_error_the_stage_declared_terminal_fails_at_once(chain: Harness) -> None:
    (_a,) = chain.invokes(chain.send(Start()))
    chain.send(TaskFailed("a", None, 1, "MediaInputError", "not a video", terminal=True))
    assert chain.state.status is RequestStatus.FAILED
    assert chain.state.failure is not None and chain.state.failure.attempts == 1


def test_an_error_is_not_taken_for_terminal_by_its_name(chain: Harness) -> None:
    (_a,) = chain.invokes(chain.send(Start()))
    commands = chain.send(TaskFailed("a", None, 1, "MediaInputError", "not a video"))
    assert chain.state.status is RequestStatus.RUNNING
    assert any(getattr(c, "kind", None) is NotifyKind.RETRY for c in commands)


def test_names_listed_as_non_retryable_fail_at_once() -> None:
    h = Harness(
        make_pipeline(CHAIN.replace("final: c", "final: c\n    defaults: {retry: {non_retryable: [MediaInputError]}}"))
    )
    h.invokes(h.send(Start()))
    h.send(TaskFailed("a", None, 1, "MediaInputError", "not a video"))
    assert h.state.status is RequestStatus.FAILED


def test_a_failed_attempt_is_kept_with_its_traceback(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    fan.invokes(fan.succeed(plan, {"items": [0]}))
    fan.send(TaskFailed("work", 0, 1, "ValueError", "x", traceback="Traceback ...\nValueError: x"))
    fan.now += 5
    fan.send(Tick())
    fan.now += 100  # attempt 2 times out
    fan.send(Tick())
    task = fan.state.task("work", 0)
    assert task is not None
    assert [(a.attempt, a.error_type) for a in task.history] == [(1, "ValueError"), (2, TIMEOUT_ERROR)]
    assert task.history[0].started_at == 1000.0 and task.history[0].ended_at == 1000.0
    assert task.traceback == "Traceback ...\nValueError: x"  # the timeout sent none: the last one stays


def test_stale_failure_of_an_old_attempt_is_ignored(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    (_w,) = fan.invokes(fan.succeed(plan, {"items": [0]}))
    fan.send(TaskFailed("work", 0, 1, "ValueError", "x"))
    fan.now += 5
    fan.send(Tick())  # attempt 2 running
    fan.send(TaskFailed("work", 0, 1, "ValueError", "late duplicate"))
    task = fan.state.task("work", 0)
    assert task is not None and task.status is TaskStatus.RUNNING and task.attempt == 2


def test_timeout_marks_task_and_retries(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    fan.invokes(fan.succeed(plan, {"items": [0]}))
    fan.now += 10.0
    commands = fan.send(Tick())
    task = fan.state.task("work", 0)
    assert task is not None and task.error_type == TIMEOUT_ERROR and task.status is TaskStatus.PENDING
    assert any(getattr(c, "kind", "") == "timeout" for c in commands)


def test_tolerated_failures_skip_downstream_items() -> None:
    h = Harness(make_pipeline(FANOUT.replace("max_concurrency: 3}", "tolerated_failures: 1}")))
    (plan,) = h.invokes(h.send(Start()))
    work = h.invokes(h.succeed(plan, {"items": [0, 1]}))
    h.send(TaskFailed("work", 0, 1, "TerminalError", "bad item", terminal=True))
    assert h.state.status is RequestStatus.RUNNING
    assert h.state.task("post", 0) is not None and h.state.task("post", 0).status is TaskStatus.SKIPPED  # type: ignore[union-attr]
    (post1,) = h.invokes(h.succeed(work[1], {"v": 1}))
    (reduce_,) = h.invokes(h.succeed(post1, {"v": 1}))
    assert reduce_.input["needs"]["post"] == [None, {"v": 1}]


def test_cancel_stops_dispatch_and_keeps_what_runs_on(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": [0, 1, 2, 3]}))
    fan.send(Cancel("user"))
    assert fan.state.status is RequestStatus.CANCELLED and fan.state.abandoned == 3  # max_concurrency 3
    assert fan.succeed(work[0], {"v": 0}) == []  # nothing is dispatched after the end...
    task = fan.state.task("work", 0)
    assert task is not None and task.status is TaskStatus.SUCCEEDED and task.output == {"v": 0}  # ...but kept
    assert fan.state.status is RequestStatus.CANCELLED and fan.state.stages["work"].status is StageStatus.CANCELLED
    assert (fan.state.stages["work"].succeeded, fan.state.stages["work"].cancelled) == (1, 3)
    fan.succeed(work[0], {"v": 0})  # a duplicate changes nothing
    fan.send(TaskFailed("work", work[1].item, 1, "ValueError", "late"))  # a late failure: its evidence only
    failed = fan.state.task("work", work[1].item)
    assert failed is not None and failed.status is TaskStatus.CANCELLED and failed.history[-1].error == "late"
    assert (fan.state.stages["work"].succeeded, fan.state.abandoned) == (1, 1)
    fan.send(TaskSucceeded("work", 3, 1, {"v": 3}))  # never dispatched: no attempt of it was running
    assert fan.state.task("work", 3) is not None and fan.state.task("work", 3).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


def test_resume_reruns_only_tasks_that_did_not_succeed(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": [0, 1, 2]}))
    done = work[0]
    fan.succeed(done, {"v": done.item})
    for w in work[1:]:
        fan.send(TaskFailed("work", w.item, 1, "TerminalError", "bug", terminal=True))
    assert fan.state.status is RequestStatus.FAILED
    again = fan.invokes(fan.send(Resume()))
    assert fan.state.status is RequestStatus.RUNNING
    assert sorted((i.stage, i.item) for i in again if i.stage == "work") == sorted(
        ("work", w.item) for w in work[1:2]
    ) or {i.item for i in again if i.stage == "work"} <= {w.item for w in work[1:]}
    assert all(i.item != done.item for i in again if i.stage == "work")
    assert all(i.attempt == 2 for i in again if i.stage == "work")


def test_invoke_input_carries_profile_config() -> None:
    body = CHAIN.replace("a: {function: A, mode: sync}", "a: {function: A, mode: sync, config: {k: 1, j: 2}}")
    body += "    profiles: {default: {}, fast: {a: {k: 9}}}\n"
    h = Harness(make_pipeline(body))
    h.state = h.engine.new_request("01JTESTREQUEST0000000000000", {"profile": "fast"}, h.now)
    (a,) = h.invokes(h.send(Start()))
    assert isinstance(a, Invoke) and a.input["config"] == {"k": 9, "j": 2}


def test_a_batch_of_events_decides_like_one_event_at_a_time(fan: Harness) -> None:
    """``decide_all`` (what the orchestrator uses for a batch of completions) folds ``decide``."""
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": list(range(7))}))
    batch = [TaskSucceeded("work", w.item, w.attempt, {"v": w.item}) for w in work] + [
        TaskSucceeded("work", work[0].item, work[0].attempt, {"v": -1}),
        Tick(),
    ]  # a duplicate, then a tick
    one_by_one, commands_one = fan.state, []
    for event in batch:
        one_by_one, more = fan.engine.decide(one_by_one, event, fan.now)
        commands_one += more
    batched, commands_batched = fan.engine.decide_all(fan.state, batch, fan.now)
    assert commands_batched == commands_one
    assert batched.tasks == one_by_one.tasks and batched.stages == one_by_one.stages
    assert (batched.ready, batched.running) == (one_by_one.ready, one_by_one.running)
    assert batched.changed == one_by_one.changed
    assert batched.stages["work"].succeeded == 3  # the duplicate counted once


def test_a_tick_that_ends_the_request_invokes_nothing_it_dispatched_on_the_way(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    assert len(fan.invokes(fan.succeed(plan, {"items": [0, 1, 2]}))) == 3  # max_concurrency 3
    # Item 2 fails twice: its third attempt is its last (retry.max_attempts 2).
    fan.send(TaskFailed("work", 2, 1, "ValueError", "flaky"))
    fan.now += 1.5
    assert [i.item for i in fan.invokes(fan.send(Tick()))] == [2]
    fan.send(TaskFailed("work", 2, 2, "ValueError", "flaky"))
    fan.now += 2.5
    assert [i.item for i in fan.invokes(fan.send(Tick()))] == [2]  # attempt 3, deadline now + 10 s
    fan.send(TaskFailed("work", 0, 1, "ValueError", "flaky"))  # retried at now + 1 s
    # Item 1 (attempt 1, overdue first) times out and is retried, which frees a slot that item 0's due retry
    # takes; then item 2's last attempt times out and fails the request in the same decision.
    fan.now += 11
    commands = fan.send(Tick())
    assert fan.state.status is RequestStatus.FAILED and "States.Timeout" in (fan.state.failure.error_type or "")
    assert fan.invokes(commands) == []
    assert fan.state.task("work", 0).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


def test_the_outbox_sends_again_what_was_dispatched_but_not_recorded_as_sent(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": [0, 1, 2, 3]}))
    assert [(i.item, i.attempt) for i in work] == [(0, 1), (1, 1), (2, 1)]  # max_concurrency 3
    assert fan.state.unsent["work"].items() == [0, 1, 2]
    fan.send(Sent((("work", 0), ("work", 2))))  # the dispatcher recorded two sends, then died
    again = fan.invokes(fan.send(Resend()))
    assert [(i.stage, i.item, i.attempt) for i in again] == [("work", 1, 1)]  # same attempt: no new dispatch
    assert again[0].input == work[1].input
    fan.send(TaskSucceeded("work", 1, 1, {"v": 1}))  # a task that ends leaves the outbox
    assert 1 not in fan.state.unsent["work"]
    # Item 3 took item 1's slot, and item 1 went on to the per-item stage: both wait in the outbox until their
    # sends are recorded.
    assert sorted((i.stage, i.item) for i in fan.invokes(fan.send(Resend()))) == [("post", 1), ("work", 3)]
    fan.send(Cancel("stop"))
    assert not fan.state.unsent and fan.invokes(fan.send(Resend())) == []


def test_a_stage_duration_after_resume_excludes_the_time_the_request_was_down(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": [0, 1]}))
    fan.now += 10.0  # work runs 10 s, then item 0 fails for good: the request is FAILED
    fan.succeed(work[1], {"v": 1})
    fan.send(TaskFailed("work", work[0].item, 1, "TerminalError", "bug", terminal=True))
    assert fan.state.status is RequestStatus.FAILED
    fan.now += 3600.0  # an hour down, then the code is fixed and the request resumed
    (again,) = [i for i in fan.invokes(fan.send(Resume())) if i.stage == "work"]
    fan.now += 5.0
    fan.succeed(again, {"v": 0})
    work_stage = fan.state.stages["work"]
    assert work_stage.status is StageStatus.SUCCEEDED
    assert work_stage.finished_at is not None and work_stage.started_at is not None
    assert work_stage.finished_at - work_stage.started_at == pytest.approx(15.0)  # 10 s + 5 s, not 3,615 s


# ---- reset (issue 13) ----------------------------------------------------------------------------------------


def run_chain_to_end(chain: Harness) -> None:
    (a,) = chain.invokes(chain.send(Start()))
    (b,) = chain.invokes(chain.succeed(a, {"x": 1}))
    (c,) = chain.invokes(chain.succeed(b, {"y": 2}))
    chain.succeed(c, {"answer": 42})
    assert chain.state.status is RequestStatus.COMPLETED


def test_reset_marks_one_stage_pending_and_resume_reruns_only_it(chain: Harness) -> None:
    run_chain_to_end(chain)
    assert chain.send(Reset(("b",))) == []  # it only marks
    assert chain.state.status is RequestStatus.COMPLETED and not chain.state.nothing_to_resume
    b = chain.state.task("b")
    assert b is not None and b.status is TaskStatus.PENDING and b.output is None and b.attempt == 1
    statuses = [chain.state.stages[s].status for s in "abc"]
    assert statuses == [StageStatus.SUCCEEDED, StageStatus.PENDING, StageStatus.SUCCEEDED]
    assert (chain.state.stages["b"].pending, chain.state.stages["b"].succeeded) == (1, 0)
    (again,) = chain.invokes(chain.send(Resume()))
    assert (again.stage, again.attempt) == ("b", 2) and again.input["needs"] == {"a": {"x": 1}}
    assert chain.state.status is RequestStatus.RUNNING
    commands = chain.succeed(again, {"y": 3})
    assert chain.invokes(commands) == []  # 'c' keeps its result: not downstream
    assert chain.state.status is RequestStatus.COMPLETED and WriteFinal({"answer": 42}) in commands


def test_reset_downstream_reruns_every_stage_after_and_writes_a_new_final(chain: Harness) -> None:
    run_chain_to_end(chain)
    chain.send(Reset(("b",), downstream=True))
    assert [chain.state.stages[s].status for s in "bc"] == [StageStatus.PENDING] * 2
    assert chain.state.stages["a"].status is StageStatus.SUCCEEDED
    (b,) = chain.invokes(chain.send(Resume()))
    (c,) = chain.invokes(chain.succeed(b, {"y": 5}))
    assert (c.stage, c.attempt, c.input["needs"]) == ("c", 2, {"b": {"y": 5}})
    commands = chain.succeed(c, {"answer": 7})
    assert WriteFinal({"answer": 7}) in commands
    assert chain.state.status is RequestStatus.COMPLETED and chain.state.final == {"answer": 7}
    assert chain.send(Resume()) == []  # nothing left to resume


def test_reset_of_a_fanned_out_stage_keeps_counting_attempts_and_ignores_old_ones(fan: Harness) -> None:
    run_fanout_to_end(fan, 5)
    fan.send(Reset(("post",), downstream=True))
    post = fan.state.stages["post"]
    assert (post.status, post.total, post.pending, post.succeeded) == (StageStatus.PENDING, 5, 5, 0)
    assert fan.state.stages["reduce"].status is StageStatus.PENDING
    assert fan.state.stages["work"].succeeded == 5 and "plan.items" in fan.state.items  # its source kept
    again = fan.invokes(fan.send(Resume()))
    assert sorted(i.item for i in again if i.stage == "post") == [0, 1, 2, 3, 4]
    assert {i.stage for i in again} == {"post"} and all(i.attempt == 2 for i in again)
    # A late duplicate of the first run's attempt 1 is stale: it does not count as the new run's result.
    assert fan.send(TaskSucceeded("post", 0, 1, {"v": 99})) == []
    task = fan.state.task("post", 0)
    assert task is not None and task.status is TaskStatus.RUNNING and task.stale_attempts == 1
    for inv in again:
        fan.succeed(inv, {"v": inv.input["item"] * 10})
    reduce = [c for c in fan.log if isinstance(c, Invoke) and c.stage == "reduce"][-1]
    assert reduce.stage == "reduce" and reduce.attempt == 2
    assert [x["v"] for x in reduce.input["needs"]["post"]] == [0, 10, 20, 30, 40]


def test_reset_of_a_fan_out_source_makes_its_list_again(fan: Harness) -> None:
    run_fanout_to_end(fan, 3)
    fan.send(Reset(("plan",), downstream=True))
    assert "plan.items" not in fan.state.items
    assert all(fan.state.stages[s].status is StageStatus.PENDING for s in ("plan", "work", "post", "reduce"))
    (plan,) = fan.invokes(fan.send(Resume()))
    assert plan.attempt == 2
    work = fan.invokes(fan.succeed(plan, {"items": [0, 1, 2, 3]}))  # a longer list this time
    assert fan.state.stages["work"].total == 4 and len(work) == 3
    assert sorted((w.item, w.attempt) for w in work) == [(0, 2), (1, 2), (2, 2)]  # they ran before
    (new,) = [i for i in fan.invokes(fan.succeed(work[0], {"v": 0})) if i.stage == "work"]
    assert (new.item, new.attempt) == (3, 1)  # a new item: its first attempt


def test_reset_names_an_unknown_stage(chain: Harness) -> None:
    run_chain_to_end(chain)
    with pytest.raises(InvalidEvent, match="'nope'"):
        chain.send(Reset(("b", "nope")))
    assert chain.state.stages["b"].status is StageStatus.SUCCEEDED


def test_reset_is_refused_while_the_request_runs_naming_the_running_stage(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    fan.invokes(fan.succeed(plan, {"items": [0, 1, 2]}))
    with pytest.raises(ConflictingEvent, match=r"'work' \(3 running\)"):
        fan.send(Reset(("work",)))
    assert fan.state.stages["work"].running == 3


def test_reset_is_refused_when_a_started_stage_would_run_on_dropped_outputs(fan: Harness) -> None:
    (plan,) = fan.invokes(fan.send(Start()))
    work = fan.invokes(fan.succeed(plan, {"items": [0, 1]}))
    fan.succeed(work[0], {"v": 0})
    fan.send(TaskFailed("work", work[1].item, 1, "TerminalError", "bug", terminal=True))
    assert fan.state.status is RequestStatus.FAILED
    with pytest.raises(ConflictingEvent, match="'work' needs 'plan'"):
        fan.send(Reset(("plan",)))
    fan.send(Reset(("plan",), downstream=True))
    assert fan.state.stages["work"].status is StageStatus.PENDING
