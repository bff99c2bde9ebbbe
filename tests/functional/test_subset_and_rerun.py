"""``fave run --stage`` and ``fave rerun`` (issue 13, requirement 4) through the real CLI, the local runtime and a
local store: tests/fixtures/rerun (the demo pipeline's functions; join has a config value and the result cache).
Each dispatch of a task adds one to its attempt number, so the attempts count exactly which tasks ran again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fave.keys import state_key
from fave.persistence import read_stage_tasks
from fave.statefile import StateDoc
from fave_shared.store import LocalStore
from support import e2e

ROOT = Path(__file__).resolve().parents[2]
RERUN = ROOT / "tests" / "fixtures" / "rerun" / "pipeline.yaml"
DEMO = ROOT / "tests" / "fixtures" / "demo"
TEXT = "the quick brown fox"
WORDS = TEXT.split()
STAGES = ("words", "shout", "measure", "join")


def fave(*args: str, store: Path) -> e2e.Result:
    return e2e.fave(*args, env=e2e.child_env({"FAVE_STORE": str(store)}), timeout=120)


def attempts(store: Path, request_id: str) -> dict[str, list[int]]:
    local = LocalStore(store)
    return {
        stage: [t.attempt for _, t in sorted(read_stage_tasks(local, request_id, stage).items())] for stage in STAGES
    }


def state_bytes(store: Path, request_id: str) -> bytes:
    return (store / state_key(request_id)).read_bytes()


def listing(store: Path) -> dict[str, int]:
    """Every object of the store with its modification time: what a command that writes nothing leaves as is."""
    return {str(path.relative_to(store)): path.stat().st_mtime_ns for path in store.rglob("*") if path.is_file()}


def copy_of_fixture(tmp_path: Path) -> Path:
    """A copy of the fixture and the demo functions to edit (the template's paths out of them made absolute)."""
    copy = tmp_path / "copy"
    shutil.copytree(DEMO, copy / "demo", ignore=shutil.ignore_patterns("__pycache__"))
    template = copy / "demo" / "template.yaml"
    template.write_text(template.read_text().replace("Uri: ../../../", f"Uri: {ROOT}/"))
    (copy / "rerun").mkdir()
    shutil.copy(RERUN, copy / "rerun" / "pipeline.yaml")
    return copy / "rerun" / "pipeline.yaml"


def run_whole(pipeline: Path, store: Path) -> str:
    ran = fave("run", "--pipeline", str(pipeline), "--input", json.dumps({"text": TEXT}), "--json", store=store)
    assert ran.code == 0, ran.stderr
    assert ran.json["status"] == "COMPLETED"
    return str(ran.json["request_id"])


def test_run_stage_runs_only_the_chain_it_needs_and_resume_keeps_the_selection(tmp_path: Path) -> None:
    store = tmp_path / "store"
    given = ("run", "--pipeline", str(RERUN), "--input", json.dumps({"text": TEXT}))

    # An unknown stage: one line naming it, exit 2, nothing stored.
    bad = fave(*given, "--stage", "shout", "--stage", "nope", store=store)
    assert bad.code == 2 and "'nope'" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert not (store / "requests").exists()

    ran = fave(*given, "--stage", "shout", "--json", store=store)
    assert ran.code == 0, ran.stderr
    doc = ran.json
    request_id = doc["request_id"]
    assert doc["status"] == "COMPLETED"
    assert {n: (s["status"], s["in_run"]) for n, s in doc["stages"].items()} == {
        "words": ("SUCCEEDED", True),
        "shout": ("SUCCEEDED", True),
        "measure": ("PENDING", False),
        "join": ("PENDING", False),
    }
    assert doc["selection"] == {"stages": ["shout"], "runs": ["words", "shout"]}
    # final.json: the selected stages' outputs keyed by stage (a fanned-out one as the list of its items').
    assert [item["word"] for item in doc["final"]["shout"]] == [w.upper() + "!" for w in WORDS]
    assert attempts(store, request_id) == {"words": [1], "shout": [1] * len(WORDS), "measure": [], "join": []}
    persisted = StateDoc.from_json(state_bytes(store, request_id))
    assert persisted.selection == ["shout"] and persisted.scope == ["words", "shout"]

    text = fave("status", request_id, store=store)
    assert text.code == 0 and "not selected" in text.stdout and "selected: shout (runs words, shout)" in text.stdout

    # Reset and resume keep the selection: shout runs again, measure and join still do not.
    assert fave("reset", request_id, "--stage", "shout", store=store).code == 0
    resumed = fave("resume", request_id, "--json", store=store)
    assert resumed.code == 0, resumed.stderr
    assert resumed.json["status"] == "COMPLETED" and resumed.json["selection"]["stages"] == ["shout"]
    assert set(resumed.json["final"]) == {"shout"}
    assert attempts(store, request_id) == {"words": [1], "shout": [2] * len(WORDS), "measure": [], "join": []}


def test_rerun_after_a_code_edit_reruns_that_stage_and_what_needs_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    pipeline = copy_of_fixture(tmp_path)
    request_id = run_whole(pipeline, store)
    before = state_bytes(store, request_id)

    # Nothing changed: nothing to re-run, the request untouched (dry run or not).
    dry = fave("rerun", request_id, "--dry-run", store=store)
    assert dry.code == 0, dry.stderr
    assert "nothing to re-run" in dry.stdout
    same = fave("rerun", request_id, store=store)
    assert same.code == 0 and "nothing to re-run" in same.stdout
    assert state_bytes(store, request_id) == before

    code = pipeline.parent.parent / "demo" / "functions" / "measure" / "app.py"
    code.write_text(code.read_text() + "\n# a change that changes no output\n")
    objects = listing(store)
    plan = fave("rerun", request_id, "--dry-run", "--json", store=store)
    assert plan.code == 0, plan.stderr
    assert state_bytes(store, request_id) == before  # a dry run changes nothing: no lease, no log, no state
    assert listing(store) == objects
    assert plan.json["runs"] == ["measure", "join"] and plan.json["reset"] == ["measure"]
    reasons = {s["stage"]: s["reasons"] for s in plan.json["stages"]}
    assert reasons["words"] == reasons["shout"] == ["unchanged"]
    assert reasons["measure"] == ["code changed: MeasureFunction"]
    assert reasons["join"][0] == "needs measure, which re-runs" and "cache" in reasons["join"][1]
    text = fave("rerun", request_id, "--dry-run", store=store)
    assert "code changed: MeasureFunction" in text.stdout and "2 of 4 stages would run" in text.stdout

    rerun = fave("rerun", request_id, "--json", store=store)
    assert rerun.code == 0, rerun.stderr
    assert rerun.json["status"] == "COMPLETED" and rerun.json["rerun"]["runs"] == ["measure", "join"]
    n = len(WORDS)
    assert attempts(store, request_id) == {"words": [1], "shout": [1] * n, "measure": [2] * n, "join": [2]}
    # measure's outputs came out the same: join's input is unchanged, so its task came from the cache.
    (join,) = read_stage_tasks(LocalStore(store), request_id, "join").values()
    assert join.cached and join.cached_from == request_id
    again = fave("rerun", request_id, store=store)
    assert again.code == 0 and "nothing to re-run" in again.stdout


def test_rerun_after_a_config_edit_reruns_only_that_stage_and_refuses_a_new_stage(tmp_path: Path) -> None:
    store = tmp_path / "store"
    pipeline = copy_of_fixture(tmp_path)
    request_id = run_whole(pipeline, store)
    original = pipeline.read_text()

    pipeline.write_text(original.replace("config: {style: plain}", "config: {style: fancy}"))
    plan = fave("rerun", request_id, "--dry-run", "--json", store=store)
    assert plan.code == 0, plan.stderr
    assert plan.json["runs"] == ["join"]
    assert plan.json["stages"][-1]["reasons"] == ['config changed: join.style "plain" -> "fancy"']
    rerun = fave("rerun", request_id, store=store)
    assert rerun.code == 0, rerun.stderr
    assert f"request {request_id}: COMPLETED" in rerun.stdout
    n = len(WORDS)
    assert attempts(store, request_id) == {"words": [1], "shout": [1] * n, "measure": [1] * n, "join": [2]}

    # A stage added since the request ran: refused in one line naming it, nothing changed.
    before = state_bytes(store, request_id)
    grown = pipeline.read_text().replace(
        "  join:\n    function: JoinFunction\n    needs: [measure, shout]",
        "  extra: {function: WordsFunction, needs: [words], mode: sync}\n"
        "  join:\n    function: JoinFunction\n    needs: [measure, shout, extra]",
    )
    assert "extra" in grown
    pipeline.write_text(grown)
    refused = fave("rerun", request_id, store=store)
    assert refused.code == 2 and "'extra'" in refused.stderr and "added" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert state_bytes(store, request_id) == before
