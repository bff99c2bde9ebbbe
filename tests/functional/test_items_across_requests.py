"""Item keys and the per-item view across requests (issue 13, requirements 2 and 3), end to end: the keyed
fixture pipeline (tests/fixtures/keyed: ``for_each: {from: entries.entries, key: id}``) run through ``fave run``
on the local runtime with a real store, then read with ``fave items`` and ``fave status --stage``.

The first request's entries a, b, c all succeed; in the second, a is unchanged (its result comes from the
cache), b changed and fails, c is gone. ``fave items keyed --status failed`` is then exactly b, from the second
request; c keeps the status of the first request, the last one that had it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from fave.clock import ManualClock
from fave.core.model import RequestStatus, Start, TaskFailed, TaskSucceeded
from fave.keys import state_key, task_output_key
from fave.persistence import LIST_BLOCK, SHARD_SIZE, CorruptStateError
from fave.service import Orchestrator
from fave.status import status_document
from fave.web.app import make_app
from fave.web.tasks import task_detail
from fave_shared.store import LocalStore
from support import e2e
from support.pipelines import make_pipeline

KEYED = e2e.ROOT / "tests" / "fixtures" / "keyed" / "pipeline.yaml"
FIRST = [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "c", "text": "z"}]
SECOND = [{"id": "a", "text": "x"}, {"id": "b", "text": "y2", "fail": True}]


def fave(*args: str, store: Path) -> e2e.Result:
    """``fave ARGS --store STORE`` from the repository root."""
    return e2e.fave(*args, "--store", str(store), timeout=300)


def run(store: Path, entries: list[Any]) -> dict[str, Any]:
    ran = fave("run", "--pipeline", str(KEYED), "--input", json.dumps({"entries": entries}), "--json", store=store)
    assert ran.code in (0, 1), ran.describe()
    doc: dict[str, Any] = ran.json
    return doc


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(store, first request id, second request id)."""
    store = tmp_path_factory.mktemp("keyed") / "store"
    first = run(store, FIRST)
    assert first["status"] == "COMPLETED", first
    second = run(store, SECOND)
    assert second["status"] == "COMPLETED", second  # one failed entry is tolerated
    assert second["stages"]["work"]["failed"] == 1
    return store, first["request_id"], second["request_id"]


def items(store: Path, *args: str) -> list[dict[str, Any]]:
    shown = fave("items", *args, "--json", store=store)
    assert shown.code == 0, shown.describe()
    rows: list[dict[str, Any]] = shown.json
    return rows


def test_items_failed_is_exactly_the_entry_that_failed_in_the_newest_request(two_runs: tuple[Path, str, str]) -> None:
    store, _, second = two_runs
    (row,) = items(store, "keyed", "--status", "failed")
    assert (row["stage"], row["key"], row["status"], row["request_id"]) == ("work", "b", "FAILED", second)
    assert (row["error_type"], row["error"]) == ("TerminalError", "entry b refused")  # the first line only
    assert row["finished_at"] is not None and row["cached"] is False
    # The pipeline's file names it as well as its name does; the status is matched in any case.
    assert items(store, str(KEYED), "--stage", "work", "--status", "FAILED") == [row]


def test_each_key_has_the_status_of_the_newest_request_that_had_it(two_runs: tuple[Path, str, str]) -> None:
    store, first, second = two_runs
    rows = items(store, "keyed")
    assert [(r["stage"], r["key"], r["status"], r["request_id"]) for r in rows] == [
        ("work", "a", "SUCCEEDED", second),
        ("work", "b", "FAILED", second),
        ("work", "c", "SUCCEEDED", first),  # gone from the second list: the first request's status
    ]
    a = rows[0]
    assert (a["cached"], a["cached_from"], a["error"]) == (True, first, None)  # unchanged: from the cache

    table = fave("items", "keyed", "--status", "failed", store=store)
    assert table.code == 0, table.describe()
    header, line = table.stdout.splitlines()
    assert header.split()[:4] == ["STAGE", "KEY", "STATUS", "REQUEST"]
    assert line.split()[:4] == ["work", "b", "FAILED", second] and "TerminalError: entry b refused" in line

    none = fave("items", "keyed", "--status", "cancelled", store=store)  # nothing: said on stderr, stdout empty
    assert none.code == 0 and none.stdout == "", none.describe()
    assert none.stderr.strip() == "no items with latest status CANCELLED in pipeline 'keyed'"


def test_the_stage_view_shows_keys_and_takes_a_key_for_an_item(two_runs: tuple[Path, str, str]) -> None:
    store, _, second = two_runs
    page = fave("status", second, "--stage", "work", "--json", store=store)
    assert page.code == 0, page.describe()
    assert [(r["item"], r["key"], r["status"]) for r in page.json["items"]] == [
        (0, "a", "SUCCEEDED"),
        (1, "b", "FAILED"),
    ]

    by_key = fave("status", second, "--stage", "work", "--item", "b", store=store)
    assert by_key.code == 0, by_key.describe()
    assert by_key.stdout.splitlines()[0] == f"request {second} stage work item 1 (key 'b'): FAILED after 1 attempt"
    by_index = fave("status", second, "--stage", "work", "--item", "1", store=store)
    assert by_index.stdout.splitlines()[0] == by_key.stdout.splitlines()[0]

    table = fave("status", second, "--stage", "work", store=store)
    assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [
        ["item", "key", "status"],
        ["0", "a", "SUCCEEDED"],
        ["1", "b", "FAILED"],
    ]
    missing = fave("status", second, "--stage", "work", "--item", "zz", store=store)
    assert missing.code == 2 and "no item with key 'zz'" in missing.stderr, missing.describe()


def test_the_failure_of_a_request_names_the_item_key(tmp_path: Path) -> None:
    store = tmp_path / "store"
    failed = run(store, [{"id": "p", "text": "1"}, {"id": "q", "fail": True}, {"id": "r", "fail": True}])
    assert failed["status"] == "FAILED"
    assert "stage 'work' item 2 (key 'r') failed after 1 attempt: TerminalError: entry r refused" in failed["failure"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"id": "a"}, {"id": "b"}, {"id": "a"}],
            "'entries.entries' elements 0 and 2 have the same key 'a' (field 'id'): keys must be unique",
        ),
        ([{"id": "a"}, {"text": "no id"}], "'entries.entries' element 1 has no key field 'id'"),
        (
            [{"id": {"n": 1}}],
            "'entries.entries' element 0: key field 'id' is {'n': 1} (dict), not a string or an integer",
        ),
    ],
)
def test_a_list_with_bad_keys_fails_its_source_stage_and_fans_out_nothing(
    tmp_path: Path, entries: list[Any], message: str
) -> None:
    failed = run(tmp_path / "store", entries)
    assert failed["status"] == "FAILED", failed
    assert failed["failure"] == f"stage 'entries' failed after 1 attempt: ValidationError: {message}"
    assert failed["stages"]["work"]["total"] is None and failed["stages"]["work"]["status"] == "PENDING"


def test_an_unknown_pipeline_is_one_line_and_a_known_one_without_requests_is_empty(tmp_path: Path) -> None:
    store = tmp_path / "store"
    unknown = fave("items", "nope", store=store)
    assert unknown.code == 2, unknown.describe()
    (line,) = unknown.stderr.strip().splitlines()
    assert line.startswith("fave: error: no request of pipeline 'nope'"), line
    assert items(store, str(KEYED)) == []
    bad = fave("items", str(KEYED), "--status", "done", store=store)
    assert bad.code == 2 and "invalid choice" in bad.stderr, bad.describe()


def web_get(store: Path, path: str) -> tuple[str, bytes]:
    """GET ``path`` from the web view of ``store`` (its WSGI app, called directly)."""
    app = make_app(LocalStore(store))
    route, _, query = path.partition("?")
    environ: dict[str, Any] = {"PATH_INFO": route, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))  # type: ignore[arg-type,misc]
    return status[0], body


def test_the_web_views_grid_has_a_key_column_filled_from_the_rows(two_runs: tuple[Path, str, str]) -> None:
    store, _, second = two_runs
    status, body = web_get(store, f"/ui/api/requests/{second}/stages/work?limit=10")
    assert status.startswith("200"), body
    assert [(r["item"], r["key"]) for r in json.loads(body)["items"]] == [(0, "a"), (1, "b")]
    status, body = web_get(store, f"/ui/api/requests/{second}/stages/work/task?item=1")
    assert status.startswith("200") and json.loads(body)["key"] == "b", body
    _, page = web_get(store, f"/ui/requests/{second}")
    assert b"<th>item</th><th>key</th><th>status</th>" in page
    _, script = web_get(store, "/ui/static/request.js")
    assert b'"data-testid": "grid-key"' in script and b"r.key" in script


class _Lambda:
    """Stage functions that are never answered: the test sends their results itself."""

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        return "id"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        raise AssertionError("answered by the test")

    def functions(self) -> frozenset[str]:
        return frozenset({"Plan", "Work", "Reduce"})

    def close(self) -> None:
        """Nothing."""


PARTIAL = """
    name: partial-keys
    final: reduce
    defaults: {timeout: 60s, retry: {max_attempts: 0}}
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: {from: plan.items, key: name}, mode: async}
      reduce: {function: Reduce, needs: [work], mode: sync}
"""


def started(tmp_path: Path) -> tuple[LocalStore, Callable[[], Orchestrator], str]:
    """A store, a maker of fresh orchestrators (each step in its own, as each Lambda invocation is) and a request
    of ``PARTIAL`` started in it."""
    store = LocalStore(tmp_path / "store")
    clock = ManualClock(1_000.0)

    def fresh() -> Orchestrator:
        return Orchestrator(make_pipeline(PARTIAL), store, _Lambda(), clock=clock, sync_submit=lambda call: None)

    rid = fresh().create({}, start=False).request_id
    fresh().apply(rid, [Start()])
    return store, fresh, rid


def test_a_step_that_fails_the_request_reads_the_failed_items_key_from_its_list_block(tmp_path: Path) -> None:
    # The failed item's block of the fan-out list is not loaded when its failure arrives: the engine asks for it.
    store, fresh, rid = started(tmp_path)
    entries = [{"name": f"n{i}"} for i in range(3 * SHARD_SIZE)]
    fresh().apply(rid, [TaskSucceeded("plan", None, 1, {"items": entries}, {"plan.items": tuple(entries)})])
    item = 2 * SHARD_SIZE + 5
    head = fresh().load(rid)
    assert not head.items["plan.items"].blocks  # a fresh step knows the list's length, not its elements
    state = fresh().apply(rid, [TaskFailed("work", item, 1, "Boom", "broken", terminal=True)])
    assert state.status is RequestStatus.FAILED and state.failure is not None
    assert state.failure.key == f"n{item}"
    assert status_document(store, rid)["failure"].startswith(f"stage 'work' item {item} (key 'n{item}') failed")


def test_a_list_of_one_block_is_read_from_its_parked_source_output_not_written_again(tmp_path: Path) -> None:
    """A fan-out list whose source output is parked (over ``INLINE_OUTPUT_LIMIT``) and fits one block is not
    written a second time as an item block: state.json names the parked output (``fanout_sources``), and every
    reader takes the list from it: a fresh step that needs the failed item's key, the status document, the web
    view's task panel. The same list rewritten as not-a-list is a corrupt request, refused whole."""
    store, fresh, rid = started(tmp_path)
    entries = [{"name": f"n{i}", "pad": "x" * 40} for i in range(3 * SHARD_SIZE)]  # ~20 KB: parked
    fresh().apply(rid, [TaskSucceeded("plan", None, 1, {"items": entries})])
    assert not list(store.list(f"requests/{rid}/metadata/items/"))
    doc = json.loads(store.get(state_key(rid)).data)
    source = task_output_key(rid, "plan", None, 1)
    assert doc["fanout_sources"] == {"plan.items": source} and doc["fanout"] == {"plan.items": len(entries)}
    assert fresh().load(rid, full=True).items["plan.items"].elements("plan.items") == tuple(entries)
    item = 2 * SHARD_SIZE + 5
    state = fresh().apply(rid, [TaskFailed("work", item, 1, "Boom", "broken", terminal=True)])
    assert state.failure is not None and state.failure.key == f"n{item}"
    assert status_document(store, rid)["failure"].startswith(f"stage 'work' item {item} (key 'n{item}') failed")
    assert task_detail(store, rid, "work", item)["input"]["item"] == entries[item]
    store.put(source, json.dumps({"items": {"not": "a list"}}).encode())
    with pytest.raises(CorruptStateError, match=r"plan\.items"):
        fresh().load(rid, full=True)
    assert task_detail(store, rid, "work", item)["input"]["item"] is None  # the panel shows no element, no error


def test_a_list_of_several_blocks_is_written_in_blocks_even_when_its_source_is_parked(tmp_path: Path) -> None:
    """Only a list of one block is read from its source: one of several is read a block at a time, so its blocks
    are written (a step that needs one item does not read the whole output)."""
    store, fresh, rid = started(tmp_path)
    orchestrator = fresh()
    entries = [{"name": f"n{i}", "pad": "x" * 200} for i in range(LIST_BLOCK + 1)]  # ~0.5 MB: 2 blocks
    orchestrator.apply(rid, [TaskSucceeded("plan", None, 1, {"items": entries})])
    assert len(list(store.list(f"requests/{rid}/metadata/items/"))) == 2
    assert not json.loads(store.get(state_key(rid)).data).get("fanout_sources")
