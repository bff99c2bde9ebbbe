"""The schedule tick: timeouts and due retries of every unfinished request, and nothing else."""

from __future__ import annotations

from fave.keys import state_key
from fave.local.orchestrator import load_local_pipeline
from fave.persistence import read_stage_tasks
from fave.service import Orchestrator
from support.app_lambda import DEMO, OrchestratorLambda
from support.events import tick_event
from support.tiers import Tier

ACTIVE = "index/active/"


def test_tick_times_out_retries_and_finally_fails_tasks(orchestrator_lambda: OrchestratorLambda, tier: Tier) -> None:
    lam = orchestrator_lambda
    clock = lam.clock
    lam.hold()  # the shouts' completions never arrive: only the tick can move the request on
    request_id = lam.start("one two")
    assert list(lam.store.list(ACTIVE)) == [ACTIVE + request_id]
    lam.take(2)

    etag = lam.store.head(state_key(request_id))
    assert lam.invoke(tick_event()) == {"ticked": {request_id: "RUNNING"}}
    assert lam.store.head(state_key(request_id)) == etag  # nothing due: nothing written

    clock.advance(21)  # past the demo's 20 s stage timeout
    lam.invoke(tick_event())
    shout = read_stage_tasks(lam.store, request_id, "shout").values()
    assert sum(t.error_type == "States.Timeout" for t in shout) == 2
    assert sum(t.status == "PENDING" for t in shout) == 2

    clock.advance(1)  # past the retry delay (50 ms, with jitter)
    lam.invoke(tick_event())
    assert len(lam.take(2)) == 2  # attempt 2 of both items really ran
    assert lam.invocations("ShoutFunction") == 4
    assert lam.status(request_id)["stages"]["shout"]["running"] == 2

    for _ in range(2):  # attempt 2 and attempt 3 time out too; retry.max_attempts is 2
        clock.advance(21)
        lam.invoke(tick_event())
        clock.advance(1)
        lam.invoke(tick_event())
    doc = lam.status(request_id)
    assert doc["status"] == "FAILED" and "States.Timeout" in doc["failure"], doc
    assert list(lam.store.list(ACTIVE)) == []  # a finished request is not ticked again


def test_tick_drops_finished_requests_and_leaves_the_others(orchestrator_lambda: OrchestratorLambda) -> None:
    lam = orchestrator_lambda
    lam.hold()
    ids = []
    for text in ("a b", "c d"):
        ids.append(lam.start(text))
    # A request cancelled behind the function's back (by the CLI, say) still has its marker.
    Orchestrator(load_local_pipeline(DEMO), lam.store).cancel(ids[0])
    assert sorted(lam.store.list(ACTIVE)) == sorted(ACTIVE + i for i in ids)
    assert lam.invoke(tick_event())["ticked"] == {ids[0]: "CANCELLED", ids[1]: "RUNNING"}
    assert list(lam.store.list(ACTIVE)) == [ACTIVE + ids[1]]
