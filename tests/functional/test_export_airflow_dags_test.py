"""``fave export --format airflow`` verified by running (issue 15, requirements 1 and 2): the exported DAG file runs
with ``airflow dags test`` in .venv-airflow (apache-airflow, requirements/airflow.txt; never in .venv), its tasks
calling the SAME stage functions through fave's local runtime (the file's ``FAVE_EXPORT_CALL=local`` seam:
``fave invoke`` over the pipeline's own template.yaml). The final stage's XCom must equal ``fave run``'s final.json
for the same request; a stage that keeps failing fails the run, naming the stage, after fave's attempts.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import e2e
from support.demo import MEASURE_2S, RETRY, demo_variant
from support.engines import DEMO, SALES, engine_python, fave_run, local_lambda_api

ROOT = Path(__file__).resolve().parents[2]
REQUEST_ID = "01M8D4S70VJ0XHPQ8DFCEG1K38"


def airflow_bin() -> Path:
    """.venv-airflow's ``airflow`` (tests/support/engines.py skips the test, saying why, when it is missing)."""
    return engine_python("airflow").with_name("airflow")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        # The DAG file's caller: fave's local runtime, with this venv's fave.
        FAVE_EXPORT_CALL="local",
        FAVE_BIN=str(Path(sys.executable).with_name("fave")),
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow database made once (``airflow db migrate``, sqlite); each run gets a copy of it."""
    airflow = airflow_bin()
    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    done = subprocess.run(
        [str(airflow), "db", "migrate"], env=_env(home), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return home / "airflow.db"


@dataclass(frozen=True)
class DagRun:
    ok: bool
    log: str
    final: Any
    states: dict[tuple[str, int], tuple[str, int]]
    """(stage, map index) -> (state, try number) of every task instance (a task in a group: by its own id)."""
    started: dict[tuple[str, int], str]
    """(stage, map index) -> when its last try started."""
    ended: dict[tuple[str, int], str]
    """(stage, map index) -> when its last try ended."""


@pytest.fixture
def airflow(migrated: Path, tmp_path: Path) -> Iterator[Any]:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(migrated, home / "airflow.db")

    def run(pipeline: Path, request: dict[str, Any], **extra: Any) -> DagRun:
        """Export ``pipeline`` and run its DAG once with ``request``; ``extra``: conf keys, and ``env`` (a dict
        of environment variables for ``airflow dags test``)."""
        env = _env(home, **extra.pop("env", {}))
        dag_file = home / "dags" / f"{pipeline.parent.name}.py"
        done = e2e.fave("export", "--format", "airflow", "--pipeline", str(pipeline), "-o", str(dag_file), "--json")
        assert done.code == 0, done.stderr
        report = json.loads(done.stdout)
        conf = {"request": request, "request_id": REQUEST_ID, "store": str(tmp_path / "store"), **extra}
        command = [str(airflow_bin()), "dags", "test", report["dag_id"], "-f", str(dag_file), "-c", json.dumps(conf)]
        ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        with sqlite3.connect(home / "airflow.db") as db:
            final = (report["final_task"],)
            rows = db.execute("SELECT value FROM xcom WHERE task_id = ? AND key = 'return_value'", final)
            values = [json.loads(v) for (v,) in rows.fetchall()]
            tis = db.execute(
                "SELECT task_id, map_index, state, try_number, start_date, end_date FROM task_instance"
            ).fetchall()
        states = {(t.rsplit(".", 1)[-1], m): (s, n) for t, m, s, n, _, _ in tis}
        started = {(t.rsplit(".", 1)[-1], m): when for t, m, _, _, when, _ in tis}
        ended = {(t.rsplit(".", 1)[-1], m): when for t, m, _, _, _, when in tis}
        final = values[0] if values else None
        return DagRun(ran.returncode == 0, ran.stdout + ran.stderr, final, states, started, ended)

    yield run


CASES = [  # the demo with the default profile: the lambda caller's test below
    # The first attempt of 'bb' fails and is retried: the stage sees attempt 2 (join reports the attempts),
    # and the loud profile's config reaches shout.
    pytest.param(DEMO, {"text": "a bb ccc", "fail": {"bb": 1}}, "loud", id="demo-retry-loud-profile"),
    # No item: Airflow skips a mapped task over an empty list; join still runs, with empty lists, as in fave.
    pytest.param(DEMO, {"text": ""}, "default", id="demo-no-item"),
    pytest.param(SALES / "pipeline.yaml", {"source": str(SALES / "data" / "sales.csv")}, "default", id="sales"),
]


@pytest.mark.parametrize(("pipeline", "request_", "profile"), CASES)
def test_the_exported_dag_gives_fave_run_s_final_output(
    airflow: Any, tmp_path: Path, pipeline: Path, request_: dict[str, Any], profile: str
) -> None:
    if pipeline == DEMO:
        # measure's 2 s timeout is room for a loaded machine; with a retry, a fixed 2 s delay before it, so the other
        # items' measure starting during shout's retry is seen whatever the load (50 ms with full jitter: not always).
        edits = [(MEASURE_2S, "mode: async, timeout: 20s}")]
        if "fail" in request_:
            edits.append((RETRY, "retry: {max_attempts: 2, interval: 2s, backoff_rate: 1, jitter: none}"))
        pipeline = demo_variant(tmp_path / "pipeline", *edits)
    state, final = fave_run(pipeline, request_, tmp_path / "fave", profile)
    assert state["status"] == "COMPLETED" and final is not None
    run: DagRun = airflow(pipeline, state["input"])
    assert run.ok, run.log[-4000:]
    assert run.final == final
    if "fail" in request_:  # the retried item ran twice, as a second try of the same mapped task instance
        assert ("shout", 1) in run.states and run.states[("shout", 1)] == ("success", 2)
        # Per-item chaining without a barrier: the other items' measure started before shout of item 1 had
        # ended (its retry waits out a delay first); behind a barrier they could only start after it. (Not before
        # the retry started: on a loaded machine the scheduler may start the retry first.)
        assert run.started[("measure", 0)] < run.ended[("shout", 1)]
        assert run.started[("measure", 2)] < run.ended[("shout", 1)]


def test_a_stage_that_keeps_failing_fails_the_run_naming_it(airflow: Any, tmp_path: Path) -> None:
    request = {"text": "a bb", "fail": {"bb": 9}}
    state, final = fave_run(DEMO, request, tmp_path / "fave")
    assert state["status"] == "FAILED" and final is None
    assert state["failure"]["error_type"] == "ValueError"
    run: DagRun = airflow(DEMO, state["input"])
    assert not run.ok
    assert run.final is None
    assert "ValueError: stage shout failed: " in run.log
    # fave's retry: 2 retries after the first attempt; the failed item is the 3rd try, downstream never ran.
    assert run.states[("shout", 1)] == ("failed", 3)
    assert run.states[("shout", 0)][0] == "success"
    assert run.states[("join", -1)][0] == "upstream_failed"


def test_the_cli_writes_the_file_and_refuses_asl_flags(tmp_path: Path) -> None:
    out = tmp_path / "dag.py"
    done = e2e.fave("export", "--format", "airflow", "--pipeline", str(ROOT / "examples/sales/pipeline.yaml"),
                    "-o", str(out))  # fmt: skip
    assert done.code == 0, done.stderr
    assert "for_each fan-out" in done.stderr and "tolerated_failures" in done.stderr
    assert "max_retry_delay=timedelta(seconds=30.0)" in out.read_text()
    bad = e2e.fave("export", "--format", "airflow", "--pipeline", str(ROOT / "examples/sales/pipeline.yaml"), "--sam")
    assert bad.code == 2 and "for --format asl" in bad.stderr and "Traceback" not in bad.stderr


def test_the_lambda_caller_invokes_the_functions_through_lambda_s_invoke_api(airflow: Any, tmp_path: Path) -> None:
    """FAVE_EXPORT_CALL=lambda (the default): boto3's Invoke with the ARNs of the run's conf, here answered by
    fave's local Lambda API (AWS_ENDPOINT_URL_LAMBDA) over the demo's template; a retried failure included."""
    request = {"text": "a bb", "fail": {"bb": 1}}
    state, final = fave_run(DEMO, request, tmp_path / "fave")
    assert final is not None
    with local_lambda_api(DEMO) as (env, functions):
        run: DagRun = airflow(DEMO, state["input"], functions=functions, env=env)
    assert run.ok, run.log[-4000:]
    assert run.final == final
    assert run.states[("shout", 1)] == ("success", 2)


def test_docs_export_md_lists_every_row_of_the_airflow_table() -> None:
    """docs/export.md's Airflow table has a row for every feature the export reports, named alike."""
    from fave.export.airflow import airflow_rows
    from fave.local.orchestrator import load_local_pipeline

    doc = (ROOT / "docs" / "export.md").read_text()
    section = doc.split("## `fave export --format airflow`", 1)[1]
    documented = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")}
    for pipeline in (DEMO, SALES / "pipeline.yaml"):
        for row in airflow_rows(load_local_pipeline(pipeline), ()):
            assert row.feature in documented, row.feature


def test_a_chain_with_a_single_task_stage_in_between_runs_as_mapped_tasks_of_their_own(
    airflow: Any, tmp_path: Path
) -> None:
    """measure needs shout item by item and `again`, which needs every shout: no group can hold shout and
    measure, so each is a mapped task of its own and measure takes its item's shout by index."""
    text = DEMO.read_text().replace("template: template.yaml", f"template: {DEMO.with_name('template.yaml')}")
    text = text.replace(
        "  measure: {function: MeasureFunction, needs: [shout],",
        "  again: {function: WordsFunction, needs: [shout], mode: sync}\n"
        "  measure: {function: MeasureFunction, needs: [shout, again],",
    )
    pipeline = tmp_path / "variant" / "pipeline.yaml"
    pipeline.parent.mkdir()
    pipeline.write_text(text)
    state, final = fave_run(pipeline, {"text": "one two three"}, tmp_path / "fave")
    assert final is not None and final["text"] == "ONE! TWO! THREE!"
    run: DagRun = airflow(pipeline, state["input"])
    assert run.ok, run.log[-4000:]
    assert run.final == final
    assert {("shout", 2), ("measure", 2), ("again", -1)} <= set(run.states)
