"""The result cache's key (``fave.cache.cache_key``) and the pipeline's ``cache:`` field: what enters the key,
what does not, and how ``cache`` is parsed (issue 13, requirements 1 and 5)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from fave import cache
from fave.core.dag import Pipeline
from fave.core.model import (
    RequestStatus,
    Start,
    TaskFailed,
    TaskStatus,
    TaskSucceeded,
    Tick,
    WriteCache,
)
from fave.keys import cache_key as cache_object
from fave.pipeline import PipelineError, parse_pipeline
from support.engine_harness import Harness
from support.pipelines import make_pipeline

FUNCTIONS = frozenset({"F", "G"})
CODE = "c0de" * 16


def no_load(key: str) -> Any:
    raise AssertionError(f"nothing to load, asked for {key}")


def task_input(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "request": {"text": "the quick brown fox", "profile": "default"},
        "needs": {"words": {"words": ["the", "quick"]}},
        "config": {"suffix": "!"},
        "item": "quick",
        "index": 1,
    }
    value.update(changes)
    return value


def key(function: str = "F", code: str = CODE, value: dict[str, Any] | None = None, load: Any = no_load) -> str:
    return cache.cache_key(function, code, task_input() if value is None else value, load)


def test_same_inputs_give_the_same_key_whatever_the_order_of_fields() -> None:
    reordered = dict(reversed(list(task_input().items())))
    assert key() == key(value=reordered) == key(value=json.loads(json.dumps(task_input())))
    assert len(key()) == 64 and int(key(), 16) >= 0


def test_the_function_and_its_code_digest_enter_the_key() -> None:
    assert key(function="G") != key()
    assert key(code=CODE[:-1] + "f") != key()


def test_one_config_value_changes_the_key() -> None:
    assert key(value=task_input(config={"suffix": "!!"})) != key()
    assert key(value=task_input(config={"suffix": "!", "extra": None})) != key()


def test_one_input_byte_changes_the_key() -> None:
    assert key(value=task_input(request={"text": "the quick brown fix", "profile": "default"})) != key()
    assert key(value=task_input(item="quicK")) != key()


def test_a_per_item_task_is_keyed_by_its_element_not_by_its_position() -> None:
    assert key(value=task_input(index=2)) == key()
    without = task_input()
    del without["index"]
    assert key(value=without) == key()


def test_item_keys_in_bulk_equal_the_keys_one_by_one_and_are_made_of_the_pack_id_and_the_element() -> None:
    parked = {"requests/A/stages/words/out.json": {"words": ["w"] * 50, "inner": {"$ref": "requests/A/x.json"}}}
    parked["requests/A/x.json"] = 'é\u2028 "$ref"'

    def load(key: str) -> Any:
        return parked[key]

    inputs = {
        i: task_input(
            item={"id": i, "text": f"naïve {i}"},
            index=i,
            needs={"words": {"$ref": "requests/A/stages/words/out.json"}, "shout": {"n": i}},
        )
        for i in range(5)
    }
    pack = cache.pack_id("F", CODE, inputs[0], ["shout"], load)  # words is the same for every item
    bulk = cache.item_keys(pack, inputs, ["shout"], load)
    assert bulk == {i: cache.item_keys(pack, {i: value}, ["shout"], load)[i] for i, value in inputs.items()}
    assert len(set(bulk.values())) == 5
    # The shared parts enter through the pack id: the same element under another function, code, config or
    # whole upstream output gets another key; the position does not enter.
    assert cache.pack_id("G", CODE, inputs[0], ["shout"], load) != pack
    assert cache.pack_id("F", CODE, {**inputs[0], "config": {"suffix": "?"}}, ["shout"], load) != pack
    assert cache.pack_id("F", CODE, {**inputs[1], "index": 7}, ["shout"], load) == pack
    moved = cache.item_keys(pack, {9: {**inputs[2], "index": 9}}, ["shout"], load)
    assert moved == {9: bulk[2]}
    other_need = cache.item_keys(pack, {2: {**inputs[2], "needs": {"shout": {"n": 3}}}}, ["shout"], load)
    assert other_need[2] != bulk[2]


def test_one_upstream_output_changes_the_key() -> None:
    assert key(value=task_input(needs={"words": {"words": ["the", "quick", "fox"]}})) != key()
    assert key(value=task_input(needs={"words": {"words": ["the", "quick"]}, "other": None})) != key()


def test_a_parked_upstream_output_enters_by_content_not_by_key() -> None:
    big = {"words": ["w"] * 5000}
    stored = {"requests/A/stages/words/out.json": big, "requests/B/stages/words/out.json": big}
    in_a = task_input(needs={"words": {"$ref": "requests/A/stages/words/out.json", "$size": 1}})
    in_b = task_input(needs={"words": {"$ref": "requests/B/stages/words/out.json", "$size": 2}})
    assert key(value=in_a, load=stored.__getitem__) == key(value=in_b, load=stored.__getitem__)
    digest = hashlib.sha256(cache.canonical(big)).hexdigest()
    assert cache.content_input(in_a, stored.__getitem__)["needs"]["words"] == {"$sha256": digest}
    changed = {**stored, "requests/B/stages/words/out.json": {"words": ["w"] * 4999}}
    assert key(value=in_a, load=changed.__getitem__) != key(value=in_b, load=changed.__getitem__)


def test_a_marker_inside_a_parked_value_is_resolved_too() -> None:
    stored = {"a": {"inner": {"$ref": "b"}}, "b": [1, 2, 3], "c": {"inner": [1, 2, 3]}}
    assert key(value=task_input(needs={"x": {"$ref": "a"}}), load=stored.__getitem__) == key(
        value=task_input(needs={"x": {"$ref": "c"}}), load=stored.__getitem__
    )


def test_a_profile_change_misses_only_where_it_changes_the_config() -> None:
    pipeline = parse(
        {"a": {"function": "F", "cache": True, "config": {"n": 1}}, "b": {"function": "G", "needs": ["a"]}},
        profiles={"default": {}, "big": {"a": {"n": 2}}, "same": {"b": {}}},
    )
    keys = {profile: key(value=task_input(config=pipeline.stage_config("a", profile))) for profile in pipeline.profiles}
    assert keys["big"] != keys["default"] == keys["same"]


def test_the_entry_object_lives_under_cache_and_refuses_what_is_no_key() -> None:
    k = key()
    assert cache_object(k) == f"cache/{k[:2]}/{k}.json"
    for bad in ("", "../x", k.upper(), k[:-1], k + "0"):
        with pytest.raises(ValueError):
            cache_object(bad)


# ---- pipeline.yaml: cache ------------------------------------------------------------------------------


def parse(stages: dict[str, Any], **top: Any) -> Pipeline:
    return parse_pipeline({"stages": stages, **top}, FUNCTIONS)


def test_cache_is_off_by_default_and_on_per_stage_or_by_default() -> None:
    p = parse({"a": {"function": "F"}, "b": {"function": "G", "needs": ["a"], "cache": True}})
    assert (p.stages["a"].cache, p.stages["b"].cache) == (False, True)
    assert p.stages["b"].cache_request is None
    q = parse(
        {"a": {"function": "F"}, "b": {"function": "G", "needs": ["a"], "cache": False}},
        defaults={"cache": True},
    )
    assert (q.stages["a"].cache, q.stages["b"].cache) == (True, False)


def test_cache_may_declare_the_request_fields_of_its_key() -> None:
    p = parse({"a": {"function": "F", "cache": {"request": ["video_uri", "video_uri", "lang"]}}})
    assert p.stages["a"].cache and p.stages["a"].cache_request == ("video_uri", "lang")
    assert parse({"a": {"function": "F", "cache": {"request": []}}}).stages["a"].cache_request == ()


@pytest.mark.parametrize(
    "value",
    ["yes", 1, None, {"requests": ["x"]}, {"request": "x"}, {"request": [""]}, {"request": ["x"], "ttl": 3}],
)
def test_a_bad_cache_field_is_refused_naming_it(value: Any) -> None:
    if value is None:  # null is "not given": the default applies
        assert parse({"a": {"function": "F", "cache": None}}).stages["a"].cache is False
        return
    with pytest.raises(PipelineError, match="cache"):
        parse({"a": {"function": "F", "cache": value}})


def test_an_unknown_key_beside_cache_is_still_refused() -> None:
    with pytest.raises(PipelineError, match="cached"):
        parse({"a": {"function": "F", "cached": True}})
    with pytest.raises(PipelineError, match="cache_ttl"):
        parse({"a": {"function": "F"}}, defaults={"cache_ttl": 3})


def test_the_digest_of_a_pipeline_changes_with_cache() -> None:
    assert parse({"a": {"function": "F"}}).digest != parse({"a": {"function": "F", "cache": True}}).digest


# ---- the engine: which successes it asks to store ----------------------------------------------------


CACHED_CHAIN = """
    name: cached
    final: c
    stages:
      a: {function: A, mode: sync, cache: true}
      b: {function: B, needs: [a], mode: sync}
      c: {function: C, needs: [b], mode: sync, cache: {request: [n]}}
"""


def test_the_engine_asks_to_store_invoked_successes_of_cache_stages_only() -> None:
    h = Harness(make_pipeline(CACHED_CHAIN))
    (a,) = h.invokes(h.send(Start()))
    commands = h.succeed(a, {"x": 1})
    assert [c for c in commands if isinstance(c, WriteCache)] == [WriteCache("a", None, "A", a.input, {"x": 1})]
    (b,) = h.invokes(commands)
    commands = h.succeed(b, {"y": 2})
    assert not [c for c in commands if isinstance(c, WriteCache)]  # b: cache off
    (c,) = h.invokes(commands)
    h.send(TaskFailed("c", None, c.attempt, "ValueError", "no"))  # a failure is never stored
    assert not [x for x in h.log if isinstance(x, WriteCache) and x.stage == "c"]
    h.now += 60
    (retry,) = h.invokes(h.send(Tick()))
    hit = h.send(TaskSucceeded("c", None, retry.attempt, {"z": 3}, cached_from="01JOTHER"))
    assert not [x for x in hit if isinstance(x, WriteCache)]  # taken from the cache: nothing to store
    task = h.state.task("c")
    assert task is not None and task.status is TaskStatus.SUCCEEDED
    assert task.cached and task.cached_from == "01JOTHER" and task.output == {"z": 3}
    first = h.state.task("a")
    assert first is not None and not first.cached and first.cached_from is None
    assert h.state.status is RequestStatus.COMPLETED
