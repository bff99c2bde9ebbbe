"""The weekly update end to end (``pytest examples/weekly/tests``): week 1 runs every entry; week 2 runs only the
entries that changed or were added (and the report); week 2 again runs nothing. Real handlers on fave's local
runtime and a real (temporary) store; invocations are the runtime's own counters."""

import importlib.util
import json
from pathlib import Path

import pytest
from fave.core.model import RequestStatus
from fave.keys import final_key
from fave.local.orchestrator import local_orchestrator
from fave_shared.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline.yaml"
WEEK1 = ROOT / "data" / "week1.json"
WEEK2 = ROOT / "data" / "week2.json"
FUNCTIONS = {"fetch": "FetchFunction", "synthesize": "SynthesizeFunction", "score": "ScoreFunction"}
FUNCTIONS["report"] = "ReportFunction"


def entries(path):
    return {e["id"]: e for e in json.loads(path.read_text())["entries"]}


def run(store, catalogue, profile="default"):
    """Run the pipeline on ``catalogue``; (its full state, invocations per stage)."""
    orchestrator = local_orchestrator(PIPELINE, store)
    try:
        state = orchestrator.create({"catalogue": str(catalogue), "profile": profile})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
        stats = orchestrator.invoker.stats()
        invoked = {stage: stats[function].invocations for stage, function in FUNCTIONS.items()}
        return orchestrator.load(state.request_id, full=True), invoked
    finally:
        orchestrator.close()


def final(store, state):
    """The request's final.json (state.final may be a marker to a parked output)."""
    return json.loads(store.get(final_key(state.request_id)).data)


def ran_ids(state, stage):
    """The entry ids whose task of ``stage`` was invoked (not taken from the cache)."""
    items = state.items["fetch.entries"]
    return sorted(items.item("fetch.entries", i)["id"] for i, task in state.tasks[stage].items() if not task.cached)


@pytest.fixture(scope="module")
def weeks(tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("weekly") / "store")
    week1 = run(store, WEEK1)
    week2 = run(store, WEEK2)
    again = run(store, WEEK2)
    return store, week1, week2, again


def test_week_1_runs_every_entry(weeks):
    _, (state, invoked), _, _ = weeks
    assert state.status is RequestStatus.COMPLETED
    n = len(entries(WEEK1))
    assert invoked == {"fetch": 1, "synthesize": n, "score": n, "report": 1}
    assert state.final["entries"] == n and state.final["failed"] == 0


def test_week_2_runs_only_the_changed_and_added_entries_and_the_report(weeks):
    _, _, (state, invoked), _ = weeks
    old, new = entries(WEEK1), entries(WEEK2)
    changed = sorted(i for i in new if i not in old or new[i] != old[i])
    assert len(changed) == 9  # 6 changed, 3 added (2 removed: nothing to run)
    assert invoked["synthesize"] == len(changed) and ran_ids(state, "synthesize") == changed
    # score runs where its listing changed: a changed entry whose listing came out the same is cached
    assert set(ran_ids(state, "score")) <= set(changed) and invoked["score"] == len(ran_ids(state, "score"))
    assert invoked["report"] == 1 and invoked["fetch"] == 1
    assert state.final["entries"] == len(new)
    # every cached listing is the one week 1 computed for the same entry
    assert all(t.cached_from for i, t in state.tasks["synthesize"].items() if t.cached)


def test_week_2_again_invokes_nothing_after_fetch(weeks):
    _, _, (week2, _), (state, invoked) = weeks
    assert invoked == {"fetch": 1, "synthesize": 0, "score": 0, "report": 0}
    assert state.final == week2.final


def test_a_profile_that_changes_score_config_reruns_score_only(weeks):
    store = weeks[0]
    state, invoked = run(store, WEEK2, profile="strict-review")
    n = len(entries(WEEK2))
    assert invoked == {"fetch": 1, "synthesize": 0, "score": n, "report": 1}
    assert len(final(store, state)["review"]) > len(final(store, weeks[2][0])["review"])


def handler(stage):
    spec = importlib.util.spec_from_file_location(f"weekly_{stage}_app", ROOT / "functions" / stage / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def test_synthesize_normalises_an_entry_and_prices_it_with_vat(tmp_path):
    event = {
        "fave": 1,
        "task": {"request_id": "01TESTWEEKLY", "stage": "synthesize", "item": 0, "attempt": 1},
        "mode": "sync",
        "store": str(tmp_path),
        "input": {
            "request": {},
            "needs": {},
            "config": {"vat": {"default": 0.19, "food": 0.07}, "low_stock": 10},
            "item": {"id": "SKU-1", "name": "OAK  linen JAR", "category": "food", "price_cents": 1000, "stock": 3},
            "index": 0,
        },
    }
    out = handler("synthesize")(event)
    assert out["title"] == "Oak Linen Jar" and out["slug"] == "oak-linen-jar-sku-1"
    assert (out["net"], out["gross"], out["availability"]) == ("10.00", "10.70", "low")
