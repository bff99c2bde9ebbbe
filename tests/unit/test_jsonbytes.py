"""``fave.jsonbytes``: orjson's bytes where they mean what the standard library's would, the standard library's
where orjson would change a value (a NaN written as null, an integer beyond 64 bits) or refuses it; and a document
``tagged`` as orjson's reads back exactly (orjson reads an integer beyond 64 bits as a float)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fave import cache
from fave.jsonbytes import Encoder, loads, same_json
from hypothesis import given
from hypothesis import strategies as st

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(max_value=-(2**63) + 2, min_value=-(2**63) - 2)
    | st.floats()
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, a NaN equal to a NaN, 1 and 1.0 told apart."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(VALUES)
def test_what_it_writes_reads_back_as_the_standard_library_s_text_does(value: Any) -> None:
    data = Encoder().encode(value)
    assert same(json.loads(data), json.loads(json.dumps(value)))


@given(VALUES)
def test_it_refuses_what_the_standard_library_refuses(value: Any) -> None:
    strict = Encoder(allow_nan=False)
    try:
        expected = json.dumps(value, allow_nan=False)
    except ValueError:
        with pytest.raises(ValueError):
            strict.encode(value)
        return
    assert same(json.loads(strict.encode(value)), json.loads(expected))


@given(VALUES)
def test_a_tagged_document_reads_back_exactly(value: Any) -> None:
    doc = {"value": value}
    data = Encoder().tagged(doc)
    back = loads(data)
    back.pop("orjson", None)
    assert same(back, doc)


def test_a_nan_and_a_none_are_not_one_cache_key() -> None:
    assert Encoder().encode({"x": float("nan")}) == b'{"x":NaN}'
    assert Encoder().encode({"x": None}) == b'{"x":null}'
    with pytest.raises(ValueError):
        cache.canonical({"x": float("inf")})
    assert cache.canonical([None, 1]) != cache.canonical([1.0, 1])


def test_integers_beyond_64_bits_keep_every_digit() -> None:
    big = 2**64 + 1
    assert Encoder().encode([big]) == f"[{big}]".encode()
    assert loads(Encoder().tagged({"n": big})) == {"n": big}  # not tagged: the standard library reads it
    assert loads(Encoder().tagged({"n": 2**64 - 1}))["n"] == 2**64 - 1


def test_orjson_writes_the_usual_values_and_they_are_tagged() -> None:
    data = Encoder().tagged({"list": [{"id": 1, "v": 0.5}], "none": None})
    assert data.startswith(b'{"orjson":1,')
    assert loads(data) == {"orjson": 1, "list": [{"id": 1, "v": 0.5}], "none": None}


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 1.0), (True, 1), (0.0, -0.0), ([1, True], [1, 1]), ({"a": 1}, {"a": 1.0}), (2**70, float(2**70))],
)
def test_same_json_tells_apart_what_equals_does_not(a: Any, b: Any) -> None:
    assert a == b
    assert not same_json(a, b)
    assert same_json(a, a)
