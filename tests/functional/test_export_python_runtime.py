"""The runtime every file of ``fave export --format prefect|dagster`` carries (fave.export.pyflow.RUNTIME), run
here without the engines: the stage event it sends (against docs/schemas/stage-event.schema.json), what it retries,
a stage's max_concurrency within a run; and the CLI. The engines run the files in test_export_prefect.py and
test_export_dagster.py."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from fave.export.pyflow import RUNTIME, plan
from fave.local.orchestrator import load_local_pipeline
from support import e2e

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
SCHEMAS = ROOT / "docs" / "schemas"


# ---- the runtime every exported file carries ------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The runtime's functions over demo's spec, with FAVE_BIN a script that records each event it is given and
    answers as ``fave invoke`` does (stdout JSON; exit 1 with Lambda's error payload)."""
    spec = plan(load_local_pipeline(DEMO)).spec
    script = tmp_path / "fave"
    script.write_text(
        "#!/bin/sh\n"
        f'cat > "{tmp_path}/events/$$.json"\n'
        'sleep "${FAKE_SLEEP:-0}"\n'
        'if [ -n "$FAKE_ERROR" ]; then echo "$FAKE_ERROR"; exit 1; fi\n'
        'if [ -n "$FAKE_ANSWER" ]; then echo "$FAKE_ANSWER"; else echo \'{"ok": true}\'; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "events").mkdir()
    monkeypatch.setenv("FAVE_EXPORT_CALL", "local")
    monkeypatch.setenv("FAVE_BIN", str(script))
    namespace: dict[str, Any] = {"PIPELINE": spec}
    exec(compile(RUNTIME, "runtime", "exec"), namespace)
    namespace["events"] = lambda: [json.loads(p.read_text()) for p in (tmp_path / "events").iterdir()]
    return namespace


def stage_event_validator() -> Any:
    docs = {}
    for path in SCHEMAS.glob("*.schema.json"):
        doc = json.loads(path.read_text())
        docs[doc["$id"]] = doc
    return fastjsonschema.compile(
        docs["https://fave.invalid/schemas/stage-event.schema.json"], handlers={"https": lambda uri: docs[uri]}
    )


def test_the_runtime_sends_fave_s_stage_event(runtime: dict[str, Any]) -> None:
    ctx = runtime["start"]({"text": "a b", "profile": "loud"}, "/tmp/store", "01M8D4S70VJ0XHPQ8DFCEG1K38")
    carrier = runtime["carriers"](["a", "b"])[1]
    out = runtime["call_stage"](ctx, "shout", {}, carrier, attempt=2)
    assert out == {"index": 1, "item": "b", "out": {"shout": {"ok": True}}}
    (event,) = runtime["events"]()
    stage_event_validator()(event)
    assert event["task"] == {"request_id": "01M8D4S70VJ0XHPQ8DFCEG1K38", "stage": "shout", "item": 1, "attempt": 2}
    assert event["input"] == {
        "request": {"text": "a b", "profile": "loud"},
        "needs": {},  # the for_each source is left out: the task gets its element
        "config": {"suffix": "!!"},  # the loud profile's override
        "item": "b",
        "index": 1,
    }
    assert len(runtime["new_request_id"]()) == 26


def test_join_takes_each_per_item_stage_s_list_from_the_group(runtime: dict[str, Any]) -> None:
    ctx = runtime["start"]({"text": "a b"}, "/tmp/store")
    done = [{"index": 1, "item": "b", "out": {"shout": 2, "measure": 4}}, {"index": 0, "item": "a", "out": {}}]
    group = runtime["collect"](["shout", "measure"], done)
    assert group == {"shout": [None, 2], "measure": [None, 4]}  # item order
    runtime["call_stage"](ctx, "join", {"shout_items": group})
    (event,) = runtime["events"]()
    assert event["input"]["needs"] == {"measure": [None, 4], "shout": [None, 2]}
    assert event["task"]["item"] is None and "item" not in event["input"]


def test_errors_and_terminal_results_say_whether_to_retry(runtime: dict[str, Any], monkeypatch: Any) -> None:
    ctx = runtime["start"]({"text": "a"}, "/tmp/store")
    failed = runtime["StageFailed"]
    monkeypatch.setenv("FAKE_ERROR", json.dumps({"errorType": "ValueError", "errorMessage": "no"}))
    with pytest.raises(failed, match="stage words failed: ValueError: no") as raised:
        runtime["call_stage"](ctx, "words", {})
    assert runtime["retryable"](raised.value, "words")
    monkeypatch.delenv("FAKE_ERROR")
    monkeypatch.setenv("FAKE_ANSWER", json.dumps({"$fave_error": {"errorType": "Bad", "errorMessage": "never"}}))
    with pytest.raises(failed, match="stage words failed: Bad: never") as raised:
        runtime["call_stage"](ctx, "words", {})
    assert not runtime["retryable"](raised.value, "words")
    runtime["PIPELINE"]["stages"]["words"]["non_retryable"] = ["ValueError"]
    assert not runtime["retryable"](failed("words", "ValueError", "no"), "words")
    with pytest.raises(ValueError, match=r"request\.profile must be one of default, loud"):
        runtime["start"]({"profile": "quiet"}, "/tmp/store")


def test_a_stage_s_max_concurrency_holds_within_a_run(runtime: dict[str, Any], monkeypatch: Any) -> None:
    """demo's shout has max_concurrency 2: six items on six threads never run more than two calls at once."""
    monkeypatch.setenv("FAKE_SLEEP", "0.3")
    ctx = runtime["start"]({"text": "x"}, "/tmp/store")
    running, peak, lock = [0], [0], threading.Lock()
    call = runtime["_call_local"]

    def counted(spec: Any, event: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return call(spec, event)
        finally:
            with lock:
                running[0] -= 1

    runtime["call_stage"].__globals__["_call_local"] = counted
    threads = [
        threading.Thread(target=runtime["call_stage"], args=(ctx, "shout", {}, c))
        for c in runtime["carriers"](list("abcdef"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and len(runtime["events"]()) == 6


# ---- the CLI --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["prefect", "dagster"])
def test_the_cli_prints_the_file_and_the_mapping_table(fmt: str) -> None:
    done = e2e.fave("export", "--format", fmt, "--pipeline", str(DEMO))
    assert done.code == 0, done.describe()
    compile(done.stdout, "exported.py", "exec")
    assert str(DEMO.parent.resolve() / "template.yaml") in done.stdout  # the local caller runs from anywhere
    assert "for_each fan-out" in done.stderr and "tolerated_failures" in done.stderr
    refused = e2e.fave("export", "--format", fmt, "--pipeline", str(DEMO), "--distributed")
    assert refused.code == 2 and "are for --format asl" in refused.stderr
    assert os.linesep not in refused.stderr.strip()


@pytest.mark.parametrize("fmt", ["prefect", "dagster"])
def test_docs_export_md_has_every_row_of_the_table_with_its_mapping(fmt: str) -> None:
    """docs/export.md's section for the format lists every feature the export reports, with the same mapping
    (or 'exact, or approximate' where it depends on the pipeline)."""
    from fave.export.dagster import export_dagster
    from fave.export.prefect import export_prefect

    text = (ROOT / "docs" / "export.md").read_text()
    section = text.split(f"## `fave export --format {fmt}`", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("feature", "---"):
            table[cells[0]] = cells[1]
    export = export_prefect if fmt == "prefect" else export_dagster
    for row in export(load_local_pipeline(DEMO)).rows:
        assert row.feature in table, row.feature
        assert row.fidelity in table[row.feature], (row.feature, row.fidelity, table[row.feature])
