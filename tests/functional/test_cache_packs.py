"""The result cache in bulk for fanned-out stages (issue 13, requirement 2; ``fave.cache``'s packs): the
benchmarks/incremental pipeline (plan -> N cached no-op tasks -> a cached fan-in) on the local runtime and a real
store, twice. Invocations are the runtime's counters; store traffic is counted by kind of object and operation
(``fave.cli.bench_incremental.Operations``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fave import cache, history
from fave import service as service_module
from fave.cli.bench_incremental import INCREMENTAL_PIPELINE, Operations
from fave.cli.main import main
from fave.core.model import Invoke, RequestState, RequestStatus, TaskSucceeded
from fave.keys import task_output_key, tasks_prefix
from fave.local.orchestrator import local_orchestrator
from fave.packlist import ListText
from fave.persistence import LIST_BLOCK, Persistence, read_stage_tasks
from fave.service import Orchestrator
from fave_shared.store import LocalStore, ObjectStore, S3Store
from support.pipelines import make_pipeline

N = 120
FUNCTIONS = {
    "plan": "IncrementalPlanFunction",
    "work": "IncrementalWorkFunction",
    "reduce": "IncrementalReduceFunction",
}


def run(
    store: ObjectStore, request: dict[str, Any], *, no_cache: bool = False
) -> tuple[RequestState, dict[str, int], Operations]:
    counted = Operations(store)
    orchestrator = local_orchestrator(INCREMENTAL_PIPELINE, counted)
    try:
        state = orchestrator.create(request, no_cache=no_cache)
        state = orchestrator.drive(state.request_id, tick_s=0.02)
        stats = orchestrator.invoker.stats()  # type: ignore[union-attr]
        invoked = {stage: stats[function].invocations for stage, function in FUNCTIONS.items()}
        full = orchestrator.load(state.request_id, full=True)
    finally:
        orchestrator.close()
    assert full.status is RequestStatus.COMPLETED
    return full, invoked, counted


def packs(store: ObjectStore) -> list[str]:
    return list(store.list(cache.PACK_PREFIX))


def pack_id(key: str) -> str:
    return key[len(cache.PACK_PREFIX) : -len(".json")]


def rows_of(store: ObjectStore, key: str) -> dict[str, cache.Row]:
    return cache.read_pack(store, pack_id(key)).rows


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_a_changed_element_runs_alone_and_the_hits_come_from_one_pack_read(store: LocalStore) -> None:
    first, invoked, _ = run(store, {"items": N})
    assert invoked == {"plan": 1, "work": N, "reduce": 1}
    assert len(packs(store)) == 1  # work's; reduce is a single task: its entry is enough

    second, invoked, ops = run(store, {"items": N, "changed": [3, 77]})
    assert invoked == {"plan": 1, "work": 2, "reduce": 1}
    work = second.tasks["work"]
    assert sorted(i for i, t in work.items() if not t.cached) == [3, 77]
    hit = work[0]
    assert hit.cached and hit.cached_from == first.request_id and hit.attempt == 0 and hit.output == {"id": 0, "v": 0}
    assert second.stages["work"].succeeded == N and second.stages["work"].pending == 0
    assert second.final == {"count": N, "changed": 2}
    counts = ops.operations()
    # 118 hits: one pack read (its base and its delta), no entry read; the 2 misses are not looked up again (the
    # pack is where work's outputs live) and go into it with one write, of its delta only (2 rows and 2 positions:
    # the base stays as the first run wrote it); reduce, a single task, looks up its entry, then writes it.
    assert counts["cache_pack"] == {"get": 2, "put": 1}
    assert counts["cache_entry"] == {"get": 1, "put": 1}
    rows = rows_of(store, packs(store)[0])
    assert len(rows) == N + 2  # the first list's elements 3 and 77 are kept beside the changed ones
    assert sorted(source for _, source in rows.values())[-2:] == [second.request_id] * 2


def test_the_pack_keeps_earlier_lists_so_going_back_to_one_runs_nothing(store: LocalStore) -> None:
    run(store, {"items": N})
    run(store, {"items": N, "first": N})  # another N elements: merged into the same pack
    _, invoked, ops = run(store, {"items": N})
    # Every element found by its key; the pack is written again only to remember this list (for the next run's
    # comparison by position), with the same rows.
    assert invoked["work"] == 0 and ops.operations()["cache_pack"] == {"get": 2, "put": 1}
    (pack,) = packs(store)
    assert len(rows_of(store, pack)) == 2 * N
    _, invoked, ops = run(store, {"items": N})
    assert invoked["work"] == 0 and ops.operations()["cache_pack"] == {"get": 2}


def test_a_pack_written_meanwhile_by_another_request_is_merged_not_replaced(store: LocalStore) -> None:
    run(store, {"items": N})
    (pack,) = packs(store)
    read = cache.read_pack(store, pack_id(pack))
    assert len(read.rows) == N
    # The writer read the pack at `read.etag`; another request replaced it since (with an older fave's format 2,
    # still read): the conditional put fails, the writer reads it again and merges.
    theirs = {"v": 2, "rows": {"f" * 64: [{"id": -1, "v": 0}, "01JOTHERREQUEST00000000000"]}}
    store.put(pack, json.dumps(theirs).encode())
    new = {"e" * 64: ({"id": -2, "v": 0}, "01JTHISREQUEST000000000000")}
    assert cache.write_pack(store, pack_id(pack), new, source="S", stage="work", known=read)
    assert set(rows_of(store, pack)) == {"f" * 64, "e" * 64}
    assert rows_of(store, pack)["e" * 64] == ({"id": -2, "v": 0}, "01JTHISREQUEST000000000000")
    # Every row there already: nothing is written.
    before = store.get(pack).etag
    assert cache.write_pack(
        store, pack_id(pack), new, source="S", stage="work", known=cache.read_pack(store, pack_id(pack))
    )
    assert store.get(pack).etag == before


def test_elements_are_keyed_by_content_so_a_shifted_list_runs_only_its_new_element(store: LocalStore) -> None:
    run(store, {"items": N})
    second, invoked, _ = run(store, {"items": N, "first": 1})  # ids 1..N: every old one moved up by one
    assert invoked["work"] == 1
    assert [i for i, t in second.tasks["work"].items() if not t.cached] == [N - 1]


def test_the_same_list_again_invokes_nothing_not_even_the_fan_in(store: LocalStore) -> None:
    run(store, {"items": N})
    _, invoked, ops = run(store, {"items": N})
    assert invoked == {"plan": 1, "work": 0, "reduce": 0}
    assert ops.operations()["cache_pack"] == {"get": 2}  # every row came from the pack: not written again


def test_a_corrupt_or_missing_pack_is_a_miss_never_a_failure_and_is_written_good_again(store: LocalStore) -> None:
    run(store, {"items": N})
    (pack,) = packs(store)
    store.put(pack, b'{"v": 2, "rows": [')
    state, invoked, ops = run(store, {"items": N})
    assert state.status is RequestStatus.COMPLETED
    assert invoked["work"] == N and not any(t.cached for t in state.tasks["work"].values())
    assert ops.operations()["cache_entry"]["get"] == 1  # reduce's own entry: no per-item lookups
    assert len(rows_of(store, pack)) == N  # the stage's run replaced it with a good one
    store.delete(pack)
    _, invoked, _ = run(store, {"items": N, "changed": [5]})
    assert invoked["work"] == N  # gone: every item runs, and the pack is there again
    _, invoked, _ = run(store, {"items": N, "changed": [5]})
    assert invoked["work"] == 0


def test_a_task_no_bulk_lookup_answered_looks_itself_up_in_the_pack_read_once(store: LocalStore) -> None:
    """A task dispatched without its stage's bulk lookup in this process (its request resumed elsewhere, the
    outbox sent again) looks up its own key in the stage's pack: one read for every such task, no entry read."""
    first, _, _ = run(store, {"items": N})
    counted = Operations(store)
    orchestrator = local_orchestrator(INCREMENTAL_PIPELINE, counted)
    try:
        state = orchestrator.load(first.request_id)
        config = orchestrator.pipeline.stage_config("work", state.profile)

        def invoke(item: int, element: dict[str, Any]) -> Invoke:
            task_input = {"request": {}, "needs": {}, "config": config, "item": element, "index": item}
            return Invoke("work", item, 1, FUNCTIONS["work"], "async", task_input)

        assert orchestrator._cache_hit(state, invoke(5, {"id": 5, "v": 0}))
        assert not orchestrator._cache_hit(state, invoke(6, {"id": 6, "v": 9}))  # not in the pack
        assert orchestrator._cache_hit(state, invoke(200, {"id": 7, "v": 0}))  # by content, wherever it sits
        hits = [orchestrator.inbox.get_nowait()[1], orchestrator.inbox.get_nowait()[1]]
    finally:
        orchestrator.close()
    assert [(h.item, h.output, h.cached_from) for h in hits if isinstance(h, TaskSucceeded)] == [
        (5, {"id": 5, "v": 0}, first.request_id),
        (200, {"id": 7, "v": 0}, first.request_id),
    ]
    assert counted.operations()["cache_pack"] == {"get": 2}  # its base and its delta, once
    assert "cache_entry" not in counted.operations()


def test_no_cache_looks_nothing_up_in_bulk_and_still_writes_the_pack(store: LocalStore) -> None:
    run(store, {"items": N})
    store.delete(packs(store)[0])
    _, invoked, ops = run(store, {"items": N}, no_cache=True)
    assert invoked["work"] == N
    # No lookup: the write reads the pack (base and delta) to place the list by position, then writes it.
    assert ops.operations()["cache_pack"] == {"get": 2, "put": 1}


def test_packs_work_on_s3(moto_store: S3Store) -> None:
    s3_store = moto_store  # the bench functions run as threads: in-process moto reaches them
    run(s3_store, {"items": 40})
    _, invoked, ops = run(s3_store, {"items": 40, "changed": [7]})
    assert invoked == {"plan": 1, "work": 1, "reduce": 1}
    assert ops.operations()["cache_pack"]["get"] == 2


def test_fave_bench_incremental_counts_the_second_runs_invocations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "incremental", "--items", "150", "--changed", "0.02", "--no-video", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["fanout"]
    assert result["changed"] == 3
    assert result["first"]["invoked"] == {"plan": 1, "work": 150, "reduce": 1}
    assert result["second"]["invoked"] == {"plan": 1, "work": 3, "reduce": 1}
    assert result["second"]["cached_tasks"] == 147
    assert result["store_per_cached_task"]["by_kind"]["cache_pack"]["get"] == pytest.approx(2 / 147, abs=1e-4)


@pytest.mark.parametrize("args", [["--items", "0"], ["--changed", "1.5"], ["--video", "/no/such.mp4"]])
def test_fave_bench_incremental_refuses_bad_arguments_with_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "incremental", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fave: error:") and "\n" not in err


WIDE = """
    name: wide-cached
    final: total
    defaults: {timeout: 60s}
    stages:
      plan: {function: Plan, mode: async}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async, cache: true}
      total: {function: Total, needs: [work], mode: async}
"""


class Recorder:
    """An invoker that records the tasks it was asked to run (nothing runs; no code digest: nothing is cached)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int | None, int]] = []

    def invoke_async(self, function: str, payload: Any) -> str:
        task = json.loads(payload.data)["task"]
        self.tasks.append((task["stage"], task["item"], task["attempt"]))
        return "id"

    def functions(self) -> frozenset[str]:
        return frozenset({"Plan", "Work", "Total"})

    def close(self) -> None:
        """Nothing to release."""


def test_a_stage_ending_in_a_fresh_process_loads_every_list_block_its_pack_needs_at_once(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "LIST_BLOCK_BYTES", 0)  # blocks of LIST_BLOCK however small the items
    items = 2 * LIST_BLOCK + 7  # three blocks of the list
    first = Recorder()
    orchestrator = Orchestrator(make_pipeline(WIDE), store, first)  # type: ignore[arg-type]
    request_id = orchestrator.create({}).request_id
    ((_, _, plan),) = first.tasks
    orchestrator.apply(request_id, [TaskSucceeded("plan", None, plan, {"items": list(range(items))})])
    work = [(item, attempt) for stage, item, attempt in first.tasks if stage == "work"]
    assert len(work) == items
    orchestrator.apply(request_id, [TaskSucceeded("work", i, a, {"v": i}) for i, a in work[:-1]])

    loads: list[tuple[int, int]] = []
    real = Persistence.load_more

    def counted(self: Persistence, state: Any, missing: Any) -> Any:
        loads.append((len(missing.tasks), len(missing.items)))
        return real(self, state, missing)

    monkeypatch.setattr(Persistence, "load_more", counted)
    fresh = Orchestrator(make_pipeline(WIDE), store, Recorder())  # type: ignore[arg-type]
    last, attempt = work[-1]
    state = fresh.apply(request_id, [TaskSucceeded("work", last, attempt, {"v": last})])
    assert state.stages["work"].status.value == "SUCCEEDED"
    # The pack's rows need every element of the list: its three blocks in one load, not one load per block.
    assert [n for _, n in loads if n] == [items // LIST_BLOCK + 1]


def test_cached_items_are_stored_as_a_compact_section_and_every_reader_sees_them_as_tasks(store: LocalStore) -> None:
    """The 118 hits of a re-run are held as arrays (``CachedItems``) and written in their shards' ``cached``
    section, not as 118 task rows; state files, status readers, the history and a reload all see 120 tasks."""
    first, _, _ = run(store, {"items": N})
    second, invoked, _ = run(store, {"items": N, "changed": [3, 77]})
    assert invoked["work"] == 2
    rows = sections = 0
    for key in store.list(tasks_prefix(second.request_id)):
        if "/work/" not in key:
            continue
        doc = json.loads(store.get(key).data)
        for shard in doc["shards"].values() if "shards" in doc else [doc]:
            rows += len(shard["tasks"])
            sections += len(shard.get("cached", {}).get("items", []))
    assert (rows, sections) == (2, N - 2)
    docs = read_stage_tasks(store, second.request_id, "work")
    assert len(docs) == N and sorted(i for i, d in docs.items() if not d.cached) == [3, 77]
    assert docs[0].status == "SUCCEEDED" and docs[0].cached_from == first.request_id
    assert docs[0].output == {"id": 0, "v": 0} and docs[3].output == {"id": 3, "v": 1}
    assert all(t.cached for i, t in second.tasks["work"].items() if i not in (3, 77))  # a full load: tasks
    (summary,) = [
        s for s in history.read_day(store, history.day_of(time.time())).items if s.request_id == second.request_id
    ]
    work = summary.stages["work"]
    assert (work.tasks, work.succeeded, work.cached, work.attempts) == (N, N, N - 2, 2)


def test_a_pack_compares_the_next_list_by_position_and_keys_only_what_differs(store: LocalStore) -> None:
    run(store, {"items": N})
    (key,) = packs(store)
    read = cache.read_pack(store, pack_id(key))
    elements = [{"id": i, "v": 0} for i in range(N)]
    assert isinstance(read.elements, ListText) and list(read.elements) == elements and len(read) == N
    made: list[list[int]] = []

    def keys_of(positions: list[int]) -> dict[int, str]:
        made.append(positions)
        # the key an element has: the row of the same element (row i holds element i), or one never stored
        return {i: read.key(changed[i]["id"]) if changed[i]["v"] == 0 else "0" * 64 for i in positions}

    changed = [*elements[:5], {"id": 5, "v": 9}, elements[7], elements[6], *elements[8:]]
    rows = cache.bulk_rows(read, changed, keys_of)
    assert made == [[5, 6, 7]]  # the changed element and the two that swapped places: keyed; the rest compared
    assert rows[:5] == [0, 1, 2, 3, 4] and rows[5] == -1 and rows[6:8] == [7, 6] and rows[8:] == list(range(8, N))


@pytest.mark.parametrize(
    "doc",
    [
        {"v": 3, "keys": "ab", "outputs": [1], "from": [0], "sources": ["R"], "list": []},  # a key of 2 digits
        {"v": 3, "keys": "a" * 64, "outputs": [1], "from": [1], "sources": ["R"], "list": []},  # no source 1
        {"v": 3, "keys": "a" * 64, "outputs": [1], "from": [0], "sources": ["R"], "list": [1, 2]},  # list > rows
        {"v": 3, "keys": "a" * 64, "outputs": [1], "from": [0], "sources": [7], "list": []},  # not a request id
        {"v": 3, "keys": "a" * 64, "outputs": [1], "from": [0.0], "sources": ["R"], "list": []},  # not an int
        {"v": 3, "keys": "a" * 64, "outputs": [1], "from": "0100000", "sources": ["R"], "list": []},  # odd hex
        {"v": 3, "keys": "a" * 64, "outputs": [1], "from": "01000000", "sources": ["R"], "list": []},  # source 1
        {"v": 3, "keys": "a" * 64, "outputs": [1, 2], "from": "00000000", "sources": ["R"], "list": []},  # 1 of 2
        {"v": 9, "rows": {}},
    ],
)
def test_a_malformed_pack_is_read_as_no_pack(store: LocalStore, doc: dict[str, Any]) -> None:
    store.put(cache.pack_object("c" * 64), json.dumps(doc).encode())
    read = cache.read_pack(store, "c" * 64)
    assert len(read) == 0 and read.rows == {} and read.etag is not None


def delta_of(store: ObjectStore, key: str) -> dict[str, Any]:
    return json.loads(store.get(cache.delta_object(pack_id(key))).data)


def test_a_small_change_writes_the_packs_delta_and_the_base_stays(store: LocalStore) -> None:
    first, _, _ = run(store, {"items": N})
    (key,) = packs(store)
    base = store.get(key)
    second, invoked, _ = run(store, {"items": N, "changed": [3, 77]})
    assert invoked["work"] == 2 and store.get(key).etag == base.etag  # the base is as the first run wrote it
    delta = delta_of(store, key)
    assert delta["base"] == json.loads(base.data)["generation"] and delta["length"] == N
    assert delta["at"] == [3, 77] and delta["list"] == [{"id": 3, "v": 1}, {"id": 77, "v": 1}]
    assert len(delta["outputs"]) == 2 and delta["rows"] == [N, N + 1]  # its rows follow the base's
    read = cache.read_pack(store, pack_id(key))
    assert len(read.rows) == N + 2 and read.elements[3] == {"id": 3, "v": 1} and read.row_at(3) == N
    assert read.row(read.key(N)) == ({"id": 3, "v": 1}, second.request_id)
    # The same changed list again: every element at its row already, nothing written; and the first list too.
    _, invoked, ops = run(store, {"items": N, "changed": [3, 77]})
    assert invoked["work"] == 0 and ops.operations()["cache_pack"] == {"get": 2}
    _, invoked, ops = run(store, {"items": N})
    assert invoked["work"] == 0 and ops.operations()["cache_pack"] == {"get": 2, "put": 1}
    assert delta_of(store, key)["at"] == [] and store.get(key).etag == base.etag  # back to the base's list
    assert first.request_id in {source for _, source in cache.read_pack(store, pack_id(key)).rows.values()}


def test_a_delta_beyond_an_eighth_of_the_base_is_folded_into_a_new_base(store: LocalStore) -> None:
    run(store, {"items": N})
    (key,) = packs(store)
    generation = json.loads(store.get(key).data)["generation"]
    run(store, {"items": N, "changed": [1]})
    assert delta_of(store, key)["base"] == generation
    many = list(range(0, N, 2))  # 60 changed elements: 60 rows and 60 positions, beyond max(64, N / 8)
    _, invoked, _ = run(store, {"items": N, "changed": many})
    assert invoked["work"] == len(many)
    doc = json.loads(store.get(key).data)
    assert doc["generation"] != generation and len(json.loads(doc["list_text"])) == N  # its list as text (packlist)
    assert delta_of(store, key)["base"] != doc["generation"]  # the old delta names the old base: left out
    assert len(rows_of(store, key)) == N + len(many) + 1  # and the row of element 1 (changed), kept
    _, invoked, _ = run(store, {"items": N, "changed": many})
    assert invoked["work"] == 0
    _, invoked, _ = run(store, {"items": N, "changed": [*many, 3]})  # the next delta replaces the stale one
    assert invoked["work"] == 1 and delta_of(store, key)["base"] == doc["generation"]


def test_a_delta_for_another_base_gives_its_rows_not_its_list_and_an_unreadable_one_is_a_miss(
    store: LocalStore,
) -> None:
    run(store, {"items": N})
    (key,) = packs(store)
    run(store, {"items": N, "changed": [5]})
    delta = delta_of(store, key)
    # Written for a base that a concurrent writer replaced meanwhile: its rows are still found, by key.
    store.put(cache.delta_object(pack_id(key)), json.dumps({**delta, "base": "0" * 16}).encode())
    read = cache.read_pack(store, pack_id(key))
    assert read.elements[5] == {"id": 5, "v": 0} and len(read.rows) == N + 1  # the base's list; the delta's row
    _, invoked, _ = run(store, {"items": N, "changed": [5]})
    assert invoked["work"] == 0
    delta = delta_of(store, key)
    assert delta["base"] == json.loads(store.get(key).data)["generation"] and delta["at"] == [5]  # rewritten
    store.put(cache.delta_object(pack_id(key)), b'{"v": 3, "base": ')
    state, invoked, _ = run(store, {"items": N, "changed": [5]})
    assert invoked["work"] == 1 and state.status is RequestStatus.COMPLETED
    _, invoked, _ = run(store, {"items": N, "changed": [5]})
    assert invoked["work"] == 0  # written good again


def test_concurrent_delta_writers_merge_rather_than_lose_rows(store: LocalStore) -> None:
    run(store, {"items": N})
    (key,) = packs(store)
    pid = pack_id(key)
    read = cache.read_pack(store, pid)
    elements = list(read.elements)

    def one_changed(position: int, source: str) -> cache.PackRun:
        keys: list[str | None] = [read.key(i) for i in range(N)]
        keys[position] = f"{position:064x}"
        listed = [*elements[:position], {"id": position, "v": 7}, *elements[position + 1 :]]
        sources: list[str | None] = [read.sources[read.source_of[i]] for i in range(N)]
        sources[position] = source
        return cache.PackRun(
            keys, [*read.outputs[:position], {"new": position}, *read.outputs[position + 1 :]], sources, listed
        )

    # Both read the pack as it was; the first writes its delta; the second's conditional put fails, it reads the
    # pack again (with the first's delta) and merges its own row beside the first's.
    assert cache.write_pack(store, pid, one_changed(1, "01JA"), source="01JA", stage="work", known=read)
    assert cache.write_pack(store, pid, one_changed(2, "01JB"), source="01JB", stage="work", known=read)
    rows = cache.read_pack(store, pid).rows
    assert rows[f"{1:064x}"] == ({"new": 1}, "01JA") and rows[f"{2:064x}"] == ({"new": 2}, "01JB")


def test_a_list_with_an_item_that_failed_or_an_element_twice_is_not_written_again_unchanged(store: LocalStore) -> None:
    keys: list[str | None] = ["a" * 64, None, "b" * 64, "a" * 64]  # item 1 failed; item 3 is item 0 again
    run1 = cache.PackRun(keys, [1, None, 2, 1], ["R1", None, "R1", "R1"], [{"x": 0}, {"x": 1}, {"x": 2}, {"x": 0}])
    assert cache.write_pack(store, "d" * 64, run1, source="R1", stage="s", known=None)
    before = store.get(cache.pack_object("d" * 64)).etag
    read = cache.read_pack(store, "d" * 64)
    assert read.rows == {"a" * 64: (1, "R1"), "b" * 64: (2, "R1")}
    assert cache.write_pack(store, "d" * 64, run1, source="R2", stage="s", known=read)
    assert store.get(cache.pack_object("d" * 64)).etag == before and not list(store.list(cache.DELTA_PREFIX))


def test_a_base_older_than_a_week_is_written_again_instead_of_a_delta(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bucket's lifecycle expires cache/ objects 30 days after they were written: a base that small changes
    only ever patched with deltas would expire under them."""
    run(store, {"items": N})
    (key,) = packs(store)
    first = json.loads(store.get(key).data)
    run(store, {"items": N, "changed": [1]})
    assert json.loads(store.get(key).data)["generation"] == first["generation"]  # a delta
    later = time.time() + cache.BASE_REFRESH_S + 60
    monkeypatch.setattr(cache, "_now", lambda: later)
    _, invoked, _ = run(store, {"items": N, "changed": [1, 2]})
    assert invoked["work"] == 1
    doc = json.loads(store.get(key).data)
    assert doc["generation"] != first["generation"] and doc["written_at"] == round(later, 3)


def test_a_list_of_small_elements_is_stored_in_blocks_sized_by_their_bytes(store: LocalStore) -> None:
    """A fan-out list's blocks hold ``LIST_BLOCK`` items, or more when the items are small (about
    ``LIST_BLOCK_BYTES`` a block): a list of 10,000 ids is one block, not five, and as its source output is
    parked, it is read from there, with no block object written (``FanoutList.source``); it reads back whole. A
    list of large elements keeps ``LIST_BLOCK`` items a block."""
    small, _, _ = run(store, {"items": 5 * LIST_BLOCK})
    assert not list(store.list(f"requests/{small.request_id}/metadata/items/"))
    assert len(small.tasks["work"]) == 5 * LIST_BLOCK
    fanout = small.items["plan.items"]
    assert (fanout.block, fanout.source) == (5 * LIST_BLOCK, task_output_key(small.request_id, "plan", None, 1))
    assert [e["id"] for e in fanout.elements("plan.items")] == list(range(5 * LIST_BLOCK))
    assert service_module._list_block(5 * LIST_BLOCK, 5 * LIST_BLOCK * 20) == 5 * LIST_BLOCK
    assert service_module._list_block(5 * LIST_BLOCK, 5 * LIST_BLOCK * 1000) == LIST_BLOCK  # 2 MB a block: no
    assert service_module._list_block(100_000, 100_000 * 20) == service_module.LIST_BLOCK_BYTES // 20
    assert service_module._list_block(LIST_BLOCK, 10**9) == 0  # short lists: the engine's own


def test_a_pack_records_whether_its_outputs_hold_markers_and_one_without_the_record_is_scanned(
    store: LocalStore,
) -> None:
    run(store, {"items": 300})
    (key,) = store.list(cache.PACK_PREFIX)
    pack = key[len(cache.PACK_PREFIX) : -5]
    doc = json.loads(store.get(key).data)
    assert doc["parked"] is False and not cache.read_pack(store, pack).parked
    # A pack written before the record (or by hand) whose text holds a marker: read as parked.
    del doc["parked"]
    doc.pop("orjson", None)
    doc["outputs"][0] = {"$ref": "requests/x/stages/work/output-1.json"}
    store.put(key, json.dumps(doc).encode())
    assert cache.read_pack(store, pack).parked


def test_a_rerun_compares_its_list_by_the_text_its_source_output_was_parked_with(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk lookup compares the new list with the pack's by their texts (``ListText.same``); the new list's text
    is the one made when the plan's output was encoded to be parked (``service._list_texts``), not a second
    encoding of the list, and it answers as that encoding would."""
    run(store, {"items": 3000})
    given: list[bytes | None] = []
    original = ListText.same

    def same(self: ListText, elements: Any, text: bytes | None = None) -> list[bool] | None:
        given.append(text)
        return original(self, elements, text)

    monkeypatch.setattr(ListText, "same", same)
    state, invoked, _ = run(store, {"items": 3000, "changed": [5, 700], "changed_at": 3})
    assert invoked["work"] == 2 and state.final == {"count": 3000, "changed": 2}
    elements = [{"id": i, "v": 3 if i in (5, 700) else 0} for i in range(3000)]
    assert given == [orjson.dumps(elements)]
