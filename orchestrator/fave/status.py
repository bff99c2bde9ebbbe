"""Read views of requests, shared by the ``fave`` command and the HTTP API (neither imports the other).

* ``status_document(store, id)``: the machine-readable status of one request (``fave status --json``,
  ``GET /requests/{id}``). Its field names are a contract: add fields freely, never rename these.
* ``list_rows(store, status=, limit=)``: one row per request, newest first (``fave list --json``): its id,
  status, creation time, pipeline name and a short summary of its input (``input_summary``), and the keys rows
  had before pipelines declared their input (``query``, ``video_uri``: null when the input has none); a request
  whose state cannot be read is a row with status ``UNREADABLE`` and its ``error``, not a failure of the list.
* ``stage_page(store, id, stage, cursor=, limit=, failed=, item=, tracebacks=)``: one page of a stage's tasks,
  one row per item (``fave status ID --stage NAME``, ``GET /requests/{id}/stages/{stage}``): status,
  attempts, duration, the error and the history of failed attempts; the traceback of the last failed
  attempt when asked (always for a single ``item``). A page reads state.json and only the task shards it
  covers (``persistence.SHARD_SIZE`` tasks each), at most ``SCAN_SHARDS`` of them when it filters, so a
  100,000-item stage is never read whole for one page. ``next_cursor`` (an item number, as a string) asks
  for the next page; None at the end. A filtered page may hold fewer rows than ``limit`` and still have a
  next one. Each row of a fanned-out stage has its item's ``key`` (``ForEach.key_of``: the declared field, or
  the element's content digest), read from the fan-out list's blocks that the page's rows fall in; ``item``
  may name an item by its key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from fave_shared.errors import ConflictError, NotFoundError, ValidationError
from fave_shared.store import ObjectStore, get_json

from fave.core.dag import KEY_DIGEST_CHARS, DagError, ForEach
from fave.core.model import RequestStatus
from fave.ids import validate_request_id
from fave.keys import final_key, state_key
from fave.persistence import (
    SHARD_SIZE,
    CorruptStateError,
    list_block,
    list_request_ids,
    parse_state,
    read_list_block,
    read_shard_object,
)
from fave.statefile import ShardDoc, StageDoc, StateDoc, TaskDoc

__all__ = [
    "MAX_PAGE_LIMIT",
    "PAGE_LIMIT",
    "SCAN_SHARDS",
    "UNREADABLE",
    "ItemKeys",
    "input_summary",
    "list_rows",
    "stage_page",
    "stage_rows",
    "status_document",
]

UNREADABLE = "UNREADABLE"
"""The status ``list_rows`` gives a request whose state.json cannot be read."""


def status_document(store: ObjectStore, request_id: str) -> dict[str, Any]:
    """The status contract of one request; ``NotFoundError`` if there is none, ``CorruptStateError`` if its
    state cannot be read."""
    validate_request_id(request_id)
    try:
        doc = parse_state(request_id, store.get(state_key(request_id)).data)
    except NotFoundError:
        raise NotFoundError(f"no request {request_id} in {store.uri}") from None
    final = None
    if doc.status == RequestStatus.COMPLETED.value:
        try:
            final, _ = get_json(store, final_key(request_id))
        except NotFoundError:
            final = None
    return {
        "request_id": doc.request_id,
        "status": doc.status,
        "stages": {
            name: {
                "status": s.status,
                "total": s.total,
                "succeeded": s.succeeded,
                "failed": s.failed,
                "skipped": s.skipped,
                "running": s.running,
                "pending": s.pending,
                "duration_s": s.duration_s,
                # A subset run (fave run --stage) does not run the stages outside its scope: they stay PENDING.
                "in_run": not doc.scope or name in doc.scope,
            }
            for name, s in doc.stages.items()
        },
        "selection": {"stages": doc.selection, "runs": doc.scope or list(doc.stages)} if doc.selection else None,
        "final": final,
        "failure": doc.failure.reason if doc.failure else None,
        "cancel_reason": doc.cancel_reason,
        # What the request spent (estimated: Lambda requests and GB-seconds, S3 requests) and its limits.
        "ledger": doc.ledger or None,
        "budget": doc.budget or None,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
        "input": doc.input,
        "pipeline": doc.pipeline.path,
        "store": store.uri,
    }


def request_states(store: ObjectStore) -> Iterator[tuple[str, StateDoc | CorruptStateError]]:
    """Every request's state.json, newest first: its document, or the error that makes it unreadable (one
    broken request must not hide the others). Requests indexed but not committed yet are left out."""
    for request_id in list_request_ids(store):
        try:
            yield request_id, parse_state(request_id, store.get(state_key(request_id)).data)
        except NotFoundError:
            continue
        except CorruptStateError as exc:
            yield request_id, exc


def list_rows(store: ObjectStore, *, status: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Rows of ``fave list``, newest first: every request, or those with ``status`` (case-insensitive,
    ``UNREADABLE`` included), at most ``limit`` (0: all)."""
    wanted = status.upper() if status else None
    rows: list[dict[str, Any]] = []
    for request_id, doc in request_states(store):
        if isinstance(doc, CorruptStateError):
            row: dict[str, Any] = {"request_id": request_id, "status": UNREADABLE, "created_at": None}
            row["error"] = str(doc)
        else:
            row = {
                "request_id": request_id,
                "status": doc.status,
                "created_at": doc.created_at,
                "pipeline": doc.pipeline.name,
                "summary": input_summary(doc.input),
                # Keys of the rows before pipelines declared their input (a contract): null unless the input has them.
                "query": doc.input.get("query"),
                "video_uri": doc.input.get("video_uri"),
            }
        if wanted and row["status"] != wanted:
            continue
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows


SUMMARY_LIMIT = 80
"""Characters of ``input_summary`` at most."""


def input_summary(request_input: Mapping[str, Any], limit: int = SUMMARY_LIMIT) -> str:
    """A request's input in one short line: ``field=value`` pairs in their order, strings as they are (a path,
    a query), other values as JSON, each value cut to 40 characters and the whole to ``limit``. A stored
    input (over 4 KB) is ``(stored input)``; the default profile is left out."""
    if set(request_input) == {"$ref"}:
        return "(stored input)"
    parts = []
    for name, value in request_input.items():
        if name == "profile" and value in (None, "default"):
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
        text = " ".join(text.split())  # one line, whatever it holds
        parts.append(f"{name}={text if len(text) <= 40 else text[:37] + '...'}")
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---- one stage, item by item --------------------------------------------------------------------------

PAGE_LIMIT = 100
"""Rows of a stage page unless asked otherwise."""
MAX_PAGE_LIMIT = 1000
SCAN_SHARDS = 8
"""Task shards (of ``SHARD_SIZE`` tasks) a page reads at most beyond those its rows need: what bounds a
filtered page (``failed``) over a large stage with few matches."""
_READ_ATTEMPTS = 20
_TERMINAL = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED")


class _Superseded(Exception):  # noqa: N818 - not an error: a newer commit replaced a shard being read
    pass


def _seconds(start: float | None, end: float | None) -> float | None:
    return round(end - start, 6) if start is not None and end is not None else None


def task_row(item: int | None, task: TaskDoc, *, traceback: bool = False, key: str | None = None) -> dict[str, Any]:
    """One row of a stage view: the item and its ``key``, the task's status, attempts, the last attempt's
    duration and error, every failed attempt (``history``), and its traceback if ``traceback``
    (``has_traceback`` says whether one exists)."""
    finished = task.status in _TERMINAL
    return {
        "item": item,
        "key": key,
        "status": task.status,
        "attempts": task.attempt,
        "duration_s": _seconds(task.dispatched_at, task.finished_at) if finished else None,
        "started_at": task.first_dispatched_at if task.first_dispatched_at is not None else task.dispatched_at,
        "dispatched_at": task.dispatched_at,
        "finished_at": task.finished_at,
        "error_type": task.error_type,
        "error": task.error,
        "history": [
            {
                "attempt": a.n,
                "started_at": a.started_at,
                "ended_at": a.ended_at,
                "duration_s": _seconds(a.started_at, a.ended_at),
                "error_type": a.error_type,
                "error": a.error,
            }
            for a in task.history
        ],
        "has_traceback": task.traceback is not None,
        "traceback": task.traceback if traceback else None,
        "cached": task.cached,
        "cached_from": task.cached_from,
    }


def _parse_cursor(cursor: str | int | None) -> int:
    if cursor is None or cursor == "":
        return 0
    text = str(cursor)
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        raise ValidationError(f"cursor: {text[:40]!r} is not a cursor of this view (use the next_cursor of a page)")
    return int(text)


def stage_of(doc: StateDoc, request_id: str, stage: str) -> StageDoc:
    """``stage``'s document in ``doc``; ``NotFoundError`` naming the request's stages if it has none."""
    sdoc = doc.stages.get(stage)
    if sdoc is None:
        shown = stage if len(stage) <= 64 else stage[:61] + "..."
        raise NotFoundError(
            f"request {request_id} has no stage {shown!r} (its stages: {', '.join(doc.stages) or 'none'})"
        )
    return sdoc


def read_shard(
    store: ObjectStore,
    doc: StateDoc,
    stage: str,
    sdoc: StageDoc,
    shard: int,
    *,
    objects: dict[str, Mapping[int, ShardDoc]] | None = None,
) -> Mapping[int, TaskDoc]:
    """The committed tasks of one shard as of ``doc`` (a shard never written: none, all PENDING). ``objects``:
    the shard objects read so far, for a caller that reads several shards of the same ``doc`` (a segment holds
    up to 16: it is then read once)."""
    token = sdoc.shard_tokens[shard] if shard < len(sdoc.shard_tokens) else ""
    if not token and sdoc.shard_tokens:
        return {}
    try:
        held = {} if objects is None else objects
        return read_shard_object(store, doc.request_id, stage, shard, token, objects=held).tasks
    except NotFoundError:
        if token:
            raise _Superseded from None
        return {}  # a state file from before tokens, whose shard was never written


def read_state(store: ObjectStore, request_id: str) -> StateDoc:
    """A request's state.json; ``NotFoundError`` naming it if there is none."""
    try:
        return parse_state(request_id, store.get(state_key(request_id)).data)
    except NotFoundError:
        raise NotFoundError(f"no request {request_id} in {store.uri}") from None


T = TypeVar("T")


def retrying(read: Callable[[], T]) -> T:
    """``read()`` again while a commit replaces a task shard under it (``read_shard`` raises for that):
    ``ConflictError`` if the state keeps changing."""
    for _ in range(_READ_ATTEMPTS):
        try:
            return read()
        except _Superseded:
            continue  # a commit replaced a shard under us: read the newer state
    raise ConflictError("the request's state kept changing while reading it")


_DIGEST_KEY = re.compile(f"[0-9a-f]{{{KEY_DIGEST_CHARS}}}")


class ItemKeys:
    """The keys of a fanned-out stage's items, read from its fan-out list a block (``persistence.list_block``
    items) at a time and kept per block: a page reads the blocks its rows fall in, no more. A key that cannot be derived
    (a list not made yet, a missing block, a state file from another pipeline) is None: the index still
    names the item."""

    def __init__(self, store: ObjectStore, doc: StateDoc, stage: str) -> None:
        self.store = store
        self.doc = doc
        shape = doc.pipeline.shape.get(stage) or {}
        text, key = shape.get("for_each"), shape.get("key")
        try:
            self.for_each = (
                ForEach.parse(text, key if isinstance(key, str) else None) if isinstance(text, str) else None
            )
        except DagError:
            self.for_each = None
        self.total = doc.fanout.get(str(self.for_each)) if self.for_each is not None else None
        self.block = list_block(doc, str(self.for_each))
        self._blocks: dict[int, list[Any] | None] = {}

    def _block(self, block: int) -> list[Any] | None:
        if block not in self._blocks:
            assert self.for_each is not None
            try:
                self._blocks[block] = read_list_block(self.store, self.doc, str(self.for_each), block)
            except (NotFoundError, ValueError):
                self._blocks[block] = None
        return self._blocks[block]

    def key(self, item: int) -> str | None:
        """Item ``item``'s key, or None."""
        if self.for_each is None or self.total is None or not 0 <= item < self.total:
            return None
        chunk = self._block(item // self.block)
        offset = item % self.block
        if chunk is None or offset >= len(chunk):
            return None
        try:
            return self.for_each.key_of(chunk[offset], item)
        except ValueError:
            return None

    def find(self, key: str) -> int | None:
        """The first item whose key is ``key`` (equal elements share a digest key), reading blocks in order
        until it is found; None if none has it."""
        if self.for_each is None or self.total is None:
            return None
        if self.for_each.key is None and not _DIGEST_KEY.fullmatch(key):
            return None  # not a content digest: no need to read the list (``--item 140`` is an index)
        for block in range(-(-self.total // self.block)):
            chunk = self._block(block)
            for offset, element in enumerate(chunk or ()):
                item = block * self.block + offset
                try:
                    if self.for_each.key_of(element, item) == key:
                        return item
                except ValueError:
                    continue
        return None


def _page_once(
    store: ObjectStore,
    request_id: str,
    stage: str,
    *,
    first: int,
    limit: int,
    keep: Callable[[TaskDoc], bool],
    traceback: bool,
) -> tuple[StageDoc, list[dict[str, Any]], int | None]:
    doc = read_state(store, request_id)
    sdoc = stage_of(doc, request_id, stage)
    if not sdoc.fanned_out:
        task = sdoc.task or TaskDoc()
        return sdoc, [task_row(None, task, traceback=traceback)] if first == 0 and keep(task) else [], None
    total = sdoc.total or 0
    budget = SCAN_SHARDS + -(-limit // SHARD_SIZE)
    keys = ItemKeys(store, doc, stage)
    rows: list[dict[str, Any]] = []
    item = first
    objects: dict[str, Mapping[int, ShardDoc]] = {}
    while item < total and len(rows) < limit and budget > 0:
        shard = item // SHARD_SIZE
        tasks = read_shard(store, doc, stage, sdoc, shard, objects=objects)
        budget -= 1
        end = min((shard + 1) * SHARD_SIZE, total)
        while item < end and len(rows) < limit:
            task = tasks.get(item) or TaskDoc()
            if keep(task):
                rows.append(task_row(item, task, traceback=traceback, key=keys.key(item)))
            item += 1
    return sdoc, rows, (item if item < total else None)


def stage_page(
    store: ObjectStore,
    request_id: str,
    stage: str,
    *,
    cursor: str | int | None = None,
    limit: int = PAGE_LIMIT,
    failed: bool = False,
    status: str | None = None,
    item: int | str | None = None,
    tracebacks: bool = False,
) -> dict[str, Any]:
    """One page of ``stage``'s tasks (see the module docs): ``{"request_id", "stage", "status", "fanned_out",
    "total", "succeeded", "failed", "skipped", "running", "pending", "cancelled", "duration_s", "items",
    "next_cursor", "limit"}``. ``status``: only items whose task has it (``failed``: FAILED); a filtered page reads
    at most ``SCAN_SHARDS`` shards beyond its rows, so it may be short and says where to go on. ``item``: that item
    alone, with its traceback (text: an item key, or else an index, ``item_index``). ``NotFoundError`` for an
    unknown request, stage or item, ``ValidationError`` for a bad cursor, limit or item."""
    validate_request_id(request_id)
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValidationError(f"limit: must be from 1 to {MAX_PAGE_LIMIT}, got {limit}")
    first = _parse_cursor(cursor)
    if isinstance(item, str):
        item = item_index(store, request_id, stage, item)
    if item is not None:
        if item < 0:
            raise ValidationError(f"item: must be >= 0, got {item}")
        first, limit, tracebacks = item, 1, True

    wanted = "FAILED" if failed else status

    def keep(task: TaskDoc) -> bool:
        return wanted is None or task.status == wanted

    try:
        sdoc, rows, next_item = retrying(
            lambda: _page_once(store, request_id, stage, first=first, limit=limit, keep=keep, traceback=tracebacks)
        )
    except ConflictError:
        raise ConflictError(
            f"request {request_id}, stage {stage!r}: the state kept changing while reading it"
        ) from None
    if item is not None:
        if (sdoc.fanned_out and item >= (sdoc.total or 0)) or (not sdoc.fanned_out and item != 0):
            raise NotFoundError(f"request {request_id}, stage {stage!r}: no item {item} (items: {sdoc.total or 0})")
        next_item = None
    return {
        "request_id": request_id,
        "stage": stage,
        "status": sdoc.status,
        "fanned_out": sdoc.fanned_out,
        "total": sdoc.total,
        "succeeded": sdoc.succeeded,
        "failed": sdoc.failed,
        "skipped": sdoc.skipped,
        "running": sdoc.running,
        "pending": sdoc.pending,
        "cancelled": sdoc.cancelled,
        "duration_s": sdoc.duration_s,
        "items": rows,
        "next_cursor": str(next_item) if next_item is not None else None,
        "limit": limit,
    }


def item_index(store: ObjectStore, request_id: str, stage: str, text: str) -> int:
    """The item ``text`` names (``fave status --stage S --item K``): the first whose key it is, else the item
    of that index (a key wins: a pipeline whose keys are numbers names its items by them). ``NotFoundError``
    when it is neither."""
    doc = read_state(store, request_id)
    sdoc = stage_of(doc, request_id, stage)
    if sdoc.fanned_out:
        found = ItemKeys(store, doc, stage).find(text)
        if found is not None:
            return found
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return int(text)
    shown = text if len(text) <= 64 else text[:61] + "..."
    raise NotFoundError(f"request {request_id}, stage {stage!r}: no item with key {shown!r} (nor with that index)")


def stage_rows(
    store: ObjectStore, request_id: str, stage: str, *, failed: bool = False, tracebacks: bool = False
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every page of a stage, first to last, as ``(page, its rows)``: ``fave status --stage`` prints the rows
    of a 100,000-item stage as they are read, never holding more than a page."""
    cursor: str | None = None
    while True:
        page = stage_page(
            store, request_id, stage, cursor=cursor, limit=MAX_PAGE_LIMIT, failed=failed, tracebacks=tracebacks
        )
        yield page, page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return
