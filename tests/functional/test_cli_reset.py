"""``fave reset ID --stage NAME [--downstream]`` then ``fave resume ID`` (issue 13, requirement 4): a real process,
the demo pipeline, a local store directory. Each dispatch of a task adds one to its attempt number, so the attempts
count exactly which tasks ran again."""

from __future__ import annotations

import json
from pathlib import Path

from fave.keys import final_key
from fave.persistence import read_stage_tasks
from fave_shared.store import LocalStore
from support import e2e
from support.demo import DEMO, TEXT


def fave(*args: str, store: Path) -> e2e.Result:
    return e2e.fave(*args, env=e2e.child_env({"FAVE_STORE": str(store)}), timeout=120)


def attempts(store: LocalStore, request_id: str) -> dict[str, list[int]]:
    return {
        stage: [t.attempt for _, t in sorted(read_stage_tasks(store, request_id, stage).items())]
        for stage in ("words", "shout", "measure", "join")
    }


def test_reset_a_stage_and_downstream_then_resume_reruns_only_those(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    source = tmp_path / "source.txt"
    source.write_text("demo\n")
    ran = fave(
        "run", str(source), "--pipeline", str(DEMO), "--input", json.dumps({"text": TEXT}), "--json", store=store_dir
    )
    assert ran.code == 0, ran.stderr
    first = json.loads(ran.stdout)
    request_id = first["request_id"]
    store = LocalStore(store_dir)
    words = len(TEXT.split())
    before = attempts(store, request_id)
    assert before == {"words": [1], "shout": [1] * words, "measure": [1] * words, "join": [1]}
    final_path = store_dir / final_key(request_id)
    written = final_path.stat().st_mtime_ns

    # A stage the pipeline does not have: one line naming it, exit 2, nothing changed.
    bad = fave("reset", request_id, "--stage", "nope", store=store_dir)
    assert bad.code == 2 and "'nope'" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    reset = fave("reset", request_id, "--stage", "measure", "--downstream", "--json", store=store_dir)
    assert reset.code == 0, reset.stderr
    doc = json.loads(reset.stdout)
    assert doc["reset"] == {"stages": {"measure": words, "join": 1}, "downstream": True}
    assert doc["status"] == "COMPLETED"
    assert {name: s["status"] for name, s in doc["stages"].items()} == {
        "words": "SUCCEEDED",
        "shout": "SUCCEEDED",
        "measure": "PENDING",
        "join": "PENDING",
    }
    plain = fave("reset", request_id, "--stage", "join", store=store_dir)
    assert plain.code == 0 and "join (1 task)" in plain.stdout and f"fave resume {request_id}" in plain.stdout

    resumed = fave("resume", request_id, "--json", store=store_dir)
    assert resumed.code == 0, resumed.stderr
    again = json.loads(resumed.stdout)
    assert again["status"] == "COMPLETED" and again["final"] == first["final"]
    # Only measure and join ran again (once each task); words and shout kept their results.
    assert attempts(store, request_id) == {
        "words": [1],
        "shout": [1] * words,
        "measure": [2] * words,
        "join": [2],
    }
    assert final_path.stat().st_mtime_ns > written  # final.json written again
    assert fave("resume", request_id, store=store_dir).code == 0  # nothing left: runs nothing
    assert attempts(store, request_id)["join"] == [2]
