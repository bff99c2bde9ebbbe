"""The result cache: a ``cache: true`` stage's task whose key was seen before reuses the stored output.

**Keys.** A single task's key (``cache_key``) is the sha256 of the canonical JSON (sorted keys, compact) of::

    {"v": 2, "function": LOGICAL_ID, "code": CODE_DIGEST, "input": TASK_INPUT}

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

A task of a fanned-out stage is keyed in two parts (``item_keys``), so that what its 10,000 tasks share is
hashed once per stage, not once per task: ``PACK = pack_id(...)``, the sha256 of the canonical JSON of
``{"v": 2, "pack": true, "function", "code", "input": THE SHARED PARTS}`` (request, config, the needs taken
whole), then the item key ``sha256(PACK, a NUL byte, canonical({"item": ITEM, "needs": {PER-ITEM NEEDS}}))``.
``KEY_VERSION`` 2: the keys of version 1 (and their entries and packs) are never read again.

**Single tasks: entries.** An entry (``keys.cache_key``) is JSON ``{"v": 2, "output": ..., "source":
REQUEST_ID, "stage": ..., "item": null}``, written once with a create-only put: the first writer wins, a
concurrent writer's ``ConflictError`` is ignored. An unreadable entry (missing, not JSON, not this shape) is a
miss, never a failure; it is left in place (the create-only put cannot replace it: ``fave cache clear`` removes
it). The task looks its entry up when it is invoked (one GET) and writes it when it succeeds (one PUT).

**Fanned-out stages: packs only.** One GET and one PUT per item made a 10,000-item first run 5 times the cost of
the same fan-out uncached, and a re-run a fifth of the first. So a fanned-out stage's outputs are stored only
in its *pack*, one per ``PACK`` (same function, code, config, declared request fields and whole upstream outputs),
so the next run of the stage on another list finds it. A pack is a *base* object (``pack_object``,
``cache/packs/PACK.json``) and maybe a *delta* (``delta_object``, ``cache/deltas/PACK.json``), both format 3
(``PACK_FORMAT``; format 2's ``{"rows": {KEY: [OUTPUT, SOURCE]}}`` is still read): arrays with a row per stored
output, ``{"v": 3, "generation", "sources": [REQUEST_ID...], "keys": "64 hex digits per row, concatenated",
"outputs": [...], "from": [index into sources, or -1: no output], "list": [ELEMENT...]}`` (a base writes
``from`` as little-endian int32s in hex, and its key index: ``"prefixes"``, ``"prefix_rows"``, ``Pack._sorted``),
``list`` being the list the pack was last written for, its position ``i`` being row ``i``. A base keeps that list
as the text orjson wrote for it when it can (``"list_text"``, ``"list_ends"``, ``"list_check"``:
``fave.packlist``), so that the next run compares its list with it by text, without decoding it. A delta names
its base's ``generation`` and holds the rows added since and the positions of the latest list that differ from the
base's (``"length"``, ``"at"``, ``"list"``, ``"rows"``); a delta for another generation is left out (``Pack``).

* *Lookup, in bulk*: a stage that starts afresh with no per-item needs, and no stage downstream taking its
  items one by one (``Engine``'s ``bulk_lookup``), asks once with its whole list (``CacheLookup.elements``). The
  service reads the pack (two GETs: base and delta) and compares the list with the pack's by position: an equal
  element takes that position's row without a key being made; only the others are keyed and looked up by key
  (``bulk_rows``), so a weekly list with 1% changed hashes 1% of its elements. The answer is arrays
  (``TasksCached.bulk``): the engine keeps the hits as a ``CachedItems`` record (SUCCEEDED, cached, never
  invoked) instead of a ``Task`` each, and persistence writes them in their shards as a ``cached`` section, read
  back as tasks. Other cached fanned-out stages (per-item needs, a reset stage) ask per item as before
  (``CacheLookup.inputs``: every key made; the hits recorded SUCCEEDED in the decision that dispatches the misses).
  The pack is the complete index of the stage's stored outputs, so a miss is not looked up again when its task
  is invoked (no per-item GET). A task that no lookup of this process answered (a request resumed by another
  process, its outbox sent again) looks its own key up in the pack, read once per stage.
* *Write*: when the stage *ends*, however it ends (succeeded; failed or cancelled with its request: what its
  items computed is kept), the engine asks (``WriteCachePack``) to merge a row for each item that succeeded,
  invoked or cached, and the list, into the pack: one PUT per stage run instead of one per item, nothing when
  every row is in it for the same list. A run that adds or moves few rows writes the delta only (its size
  follows the change, not the list), while the delta stays within ``DELTA_FRACTION`` of the base; beyond, it is
  folded into a new base (a new generation: the old delta no longer applies, and the next one replaces it).
  Merged, not replaced: the rows of
  earlier runs that this run lacks are kept (a list that comes back, or another list run meanwhile, still
  hits), oldest dropped first beyond ``PACK_ROWS_KEPT`` rows or twice the run's, so a pack stays proportional to
  the lists it serves. A key already in it keeps its row (the first writer wins, as for entries: the keys
  downstream made of that output keep answering), unless the lookup found that row's parked output gone: then
  the output computed again replaces it.
* *Concurrent writers*: each put is conditional on the etag its object was read at (create-only when there was
  none); a writer that lost the race reads the pack again and merges once more (``PACK_WRITE_ATTEMPTS``), so no
  run's rows are lost. After that it gives up, and those items run again next time; so do the rows of a delta
  written for a base that a concurrent writer replaced meanwhile.
* What it gives up: an item's output is shared with other requests when its stage ends, not when it succeeds
  (a concurrent request running the same list recomputes it), and a pack lost or corrupted loses its rows:
  a missing, corrupt or foreign pack or delta, or a row whose parked output is gone, is a miss, never a failure,
  and the stage's next run writes a good pack again.
* ``--no-cache`` asks nothing (``RequestState.no_cache``) and still merges its rows; a reset stage is looked
  up in bulk again when it restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import os
import re
import secrets
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from pathlib import Path
from typing import Any

from fave_shared import refs
from fave_shared.errors import ConflictError, FaveError, NotFoundError
from fave_shared.store import Blob, ObjectStore

from fave import jsonbytes, packlist
from fave.core.model import negative_at
from fave.jsonbytes import Encoder
from fave.keys import CACHE_PREFIX
from fave.keys import cache_key as cache_object
from fave.packed import from_le, to_le
from fave.packlist import ListText

log = logging.getLogger(__name__)

KEY_VERSION = 2
_SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".git"})
_SKIP_SUFFIXES = (".pyc", ".pyo")


_CANONICAL = Encoder(sort_keys=True, ensure_ascii=False, allow_nan=False)
"""Canonical JSON (keys are made per task: built once). orjson's bytes (``fave.jsonbytes``), so a key made by a
version of fave before it may differ for a float written in exponent form: that entry is missed once."""


_PACK_ENCODER = Encoder(ensure_ascii=False, allow_nan=False)


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, compact separators, UTF-8."""
    return _CANONICAL.encode(value)


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


def pack_id(
    function: str, code: str, task_input: Mapping[str, Any], item_needs: Iterable[str], load: Callable[[str], Any]
) -> str:
    """The digest of the key parts every task of a fanned-out stage shares (the input without its item, position
    and per-item needs): it names the stage's pack and enters every item key (``item_keys``)."""
    per_item = frozenset(item_needs)
    shared = {name: value for name, value in task_input.items() if name not in ("item", "needs", POSITION)}
    needs = task_input.get("needs")
    if isinstance(needs, Mapping):
        shared["needs"] = {name: value for name, value in needs.items() if name not in per_item}
    body = canonical(
        {"v": KEY_VERSION, "pack": True, "function": function, "code": code, "input": content_input(shared, load)}
    )
    return hashlib.sha256(body).hexdigest()


def item_keys(
    pack: str, inputs: Mapping[int, Mapping[str, Any]], item_needs: Iterable[str], load: Callable[[str], Any]
) -> dict[int, str]:
    """The key of each task of a fanned-out stage, item -> key: sha256 of the stage's ``pack_id`` and the
    canonical JSON of ``{"item": ITEM, "needs": {PER_ITEM_NEED: OUTPUT}}`` (markers by content). The shared
    parts are hashed once per stage (into ``pack``), not once per task; the position never enters."""
    per_item = tuple(sorted(frozenset(item_needs)))
    head = f'{pack}\0{{"item":'.encode()
    sha256, encode = hashlib.sha256, _CANONICAL.encode
    keys: dict[int, str] = {}
    if not per_item:  # the usual stage: its element alone (``_part`` inlined: this runs once per task)
        tail = b',"needs":{}}'
        for item, task_input in inputs.items():
            data = encode(task_input.get("item"))
            if _MARKER in data:
                data = canonical(content_input(task_input.get("item"), load))
            keys[item] = sha256(head + data + tail).hexdigest()
        return keys
    for item, task_input in inputs.items():
        needs = task_input.get("needs")
        needs = needs if isinstance(needs, Mapping) else {}
        parts = {name: _part(needs.get(name), load) for name in per_item}
        body = _part(task_input.get("item"), load) + b',"needs":' + _joined(parts) + b"}"
        keys[item] = sha256(head + body).hexdigest()
    return keys


Row = tuple[Any, str]
"""A pack's row: (the output, the request whose invocation computed it)."""

PACK_FORMAT = 3
"""The layout of a pack object (its ``"v"``): 3 = the arrays below; 2 = ``{"rows": {KEY: [OUTPUT, SOURCE]}}``, still
read. Independent of ``KEY_VERSION`` (what a key is the digest of)."""

_KEY_LEN = 64
_NO_KEY = "-" * _KEY_LEN
"""The key slot of a list position whose item has no output (it failed): no key is ever this."""
_SLOTS = re.compile(f".{{{_KEY_LEN}}}", re.DOTALL)


def _words(keys: str) -> array[int]:
    """The first 64 bits of each key of ``keys`` (64 hex digits each), read as a little-endian int on any machine
    (``ValueError`` if not hex): one pass in C."""
    return from_le("Q", bytes.fromhex(keys))[:: _KEY_LEN // 16]


def _index_fields(keys: str) -> dict[str, str]:
    """A base's key index for ``find`` (``Pack._sorted``): its rows' first 64 bits, ascending, and the row of each,
    as little-endian hex. A row with no key (``_NO_KEY``) is indexed as zeros: the full key never matches it."""
    if not keys:
        return {}
    words = _words(keys.replace("-", "0"))
    order = sorted(range(len(words)), key=words.__getitem__)
    ordered, rows = array("Q", map(words.__getitem__, order)), array("I", order)
    return {"prefixes": to_le(ordered).hex(), "prefix_rows": to_le(rows).hex()}


def _read_index(doc: dict[str, Any], rows: int) -> tuple[array[int], array[int]] | None:
    """A base's stored key index, if it is there and fits its ``rows`` (else None: ``find`` makes its own)."""
    prefixes, at = doc.get("prefixes"), doc.get("prefix_rows")
    if not (isinstance(prefixes, str) and isinstance(at, str)):
        return None
    try:
        words, order = from_le("Q", bytes.fromhex(prefixes)), from_le("I", bytes.fromhex(at))
    except ValueError:
        return None
    if len(words) != rows or len(order) != rows:
        return None
    # Its rows are not checked against ``rows`` (~0.25 ms): ``find`` compares the full key of the row it names,
    # which a row beyond the pack does not have (a corrupt index misses, it never answers wrongly).
    return words, order


@dataclass(frozen=True, slots=True, eq=False)
class Pack:
    """A pack as read (its base object and, when it applies to that base, its delta: ``read_pack``), as arrays with
    a row per stored output: ``keys`` (64 hex digits per row, concatenated), ``outputs``, ``source_of`` (an index
    into ``sources``: the request that computed it; -1: the row is a list position with no output), and
    ``elements``: the list the pack was last written for, whose position ``i`` is row ``list_rows[i]`` (row ``i``
    when ``list_rows`` is None). A run on the same list, or one that changed a few elements, finds its hits by
    comparing elements, without a key per item (``bulk_rows``). ``parked``: whether any output may hold a marker
    (a parked output: check it is still there before using it). ``etag`` / ``delta_etag``: what the base and the
    delta object were read at (None: there was none), so that a writer replaces exactly what it merged
    (``write_pack``); ``generation``: the base's, which a delta names; ``base_rows``: rows from the base (the
    delta's follow)."""

    keys: str = ""
    outputs: list[Any] = field(default_factory=list)
    source_of: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    elements: Sequence[Any] = field(default_factory=list)
    """As read: a ``packlist.ListText`` (decoded only if indexed) or a list."""
    parked: bool = False
    blob: Blob | None = None
    """The base object as read (None: there was none): its ``etag``, computed only if a writer replaces the base."""
    list_rows: list[int] | None = None
    generation: str = ""
    base_rows: int = 0
    delta_etag: str | None = None
    base_elements: Sequence[Any] | None = None
    """The base's own list, when a delta patched ``elements`` (what a new delta is made against)."""
    written_at: float = 0.0
    """When the base was written (seconds since the epoch; 0: unknown)."""
    _index: dict[str, int] = field(default_factory=dict)
    _prefixes: dict[int, int] = field(default_factory=dict)
    """The first 64 bits of each key -> its row (``find``): made from the keys' bytes in C, ints hash cheaply. Of
    the rows after those ``_sorted`` covers, when it is there."""
    _sorted: tuple[array[int], array[int]] | None = None
    """The base's key index as its writer stored it (``"prefixes"``, ``"prefix_rows"``): the first 64 bits of its
    rows' keys, ascending, and the row of each; ``find`` bisects it instead of making a dict of 10,000 keys."""

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def etag(self) -> str | None:
        return self.blob.etag if self.blob is not None else None

    def key(self, row: int) -> str:
        return self.keys[row * _KEY_LEN : (row + 1) * _KEY_LEN]

    def row_at(self, position: int) -> int:
        """The row of a position of ``elements``."""
        return position if self.list_rows is None else self.list_rows[position]

    def index(self) -> dict[str, int]:
        """Key -> row (made when first asked for; a row whose ``source_of`` is -1 has no output)."""
        if not self._index and self.outputs:
            slots = _SLOTS.findall(self.keys)  # the 64-digit slots, cut in C
            self._index.update(zip(slots, range(len(self)), strict=True))
            self._index.pop(_NO_KEY, None)  # list positions with no output
        return self._index

    def find(self, key: str) -> int:
        """The row of ``key``; -1 if the pack has none (a row whose ``source_of`` is -1 has no output). By the
        base's stored index (``_sorted``), else by an index of the keys' first 64 bits made at the first lookup
        (~1 ms for 10,000 rows, about half of ``index``'s); the full key is compared either way."""
        if self._index:
            return self._index.get(key, -1)
        try:
            word = _words(key[:16])[0]
        except (ValueError, IndexError):
            return -1
        covered = 0
        if self._sorted is not None:
            words, rows = self._sorted
            covered = len(words)
            at = bisect_left(words, word)
            while at < covered and words[at] == word:
                r = rows[at]
                if self.key(r) == key:
                    return r
                at += 1
            if covered == len(self):
                return -1
        prefixes = self._prefixes
        if not prefixes:
            keys = self.keys[covered * _KEY_LEN :]
            if not keys or "-" in keys:  # list positions with no output: the full index
                return self.index().get(key, -1)
            try:
                made = dict(zip(_words(keys), range(covered, len(self)), strict=True))
            except ValueError:  # not hex (a malformed pack): the full index
                return self.index().get(key, -1)
            prefixes.update(made)
        r = prefixes.get(word, -1)
        if r < 0 or self.key(r) == key:
            return r
        return self.index().get(key, -1)  # two keys sharing their first 64 bits: never seen, still right

    def row(self, key: str) -> Row | None:
        r = self.find(key)
        return None if r < 0 or self.source_of[r] < 0 else (self.outputs[r], self.sources[self.source_of[r]])

    @property
    def rows(self) -> dict[str, Row]:
        """Every stored output by key (tools and tests; lookups use ``row`` and ``bulk_rows``)."""
        source_of = self.source_of
        outputs, sources = self.outputs, self.sources
        return {key: (outputs[r], sources[source_of[r]]) for key, r in self.index().items() if source_of[r] >= 0}


PACK_PREFIX = f"{CACHE_PREFIX}packs/"
DELTA_PREFIX = f"{CACHE_PREFIX}deltas/"
PACK_ROWS_KEPT = 20_000
"""A pack keeps the rows of earlier runs that the latest run did not have, oldest dropped first, while it holds
at most this many rows or twice the latest run's, whichever is more (see the module docs)."""
PACK_WRITE_ATTEMPTS = 4
DELTA_FRACTION = 8
"""A run that changes a few rows of a large pack writes only those, in the pack's delta object, while the delta
holds at most 1/8 of the base's rows (and at least ``DELTA_MIN``); then the next write folds it into a new base."""
DELTA_MIN = 64
_now = time.time  # the wall clock: a base's age is compared with the bucket's lifecycle
BASE_REFRESH_S = 7 * 86400
"""A base older than this is written again by the next run that changes the pack (instead of a delta): the
bucket's lifecycle expires ``cache/`` objects some days after they were written (template.yaml: 30), and a base
that small changes never rewrote would expire under its deltas."""


def pack_object(pack: str) -> str:
    """The object of a pack (``pack`` is a sha256 hex digest, ``pack_id``)."""
    if len(pack) != 64 or not set(pack) <= set("0123456789abcdef"):
        raise ValueError(f"not a pack id: {pack[:80]!r}")
    return f"{PACK_PREFIX}{pack}.json"


def delta_object(pack: str) -> str:
    """The object of a pack's delta: what runs since its base changed (``write_pack``)."""
    return f"{DELTA_PREFIX}{pack_object(pack)[len(PACK_PREFIX) :]}"


def _get(store: ObjectStore, key: str, pack: str) -> Blob | None:
    try:
        return store.get(key)
    except FaveError:  # missing (or unreadable): nothing
        return None
    except Exception:  # a store backend's own error: no pack, the items run
        log.warning("result cache: reading pack %s failed", pack, exc_info=True)
        return None


def _json(data: bytes) -> Any:
    try:
        return jsonbytes.loads(data)  # orjson for a pack it wrote (``Encoder.tagged``)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def read_pack(store: ObjectStore, pack: str) -> Pack:
    """The pack: its base, with its delta when that was written for this base. Empty when it is missing,
    unreadable or not a pack (never raises a store or parse error; an unreadable object keeps its etag, so that
    the next writer replaces it); a delta that is unreadable or names another base is left out."""
    blob = _get(store, pack_object(pack), pack)
    extra = _get(store, delta_object(pack), pack)
    delta_etag = extra.etag if extra is not None else None
    doc = _json(blob.data) if blob is not None else None
    base = _pack_arrays(doc, _parked(doc, blob.data), blob) if blob is not None and isinstance(doc, dict) else None
    if base is None:
        base = Pack(blob=blob)
    base = replace(base, delta_etag=delta_etag, base_rows=len(base))
    delta = _json(extra.data) if extra is not None else None
    if extra is None or not isinstance(delta, dict):
        return base
    if base.generation and delta.get("base") == base.generation:
        return _with_delta(base, delta, _parked(delta, extra.data)) or base
    # A delta written for another base (a concurrent writer replaced the base it read) still holds rows: they
    # are added by key, its list is not (so no run's rows are lost between a delta and a new base).
    return _with_rows(base, delta, _parked(delta, extra.data)) or base


def _parked(doc: dict[str, Any], data: bytes) -> bool:
    """Whether an output of a pack object may hold a marker: as its writer recorded it (``"parked"``), else (an
    object written before the flag) whether its text holds one anywhere (~0.5 ms a MB)."""
    flag = doc.get("parked")
    return flag if isinstance(flag, bool) else _MARKER in data


def _holds_marker(outputs: Sequence[Any]) -> bool:
    """Whether any of ``outputs`` holds a marker (the ``"parked"`` a writer records)."""
    return bool(outputs) and _MARKER in _PACK_ENCODER.encode(list(outputs))


def _with_rows(base: Pack, delta: dict[str, Any], parked: bool) -> Pack | None:
    """``base`` with the rows of ``delta`` whose key it lacks, after its own (not its list: it was made for
    another base); None if the delta is malformed."""
    arrays = _arrays(delta)
    if arrays is None:
        return None
    keys, outputs, source_of, sources = arrays
    wanted = [
        r for r in range(len(outputs)) if source_of[r] >= 0 and base.find(keys[r * _KEY_LEN : (r + 1) * _KEY_LEN]) < 0
    ]
    if not wanted:
        return base
    names, where = _sources_with(base.sources, sources)
    return replace(
        base,
        keys=base.keys + "".join(keys[r * _KEY_LEN : (r + 1) * _KEY_LEN] for r in wanted),
        outputs=base.outputs + [outputs[r] for r in wanted],
        source_of=base.source_of + [where[sources[source_of[r]]] for r in wanted],
        sources=names,
        parked=base.parked or parked,
        _index={},
        _prefixes={},
    )


def _pack_arrays(doc: dict[str, Any], parked: bool, blob: Blob) -> Pack | None:
    """A pack document as arrays (format 3, or 2's rows); None when it is not a well-formed one."""
    if doc.get("v") == KEY_VERSION and isinstance(doc.get("rows"), dict):  # format 2: rows by key, no list
        good = [
            (key, row[0], row[1])
            for key, row in doc["rows"].items()
            if _is_key(key) and isinstance(row, list) and len(row) == 2 and isinstance(row[1], str)
        ]
        named, at = _sources_with((), sorted({source for _, _, source in good}))
        return Pack(
            keys="".join(k for k, _, _ in good),
            outputs=[o for _, o, _ in good],
            source_of=[at[s] for _, _, s in good],
            sources=named,
            parked=parked,
            blob=blob,
        )
    if doc.get("v") != PACK_FORMAT:
        return None
    arrays = _arrays(doc)
    elements: Sequence[Any] | None = doc.get("list")
    if elements is None:
        elements = ListText.read(doc)  # the list as its text (fave.packlist): None if malformed
    generation = doc.get("generation", "")
    if arrays is None or not isinstance(elements, (list, ListText)) or len(elements) > len(arrays[1]):
        return None
    if not isinstance(generation, str):
        return None
    keys, outputs, source_of, sources = arrays
    stamp = doc.get("written_at")
    written_at = float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else 0.0
    return Pack(
        keys,
        outputs,
        source_of,
        sources,
        elements,
        parked=parked,
        blob=blob,
        generation=generation,
        written_at=written_at,
        _sorted=_read_index(doc, len(outputs)),
    )


def _arrays(doc: dict[str, Any]) -> tuple[str, list[Any], list[int], list[str]] | None:
    """The rows of a format-3 object (a base or a delta): keys, outputs, source_of, sources; None if malformed."""
    keys, outputs, source_of, sources = doc.get("keys"), doc.get("outputs"), doc.get("from"), doc.get("sources")
    ints = False  # whether source_of holds ints only, by construction
    if isinstance(source_of, str):  # a base's, as little-endian int32s in hex (_from_field)
        try:
            source_of, ints = from_le("i", bytes.fromhex(source_of)).tolist(), True
        except ValueError:
            return None
    if not (isinstance(keys, str) and isinstance(outputs, list) and isinstance(source_of, list)):
        return None
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        return None
    rows = len(outputs)
    if len(keys) != rows * _KEY_LEN or len(source_of) != rows:
        return None
    if source_of and (
        not (ints or set(map(type, source_of)) <= {int}) or min(source_of) < -1 or max(source_of) >= len(sources)
    ):
        return None
    return keys, outputs, source_of, sources


def _from_field(source_of: list[int]) -> str:
    """A base's ``"from"``: its rows' sources as little-endian int32s in hex (read without a type check per row)."""
    return to_le(array("i", source_of)).hex()


def _with_delta(base: Pack, delta: dict[str, Any], parked: bool) -> Pack | None:
    """``base`` with ``delta`` applied: its rows after the base's, its list patched; None if the delta is
    malformed."""
    arrays = _arrays(delta)
    length, at, elements, rows = delta.get("length"), delta.get("at"), delta.get("list"), delta.get("rows")
    if arrays is None or type(length) is not int or length < 0:
        return None
    if not (isinstance(at, list) and isinstance(elements, list) and isinstance(rows, list)):
        return None
    keys, outputs, source_of, sources = arrays
    total = len(base) + len(outputs)
    if not len(at) == len(elements) == len(rows):
        return None
    if length > len(base.elements) + len(at) or not all(type(p) is int and 0 <= p < length for p in at):
        return None  # every position beyond the base's list is one of ``at``: a longer list is not this pack's
    if not all(type(r) is int and -1 <= r < total for r in rows):
        return None
    names, where = _sources_with(base.sources, sources)
    remap = [where[name] for name in sources]
    listed = list(base.elements[:length])  # (a ListText is decoded here: a delta patches its elements)
    list_rows = list(range(len(listed)))
    if length > len(listed):  # positions beyond the base's list: each is patched
        listed.extend(repeat(None, length - len(listed)))
        list_rows.extend(repeat(-1, length - len(list_rows)))
    for p, element, r in zip(at, elements, rows, strict=True):
        listed[p] = element
        list_rows[p] = r
    return replace(
        base,
        keys=base.keys + keys,
        outputs=base.outputs + outputs,
        source_of=base.source_of + [remap[n] if n >= 0 else -1 for n in source_of],
        sources=names,
        elements=listed,
        list_rows=list_rows,
        parked=base.parked or parked,
        base_elements=base.elements,
        _index={},
        _prefixes={},
    )


def _sources_with(names: Sequence[str], more: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """A table of sources: ``names``, then those of ``more`` it lacks, in order; and each one's index in it."""
    table = list(names)
    where = {name: n for n, name in enumerate(table)}
    for name in more:
        if name not in where:
            where[name] = len(table)
            table.append(name)
    return table, where


def _is_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) == _KEY_LEN and key != _NO_KEY


def same_values(a: Sequence[Any], b: Sequence[Any]) -> list[bool]:
    """Per position (up to the shorter), whether ``a[i]`` and ``b[i]`` are the same JSON value. ``==`` alone takes
    1, 1.0 and true (and 0.0 and -0.0) for one another, which a key does not: so each run of positions that
    ``==`` finds equal is checked again, whole, by ``jsonbytes.same_json``; a run that differs is checked item by
    item."""
    n = min(len(a), len(b))
    equal = list(map(operator.eq, a[:n], b[:n]))
    same = jsonbytes.same_json
    start = 0
    for end in [*compress(range(n), map(operator.not_, equal)), n]:  # C-speed passes: 10,000 positions
        if end > start and not same(list(a[start:end]), list(b[start:end])):
            for i in range(start, end):
                if not same(a[i], b[i]):
                    equal[i] = False
        start = end + 1
    return equal


def bulk_rows(
    pack: Pack,
    elements: Sequence[Any],
    keys_of: Callable[[list[int]], Mapping[int, str]],
    text: bytes | None = None,
) -> list[int]:
    """The pack's row holding each element's output, by position (-1: none). An element equal to the one at its
    position in the list the pack was last written for has that row (no key made: a weekly list that changed
    1% compares 10,000 elements and hashes 100); the others are looked up by key (``keys_of(positions)``: their
    item keys), so an element that moved, or came back, still hits. ``text``: the exact text of ``elements`` when the
    caller has it (``ListText.same``)."""
    previous = pack.elements
    count = len(elements)
    same = min(count, len(previous))
    source_of = pack.source_of
    equal = previous.same(elements, text) if isinstance(previous, ListText) else None  # by text (fave.packlist)
    if equal is None:
        equal = same_values(elements, previous)
    # Whole-list passes run in C (10,000 positions): each position at its row in the pack's list, then the ones
    # that differ (a few) set apart, then those whose row has no output (a failed item: rare) likewise.
    rows = list(range(same)) if pack.list_rows is None else pack.list_rows[:same]
    for i in compress(range(same), map(operator.not_, equal)):
        rows[i] = -1
    if -1 in source_of:
        rows = [r if r >= 0 and source_of[r] >= 0 else -1 for r in rows]
    rows.extend(repeat(-1, count - same))
    others = negative_at(rows)
    if others and pack.outputs:
        for i, key in keys_of(others).items():
            r = pack.find(key)
            rows[i] = r if r >= 0 and source_of[r] >= 0 else -1
    return rows


@dataclass(frozen=True, slots=True)
class PackRun:
    """What a stage's run puts in its pack: per position of its list, the item's key (None: no output), output and
    source; ``elements``: that list (None: not a run whose positions may be compared, e.g. a stage with per-item
    needs, whose keys are not its elements alone)."""

    keys: Sequence[str | None]
    outputs: Sequence[Any]
    sources: Sequence[str | None]
    elements: Sequence[Any] | None = None
    rows: Sequence[int] | None = None
    """Per position, the row of the pack as the run's lookup read it (``known``) that holds its output already,
    -1 for the others; such a position needs no key (it is that row's). Valid for that read only."""

    @classmethod
    def of_rows(cls, rows: Mapping[str, Row]) -> PackRun:
        return cls(list(rows), [row[0] for row in rows.values()], [row[1] for row in rows.values()])

    def keyed(self, known: Pack) -> PackRun:
        """The run with the key of every position the rows of ``known`` answered (to merge it into another read)."""
        if self.rows is None:
            return self
        keys = [key if r < 0 else known.key(r) for key, r in zip(self.keys, self.rows, strict=True)]
        return replace(self, keys=keys, rows=None)


def _placed(old: Pack, run: PackRun, stale: Collection[str]) -> tuple[list[int], list[int]]:
    """Where each position of ``run`` goes: an existing row of ``old`` (its key is there with an output, not
    stale: the first writer wins), -1 (no output), or -2 (a new row); and the positions of the new rows, each
    key once (an element listed twice is one row, its other positions point at it... as -1)."""
    find, o_from = old.find, old.source_of
    fresh: list[int] = []
    seen: set[str] = set()
    if run.rows is not None:  # the rows its lookup found are placed already: only the others are looked at
        placed = list(run.rows)
        todo = negative_at(placed)
    else:
        placed = [-1] * len(run.keys)
        todo = list(range(len(run.keys)))
    keys = run.keys
    for i in todo:
        key = keys[i]
        if key is None or key in seen:
            placed[i] = -1
            continue
        seen.add(key)
        r = find(key)
        if r >= 0 and o_from[r] >= 0 and key not in stale:
            placed[i] = r
        else:
            placed[i] = -2
            fresh.append(i)
    return placed, fresh


def _merged(old: Pack, run: PackRun, placed: list[int], fresh: list[int]) -> dict[str, Any]:
    """The format-3 base document of ``old`` with ``run`` merged in, ``run``'s positions placed by ``_placed``: the
    run's list first, in order, a position that has no output written as such; then the rows of earlier runs
    that this run lacks, the oldest dropped first beyond ``PACK_ROWS_KEPT`` rows or twice the run's (``_recency``);
    a new ``generation``. A key already in ``old`` keeps its row there (the first writer wins, as for entries, so
    that the keys downstream made of that output keep answering), except a stale one, which ``_placed`` made a
    new row (its parked output is gone: else it would miss for good)."""
    o_out, o_from, o_sources = old.outputs, old.source_of, old.sources
    listed = run.elements is not None
    out_keys: list[str] = []
    out_outputs: list[Any] = []
    row_sources: list[str | None] = []  # None: a list position with no output
    for i, r in enumerate(placed):
        if r == -1:
            if listed:
                out_keys.append(_NO_KEY)
                out_outputs.append(None)
                row_sources.append(None)
        elif r >= 0:
            out_keys.append(old.key(r))
            out_outputs.append(o_out[r])
            row_sources.append(o_sources[o_from[r]])
        else:
            out_keys.append(str(run.keys[i]))
            out_outputs.append(run.outputs[i])
            row_sources.append(run.sources[i] or "")
    written = len(placed) - placed.count(-1)
    room = max(PACK_ROWS_KEPT, 2 * written) - written
    used = set(placed)
    ours = {run.keys[i] for i in fresh}
    kept = sorted(
        (r for key, r in old.index().items() if r not in used and key not in ours and o_from[r] >= 0),
        key=_recency(old),
    )
    for r in kept[max(0, len(kept) - room) :]:
        out_keys.append(old.key(r))
        out_outputs.append(o_out[r])
        row_sources.append(o_sources[o_from[r]])
    table, where = _sources_with((), (name for name in row_sources if name is not None))
    keys = "".join(out_keys)
    return {
        "v": PACK_FORMAT,
        "generation": secrets.token_hex(8),
        "written_at": round(_now(), 3),
        "sources": table,
        "keys": keys,
        "from": _from_field([-1 if name is None else where[name] for name in row_sources]),
        "parked": _holds_marker(out_outputs),
        **_index_fields(keys),
        "outputs": out_outputs,
        **packlist.fields(run.elements if run.elements is not None else ()),
    }


def _recency(old: Pack) -> Callable[[int], tuple[int, int]]:
    """Rows of ``old`` from the oldest to the newest: the base's rows kept from earlier lists, then the base's own
    list, then the delta's rows (each in order); the oldest are dropped first beyond ``PACK_ROWS_KEPT``."""
    listed = len(old.base_elements if old.base_elements is not None else old.elements)
    base = old.base_rows or len(old)

    def rank(r: int) -> tuple[int, int]:
        return (2 if r >= base else 1 if r < listed else 0, r)

    return rank


def _same_list(old: Pack, run: PackRun, placed: list[int]) -> bool:
    """Whether ``old`` already says what ``run`` would: the same list, each position at the same row. A position at
    the same row holds the same element: its key is that of the row (a stage with a list is keyed by its element
    alone), so the elements need no comparing; a position with no output in both keeps the old one."""
    if run.elements is None:
        return True  # no list to remember: every row is there
    if len(run.elements) != len(old.elements):
        return False
    source_of = old.source_of

    def nothing_at(i: int) -> bool:  # a position with no output (a failed item, an element listed twice)
        r = old.row_at(i)
        return r < 0 or source_of[r] < 0

    # The positions whose row differs from the pack's (a C-speed pass), each then looked at.
    expected = old.list_rows if old.list_rows is not None else range(len(old.elements))
    differ = compress(range(len(placed)), map(operator.ne, placed, expected))
    return all(placed[i] == -1 and nothing_at(i) for i in differ)


def _delta(
    old: Pack, run: PackRun, placed: list[int], fresh: list[int], stale: Collection[str]
) -> dict[str, Any] | None:
    """The delta document that says what ``run`` (its positions placed by ``_placed``) changes in ``old``'s base:
    the rows beyond the base's (the old delta's, then the run's new ones) and the positions of its list whose row
    differs from the base's list (position ``i`` of the base's list is row ``i``). None when a delta does not fit
    (no base with a generation, a run with no list, stale rows to replace, a base due to be written again, or
    beyond ``DELTA_FRACTION`` of the base): then a new base is written."""
    if run.elements is None or not old.generation or stale or not old.base_rows:
        return None
    if _now() - old.written_at > BASE_REFRESH_S:
        return None  # written again, before the lifecycle expires it
    limit = max(DELTA_MIN, old.base_rows // DELTA_FRACTION)
    b = old.base_rows
    extra = len(old) - b
    if extra + len(fresh) > limit:
        return None
    rows = list(placed)  # its new rows (-2, ``fresh``) numbered after the pack's
    for n, i in enumerate(fresh):
        rows[i] = len(old) + n
    elements = run.elements
    base_list = old.base_elements if old.base_elements is not None else old.elements
    same = min(len(base_list), len(elements))
    own = old.source_of
    # A position at the base's own row holds the base's element (the row's key is made of it: see _same_list);
    # its expected row is -1 where the base's row has no output. The positions that differ: a C-speed pass.
    expected: Sequence[int] = range(same) if -1 not in own[:same] else [i if own[i] >= 0 else -1 for i in range(same)]
    at = list(compress(range(same), map(operator.ne, rows, expected)))
    at.extend(range(same, len(elements)))
    if extra + len(fresh) + len(at) > limit:
        return None
    new_sources = [run.sources[i] or "" for i in fresh]
    table, where = _sources_with(old.sources, new_sources)
    outputs = old.outputs[b:] + [run.outputs[i] for i in fresh]
    return {
        "v": PACK_FORMAT,
        "base": old.generation,
        "sources": table,
        "keys": old.keys[b * _KEY_LEN :] + "".join(str(run.keys[i]) for i in fresh),
        "from": old.source_of[b:] + [where[name] for name in new_sources],
        "parked": _holds_marker(outputs),
        "outputs": outputs,
        "length": len(elements),
        "at": at,
        "list": [elements[i] for i in at],
        "rows": [rows[i] for i in at],
    }


def write_pack(
    store: ObjectStore,
    pack: str,
    rows: Mapping[str, Row] | PackRun,
    *,
    source: str,
    stage: str,
    known: Pack | None,
    stale: Collection[str] = (),
) -> bool:
    """Merge ``rows`` (item key -> row, or a ``PackRun``) into the pack and write it; ``known``: the pack as this
    process read it (None: not read; then it is read and merged). Nothing is written when every row is in it
    already (for the same list). A run that changes a few rows of a large pack writes its delta object only
    (``_delta``: its size follows the change, not the list); otherwise a new base, after which the old delta no
    longer applies (it names the old base): it is left (the orchestrator's role may not delete under ``cache/``)
    and the next delta replaces it. Conditional (``if_match`` the etag read, create-only
    when there was none): a concurrent writer makes it read the pack again and merge once more, so that no
    writer's rows are lost. ``stale``: keys whose row in the pack is to be replaced (``_merged``). False if
    it gave up (then those rows run again next time: a miss, never a failure). A delta written for a base that
    a concurrent writer replaced meanwhile no longer applies: its rows run again next time, as above."""
    run = rows if isinstance(rows, PackRun) else PackRun.of_rows(rows)
    if known is None:  # not read: created, or (if there is one) read and merged
        run = replace(run, rows=None)
    base = known if known is not None else Pack()
    for _ in range(PACK_WRITE_ATTEMPTS):
        placed, fresh = _placed(base, run, stale)
        if not fresh and _same_list(base, run, placed):
            return True  # every row there already, for the same list
        try:
            delta = _delta(base, run, placed, fresh, stale)
            if delta is not None:
                body = _PACK_ENCODER.tagged({"stage": stage, "source": source, **delta})
                _put(store, delta_object(pack), body, base.delta_etag)
                return True
            doc = _merged(base, run, placed, fresh)
            body = _PACK_ENCODER.tagged({"stage": stage, "source": source, **doc})
            _put(store, pack_object(pack), body, base.etag)
        except (ConflictError, NotFoundError):  # written or removed since it was read: merge with what is there
            run = run.keyed(base)
            base = read_pack(store, pack)
            continue
        return True
    log.warning("result cache: the pack of %s kept changing; %d rows not written", stage, len(run.keys))
    return False


def _put(store: ObjectStore, key: str, body: bytes, etag: str | None) -> None:
    if etag is None:
        store.put(key, body, if_none_match=True, content_type="application/json")
    else:
        store.put(key, body, if_match=etag, content_type="application/json")


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
    """Under ``cache/``: the cached results (``entries``: one per single-task entry, one per row of a pack),
    the packs, and their bytes."""
    entries = packs = 0
    size = 0
    for key in store.list(CACHE_PREFIX):
        with contextlib.suppress(FaveError):  # deleted meanwhile
            data = store.get(key).data
            size += len(data)
            if key.startswith(PACK_PREFIX):
                packs += 1
                entries += len(read_pack(store, key[len(PACK_PREFIX) : -len(".json")]).rows)  # with its delta
            elif not key.startswith(DELTA_PREFIX):  # a delta's rows are its pack's (a stale one's: none)
                entries += 1
    return {"entries": entries, "packs": packs, "bytes": size}


def clear(store: ObjectStore) -> int:
    """Delete every entry and pack; returns how many cached results went (``stats``' entries)."""
    count = stats(store)["entries"]
    for key in list(store.list(CACHE_PREFIX)):
        store.delete(key)
    return count
