"""``fave.local.worker._encode_response`` (a thread-isolated or worker handler's response, as Lambda marshals
it) writes exactly what ``json.JSONEncoder(default=...)`` writes, and refuses what it refuses, the same way."""

from __future__ import annotations

import decimal
import json
from typing import Any

import pytest
from fave.local.worker import _encode_response, _lambda_default
from hypothesis import given
from hypothesis import strategies as st

REFERENCE = json.JSONEncoder(default=_lambda_default)
KEYS = st.text(max_size=5) | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.decimals(allow_nan=False)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=15,
)


@given(VALUES)
def test_the_same_text_as_the_encoder(value: Any) -> None:
    assert _encode_response(value) == REFERENCE.encode(value)


def circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("bad", [object(), {1j: 2}, {"a": {1, 2}}, [decimal.Decimal("sNaN")], circular()])
def test_the_same_refusal(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as expected:
        REFERENCE.encode(bad)
    with pytest.raises(expected.type) as got:
        _encode_response(bad)
    assert str(got.value) == str(expected.value)
