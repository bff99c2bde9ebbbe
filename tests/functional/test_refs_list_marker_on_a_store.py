"""fave_shared.refs' list marker, ``{"$ref": "HEAD[0:N]TAIL"}``: the list of the values stored at ``HEAD0TAIL``
.. ``HEAD{N-1}TAIL`` (what an exported DISTRIBUTED Map passes downstream, docs/export.md), resolved on a real
local store (threads, a missing item, nulls, nesting); tests/unit/test_refs_list_marker.py has the rest."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fave_shared import refs
from fave_shared.errors import NotFoundError
from fave_shared.store import open_store
from fave_shared.store.base import ObjectStore

HEAD = "requests/R1/export/shout_items/shout/"


def _store(tmp_path: Path, values: dict[str, Any]) -> ObjectStore:
    store = open_store(str(tmp_path / "store"))
    for key, value in values.items():
        store.put(key, refs.dumps(value), content_type="application/json")
    return store


def test_a_list_marker_is_the_ordered_list_of_its_objects(tmp_path: Path) -> None:
    # Written out of order, with more keys than the marker names: the list is by index, up to N only.
    values = {f"{HEAD}{i}.json": {"word": f"w{i}"} for i in (3, 0, 2, 1, 4)}
    store = _store(tmp_path, values)
    marker = refs.list_marker(HEAD, 4)
    assert marker == {"$ref": f"{HEAD}[0:4].json"}
    assert refs.is_ref(marker)  # an old reader's marker too: it GETs the key and fails, naming it
    assert refs.list_keys(marker) == [f"{HEAD}{i}.json" for i in range(4)]
    assert refs.resolve(store, marker) == [{"word": f"w{i}"} for i in range(4)]


def test_many_items_keep_their_order_when_read_by_threads(tmp_path: Path) -> None:
    n = 3 * refs.LIST_WORKERS + 5
    store = _store(tmp_path, {f"{HEAD}{i}.json": i for i in range(n)})
    seen: set[str] = set()
    loaded: list[str] = []

    def load(key: str) -> Any:
        seen.add(threading.current_thread().name)
        loaded.append(key)
        return json.loads(store.get(key).data)

    marker = refs.list_marker(HEAD, n)
    assert refs.resolve_with(load, marker, workers=refs.LIST_WORKERS) == list(range(n))
    assert sorted(loaded) == sorted(refs.list_keys(marker) or ())
    assert any(name.startswith("fave-refs") for name in seen)
    assert refs.resolve(store, marker) == list(range(n))
    assert refs.RefCache().resolve(store, marker) == list(range(n))


def test_a_missing_item_is_an_error_naming_its_key(tmp_path: Path) -> None:
    store = _store(tmp_path, {f"{HEAD}{i}.json": i for i in (0, 1, 3)})
    with pytest.raises(NotFoundError, match=rf"{HEAD}2\.json"):
        refs.resolve(store, {"needs": {"shout": refs.list_marker(HEAD, 4)}})


def test_a_failed_item_s_null_stays_null_in_its_place(tmp_path: Path) -> None:
    store = _store(tmp_path, {f"{HEAD}0.json": "A!", f"{HEAD}1.json": None, f"{HEAD}2.json": "C!"})
    assert refs.resolve(store, refs.list_marker(HEAD, 3)) == ["A!", None, "C!"]


def test_nested_in_an_input_beside_other_markers_and_holding_markers(tmp_path: Path) -> None:
    """An input with a list marker and a plain marker; an item's object that is itself a marker (a stage's
    output over Lambda's limit, offloaded by the SDK) is resolved too. No items: an empty list."""
    store = _store(
        tmp_path,
        {
            f"{HEAD}0.json": {"word": "A"},
            f"{HEAD}1.json": refs.marker("requests/R1/stages/shout/output-1.json", size=12),
            "requests/R1/stages/shout/output-1.json": {"word": "B"},
            "requests/R1/stages/words/output.json": {"words": ["a", "b"]},
        },
    )
    event_input = {
        "request": {"text": "a b"},
        "needs": {
            "shout": refs.list_marker(HEAD, 2),
            "words": refs.marker("requests/R1/stages/words/output.json"),
            "none": refs.list_marker("requests/R1/export/u/other/", 0),
        },
    }
    found = refs.find_refs(event_input)
    assert sorted(m["$ref"] for m in found) == sorted(
        [f"{HEAD}[0:2].json", "requests/R1/stages/words/output.json", "requests/R1/export/u/other/[0:0].json"]
    )
    assert refs.resolve(store, event_input) == {
        "request": {"text": "a b"},
        "needs": {"shout": [{"word": "A"}, {"word": "B"}], "words": {"words": ["a", "b"]}, "none": []},
    }
    # Its size, as for a single-object marker: the stored JSON one level down, as a list.
    stored = [{"word": "A"}, refs.marker("requests/R1/stages/shout/output-1.json", size=12)]
    assert refs.RefCache().size(store, event_input["needs"]["shout"]) == refs.utf8_size(stored)


def test_a_reader_that_predates_list_markers_fails_naming_the_key(tmp_path: Path) -> None:
    """A stage with an older fave_shared: its ``is_ref`` took any dict whose only key is a string ``$ref`` for a
    marker, and its ``resolve`` loaded that key. The list marker has that shape, and no object has its key: the
    old reader fails on the GET, naming the key, instead of handing ``{"$ref": ...}`` to the stage as data."""
    store = _store(tmp_path, {f"{HEAD}{i}.json": i for i in range(3)})
    marker = refs.list_marker(HEAD, 3)
    assert set(marker) == {"$ref"} and isinstance(marker["$ref"], str)  # the old rule's marker

    def old_resolve(value: Any) -> Any:  # fave_shared.refs.resolve before list markers, as it was
        if isinstance(value, dict) and set(value) == {"$ref"} and isinstance(value["$ref"], str):
            return old_resolve(json.loads(store.get(value["$ref"]).data))
        return value

    with pytest.raises(NotFoundError, match=r"shout/\[0:3\]\.json"):
        old_resolve(marker)
