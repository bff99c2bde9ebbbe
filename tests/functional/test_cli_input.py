"""``fave run`` takes the input its pipeline declares (issue 11, requirement 1), through the real ``fave`` process,
the demo's stage functions and a local store:

* a non-video pipeline runs from ``--input JSON``, ``--input @FILE`` (larger than a command line may be) or
  ``--input @-``, without a SOURCE; its declared defaults are filled in;
* a missing, misspelt or wrong field exits 2 with one line naming it, and nothing is stored (not even the store
  folder);
* SOURCE fills the pipeline's upload field, and is refused by a pipeline without one;
* the video contract is unchanged: ``fave run VIDEO --query Q --json`` under the video pipeline's declared input
  stores ``{video_uri, query, profile}`` and prints ``final``; without VIDEO it exits 2 asking for it;
* ``fave list`` shows the pipeline's name and a short summary of the input, and ``--json`` keeps its keys.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fave.status import status_document
from fave_shared.store import LocalStore
from support import e2e
from support.declared_input import demo_with_input, video_input

WORDS_ONLY = {"fields": {"text": {"type": "string", "required": True}, "notes": "string"}}


def fave(*args: str, store: Path, stdin: str | None = None) -> e2e.Result:
    """``fave ARGS --store STORE`` from the repository root, run to its end."""
    done = subprocess.run(
        e2e.fave_command(*args, "--store", str(store)),
        cwd=e2e.ROOT,
        env=e2e.child_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return e2e.Result(done.returncode, done.stdout, done.stderr)


def stored_input(store: Path, result: e2e.Result) -> dict[str, Any]:
    """The request's input as stored (read back from its own object when it was stored apart, over 4 KB)."""
    local = LocalStore(store)
    value: dict[str, Any] = status_document(local, result.json["request_id"])["input"]
    if set(value) == {"$ref"}:
        value = json.loads(local.get(value["$ref"]).data)
    return dict(value)


def refused(result: e2e.Result, store: Path, *needles: str) -> str:
    """Exit 2, one line naming the problem, no traceback, nothing stored."""
    assert result.code == 2, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fave: error: "), result.describe()
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not store.exists(), "a refused request stored something"
    return lines[0]


@pytest.fixture
def words(tmp_path: Path) -> Path:
    """The demo's stages behind a declared non-video input (support.declared_input.WORDS_INPUT)."""
    return demo_with_input(tmp_path / "pipelines")


def test_a_non_video_pipeline_runs_from_its_declared_input_without_a_source(tmp_path: Path, words: Path) -> None:
    store = tmp_path / "store"
    ran = fave("run", "--pipeline", str(words), "--input", '{"text": "hi there"}', "--json", store=store)
    assert ran.code == 0, ran.describe()
    assert ran.json["status"] == "COMPLETED" and ran.json["final"]["text"] == "HI! THERE!"
    # The declared default is filled in; no video field, no default query (the input declares none).
    assert stored_input(store, ran) == {"text": "hi there", "lang": "en", "profile": "default"}

    loud = fave(
        "run", "--pipeline", str(words), "--input", '{"text": "go"}', "--profile", "loud", "--json", store=store
    )
    assert loud.code == 0, loud.describe()
    assert loud.json["final"]["text"] == "GO!!"  # --profile is an option of every request, declared or not
    assert stored_input(store, loud)["profile"] == "loud"


def test_input_from_a_file_of_any_size_and_from_stdin(tmp_path: Path) -> None:
    pipeline = demo_with_input(tmp_path / "pipelines", WORDS_ONLY, name="notes")
    notes = "n" * 400_000  # over what one command-line argument may hold (128 KiB on Linux)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"text": "big file", "notes": notes}))
    store = tmp_path / "store"
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["true", request.read_text()], check=False)

    from_file = fave("run", "--pipeline", str(pipeline), "--input", f"@{request}", "--json", store=store)
    assert from_file.code == 0, from_file.describe()
    assert from_file.json["final"]["text"] == "BIG! FILE!"
    assert stored_input(store, from_file) == {"text": "big file", "notes": notes, "profile": "default"}

    from_stdin = fave("run", "--pipeline", str(pipeline), "--input", "@-", "--json", store=store, stdin='{"text": "x"}')
    assert from_stdin.code == 0, from_stdin.describe()
    assert stored_input(store, from_stdin) == {"text": "x", "profile": "default"}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ([], ("input: text: required",)),
        (["--input", '{"txet": "a"}'], ("text",)),
        (["--input", '{"text": "a", "colour": "red"}'], ("colour", "not a field of this pipeline's input")),
        (["--input", '{"text": 7}'], ("text", "must be string")),
        (["--input", '{"text": ""}'], ("text",)),
        (["--input", '{"text": "a", "lang": "de"}'], ("lang", "must be one of")),
        (["--input", '{"text": "a", "fail": [1]}'], ("fail", "must be object")),
        (["--input", '{"text": "a", "sleep_s": -1}'], ("sleep_s",)),
        (["--input", '{"text": "a"}', "--profile", "quiet"], ("unknown profile 'quiet'",)),
        (["--input", "@{missing}"], ("no such file",)),
        (["--input", "@{notjson}"], ("is not valid JSON",)),
        (["--input", "[1, 2]"], ("--input must be a JSON object",)),
    ],
)
def test_a_missing_or_wrong_field_exits_2_naming_it_and_stores_nothing(
    tmp_path: Path, words: Path, args: list[str], needles: tuple[str, ...]
) -> None:
    (tmp_path / "notjson.json").write_text("{nope")
    slots = {"@{missing}": f"@{tmp_path / 'missing.json'}", "@{notjson}": f"@{tmp_path / 'notjson.json'}"}
    store = tmp_path / "store"
    refused(fave("run", "--pipeline", str(words), *[slots.get(a, a) for a in args], store=store), store, *needles)


def test_source_fills_the_upload_field_and_a_pipeline_without_one_refuses_it(tmp_path: Path, words: Path) -> None:
    source = tmp_path / "doc.txt"
    source.write_text("some document\n")
    store = tmp_path / "store"
    ran = fave("run", str(source), "--pipeline", str(words), "--input", '{"text": "a"}', "--json", store=store)
    assert ran.code == 0, ran.describe()
    assert stored_input(store, ran)["document"] == str(source.resolve())  # trigger.upload.field: document

    no_trigger = demo_with_input(tmp_path / "pipelines", WORDS_ONLY, name="closed")
    other = tmp_path / "other"
    refused(
        fave("run", str(source), "--pipeline", str(no_trigger), "--input", '{"text": "a"}', store=other),
        other,
        "pipeline 'closed' takes no SOURCE",
    )
    missing = tmp_path / "missing"
    refused(fave("run", "nope.txt", "--pipeline", str(words), "--input", '{"text": "a"}', store=missing), missing)


def test_the_video_contract_is_unchanged(tmp_path: Path) -> None:
    # The video pipeline's own input: and trigger: (read from pipeline.yaml) in front of the demo's stages.
    video = demo_with_input(tmp_path / "pipelines", *video_input(), name="video")
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    store = tmp_path / "store"
    ran = fave("run", str(source), "--query", "find scenes with cars", "--pipeline", str(video), "--json", store=store)
    assert ran.code == 0, ran.describe()
    assert {"request_id", "status", "stages", "final"} <= set(ran.json) and ran.json["status"] == "COMPLETED"
    assert stored_input(store, ran) == {
        "video_uri": str(source.resolve()),
        "query": "find scenes with cars",
        "profile": "default",
    }
    refused(
        fave("run", "--query", "cars", "--pipeline", str(video), store=tmp_path / "none"),
        tmp_path / "none",
        "SOURCE is required",
        "video_uri",
    )
    refused(
        fave("run", str(source), "--input", '{"qeury": "cars"}', "--pipeline", str(video), store=tmp_path / "none"),
        tmp_path / "none",
        "qeury",
    )


def test_list_shows_the_pipeline_and_a_summary_of_the_input(tmp_path: Path, words: Path) -> None:
    store = tmp_path / "store"
    video = demo_with_input(tmp_path / "pipelines", *video_input(), name="video")
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00")
    first = fave(
        "run", "--pipeline", str(words), "--input", '{"text": "one two", "fail": {"x": 1}}', "--json", store=store
    )
    second = fave("run", str(source), "--query", "cats", "--pipeline", str(video), "--json", store=store)
    assert first.code == second.code == 0, (first.describe(), second.describe())

    listed = fave("list", store=store)
    assert listed.code == 0, listed.describe()
    newest, oldest = listed.stdout.splitlines()
    assert newest.split()[:3] == [second.json["request_id"], "COMPLETED", "video"]
    assert "video_uri=/" in newest and newest.endswith("... query=cats")  # each value cut to 40 characters
    assert "profile=" not in newest  # the default profile is left out
    assert oldest.split()[:3] == [first.json["request_id"], "COMPLETED", "words"]
    assert oldest.endswith('text=one two fail={"x":1} lang=en')

    rows = json.loads(fave("list", "--json", store=store).stdout)
    assert [r["request_id"] for r in rows] == [second.json["request_id"], first.json["request_id"]]
    assert all(
        {"request_id", "status", "created_at", "pipeline", "summary", "query", "video_uri"} <= set(r) for r in rows
    )
    assert (rows[0]["pipeline"], rows[0]["query"], rows[0]["video_uri"]) == ("video", "cats", str(source.resolve()))
    assert (rows[1]["pipeline"], rows[1]["query"], rows[1]["video_uri"]) == ("words", None, None)
