"""Hostile or broken input through the real ``fave`` process: a clear answer, no traceback, nothing left RUNNING.

What can fail between creating a request and its first dispatch in ``fave run`` (cli.cmd_run ->
wiring.local_orchestrator -> Orchestrator.create/apply/drive), and hostile files and streams around it:

* refused before anything is stored (exit 2, one line ``fave: error: ...``): a pipeline file that is an alias
  bomb, a template whose function's CodeUri does not exist, ``--input`` nested too deep;
* a request that fails at once (exit 1, FAILED with a reason naming the cause): a handler that cannot be
  imported, an invoke the runtime refuses (throttled), an unreadable ``FAVE_PAYLOAD_THRESHOLD`` (the first
  dispatch cannot build its payload);
* a reader that goes away (``fave ... | head``): exit 1, no traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fave.status import status_document
from fave_shared.store import LocalStore
from support import e2e
from support.demo import DEMO

REPO = Path(__file__).resolve().parents[2]


def fave(*args: str, store: Path, env: dict[str, str] | None = None, timeout: float = 120) -> e2e.Result:
    """``fave ARGS`` with ``FAVE_STORE=store`` (and ``env``), run to its end."""
    return e2e.fave(*args, env=e2e.child_env({"FAVE_STORE": str(store), **(env or {})}), timeout=timeout)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.txt"  # the demo pipeline ignores video_uri, but `fave run` wants a file
    path.write_text("demo\n")
    return path


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """A copy of the demo pipeline and its functions that a test may break."""
    copy = tmp_path / "demo"
    shutil.copytree(DEMO.parent, copy)
    template = copy / "template.yaml"
    template.write_text(template.read_text().replace("../../../", f"{REPO}/"))
    return copy / "pipeline.yaml"


_BARE_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", re.MULTILINE)


def no_traceback(proc: e2e.Result) -> None:
    """Neither a traceback nor the bare ``SomeError: ...`` line an uncaught exception ends with."""
    assert "Traceback" not in proc.stderr and not _BARE_EXCEPTION.search(proc.stderr), proc.describe()


def refused_on_the_spot(proc: e2e.Result, store: Path, *needles: str) -> str:
    """Exit 2, one line naming the problem, no traceback, and no request stored."""
    assert proc.code == 2, proc.describe()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fave: error: "), proc.describe()
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (store / "requests").exists()
    return lines[0]


def failed_at_once(proc: e2e.Result, store: Path, *needles: str) -> dict[str, Any]:
    """Exit 1, no traceback, and the stored request FAILED with a one-line reason naming the cause."""
    assert proc.code == 1, proc.describe()
    no_traceback(proc)
    (row,) = json.loads(fave("list", "--json", store=store).stdout)
    doc = status_document(LocalStore(store), row["request_id"])
    assert doc["status"] == "FAILED", doc
    reason = doc["failure"]
    assert reason and "\n" not in reason, doc
    for needle in needles:
        assert needle in reason, reason
    return doc


# -- refused before a request exists ---------------------------------------------------------------------


def test_local_error_alias_bomb_pipeline_is_refused_at_once(tmp_path: Path, source: Path) -> None:
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("stages:\n  words:\n    function: WordsFunction\n    config:\n      " + "\n      ".join(levels))
    store = tmp_path / "store"
    # Without the limit, the parse is instant but the first walk over the 10^9-node graph never ends.
    proc = fave("run", str(source), "--pipeline", str(bomb), store=store, timeout=60)
    refused_on_the_spot(proc, store, str(bomb), "refused: more than 20000 nodes")
    graph = fave("graph", "--pipeline", str(bomb), store=store, timeout=60)
    refused_on_the_spot(graph, store, "refused: more than 20000 nodes")


def test_local_error_code_uri_missing_is_refused_before_a_request_exists(
    tmp_path: Path, source: Path, demo_copy: Path
) -> None:
    shutil.rmtree(demo_copy.parent / "functions" / "shout")
    store = tmp_path / "store"
    proc = fave("run", str(source), "--pipeline", str(demo_copy), store=store)
    refused_on_the_spot(
        proc, store, "field 'template'", "function ShoutFunction: CodeUri: folder 'functions/shout' does not exist"
    )


@pytest.mark.parametrize(("depth", "needle"), [(300, "input: nested more than 64 levels deep"), (5000, "--input")])
def test_local_error_deeply_nested_input_is_refused_before_a_request_exists(
    tmp_path: Path, source: Path, depth: int, needle: str
) -> None:
    # 300: json.loads reads it, but state.json's serialiser would refuse it after the request was made;
    # 5000: deeper than json.loads can go (RecursionError).
    store = tmp_path / "store"
    extra = '{"text": "a b", "deep": ' + "[" * depth + "]" * depth + "}"
    proc = fave("run", str(source), "--pipeline", str(DEMO), "--input", extra, store=store)
    refused_on_the_spot(proc, store, needle)


# -- a request that fails at once, never left RUNNING ------------------------------------------------------


def test_local_error_handler_that_cannot_import_fails_the_request(
    tmp_path: Path, source: Path, demo_copy: Path
) -> None:
    (demo_copy.parent / "functions" / "words" / "app.py").write_text("import no_such_module_for_fave\n")
    store = tmp_path / "store"
    proc = fave("run", str(source), "--pipeline", str(demo_copy), "--input", '{"text": "a b"}', store=store)
    failed_at_once(
        proc, store, "stage 'words'", "Runtime.ImportModuleError", "No module named 'no_such_module_for_fave'"
    )


def test_local_error_unreadable_payload_threshold_fails_the_first_dispatch(tmp_path: Path, source: Path) -> None:
    # The first dispatch cannot build its payload: the task fails (not retried: a ValidationError) instead of
    # the request staying RUNNING with nothing in flight, as it did when the ValueError escaped the step.
    store = tmp_path / "store"
    proc = fave(
        "run", str(source), "--pipeline", str(DEMO), "--input", '{"text": "a b"}',
        store=store, env={"FAVE_PAYLOAD_THRESHOLD": "200kB"},
    )  # fmt: skip
    doc = failed_at_once(proc, store, "stage 'words'", "FAVE_PAYLOAD_THRESHOLD='200kB' is not a whole number")
    assert "after 1 attempt" in doc["failure"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_local_error_invoke_refused_fails_the_request(tmp_path: Path, source: Path, demo_copy: Path, mode: str) -> None:
    # The invoke itself raises (the local runtime throttles a function whose ReservedConcurrentExecutions is
    # 0, as Lambda does): on the first dispatch, the task fails and is retried, then the request fails.
    # ShoutFunction: its results have destinations back to the orchestrator, as an async stage's must.
    template = demo_copy.parent / "template.yaml"
    text = template.read_text()
    assert text.count("CodeUri: functions/shout\n") == 1
    template.write_text(
        text.replace("CodeUri: functions/shout\n", "CodeUri: functions/shout\n      ReservedConcurrentExecutions: 0\n")
    )
    pipeline = demo_copy.parent / f"{mode}.yaml"
    pipeline.write_text(
        "name: throttled\ndefaults: {retry: {max_attempts: 2, interval: 10ms}}\n"
        f"stages:\n  words: {{function: ShoutFunction, mode: {mode}}}\n"
    )
    store = tmp_path / "store"
    proc = fave("run", str(source), "--pipeline", str(pipeline), "--input", '{"text": "a b"}', store=store)
    doc = failed_at_once(proc, store, "stage 'words'", "throttled (ReservedConcurrentExecutions is 0)")
    assert "after 3 attempts" in doc["failure"]  # 2 retries


# -- a reader that goes away -----------------------------------------------------------------------------


def test_local_error_closed_stdout_is_no_traceback(tmp_path: Path, source: Path) -> None:
    store = tmp_path / "store"
    ran = fave("run", str(source), "--pipeline", str(DEMO), "--input", '{"text": "a b"}', "--json", store=store)
    assert ran.code == 0, ran.describe()
    request_id = ran.json["request_id"]
    # Without PYTHONUNBUFFERED (as a user runs it) the pipe error surfaces at the interpreter's final flush.
    env = {k: v for k, v in e2e.child_env({"FAVE_STORE": str(store)}).items() if k != "PYTHONUNBUFFERED"}
    for command in (["graph", "--pipeline", str(DEMO)], ["list"], ["status", request_id, "--json"]):
        process = subprocess.Popen(
            e2e.fave_command(*command), cwd=e2e.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # `fave ... | true`: the reader is gone before anything is written
        err = process.stderr.read().decode()
        assert (process.wait(timeout=60), err) == (1, ""), (command, err)
