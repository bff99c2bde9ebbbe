"""``fave.service._surely_inline``: an output it calls small without encoding it is within
``INLINE_OUTPUT_LIMIT`` once encoded (so ``prepare`` never keeps inline an output it should have parked), even
at its bounds: 8 fields, 32-character names and strings of the widest escaped characters, the largest numbers."""

from __future__ import annotations

from typing import Any

from fave.service import INLINE_OUTPUT_LIMIT, _surely_inline
from fave_shared import refs
from hypothesis import given
from hypothesis import strategies as st

WIDE = st.sampled_from(["🎬", "\u2028", "\x00", '"', "é", "a"])  # 12, 6, 6, 2, 6 and 1 bytes escaped
TEXT = st.lists(WIDE, max_size=34).map("".join) | st.text(max_size=34)
VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**18) - 2, max_value=10**18 + 2)
    | st.floats()
    | TEXT
    | st.lists(st.integers(), max_size=2)
)


@given(st.dictionaries(TEXT, VALUES, max_size=10))
def test_what_it_calls_small_is_within_the_limit(output: dict[str, Any]) -> None:
    if _surely_inline(output):
        assert refs.json_size(output) <= INLINE_OUTPUT_LIMIT


def test_the_widest_it_accepts_is_within_the_limit() -> None:
    widest = {f"{i}" + "🎬" * 31: "🎬" * 32 for i in range(8)}
    assert _surely_inline(widest) and refs.json_size(widest) <= INLINE_OUTPUT_LIMIT
    assert _surely_inline({"i": 3, "ok": True, "x": None, "f": -1.7976931348623157e308})
    assert not _surely_inline({"s": "x" * 33}) and not _surely_inline({"n": 10**18}) and not _surely_inline([1])
