"""Issue 14, requirement 4, through the real CLI and local runtime: a budget stops a runaway request FAILED
``budget_exceeded: <limit>`` keeping every finished output, a resume with a raised budget continues without
running again what succeeded, and every request records its ledger in state.json."""

from __future__ import annotations

import json
from pathlib import Path

from support.e2e import fave

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
WORDS = "one two three four five six seven eight"


def state_of(store: Path, request_id: str) -> dict:
    return json.loads((store / "requests" / request_id / "metadata" / "state.json").read_text())


def test_an_invocation_budget_stops_the_request_and_a_raised_one_continues_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ("--pipeline", str(DEMO), "--store", str(store))
    run = fave("run", "--input", json.dumps({"text": WORDS}), "--max-invocations", "6", "--json", *args)
    assert run.code == 1, run.describe()
    doc = json.loads(run.stdout)
    request_id = doc["request_id"]
    state = state_of(store, request_id)
    assert state["status"] == "FAILED"
    assert state["failure"]["error_type"] == "budget_exceeded"
    assert state["failure"]["message"] == "max_invocations"
    assert state["failure"]["reason"].endswith("failed: budget_exceeded: max_invocations")
    assert state["budget"] == {"max_invocations": 6}
    ledger = state["ledger"]
    # words and up to five more: the budget stops the request when one more would start (an invocation it
    # dispatched in that same step is never sent, and not counted).
    assert 2 <= ledger["invocations"] <= 6
    assert ledger["s3_requests"] > 0 and ledger["cost_usd"] > 0 and ledger["billed_ms"]["WordsFunction"] >= 1
    succeeded_before = {name: st["succeeded"] for name, st in state["stages"].items() if st["succeeded"]}
    assert succeeded_before.get("words") == 1

    again = fave("resume", request_id, "--max-invocations", "100", "--json", *args)
    assert again.code == 0, again.describe()
    state = state_of(store, request_id)
    assert state["status"] == "COMPLETED" and state["budget"] == {"max_invocations": 100}
    # words ran once in all (its success was kept); 8 shouts, 8 measures and a join at least.
    assert state["ledger"]["invocations"] >= 6 + 8 + 8 + 1 - 5
    assert state["stages"]["words"]["task"]["attempt"] == 1


def test_a_run_within_its_budget_records_its_ledger(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = fave(
        "run", "--input", json.dumps({"text": "a b c"}), "--max-cost-usd", "1", "--json",
        "--pipeline", str(DEMO), "--store", str(store),
    )  # fmt: skip
    assert run.code == 0, run.describe()
    state = state_of(store, json.loads(run.stdout)["request_id"])
    assert state["status"] == "COMPLETED"
    assert state["ledger"]["invocations"] == 1 + 3 + 3 + 1
    assert 0 < state["ledger"]["cost_usd"] < 1 and state["ledger"]["gb_s"] > 0


def test_a_bad_budget_flag_is_one_line_and_stores_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    bad = fave(
        "run", "--input", json.dumps({"text": "a"}), "--max-wall", "soon",
        "--pipeline", str(DEMO), "--store", str(store),
    )  # fmt: skip
    assert bad.code == 2 and bad.stderr.strip().count("\n") == 0, bad.describe()
    assert "--max-wall" in bad.stderr and "not a duration" in bad.stderr
    assert not (store / "requests").exists()
