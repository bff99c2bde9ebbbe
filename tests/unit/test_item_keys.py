"""Item keys (issue 13, requirement 3): ``for_each: {from: STAGE.FIELD, key: FIELD}`` in pipeline.yaml, each
element's key (``ForEach.key_of``: the declared field as text, or the element's content digest), the refusals
of a list whose keys are missing, of the wrong type or not unique, and the request failure that names the key.
Pure: no store, no invoker."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fave.core.dag import KEY_DIGEST_CHARS, DagError, ForEach, content_key
from fave.core.model import RequestStatus, Start, TaskFailed
from fave.pipeline import PipelineError, parse_pipeline
from support.engine_harness import Harness
from support.pipelines import make_pipeline


def doc(for_each: Any, **more: Any) -> dict[str, Any]:
    """fetch -> work (fanned out as ``for_each`` says) -> join, plus ``more`` stages."""
    return {
        "final": "join",
        "stages": {
            "fetch": {"function": "F", "mode": "sync"},
            "work": {"function": "F", "needs": ["fetch"], "for_each": for_each},
            **more,
            "join": {"function": "F", "needs": ["work", *more], "mode": "sync"},
        },
    }


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(document, {"F"})
    return str(caught.value)


# ---- the pipeline.yaml syntax ---------------------------------------------------------------------------


def test_the_mapping_form_declares_a_dotted_key_and_the_string_form_none() -> None:
    keyed = parse_pipeline(doc({"from": "fetch.data.entries", "key": "meta.id"}), {"F"}).stages["work"].for_each
    assert keyed == ForEach("fetch", ("data", "entries"), ("meta", "id"))
    assert keyed is not None and keyed.key_field == "meta.id" and str(keyed) == "fetch.data.entries"
    plain = parse_pipeline(doc("fetch.entries"), {"F"}).stages["work"].for_each
    assert plain == ForEach("fetch", ("entries",)) and plain is not None and plain.key is None
    # {from: ...} alone is the string form.
    assert parse_pipeline(doc({"from": "fetch.entries"}), {"F"}).stages["work"].for_each == plain


def test_the_shape_names_a_declared_key_only() -> None:
    # state.json's shape decides whether a request can be resumed with a pipeline: a pipeline without keys
    # keeps the shape it had before keys existed.
    assert parse_pipeline(doc("fetch.entries"), {"F"}).shape()["work"] == {
        "needs": ["fetch"],
        "for_each": "fetch.entries",
    }
    keyed = parse_pipeline(doc({"from": "fetch.entries", "key": "id"}), {"F"}).shape()["work"]
    assert keyed == {"needs": ["fetch"], "for_each": "fetch.entries", "key": "id"}


@pytest.mark.parametrize(
    ("for_each", "where", "why"),
    [
        ({"from": 3}, "field 'for_each.from'", "Input should be a valid string"),
        ({"key": "id"}, "field 'for_each.from'", "Field required"),
        ({"from": "fetch.entries", "kee": "id"}, "field 'for_each.kee'", "Extra inputs are not permitted"),
        ({"from": "fetch.entries", "key": 5}, "field 'for_each.key'", "Input should be a valid string"),
        ({"from": "fetch.entries", "key": ""}, "field 'for_each.key'", "'' names no field"),
        ({"from": "fetch.entries", "key": "a..b"}, "field 'for_each.key'", "'a..b' names no field"),
        ({"from": "fetch"}, "field 'for_each'", "'fetch' names no list"),
        (["fetch.entries"], "field 'for_each'", "a mapping {from: STAGE.FIELD, key: FIELD}"),
    ],
)
def test_a_bad_for_each_is_one_line_naming_the_field(for_each: Any, where: str, why: str) -> None:
    message = refused(doc(for_each))
    assert message.startswith(f"pipeline.yaml: stage 'work', {where}: "), message
    assert why in message and "\n" not in message, message


def test_one_list_has_one_key_declared_once_for_every_stage_over_it() -> None:
    post = {"function": "F", "needs": ["work"], "for_each": "fetch.entries"}
    pipeline = parse_pipeline(doc({"from": "fetch.entries", "key": "id"}, post=post), {"F"})
    fe = pipeline.stages["post"].for_each
    assert fe is not None and fe.key == ("id",)  # the per-item group names its items alike
    assert pipeline.stages["post"].item_needs == ("work",)
    other = {**post, "for_each": {"from": "fetch.entries", "key": "name"}}
    message = refused(doc({"from": "fetch.entries", "key": "id"}, post=other))
    assert "field 'for_each.key'" in message and "one list has one key" in message, message


def test_a_key_naming_no_field_is_refused_by_the_dataclass_too() -> None:
    with pytest.raises(DagError, match="names no field"):
        ForEach("fetch", ("entries",), ())
    with pytest.raises(DagError, match="names no field"):
        ForEach.parse("fetch.entries", "id.")


# ---- keys of elements ----------------------------------------------------------------------------------


def test_the_default_key_is_the_sha256_of_canonical_json_cut_to_16_hex_characters() -> None:
    element = {"b": [1, "é"], "a": None}
    canonical = '{"a":null,"b":[1,"é"]}'.encode()
    assert content_key(element) == hashlib.sha256(canonical).hexdigest()[:KEY_DIGEST_CHARS]
    assert KEY_DIGEST_CHARS == 16
    assert content_key({"a": None, "b": [1, "é"]}) == content_key(element)  # key order does not matter
    assert content_key({"a": None, "b": [1, "e"]}) != content_key(element)  # one character does
    assert content_key("w1") != content_key(["w1"])
    plain = ForEach("fetch", ("entries",))
    assert plain.key_of(element, 7) == content_key(element)
    # Equal elements share a digest key: no key is declared, so nothing is refused.
    assert plain.extract({"entries": [element, dict(element)]}) == [element, element]


def test_a_declared_key_is_the_field_as_text_strings_and_integers_alike() -> None:
    fe = ForEach.parse("fetch.entries", "meta.id")
    assert fe.key_of({"meta": {"id": "b"}}, 0) == "b"
    assert fe.key_of({"meta": {"id": 42}, "x": 1}, 0) == "42"
    entries = [{"meta": {"id": i}} for i in ("a", 2, "c")]
    assert fe.extract({"entries": entries}) == entries


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"id": "a"}, {"name": "b"}],
            "'fetch.entries' element 1 has no key field 'id'",
        ),
        ([{"id": "a"}, "b"], "'fetch.entries' element 1 has no key field 'id'"),
        (
            [{"id": 1.5}],
            "'fetch.entries' element 0: key field 'id' is 1.5 (float), not a string or an integer",
        ),
        ([{"id": True}], "'fetch.entries' element 0: key field 'id' is True (bool), not a string or an integer"),
        ([{"id": None}], "'fetch.entries' element 0: key field 'id' is None (NoneType), not a string or an integer"),
        ([{"id": ["a"]}], "'fetch.entries' element 0: key field 'id' is ['a'] (list), not a string or an integer"),
        ([{"id": ""}], "'fetch.entries' element 0: key field 'id' is empty"),
        (
            [{"id": "a"}, {"id": "b"}, {"id": "a"}],
            "'fetch.entries' elements 0 and 2 have the same key 'a' (field 'id'): keys must be unique",
        ),
        # An integer key is its text: 7 and "7" are the same key.
        (
            [{"id": 7}, {"id": "7"}],
            "'fetch.entries' elements 0 and 1 have the same key '7' (field 'id'): keys must be unique",
        ),
    ],
)
def test_a_list_with_a_missing_wrong_or_repeated_key_is_refused_naming_index_and_key(
    entries: list[Any], message: str
) -> None:
    fe = ForEach.parse("fetch.entries", "id")
    with pytest.raises(ValueError) as caught:
        fe.extract({"entries": entries})
    assert str(caught.value) == message


# ---- the request failure names the key -------------------------------------------------------------------

KEYED = """
    name: keyed
    final: join
    defaults: {timeout: 10s, retry: {max_attempts: 0}}
    stages:
      fetch: {function: Fetch, mode: sync}
      work: {function: Work, needs: [fetch], for_each: {from: fetch.entries, key: id}, mode: async}
      join: {function: Join, needs: [work], mode: sync}
"""


def test_a_failed_item_that_fails_the_request_is_named_by_index_and_key() -> None:
    h = Harness(make_pipeline(KEYED))
    (fetch,) = h.invokes(h.send(Start()))
    entries = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    work = h.invokes(h.succeed(fetch, {"entries": entries}))
    assert [w.input["item"] for w in work] == entries
    h.send(TaskFailed("work", 1, 1, "ValueError", "bad entry", terminal=True))
    assert h.state.status is RequestStatus.FAILED
    failure = h.state.failure
    assert failure is not None and (failure.stage, failure.item, failure.key) == ("work", 1, "b")
    assert failure.describe() == "stage 'work' item 1 (key 'b') failed after 1 attempt: ValueError: bad entry"


def test_without_a_declared_key_the_failure_names_the_content_digest() -> None:
    h = Harness(make_pipeline(KEYED.replace("{from: fetch.entries, key: id}", "fetch.entries")))
    (fetch,) = h.invokes(h.send(Start()))
    h.succeed(fetch, {"entries": ["x", "y"]})
    h.send(TaskFailed("work", 0, 1, "ValueError", "no", terminal=True))
    assert h.state.failure is not None and h.state.failure.key == content_key("x")
    assert f"item 0 (key '{content_key('x')}')" in h.state.failure.describe()
