"""The result cache end to end (issue 13, requirements 1 and 5): the demo pipeline with ``cache`` on every stage
(tests/fixtures/cache), real handlers on the local runtime, a real store. Invocations are counted with the
runtime's own counters (``LocalRuntime.stats``).

Each stage of the fixture declares the request fields it reads, so the key of a per-item task depends on its
item and its upstream outputs only: changing one word misses exactly that word's tasks (and the stages that
take every item). ``shout``'s output holds the worker's pid, so an output that is computed again differs.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from fave import cache
from fave.cli.main import main
from fave.core.model import RequestState, RequestStatus, TaskStatus
from fave.keys import CACHE_PREFIX
from fave.local.orchestrator import local_orchestrator
from fave.status import stage_page
from fave_shared.store import LocalStore, ObjectStore, S3Store
from support import e2e

ROOT = Path(__file__).resolve().parents[2]
CACHED = ROOT / "tests" / "fixtures" / "cache" / "pipeline.yaml"
DEMO = ROOT / "tests" / "fixtures" / "demo"
TEXT = "the quick brown fox"
WORDS = TEXT.split()
STAGES = {"words": 1, "shout": len(WORDS), "measure": len(WORDS), "join": 1}
FUNCTION = {"words": "WordsFunction", "shout": "ShoutFunction", "measure": "MeasureFunction", "join": "JoinFunction"}


def run(
    store: ObjectStore, request: dict[str, Any] | None = None, *, pipeline: Path = CACHED, no_cache: bool = False
) -> tuple[RequestState, dict[str, int]]:
    """Run a request to its end; return its full state and the invocations per stage it made."""
    orchestrator = local_orchestrator(pipeline, store, runtime_options={"async_retry_delays_s": (0.05, 0.05)})
    try:
        state = orchestrator.create({"text": TEXT, **(request or {})}, no_cache=no_cache)
        state = orchestrator.drive(state.request_id, tick_s=0.02)
        assert orchestrator.invoker is not None
        stats = orchestrator.invoker.stats()  # type: ignore[attr-defined]
        invoked = {stage: stats[function].invocations for stage, function in FUNCTION.items()}
        return orchestrator.load(state.request_id, full=True), invoked
    finally:
        orchestrator.close()


def ran(state: RequestState, invoked: dict[str, int]) -> dict[str, int]:
    """Per stage, the tasks that ran (were not taken from the cache); a stage none of whose tasks ran was not
    invoked at all (the runtime's counter, which counts retried attempts too: only its zeros are exact)."""
    counts = {stage: sum(not task.cached for task in tasks.values()) for stage, tasks in state.tasks.items()}
    for stage, count in counts.items():
        assert (invoked[stage] == 0) == (count == 0), (stage, invoked, counts)
    return counts


def cached(state: RequestState) -> dict[str, list[int]]:
    """Per stage, the items whose output came from the cache."""
    return {stage: sorted(item for item, task in tasks.items() if task.cached) for stage, tasks in state.tasks.items()}


def pack_rows(store: ObjectStore, key: str) -> dict[str, cache.Row]:
    """A pack object's rows (item key -> (output, source)), as ``cache.read_pack`` reads them."""
    return cache.read_pack(store, key[len(cache.PACK_PREFIX) : -len(".json")]).rows


def entries(store: ObjectStore) -> dict[str, dict[str, Any]]:
    """Every cached result: the single tasks' entries, and the rows of the fanned-out stages' packs (where their
    outputs are stored, ``cache.PACK_PREFIX``) as ``PACK#ITEM_KEY`` -> an entry's fields."""
    found: dict[str, dict[str, Any]] = {}
    for key in store.list(CACHE_PREFIX):
        doc = json.loads(store.get(key).data)
        if not key.startswith(cache.PACK_PREFIX):
            found[key] = doc
            continue
        for item_key, (output, source) in pack_rows(store, key).items():
            found[f"{key}#{item_key}"] = {"output": output, "source": source, "stage": doc["stage"]}
    return found


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_a_second_run_invokes_nothing_and_every_task_is_cached_from_the_first(store: LocalStore) -> None:
    first, invoked = run(store)
    assert first.status is RequestStatus.COMPLETED
    assert ran(first, invoked) == STAGES
    assert cached(first) == {stage: [] for stage in STAGES}
    assert len(entries(store)) == sum(STAGES.values())
    assert {e["source"] for e in entries(store).values()} == {first.request_id}

    second, invoked = run(store)
    assert second.status is RequestStatus.COMPLETED
    assert ran(second, invoked) == dict.fromkeys(STAGES, 0)
    for tasks in second.tasks.values():
        for task in tasks.values():
            assert task.status is TaskStatus.SUCCEEDED
            assert task.cached and task.cached_from == first.request_id
    assert second.final == first.final
    assert second.stages["shout"].succeeded == len(WORDS)
    assert len(entries(store)) == sum(STAGES.values())  # nothing new written

    # The stage view (fave status --stage) shows it, row by row.
    page = stage_page(store, second.request_id, "shout")
    assert all(row["cached"] and row["cached_from"] == first.request_id for row in page["items"])
    fresh = stage_page(store, first.request_id, "shout")
    assert not any(row["cached"] for row in fresh["items"])


def test_one_changed_item_misses_exactly_its_tasks_and_the_stages_over_every_item(store: LocalStore) -> None:
    run(store)
    changed, invoked = run(store, {"text": "the quick brown cat"})
    assert changed.status is RequestStatus.COMPLETED
    assert ran(changed, invoked) == {"words": 1, "shout": 1, "measure": 1, "join": 1}
    assert cached(changed) == {"words": [], "shout": [0, 1, 2], "measure": [0, 1, 2], "join": []}
    assert changed.final["text"] == "THE! QUICK! BROWN! CAT!"


def test_an_undeclared_request_field_does_not_enter_the_key_a_declared_one_does(store: LocalStore) -> None:
    run(store)
    same, invoked = run(store, {"note": "another request, same work"})
    assert ran(same, invoked) == dict.fromkeys(STAGES, 0)
    # measure declares sleep_s: its tasks miss; shout's do not; join takes measure's (equal) outputs.
    other, invoked = run(store, {"sleep_s": 0.01, "slow_word": "nothing"})
    assert ran(other, invoked) == {"words": 0, "shout": 0, "measure": len(WORDS), "join": 0}
    assert other.status is RequestStatus.COMPLETED


def test_a_profile_that_changes_one_stage_config_misses_it_and_what_its_outputs_reach(store: LocalStore) -> None:
    run(store)
    loud, invoked = run(store, {"profile": "loud"})
    assert loud.final["text"].startswith("THE!! ")
    assert ran(loud, invoked) == {"words": 0, "shout": len(WORDS), "measure": len(WORDS), "join": 1}
    again, invoked = run(store, {"profile": "loud"})
    assert ran(again, invoked) == dict.fromkeys(STAGES, 0) and again.final == loud.final


def test_changed_function_code_misses_that_stage_and_only_outputs_that_changed_downstream(
    store: LocalStore, tmp_path: Path
) -> None:
    """A copy of the fixture (its template's paths out of it made absolute): editing measure's code misses every measure
    task; join takes measure's outputs, which come out equal, so join still hits."""
    copy = tmp_path / "copy"
    shutil.copytree(DEMO, copy / "demo")
    template = copy / "demo" / "template.yaml"
    template.write_text(template.read_text().replace("Uri: ../../../", f"Uri: {ROOT}/"))  # layer, orchestrator
    (copy / "cache").mkdir()
    shutil.copy(CACHED, copy / "cache" / "pipeline.yaml")
    pipeline = copy / "cache" / "pipeline.yaml"

    first, invoked = run(store, pipeline=pipeline)
    assert ran(first, invoked) == STAGES
    same, invoked = run(store, pipeline=pipeline)
    assert ran(same, invoked) == dict.fromkeys(STAGES, 0)
    # The same code elsewhere is the same code: the original fixture hits what the copy wrote.
    original, invoked = run(store)
    assert ran(original, invoked) == dict.fromkeys(STAGES, 0) and cached(original)["words"] == [0]

    code = copy / "demo" / "functions" / "measure" / "app.py"
    code.write_text(code.read_text() + "\n# a change that changes no output\n")
    edited, invoked = run(store, pipeline=pipeline)
    assert edited.status is RequestStatus.COMPLETED
    assert ran(edited, invoked) == {"words": 0, "shout": 0, "measure": len(WORDS), "join": 0}
    assert edited.final == first.final

    # A compiled file or __pycache__ is not code as deployed.
    (code.parent / "__pycache__").mkdir(exist_ok=True)
    (code.parent / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    _, invoked = run(store, pipeline=pipeline)
    assert invoked == dict.fromkeys(STAGES, 0)


def test_a_corrupt_or_missing_entry_is_a_miss_never_a_failure(store: LocalStore) -> None:
    run(store)
    by_stage = {entry["stage"]: key for key, entry in entries(store).items() if "#" not in key}
    garbage = [b"{not json", b'{"v": 2}', b'["v", 2]', b"\xff\xfe"]
    for data in garbage:
        store.put(by_stage["join"], data)
        assert cache.read_entry(store, by_stage["join"].split("/")[-1].removesuffix(".json")) is None
    missing = by_stage["words"]
    store.delete(missing)
    packs = {json.loads(store.get(key).data)["stage"]: key for key in store.list(cache.PACK_PREFIX)}
    store.put(packs["measure"], b"{not json")  # shout's still answers for its items

    state, invoked = run(store)
    assert state.status is RequestStatus.COMPLETED
    # words ran again (same output: shout's keys hold, its pack answers); measure's items ran (its pack is
    # unreadable; same outputs), and join (its entry is unreadable).
    assert ran(state, invoked) == {"words": 1, "shout": 0, "measure": len(WORDS), "join": 1}
    # A corrupt entry is ignored and left as it is (the create-only write cannot replace it); a missing one is
    # written again by the task that missed it; an unreadable pack is replaced by a good one.
    assert store.get(by_stage["join"]).data == garbage[-1]
    assert json.loads(store.get(missing).data)["source"] == state.request_id
    assert len(pack_rows(store, packs["measure"])) == len(WORDS)


def test_no_cache_runs_everything_and_keeps_the_entries_and_resume_keeps_it(store: LocalStore) -> None:
    run(store)
    before = entries(store)
    state, invoked = run(store, no_cache=True)
    assert state.status is RequestStatus.COMPLETED and state.no_cache
    assert ran(state, invoked) == STAGES
    assert cached(state) == {stage: [] for stage in STAGES}
    after = entries(store)
    assert {key: after[key] for key in before} == before  # the entries that were there stand (create-only)
    # shout's outputs hold a new pid: measure's and join's keys are new, and their fresh results are stored.
    new = {key: entry for key, entry in after.items() if key not in before}
    assert sorted(e["stage"] for e in new.values()) == ["join"] + ["measure"] * len(WORDS)
    assert {e["source"] for e in new.values()} == {state.request_id}
    orchestrator = local_orchestrator(CACHED, store)
    try:
        assert orchestrator.load(state.request_id).no_cache  # persisted: a resume looks nothing up either
    finally:
        orchestrator.close()


def test_concurrent_requests_missing_the_same_key_both_run_and_one_entry_is_written(store: LocalStore) -> None:
    # words sleeps: both requests look its key up before either has written it.
    results: dict[int, tuple[RequestState, dict[str, int]]] = {}

    def one(n: int) -> None:
        results[n] = run(store, {"words_sleep_s": 1.0})

    threads = [threading.Thread(target=one, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert set(results) == {0, 1}
    ids = {results[n][0].request_id for n in results}
    for state, invoked in results.values():
        assert state.status is RequestStatus.COMPLETED
        assert invoked["words"] == 1
        assert not state.tasks["words"][0].cached
    words_entries = [e for e in entries(store).values() if e["stage"] == "words"]
    assert len(words_entries) == 1 and words_entries[0]["source"] in ids


def test_write_entry_is_create_only(store: LocalStore) -> None:
    key = "ab" * 32
    assert cache.write_entry(store, key, {"x": 1}, source="A", stage="s", item=None)
    assert not cache.write_entry(store, key, {"x": 2}, source="B", stage="s", item=None)
    entry = cache.read_entry(store, key)
    assert entry is not None and entry.output == {"x": 1} and entry.source == "A"
    assert cache.read_entry(store, "cd" * 32) is None


def test_fave_cache_stats_and_clear(
    store: LocalStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAVE_STORE", str(store.root))
    run(store)
    assert main(["cache", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == sum(STAGES.values()) and stats["bytes"] > 0
    assert stats["packs"] == 2  # the fanned-out stages', shout and measure
    assert main(["cache", "stats", "--store", str(store.root)]) == 0
    assert capsys.readouterr().out.startswith(f"{sum(STAGES.values())} entries, 2 packs, ")
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out.strip() == f"removed {sum(STAGES.values())} cache entries"
    assert entries(store) == {} and list(store.list(CACHE_PREFIX)) == []
    fresh, invoked = run(store)
    assert ran(fresh, invoked) == STAGES


@pytest.fixture
def s3_store(server_store: S3Store, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # the workers' boto3 clients reach the same server
    return server_store


def test_the_cache_works_on_s3(s3_store: S3Store) -> None:
    first, invoked = run(s3_store)
    assert ran(first, invoked) == STAGES
    second, invoked = run(s3_store)
    assert ran(second, invoked) == dict.fromkeys(STAGES, 0)
    assert second.status is RequestStatus.COMPLETED and second.final == first.final
    assert all(key.startswith("cache/") for key in entries(s3_store))
    assert len(entries(s3_store)) == sum(STAGES.values())


def test_fave_run_no_cache_and_the_stage_view_from_the_command_line(tmp_path: Path) -> None:
    env = e2e.child_env({"FAVE_STORE": str(tmp_path / "store")})
    args = ["run", "--pipeline", str(CACHED), "--input", json.dumps({"text": TEXT}), "--json"]
    first = e2e.fave(*args, env=env, timeout=120)
    assert first.code == 0, first.stderr
    second = e2e.fave(*args, env=env, timeout=120)
    assert second.code == 0, second.stderr
    first_id, second_id = first.json["request_id"], second.json["request_id"]
    view = e2e.fave("status", second_id, "--stage", "shout", env=env, timeout=60)
    assert view.code == 0, view.stderr
    assert view.stdout.count(f"cached from {first_id}") == len(WORDS)
    rows = e2e.fave("status", second_id, "--stage", "words", "--json", env=env, timeout=60).json
    assert [(r["cached"], r["cached_from"]) for r in rows["items"]] == [(True, first_id)]

    fresh = e2e.fave(*args, "--no-cache", env=env, timeout=120)
    assert fresh.code == 0, fresh.stderr
    rows = e2e.fave("status", fresh.json["request_id"], "--stage", "words", "--json", env=env, timeout=60).json
    assert [(r["cached"], r["cached_from"]) for r in rows["items"]] == [(False, None)]


def test_a_parked_output_is_cached_as_its_marker_and_a_missing_parked_object_is_a_miss(store: LocalStore) -> None:
    request = {"pad_word": "fox", "pad_bytes": 20_000}  # shout's output for fox is parked (over 8 KB)
    fox = WORDS.index("fox")
    first, _ = run(store, request)
    parked = first.tasks["shout"][fox].output
    assert set(parked) == {"$ref", "$size"} and parked["$ref"].startswith(f"requests/{first.request_id}/")

    second, invoked = run(store, request)
    assert ran(second, invoked) == dict.fromkeys(STAGES, 0)
    assert second.tasks["shout"][fox].output == parked  # the marker, into the first request's objects
    assert second.tasks["measure"][fox].output["padding_seen"] == 20_000

    store.delete(parked["$ref"])  # the source request's objects expired
    third, invoked = run(store, request)
    assert third.status is RequestStatus.COMPLETED
    assert ran(third, invoked) == {"words": 0, "shout": 1, "measure": 1, "join": 1}
    assert third.tasks["measure"][fox].output["padding_seen"] == 20_000
    # The output computed again took the place of the one whose object is gone: the next run takes it.
    fourth, invoked = run(store, request)
    assert ran(fourth, invoked) == dict.fromkeys(STAGES, 0)
    assert fourth.tasks["shout"][fox].cached_from == third.request_id
