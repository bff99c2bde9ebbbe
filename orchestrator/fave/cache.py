"""The result cache: a ``cache: true`` stage's task whose key was seen before reuses the stored output.

The key (``cache_key``) is the sha256 of the canonical JSON (sorted keys, compact) of::

    {"v": 1, "function": LOGICAL_ID, "code": CODE_DIGEST, "input": TASK_INPUT}

``CODE_DIGEST`` is the invoker's ``code_digest(function)`` (locally: the handler, the CodeUri tree and the
layers it uses); ``TASK_INPUT`` is the task's whole input as the stage gets it (docs/stages.md): the request's
input (profile included; only the declared fields for ``cache: {request: [...]}``), the stage's config with
the profile applied, the upstream outputs (``needs``) and, for a per-item task, its item, **but not its
``index``**: a per-item task is keyed by its element's content, not by its position in the list, so a list that
gains, loses or reorders elements re-runs only the new or changed ones (a stage whose output depends on the
position must not be cached, or must carry the position in its elements). Every marker in it (a parked output,
a stored request input: ``{"$ref": key}``, whose key names the request) is replaced by ``{"$sha256": digest}``
of the canonical JSON of the value it refers to, so equal content gives equal keys across requests. No request
id, no pipeline name enter the key: requests of any pipeline running the same function on the same input share
entries.

An entry (``keys.cache_key``) is JSON ``{"v": 1, "output": ..., "source": REQUEST_ID, "stage": ..., "item":
...}``, written once with a create-only put: the first writer wins, a concurrent writer's ``ConflictError``
is ignored. An unreadable entry (missing, not JSON, not this shape) is a miss, never a failure; it is left in
place (the create-only put cannot replace it: ``fave cache clear`` removes it).

**Fanned-out stages in bulk (packs).** One GET and one engine event per cached item would make a 10,000-item
re-run cost a third of the first run. So for a fanned-out ``cache: true`` stage:

* a *pack* (``cache/packs/PACK.json``, ``pack_object``) maps the item keys of one whole stage run to their
  outputs: ``{"v": 1, "stage": ..., "source": REQUEST_ID, "rows": {ITEM_KEY: [OUTPUT, SOURCE], ...}}``.
  ``PACK`` (``pack_id``) is the sha256 of the key parts that are the same for every item of the stage (function,
  code, config, declared request fields, the outputs of the stages it needs whole), so the next run of the
  stage on another list finds it. It is written (``WriteCachePack``) when the stage succeeds, with a row for
  each item that succeeded, invoked or cached. A later writer **replaces** it (a plain put, last writer wins):
  every row of any pack maps a key to an output computed for exactly that key, so whichever pack wins is
  correct; packs only differ in coverage, and the latest run's list is the best guess for the next one
  (merging would grow a pack without bound). It never replaces the per-item entries: those stay the truth and
  the fallback.
* when the stage's tasks are ready to dispatch for the first time, the engine asks (``CacheLookup``, raised
  like ``MissingData``) for all of them at once; the service computes every item key (``item_keys``: the
  shared parts serialised once), reads the pack (one GET), and restarts the decision with one
  ``TasksCached(stage, {item: (output, source) | None})`` event. The engine records every hit SUCCEEDED
  (cached, never invoked, attempt 0) in one pass that writes each touched task shard once; the items the pack
  does not hold are dispatched as usual, and their invocation looks up the per-item entry first (one GET), so
  an entry written by a request whose pack was replaced since is still a hit.
* a missing, corrupt or foreign pack, or a row whose parked output is gone, is a miss, never a failure.
* ``--no-cache`` asks nothing (``RequestState.no_cache``); a retried or reset task goes the per-item way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fave_shared import refs
from fave_shared.errors import ConflictError, FaveError
from fave_shared.store import ObjectStore

from fave.keys import CACHE_PREFIX
from fave.keys import cache_key as cache_object

log = logging.getLogger(__name__)

KEY_VERSION = 1
_SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".git"})
_SKIP_SUFFIXES = (".pyc", ".pyo")


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def tree_digest(roots: Iterable[Path]) -> str:
    """sha256 over the files of each root (in the given order): each file's path relative to its root and its
    bytes; ``__pycache__`` and compiled files skipped. A root that is a file counts as its own bytes."""
    h = hashlib.sha256()
    for index, root in enumerate(roots):
        h.update(f"root {index}\0".encode())
        if root.is_file():
            h.update(root.read_bytes())
            continue
        files: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in filenames:
                if not name.endswith(_SKIP_SUFFIXES):
                    path = Path(dirpath) / name
                    files.append((path.relative_to(root).as_posix(), path))
        for rel, path in sorted(files):
            data = path.read_bytes()
            h.update(f"{rel}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


def content_input(value: Any, load: Callable[[str], Any]) -> Any:
    """``value`` with every marker replaced by ``{"$sha256": digest}`` of the value it refers to (resolved
    whole: markers inside it too)."""
    if refs.is_ref(value):
        resolved = refs.resolve_with(load, load(value[refs.REF]))
        return {"$sha256": hashlib.sha256(canonical(resolved)).hexdigest()}
    if isinstance(value, dict):
        return {k: content_input(v, load) for k, v in value.items()}
    if isinstance(value, list):
        return [content_input(v, load) for v in value]
    return value


POSITION = "index"
"""The field of a per-item task's input that is left out of its key: its position in the list."""


def key_document(function: str, code: str, task_input: Mapping[str, Any], load: Callable[[str], Any]) -> Any:
    """What the key is the digest of (see the module docs): the input without the item's position."""
    keyed = {name: value for name, value in task_input.items() if name != POSITION}
    return {"v": KEY_VERSION, "function": function, "code": code, "input": content_input(keyed, load)}


def cache_key(function: str, code: str, task_input: Mapping[str, Any], load: Callable[[str], Any]) -> str:
    """The cache key of a task: sha256 hex of the canonical key document (``key_document``, serialised field by
    field: a field with no marker in it is not walked)."""
    parts = {name: _part(value, load) for name, value in task_input.items() if name != POSITION}
    return hashlib.sha256(_document(function, code, parts)).hexdigest()


_MARKER = b'"$ref"'


def _part(value: Any, load: Callable[[str], Any]) -> bytes:
    """``canonical(content_input(value))``, without walking values that hold no marker (most of them)."""
    data = canonical(value)
    return canonical(content_input(value, load)) if _MARKER in data else data


def _joined(parts: Mapping[str, bytes]) -> bytes:
    """The canonical JSON of an object whose members' canonical JSON is ``parts`` (sorted as ``canonical``)."""
    return b"{" + b",".join(_member(name) + parts[name] for name in sorted(parts)) + b"}"


_MEMBERS: dict[str, bytes] = {}


def _member(name: str) -> bytes:
    """``"name":`` as canonical JSON writes it (field names repeat: made once each)."""
    member = _MEMBERS.get(name)
    if member is None:
        member = canonical(name) + b":"
        if len(_MEMBERS) < 4096:
            _MEMBERS[name] = member
    return member


def _document(function: str, code: str, input_parts: Mapping[str, bytes]) -> bytes:
    # The members of the key document in canonical order: code, function, input, v.
    return _head(function, code) + _joined(input_parts) + _TAIL


def _head(function: str, code: str) -> bytes:
    return b'{"code":' + canonical(code) + b',"function":' + canonical(function) + b',"input":'


_TAIL = b',"v":' + str(KEY_VERSION).encode() + b"}"


def item_keys(
    function: str,
    code: str,
    inputs: Mapping[int, Mapping[str, Any]],
    shared_needs: Iterable[str],
    load: Callable[[str], Any],
) -> dict[int, str]:
    """``cache_key(function, code, input, load)`` of many tasks of one stage at once, item -> key: the input
    fields besides ``item`` and ``needs``, and the needs named in ``shared_needs``, are the same for every task
    (taken from the first input) and are serialised once; only the item and its per-item needs are per task."""
    if not inputs:
        return {}
    first = next(iter(inputs.values()))
    shared = {name: _part(value, load) for name, value in first.items() if name not in ("item", "needs", POSITION)}
    needs_of_first = first.get("needs")
    common = frozenset(shared_needs)
    shared_need_parts = {
        name: _part(value, load)
        for name, value in (needs_of_first.items() if isinstance(needs_of_first, Mapping) else ())
        if name in common
    }
    head, sha256 = _head(function, code), hashlib.sha256
    keys: dict[int, str] = {}
    for item, task_input in inputs.items():
        parts = dict(shared)
        if "item" in task_input:
            parts["item"] = _part(task_input["item"], load)
        needs = task_input.get("needs")
        if isinstance(needs, Mapping):
            need_parts = dict(shared_need_parts)
            for name, value in needs.items():
                if name not in common:
                    need_parts[name] = _part(value, load)
            parts["needs"] = _joined(need_parts)
        elif "needs" in task_input:
            parts["needs"] = _part(needs, load)
        keys[item] = sha256(head + _joined(parts) + _TAIL).hexdigest()
    return keys


def pack_id(
    function: str, code: str, task_input: Mapping[str, Any], item_needs: Iterable[str], load: Callable[[str], Any]
) -> str:
    """The pack of a fanned-out stage's run: sha256 of the key parts every item shares (the input without its
    item, position and per-item needs)."""
    per_item = frozenset(item_needs)
    shared = {name: value for name, value in task_input.items() if name not in ("item", "needs", POSITION)}
    needs = task_input.get("needs")
    if isinstance(needs, Mapping):
        shared["needs"] = {name: value for name, value in needs.items() if name not in per_item}
    body = canonical(
        {"v": KEY_VERSION, "pack": True, "function": function, "code": code, "input": content_input(shared, load)}
    )
    return hashlib.sha256(body).hexdigest()


PACK_PREFIX = f"{CACHE_PREFIX}packs/"


def pack_object(pack: str) -> str:
    """The object of a pack (``pack`` is a sha256 hex digest, ``pack_id``)."""
    if len(pack) != 64 or not set(pack) <= set("0123456789abcdef"):
        raise ValueError(f"not a pack id: {pack[:80]!r}")
    return f"{PACK_PREFIX}{pack}.json"


def read_pack(store: ObjectStore, pack: str) -> tuple[dict[str, Entry], bool]:
    """The rows of a pack, item key -> entry, and whether any output in it may hold a marker (a parked output:
    check that it is still there before using it); ({}, False) when it is missing, unreadable or not a pack
    (never raises a store or parse error). A malformed row is left out."""
    try:
        data = store.get(pack_object(pack)).data
        doc = json.loads(data)
    except (FaveError, ValueError, UnicodeDecodeError):
        return {}, False
    except Exception:  # a store backend's own error: no pack, the items go the per-item way
        log.warning("result cache: reading pack %s failed", pack, exc_info=True)
        return {}, False
    rows = doc.get("rows") if isinstance(doc, dict) and doc.get("v") == KEY_VERSION else None
    if not isinstance(rows, dict):
        return {}, False
    entries = {
        key: Entry(row[0], row[1])
        for key, row in rows.items()
        if isinstance(row, list) and len(row) == 2 and isinstance(row[1], str)
    }
    return entries, _MARKER in data


def write_pack(store: ObjectStore, pack: str, rows: Mapping[str, tuple[Any, str]], *, source: str, stage: str) -> None:
    """Write (or replace: the last writer wins, see the module docs) a pack of ``rows``: item key -> (output,
    the request whose invocation computed it)."""
    body = canonical(
        {"v": KEY_VERSION, "stage": stage, "source": source, "rows": {key: list(row) for key, row in rows.items()}}
    )
    store.put(pack_object(pack), body, content_type="application/json")


@dataclass(frozen=True, slots=True)
class Entry:
    output: Any
    source: str


def read_entry(store: ObjectStore, key: str) -> Entry | None:
    """The entry under ``key``; None for a miss: missing, unreadable or not an entry (never raises a store
    or parse error)."""
    try:
        doc = json.loads(store.get(cache_object(key)).data)
    except (FaveError, ValueError, UnicodeDecodeError):
        return None
    except Exception:  # a store backend's own error: a miss, the task runs as if uncached
        log.warning("result cache: reading %s failed", key, exc_info=True)
        return None
    if not isinstance(doc, dict) or doc.get("v") != KEY_VERSION or "output" not in doc:
        return None
    source = doc.get("source")
    if not isinstance(source, str):
        return None
    return Entry(doc["output"], source)


def write_entry(store: ObjectStore, key: str, output: Any, *, source: str, stage: str, item: int | None) -> bool:
    """Create the entry (create-only). False if one exists already (another request wrote it first)."""
    body = canonical({"v": KEY_VERSION, "output": output, "source": source, "stage": stage, "item": item})
    try:
        store.put(cache_object(key), body, if_none_match=True, content_type="application/json")
    except ConflictError:
        return False
    return True


def stats(store: ObjectStore) -> dict[str, int]:
    """Entries, packs and their bytes under ``cache/``."""
    entries = packs = 0
    size = 0
    for key in store.list(CACHE_PREFIX):
        if key.startswith(PACK_PREFIX):
            packs += 1
        else:
            entries += 1
        with contextlib.suppress(FaveError):  # deleted meanwhile
            size += len(store.get(key).data)
    return {"entries": entries, "packs": packs, "bytes": size}


def clear(store: ObjectStore) -> int:
    """Delete every entry and pack; returns how many entries went (packs are an index of them)."""
    count = 0
    for key in list(store.list(CACHE_PREFIX)):
        store.delete(key)
        count += not key.startswith(PACK_PREFIX)
    return count
