"""``ReadySet.add_all`` / ``remove_all`` (a step's outbox filled and emptied at once) give exactly the set that
``add`` / ``remove`` one item at a time give: the same run, the same sparse items."""

from __future__ import annotations

from fave.core.model import ReadySet
from hypothesis import given
from hypothesis import strategies as st
from immutables import Map

ITEMS = st.integers(min_value=0, max_value=40)
SETS = st.builds(
    lambda lo, n, extra: ReadySet(lo, lo + n, Map(dict.fromkeys(i for i in extra if not lo <= i < lo + n))),
    ITEMS,
    st.integers(min_value=0, max_value=15),
    st.lists(ITEMS, max_size=6),
)
BATCHES = st.lists(ITEMS, max_size=30) | st.builds(lambda lo, n: list(range(lo, lo + n)), ITEMS, ITEMS)


def one_by_one(ready: ReadySet, items: list[int], op: str) -> ReadySet:
    for item in items:
        ready = ready.add(item) if op == "add" else ready.remove(item)
    return ready


@given(ready=SETS, items=BATCHES)
def test_add_all_is_add_in_turn(ready: ReadySet, items: list[int]) -> None:
    expected = one_by_one(ready, items, "add")
    got = ready.add_all(items)
    assert (got.lo, got.hi, dict(got.extra)) == (expected.lo, expected.hi, dict(expected.extra))
    assert (got is ready) == (expected is ready)


@given(ready=SETS, items=BATCHES)
def test_remove_all_is_remove_in_turn(ready: ReadySet, items: list[int]) -> None:
    expected = one_by_one(ready, items, "remove")
    got = ready.remove_all(items)
    assert (got.lo, got.hi, dict(got.extra)) == (expected.lo, expected.hi, dict(expected.extra))
    assert (got is ready) == (expected is ready)
