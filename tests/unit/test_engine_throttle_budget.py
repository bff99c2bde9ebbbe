"""Issue 14 in the pure engine: throttles (requirement 7) re-queue a task without spending an attempt and teach
the stage an in-flight cap (AIMD); budgets (requirement 4) stop a request FAILED ``budget_exceeded: <limit>``,
keep what finished, and a resume with a raised budget continues; the ledger counts what was spent."""

from __future__ import annotations

import pytest
from fave.core.budget import Ledger, Rates
from fave.core.engine import THROTTLE_MAX_S, throttle_delay
from fave.core.model import (
    Invoke,
    NotifyKind,
    RequestStatus,
    Resume,
    Start,
    StoreRequests,
    TaskFailed,
    TaskStatus,
    TaskThrottled,
    Tick,
)
from fave.core.operations import Budget
from support.engine_harness import Harness
from support.pipelines import make_pipeline

WIDE = """
    name: wide
    final: reduce
    defaults:
      timeout: 60s
      retry: {max_attempts: 2, interval: 1s, jitter: none}
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: sync, max_concurrency: 8}
      reduce: {function: Reduce, needs: [work], mode: sync}
"""


def started_wide(n: int = 20, budget: dict[str, object] | None = None) -> tuple[Harness, list[Invoke]]:
    body = WIDE if budget is None else WIDE + f"    operations: {{budget: {budget}}}\n"
    h = Harness(make_pipeline(body))
    (plan,) = h.invokes(h.send(Start()))
    return h, h.invokes(h.succeed(plan, {"items": list(range(n))}))


def test_a_throttle_gives_the_attempt_back_and_waits() -> None:
    h, work = started_wide(n=8)
    assert len(work) == 8
    first = work[0]
    commands = h.send(TaskThrottled("work", first.item, first.attempt, "429"))
    task = h.state.task("work", first.item)
    assert task is not None
    assert (task.status, task.attempt, task.throttled, task.history) == (TaskStatus.PENDING, 0, 1, ())
    assert task.retry_at is not None and h.now < task.retry_at <= h.now + THROTTLE_MAX_S
    assert not h.invokes(commands), "the cap just came down: nothing more goes out at once"
    assert any(getattr(c, "kind", None) is NotifyKind.THROTTLED for c in commands)
    st = h.state.stages["work"]
    assert st.throttled == 1 and st.throttle_cap == 4.0  # 8 in flight, halved
    # When its wait is over it goes out again as attempt 1, not 2.
    h.now = task.retry_at + 0.001
    for other in work[1:5]:  # free room under the cap
        h.succeed(other, {"v": other.item})
    h.send(Tick())
    again = [i for i in h.log if isinstance(i, Invoke) and i.item == first.item]
    assert [i.attempt for i in again] == [1, 1]


def test_one_decrease_per_round_then_additive_increase() -> None:
    h, work = started_wide()
    for inv in work[:6]:  # six of one round's eight refused: the cap halves once, not six times
        h.send(TaskThrottled("work", inv.item, inv.attempt, "429"))
    assert h.state.stages["work"].throttle_cap == 4.0
    h.succeed(work[6], {"v": 6})
    assert h.state.stages["work"].throttle_cap == pytest.approx(4.25)


def test_the_cap_limits_what_is_in_flight_and_goes_away_at_max_concurrency() -> None:
    h, work = started_wide(n=200)
    h.send(TaskThrottled("work", work[0].item, work[0].attempt, "429"))
    assert h.state.stages["work"].running == 7  # over the new cap of 4: nothing new until 3 more end
    pending = list(work[1:])
    sent_new = 0
    for _ in range(3):
        inv = pending.pop(0)
        sent_new += len([i for i in h.invokes(h.succeed(inv, {"v": 1})) if i.stage == "work"])
    assert sent_new <= 1
    # Successes raise it back to max_concurrency, where it stops mattering.
    budget_steps = 0
    while h.state.stages["work"].throttle_cap is not None and budget_steps < 500:
        running = [c for c in h.log if isinstance(c, Invoke) and c.stage == "work"]
        inv = next(
            c for c in reversed(running) if (t := h.state.task("work", c.item)) and t.status is TaskStatus.RUNNING
        )
        h.succeed(inv, {"v": 1})
        budget_steps += 1
    assert h.state.stages["work"].throttle_cap is None


def test_throttle_delay_doubles_up_to_its_limit() -> None:
    assert throttle_delay(0, 1.0) < throttle_delay(1, 1.0) < throttle_delay(2, 1.0)
    assert throttle_delay(50, 1.0) == THROTTLE_MAX_S and throttle_delay(50, 0.0) == THROTTLE_MAX_S / 2


def test_a_stale_throttle_changes_nothing() -> None:
    h, work = started_wide()
    before = h.state
    assert h.send(TaskThrottled("work", work[0].item, work[0].attempt + 1, "429")) == []
    assert h.state.stages == before.stages


def test_max_invocations_stops_the_request_and_keeps_finished_outputs() -> None:
    h, work = started_wide(n=20, budget={"max_invocations": 6})
    assert len(work) == 5  # plan took one of the six
    h.succeed(work[0], {"v": 0})  # the sixth goes out? no: the budget is spent once six have started
    assert h.state.status is RequestStatus.FAILED
    assert h.state.failure is not None and h.state.failure.error_type == "budget_exceeded"
    assert h.state.failure.message == "max_invocations"
    done = h.state.task("work", work[0].item)
    assert done is not None and done.status is TaskStatus.SUCCEEDED and done.output == {"v": 0}
    assert h.state.ledger.invocations == 6
    # A resume with a raised budget continues from what finished.
    commands = h.send(Resume(budget=Budget(max_invocations=100)))
    assert h.state.status is RequestStatus.RUNNING and h.state.budget.max_invocations == 100
    assert work[0].item not in {i.item for i in h.invokes(commands)}


def test_a_request_needing_exactly_its_invocation_budget_completes() -> None:
    h, work = started_wide(n=3, budget={"max_invocations": 5})
    pending = list(work)
    while pending:
        inv = pending.pop(0)
        pending += h.invokes(h.succeed(inv, {"v": 1} if inv.stage == "work" else {"n": 3}))
    assert h.state.status is RequestStatus.COMPLETED and h.state.ledger.invocations == 5


def test_max_wall_fails_at_a_tick_after_the_limit_and_counts_again_from_a_resume() -> None:
    h, _ = started_wide(n=4, budget={"max_wall": "30s"})
    h.now += 29
    h.send(Tick())
    assert h.state.status is RequestStatus.RUNNING
    h.now += 2
    h.send(Tick())
    assert h.state.status is RequestStatus.FAILED
    assert h.state.failure is not None and h.state.failure.message == "max_wall"
    h.now += 3600  # down for an hour: a resume's wall starts now
    h.send(Resume())
    assert h.state.status is RequestStatus.RUNNING


def test_max_cost_counts_gb_seconds_invocations_and_store_requests() -> None:
    h, work = started_wide(n=20, budget={"max_cost_usd": 0.001})
    h.engine.rates = Rates(memory_mb={"Work": 1024})
    h.now += 10.0
    h.succeed(work[0], {"v": 0})  # 10 s at 1 GB: 0.000167 $
    assert h.state.status is RequestStatus.RUNNING
    h.send(StoreRequests(puts=200, gets=0))  # 200 PUTs: 0.001 $
    assert h.state.status is RequestStatus.FAILED
    assert h.state.failure is not None and h.state.failure.message == "max_cost_usd"
    ledger = h.state.ledger
    assert ledger.billed_ms["Work"] == 10_000 and ledger.s3_puts == 200
    assert ledger.cost_usd(h.engine.rates) >= 0.001


def test_the_ledger_bills_failures_and_not_throttles() -> None:
    h, work = started_wide()
    h.now += 2
    h.send(TaskFailed("work", work[0].item, work[0].attempt, "Boom", "x"))
    h.send(TaskThrottled("work", work[1].item, work[1].attempt, "429"))
    ledger = h.state.ledger
    assert ledger.billed_ms["Work"] == 2000  # the failure's two seconds; the throttle ran for none
    assert ledger.invocations == 1 + 8 + 1 - 1  # plan, eight work, one in the failed one's place, one given back


def test_ledger_json_round_trip() -> None:
    h, _ = started_wide()
    h.send(StoreRequests(puts=3, gets=7))
    doc = h.state.ledger.as_json(Rates())
    assert Ledger.from_json(doc) == h.state.ledger
    assert doc["s3_requests"] == 10 and doc["invocations"] == 9


def test_a_budget_stop_does_not_wait_for_what_it_dispatched_and_never_sent() -> None:
    # plan + three work items use four of five invocations; a success frees room for two more tasks (the next work
    # item, post of item 0): the first takes the last invocation, the second stops the request, and the decision
    # sends nothing, so the request waits only for the two work items really in flight.
    h = Harness(make_pipeline(FANOUT_BUDGET))
    (plan,) = h.invokes(h.send(Start()))
    work = h.invokes(h.succeed(plan, {"items": list(range(10))}))
    assert len(work) == 3
    commands = h.succeed(work[0], {"v": 0})
    assert h.state.status is RequestStatus.FAILED and h.state.failure is not None
    assert h.state.failure.message == "max_invocations"
    assert h.invokes(commands) == []
    assert h.state.abandoned == 2
    assert h.state.ledger.invocations == 4
    in_flight = [
        (stage, item)
        for stage, tasks in h.state.tasks.items()
        for item, t in tasks.items()
        if t.status is TaskStatus.CANCELLED and t.deadline is not None
    ]
    assert sorted(in_flight) == sorted(("work", w.item) for w in work[1:])


FANOUT_BUDGET = """
    name: fanout
    final: reduce
    operations: {budget: {max_invocations: 5}}
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async, max_concurrency: 3}
      post: {function: Post, needs: [work], for_each: plan.items, mode: async}
      reduce: {function: Reduce, needs: [post], mode: sync}
"""
