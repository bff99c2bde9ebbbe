"""``fave status ID --stage NAME [--failed] [--json] [--item K] [--traceback]`` (issue 11, requirement 4): one row
per item of a stage with its status, attempts, duration and error, the history of its failed attempts and the
traceback of the last one, through the real ``fave`` process, the demo's stage functions and a local store.

One request of 150 items (more than a task shard holds) whose item 140 fails on every attempt is shared by the
tests of this module (the HTTP view of the same pages: tests/functional/aws/test_app_input.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fave.core.dag import content_key
from fave.persistence import SHARD_SIZE
from support import e2e
from support.declared_input import demo_with_input

ITEMS = 150
BAD = 140
WORDS = [f"w{i}" for i in range(ITEMS)]


def fave(*args: str, store: Path) -> e2e.Result:
    """``fave ARGS --store STORE`` from the repository root."""
    return e2e.fave(*args, "--store", str(store), timeout=300)


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(store, request id) of a FAILED request: shout's item 140 fails on all three attempts."""
    root = tmp_path_factory.mktemp("stage-view")
    pipeline = demo_with_input(root)
    store = root / "store"
    request = {"text": " ".join(WORDS), "fail": {WORDS[BAD]: 9}}
    ran = fave("run", "--pipeline", str(pipeline), "--input", json.dumps(request), "--json", store=store)
    assert ran.code == 1, ran.describe()
    assert ran.json["status"] == "FAILED" and f"stage 'shout' item {BAD}" in ran.json["failure"]
    return store, ran.json["request_id"]


def page(store: Path, request_id: str, *args: str) -> dict[str, Any]:
    shown = fave("status", request_id, "--stage", *args, "--json", store=store)
    assert shown.code == 0, shown.describe()
    value: dict[str, Any] = shown.json
    return value


def test_every_item_is_a_row_with_status_attempts_duration_and_error(failed_run: tuple[Path, str]) -> None:
    store, request_id = failed_run
    view = page(store, request_id, "shout")
    assert (view["stage"], view["status"], view["total"], view["failed"]) == ("shout", "FAILED", ITEMS, 1)
    assert view["next_cursor"] is None
    rows = view["items"]
    assert ITEMS > SHARD_SIZE and [r["item"] for r in rows] == list(range(ITEMS))  # across task shards, in order
    bad = rows[BAD]
    assert (bad["status"], bad["attempts"], bad["error_type"]) == ("FAILED", 3, "ValueError")
    assert bad["error"] == f"shout refused '{WORDS[BAD]}' on attempt 3"
    assert [(a["attempt"], a["error_type"], a["error"]) for a in bad["history"]] == [
        (n, "ValueError", f"shout refused '{WORDS[BAD]}' on attempt {n}") for n in (1, 2, 3)
    ]
    assert all(a["ended_at"] >= a["started_at"] and a["duration_s"] >= 0 for a in bad["history"])
    assert bad["has_traceback"] is True and bad["traceback"] is None  # only on request
    good = rows[0]
    assert (good["status"], good["attempts"], good["error"], good["history"]) == ("SUCCEEDED", 1, None, [])
    assert good["duration_s"] is not None and good["duration_s"] >= 0
    # A single-task stage is one row without an item number.
    (words,) = page(store, request_id, "words")["items"]
    assert (words["item"], words["status"], words["attempts"]) == (None, "SUCCEEDED", 1)


def test_failed_keeps_the_failed_items_and_traceback_adds_the_last_one(failed_run: tuple[Path, str]) -> None:
    store, request_id = failed_run
    (row,) = page(store, request_id, "shout", "--failed")["items"]
    assert row["item"] == BAD and row["traceback"] is None
    (row,) = page(store, request_id, "shout", "--failed", "--traceback")["items"]
    traceback = row["traceback"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert "functions/shout/app.py" in traceback
    assert traceback.rstrip().endswith(f"ValueError: shout refused '{WORDS[BAD]}' on attempt 3")
    (alone,) = page(store, request_id, "shout", "--item", str(BAD))["items"]
    assert alone == row  # one item: its row with its traceback


def test_pages_follow_the_cursor(failed_run: tuple[Path, str]) -> None:
    store, request_id = failed_run
    first = page(store, request_id, "shout", "--limit", "100")
    assert [r["item"] for r in first["items"]] == list(range(100)) and first["next_cursor"] == "100"
    rest = page(store, request_id, "shout", "--limit", "100", "--cursor", first["next_cursor"])
    assert [r["item"] for r in rest["items"]] == list(range(100, ITEMS)) and rest["next_cursor"] is None


def test_the_text_view_is_a_table_and_one_item_shows_its_attempts_and_traceback(failed_run: tuple[Path, str]) -> None:
    store, request_id = failed_run
    table = fave("status", request_id, "--stage", "shout", "--failed", store=store)
    assert table.code == 0, table.describe()
    header, columns, row = table.stdout.splitlines()
    assert header == f"request {request_id} stage shout: FAILED, {ITEMS} items: " + header.split(": ", 2)[2]
    assert "1 failed" in header and columns.split() == [
        "item",
        "key",
        "status",
        "attempts",
        "duration",
        "error",
        "(failed",
        "items)",
    ]
    # No key declared: an item's key is its element's content digest.
    assert row.split()[:4] == [str(BAD), content_key(WORDS[BAD]), "FAILED", "3"]
    assert f"ValueError: shout refused '{WORDS[BAD]}'" in row

    item = fave("status", request_id, "--stage", "shout", "--item", str(BAD), store=store)
    assert item.code == 0, item.describe()
    lines = item.stdout.splitlines()
    key = content_key(WORDS[BAD])
    assert lines[0] == f"request {request_id} stage shout item {BAD} (key {key!r}): FAILED after 3 attempts"
    # --item takes the key as well as the index.
    by_key = fave("status", request_id, "--stage", "shout", "--item", key, store=store)
    assert by_key.code == 0 and by_key.stdout.splitlines()[0] == lines[0], by_key.describe()
    assert [line.split(":")[0].strip() for line in lines[1:4]] == ["attempt 1", "attempt 2", "attempt 3"]
    assert "traceback of the last failed attempt:" in [line.strip() for line in lines]
    assert lines[-1].strip() == f"ValueError: shout refused '{WORDS[BAD]}' on attempt 3"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--stage", "nope"], "has no stage 'nope' (its stages: words, shout, measure, join)"),
        (["--failed"], "--failed: only with --stage NAME"),
        (["--stage", "shout", "--item", "9999"], "no item 9999"),
        (["--stage", "shout", "--cursor", "x"], "cursor"),
        (["--stage", "shout", "--limit", "0"], "limit"),
    ],
)
def test_a_bad_view_exits_2_naming_the_problem(failed_run: tuple[Path, str], args: list[str], needle: str) -> None:
    store, request_id = failed_run
    shown = fave("status", request_id, *args, store=store)
    assert shown.code == 2, shown.describe()
    (line,) = shown.stderr.strip().splitlines()
    assert line.startswith("fave: error: ") and needle in line, line
