"""examples/weekly, the weekly-update example of the result cache (issue 13, requirement 2): its own tests run as
a user of the example would run them (week 1 runs every entry, week 2 only the changed and added ones, week 2
again nothing), and ``fave run`` of week 1 then week 2 from the command line."""

from __future__ import annotations

from pathlib import Path

from fave.local.orchestrator import load_local_pipeline
from support import e2e

EXAMPLE = e2e.ROOT / "examples" / "weekly"
PIPELINE = EXAMPLE / "pipeline.yaml"


def test_the_examples_own_tests_pass() -> None:
    done = e2e.pytest_in(EXAMPLE, timeout=300)
    assert done.code == 0 and "5 passed" in done.stdout, done.stdout + done.stderr


def test_its_item_stages_are_cached_and_keyed_by_entry_id() -> None:
    pipeline = load_local_pipeline(PIPELINE)
    for name in ("synthesize", "score"):
        spec = pipeline.stages[name]
        assert spec.cache and spec.cache_request == () and spec.for_each is not None
        assert str(spec.for_each) == "fetch.entries" and spec.for_each.key_of({"id": "SKU-1"}, 0) == "SKU-1"
    assert not pipeline.stages["fetch"].cache and pipeline.stages["report"].cache


def test_fave_run_week_1_then_week_2_from_the_command_line(tmp_path: Path) -> None:
    env = e2e.child_env({"FAVE_STORE": str(tmp_path / "store")})
    runs = []
    for week in ("week1", "week2"):
        done = e2e.fave("run", str(EXAMPLE / "data" / f"{week}.json"), "--pipeline", str(PIPELINE), "--json", env=env)
        assert done.code == 0, done.stderr
        runs.append(done.json)
    assert runs[0]["status"] == runs[1]["status"] == "COMPLETED"
    page = e2e.fave("status", runs[1]["request_id"], "--stage", "synthesize", "--json", env=env)
    assert page.code == 0, page.describe()
    ran = [row for row in page.json["items"] if not row.get("cached")]
    assert len(ran) == 9  # 6 changed entries and 3 added of 201
