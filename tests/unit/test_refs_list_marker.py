"""fave_shared.refs' list marker without a store: which markers are lists, of which keys, how they resolve with
any ``load`` (a dict's here), and the note for a plain handler; tests/functional/test_refs_list_marker_on_a_store.py
resolves them on a real local store."""

from __future__ import annotations

from typing import Any

import pytest
from fave_shared import refs

HEAD = "requests/R1/export/shout_items/shout/"


def test_a_list_marker_resolves_in_index_order_with_nulls_kept() -> None:
    stored: dict[str, Any] = {f"{HEAD}2.json": "C!", f"{HEAD}0.json": "A!", f"{HEAD}1.json": None}
    marker = refs.list_marker(HEAD, 3)
    assert refs.list_keys(marker) == [f"{HEAD}0.json", f"{HEAD}1.json", f"{HEAD}2.json"]
    for workers in (1, 4):
        assert refs.resolve_with(stored.__getitem__, {"shout": marker}, workers=workers) == {
            "shout": ["A!", None, "C!"]
        }
    with pytest.raises(KeyError, match=f"{HEAD}3.json"):
        refs.resolve_with(stored.__getitem__, refs.list_marker(HEAD, 4), workers=4)


@pytest.mark.parametrize(
    "key",
    [
        "requests/R1/stages/shout/output-1.json",
        "requests/R1/x[0:01].json",  # a leading zero: not a count
        "requests/R1/x[1:3].json",  # only ranges from 0
        "requests/R1/x[0:3]/y[z].json",  # brackets after the range: not a list marker
        "requests/R1/x[0:-1].json",
    ],
)
def test_any_other_key_is_a_single_object_marker_as_before(key: str) -> None:
    stored = {key: {"v": 1}}
    assert refs.list_keys({"$ref": key}) is None
    assert refs.resolve_with(stored.__getitem__, {"$ref": key}) == {"v": 1}
    assert refs.resolve_with(stored.__getitem__, refs.marker(key, size=7, note="n")) == {"v": 1}


def test_data_with_a_ref_key_and_other_keys_is_not_a_list_marker() -> None:
    value = {"$ref": f"{HEAD}[0:2].json", "title": "a JSON Schema, say"}
    assert refs.list_keys(value) is None and refs.find_refs(value) == []


def test_a_list_marker_needs_a_count_and_a_tail_without_brackets() -> None:
    with pytest.raises(ValueError, match="count >= 0"):
        refs.list_marker(HEAD, -1)
    with pytest.raises(ValueError, match="without brackets"):
        refs.list_marker(HEAD, 1, "[x].json")


def test_a_plain_handler_that_trips_over_a_list_marker_is_told_why() -> None:
    event = {"input": {"needs": {"shout": refs.list_marker(HEAD, 2)}}, "store": "s3://b"}
    note = refs.unresolved_note(event, {"errorType": "TypeError", "stackTrace": ["app.py line 3"]})
    assert note is not None and f"{HEAD}[0:2].json" in note and refs.SDK_HELPER in note
    # A plain marker nested in the input is not the handler's to resolve (fave inlines those): no note.
    assert refs.unresolved_note({"input": {"needs": {"w": refs.marker("k")}}}, {"errorType": "TypeError"}) is None
    # Through the SDK: the SDK resolved it, so it is not why the stage failed.
    sdk = {"errorType": "TypeError", "stackTrace": ["fave_shared/stage.py line 160"]}
    assert refs.unresolved_note(event, sdk) is None
