"""The result cache: a ``cache: true`` stage's task whose key was seen before reuses the stored output.

The key (``cache_key``) is the sha256 of the canonical JSON (sorted keys, compact) of::

    {"v": 1, "function": LOGICAL_ID, "code": CODE_DIGEST, "input": TASK_INPUT}

``CODE_DIGEST`` is the invoker's ``code_digest(function)`` (locally: the handler, the CodeUri tree and the
layers it uses); ``TASK_INPUT`` is the task's whole input as the stage gets it (docs/stages.md): the request's
input (profile included; only the declared fields for ``cache: {request: [...]}``), the stage's config with
the profile applied, the upstream outputs (``needs``) and, for a per-item task, its item and index. Every
marker in it (a parked output, a stored request input: ``{"$ref": key}``, whose key names the request) is
replaced by ``{"$sha256": digest}`` of the canonical JSON of the value it refers to, so equal content gives
equal keys across requests. No request id, no pipeline name enter the key: requests of any pipeline running
the same function on the same input share entries.

An entry (``keys.cache_key``) is JSON ``{"v": 1, "output": ..., "source": REQUEST_ID, "stage": ..., "item":
...}``, written once with a create-only put: the first writer wins, a concurrent writer's ``ConflictError``
is ignored. An unreadable entry (missing, not JSON, not this shape) is a miss, never a failure; it is left in
place (the create-only put cannot replace it: ``fave cache clear`` removes it).
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


def key_document(function: str, code: str, task_input: Mapping[str, Any], load: Callable[[str], Any]) -> Any:
    """What the key is the digest of (see the module docs)."""
    return {"v": KEY_VERSION, "function": function, "code": code, "input": content_input(dict(task_input), load)}


def cache_key(function: str, code: str, task_input: Mapping[str, Any], load: Callable[[str], Any]) -> str:
    """The cache key of a task: sha256 hex of the canonical key document."""
    return hashlib.sha256(canonical(key_document(function, code, task_input, load))).hexdigest()


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
    """Entries and their bytes under ``cache/``."""
    entries = 0
    size = 0
    for key in store.list(CACHE_PREFIX):
        entries += 1
        with contextlib.suppress(FaveError):  # deleted meanwhile
            size += len(store.get(key).data)
    return {"entries": entries, "bytes": size}


def clear(store: ObjectStore) -> int:
    """Delete every entry; returns how many."""
    count = 0
    for key in list(store.list(CACHE_PREFIX)):
        store.delete(key)
        count += 1
    return count
