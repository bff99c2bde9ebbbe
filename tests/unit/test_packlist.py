"""``fave.packlist``: a pack's list kept as its text answers ``same`` exactly as ``cache.same_values`` does on the
decoded list, and a text whose ends or digest do not hold is no list at all (a miss, never a wrong hit)."""

from __future__ import annotations

import json
import math
from array import array
from typing import Any

import orjson
import pytest
from fave import packed, packlist, service
from fave.cache import same_values
from fave.packlist import ListText, fields
from hypothesis import given, settings
from hypothesis import strategies as st

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=30),
    st.sampled_from([1.0, 0.0, -0.0, 2.5, 1e-7]),
    st.text(alphabet=',[]{}"\\:ab é\n', max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "id", "v"]), inner, max_size=3)
    ),
    max_leaves=6,
)


def stored(elements: list[Any]) -> ListText:
    doc = orjson.loads(orjson.dumps(fields(elements)))  # as a pack document carries it
    read = ListText.read(doc)
    assert read is not None
    return read


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=40), st.data())
def test_same_answers_as_the_decoded_comparison(old: list[Any], data: st.DataObject) -> None:
    new = list(old)
    for _ in range(data.draw(st.integers(0, 6))):  # replace, insert or drop a few elements (texts shift)
        how = data.draw(st.sampled_from(["replace", "insert", "drop"]))
        at = data.draw(st.integers(0, max(0, len(new) - 1)))
        if how == "replace" and new:
            new[at] = data.draw(values)
        elif how == "insert":
            new.insert(at, data.draw(values))
        elif new:
            del new[at]
    text = stored(old)
    assert list(text) == old and len(text) == len(old)
    assert text.same(new) == same_values(new, old)


def test_values_equal_to_python_but_not_to_json_differ() -> None:
    text = stored([1, {"v": 0}, 0.0, [True], "x"])
    assert text.same([1.0, {"v": False}, -0.0, [1], "x"]) == [False, False, False, False, True]
    assert text.same([1, {"v": 0}, 0.0, [True], "x", 7]) == [True] * 5  # up to the shorter list


def test_a_long_list_with_a_few_changes_spread_over_it() -> None:
    old = [{"id": i, "v": 0} for i in range(10_000)]
    new = [{"id": i, "v": 12345 if i % 97 == 0 else 0} for i in range(10_000)]  # longer texts: the rest shifts
    assert stored(old).same(new) == [i % 97 != 0 for i in range(10_000)]


def test_a_list_orjson_cannot_write_exactly_stays_a_list() -> None:
    assert fields([1, 2**70]) == {"list": [1, 2**70]}
    assert fields([]) == {"list": []}
    assert stored([1, 2]).same([math.nan, 2]) is None  # the caller compares the decoded lists instead


@pytest.mark.parametrize("member", ["list_text", "list_ends", "list_check"])
def test_a_text_whose_ends_or_digest_do_not_hold_is_no_list(member: str) -> None:
    doc = json.loads(orjson.dumps(fields([{"id": i} for i in range(50)])))
    value = doc[member]
    doc[member] = value[:10] + ("1" if value[10] != "1" else "2") + value[11:]  # one character changed
    assert ListText.read(doc) is None
    assert ListText.read({**doc, member: 7}) is None


@pytest.mark.parametrize("swap", [False, True])
def test_a_packs_ints_are_little_endian_bytes_on_any_machine(swap: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed, "_SWAP", swap)  # True: as a big-endian machine goes about it
    values = array("I", [1, 2**32 - 1, 258])
    data = packed.to_le(values)
    assert list(values) == [1, 2**32 - 1, 258]  # left as it was
    assert packed.from_le("I", data) == values
    if not swap:  # this machine is little-endian: the bytes themselves
        assert data == b"\x01\0\0\0\xff\xff\xff\xff\x02\x01\0\0"
    with pytest.raises(ValueError):
        packed.from_le("I", b"\x01\x02\x03")


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["items", "a", "b", 'é"k']), st.one_of(values, st.lists(values, max_size=5))),
    st.data(),
)
def test_a_parked_output_is_encoded_with_the_texts_of_its_lists(output: dict[str, Any], data: st.DataObject) -> None:
    """``service._encoded_with_lists``: the parked bytes are ``_PARK.encode``'s, and each list's text is the one
    ``ListText.same`` would make itself (so the bulk lookup takes it instead of encoding the list again)."""
    extra = data.draw(st.sampled_from([{}, {"nan": math.nan}, {"big": 2**70}]))  # members orjson does not write
    output = {**output, **extra}
    fields_ = frozenset(data.draw(st.lists(st.sampled_from(["items", "a", "missing"]), max_size=2)))
    encoded, texts = service._encoded_with_lists(output, fields_)
    assert encoded == service._PARK.encode(output)
    expected = {f: packlist._ENCODER.exact(output[f]) for f in fields_ if type(output.get(f)) is list}
    assert texts == ({} if extra else expected)
    for name, text in texts.items():
        if output[name]:  # (an empty list is kept as a list, not as text)
            assert stored(output[name]).same(output[name], text) == stored(output[name]).same(output[name])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.lists(st.tuples(st.integers(0, 2999), values), max_size=40))
def test_a_long_list_compares_as_the_decoded_lists_do(size: int, changes: list[tuple[int, Any]]) -> None:
    old = [{"id": i, "v": i % 7} for i in range(size)]
    new = list(old)
    for at, value in changes:
        new[at % size] = value
    assert stored(old).same(new) == same_values(new, old)
