"""Load and commit request state in the object store. state.json is the commit point; nothing else is.

Commit protocol (one *step* = all events applied since the last commit):
1. write each dirty task shard as a **new** object, ``tasks/{stage}/{shard}.{token}.json`` (If-None-Match);
2. write state.json with If-Match, naming the token of every stage's committed shards: the commit point;
3. delete the shard objects that the commit superseded (best effort: an orphan is never read).
Commands are performed only after the commit, so no invocation is ever made for a decision that was not
persisted. Shards written by a step that did not commit (the process died between 1 and 2, or another writer
committed first) are invisible: readers follow state.json's tokens, so a reader never sees half a step and
two writers cannot mix their shards. A ``ConflictError`` on state.json means another writer (``fave
cancel``, a concurrent orchestrator) got there first: the caller reloads and re-applies its events, which
the engine treats idempotently.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from fave_shared import refs
from fave_shared.errors import ConflictError, FaveError, NotFoundError, TerminalError, ValidationError
from fave_shared.store import ObjectStore
from immutables import Map

from fave.core.budget import Ledger
from fave.core.dag import DagError, ForEach, Pipeline
from fave.core.engine import Engine
from fave.core.model import (
    Attempt,
    CachedItems,
    Failure,
    FanoutList,
    Fingerprint,
    MissingData,
    ReadySet,
    RequestState,
    RequestStatus,
    StageState,
    StageStatus,
    Task,
    TaskStatus,
    negative_at,
)
from fave.core.operations import Budget
from fave.ids import validate_request_id
from fave.jsonbytes import Encoder
from fave.keys import (
    INDEX_PREFIX,
    final_key,
    index_key,
    input_key,
    items_key,
    parse_shard_key,
    request_prefix,
    shard_key,
    shard_object_key,
    state_key,
    tasks_prefix,
)
from fave.statefile import (
    SCHEMA_VERSION,
    SEGMENT_HEAD,
    DocError,
    FailureDoc,
    FingerprintDoc,
    PipelineRefDoc,
    ReadyDoc,
    ShardDoc,
    StageDoc,
    StateDoc,
    TaskDoc,
    parse_shards,
)

INPUT_INLINE_LIMIT = 4096
"""Request inputs over this many bytes of JSON are stored once in ``metadata/input.json``: a 1 MB input on a
50-item fan-out would otherwise be copied into every task's payload (and every state.json rewrite)."""


SHARD_SIZE = 128
"""Tasks of a fanned-out stage are persisted in objects of this many items: a completion rewrites a bounded
object, never one that grows with the fan-out."""

LIST_BLOCK = 2048
"""Items per object of a fan-out list made now (``Engine(list_block=...)``; recorded per list in state.json, so
lists written with another size, 128 before schema 3, still read): a 10,000-item list is 5 objects, not 79. A
decision that needs one item (a per-item downstream task's input, a retry's) reads one block: bounded."""


def list_block(doc: StateDoc, for_each: str) -> int:
    """Items per block object of the fan-out list ``for_each`` of the request ``doc`` describes."""
    return doc.fanout_blocks.get(for_each, SHARD_SIZE)


def read_list_block(store: ObjectStore, doc: StateDoc, for_each: str, block: int) -> list[Any]:
    """Block ``block`` of the fan-out list ``for_each`` of the request ``doc`` describes: its block object, or,
    for a list kept only in its source output (``StateDoc.fanout_sources``), that output's list. ``NotFoundError``
    if the object is gone; ``ValueError`` if it does not hold the list."""
    return _list_block(store, doc.request_id, for_each, block, doc.fanout_sources.get(for_each))


def _list_block(store: ObjectStore, request_id: str, for_each: str, block: int, source: str | None) -> list[Any]:
    """``read_list_block``, for the list's ``source`` (``FanoutList.source``; None: it has block objects)."""
    if source is None:
        chunk = json.loads(store.get(items_key(request_id, for_each, block)).data)
        if not isinstance(chunk, list):
            raise ValueError(f"fan-out list {for_each} block {block} is not a list")
        return chunk
    if block != 0:
        raise ValueError(f"fan-out list {for_each} is one block: it has no block {block}")
    if not source.startswith(request_prefix(request_id)):  # state.json names only the request's own objects
        raise ValueError(f"fan-out list {for_each}: its source {source!r} is not an object of this request")
    output = json.loads(store.get(source).data)  # as a block is read: the standard library (no int is rounded)
    try:
        return ForEach.parse(for_each).extract(output)
    except DagError as exc:
        raise ValueError(f"fan-out list {for_each}: {exc}") from None


SEGMENT_SHARDS = 16
"""Changed shards of a stage one commit writes in one object (a segment, ``statefile.SegmentDoc``): at least this
many (while there are), more while the segment stays within ``SEGMENT_BYTES``. A step that changes many shards (a
fan-out dispatched, a batch of completions, a re-run's cache hits) writes a few objects instead of one per shard:
on the local store each object is a file creation (and later a delete), on S3 a billed PUT. Bounded, so a
decision that needs one shard reads at most about 16 shards full of tasks (16 x 128)."""
SEGMENT_BYTES = 320 * 1024
"""What 16 shards full of tasks weigh, about: a segment of smaller shards (a re-run's shards hold a compact
section of its cached items and few tasks, ~3.5 KB each) takes more of them, up to this size: a 10,000-item re-run
writes one object per step instead of five."""


class CorruptStateError(TerminalError):
    """A request's state.json (or one of its task shards) cannot be read: not JSON, or not fave's schema."""


def parse_state(request_id: str, data: bytes) -> StateDoc:
    """state.json's document; ``CorruptStateError`` naming the request if it is unreadable or foreign."""
    try:
        doc = StateDoc.from_json(data)
    except DocError as exc:
        raise CorruptStateError(f"request {request_id}: state.json is unreadable ({exc})") from None
    if doc.schema_version > SCHEMA_VERSION:
        raise CorruptStateError(
            f"request {request_id}: state.json has schema version {doc.schema_version}; this fave reads "
            f"version {SCHEMA_VERSION} (upgrade fave)"
        )
    if doc.request_id != request_id:
        raise CorruptStateError(f"request {request_id}: state.json belongs to request {doc.request_id!r}")
    return doc


class _SupersededError(Exception):
    """A shard named by the state.json just read is gone: a newer commit replaced it."""


def committed_shards(store: ObjectStore, doc: StateDoc, stage: str) -> Iterator[tuple[int, str, ShardDoc]]:
    """``(shard, token, document)`` of each committed task shard of ``stage``, as of the state.json ``doc``.

    Raises ``_SupersededError`` when a newer commit has replaced (and deleted) one: read state.json again
    (``_consistent`` does). A segment (several shards in one object) is read once."""
    sdoc = doc.stages.get(stage)
    if sdoc is None:
        return
    objects: dict[str, Mapping[int, ShardDoc]] = {}
    for shard in range(sdoc.shards):
        token = sdoc.shard_tokens[shard] if shard < len(sdoc.shard_tokens) else ""
        if not token and sdoc.shard_tokens:
            continue  # never written: every task of the shard is still PENDING
        try:
            shard_doc = read_shard_object(store, doc.request_id, stage, shard, token, objects=objects)
        except NotFoundError:
            if token:
                raise _SupersededError from None
            continue  # a state file from before tokens, whose shard was never written
        yield shard, token, shard_doc


_READ_ATTEMPTS = 20
_T = TypeVar("_T")


def _consistent(read: Callable[[], _T], what: str) -> _T:
    """``read()`` again while a concurrent commit supersedes what it was reading."""
    for _ in range(_READ_ATTEMPTS):
        try:
            return read()
        except _SupersededError:
            continue
    raise ConflictError(f"{what}: the state kept changing while reading it")


def read_stage_tasks(store: ObjectStore, request_id: str, stage: str) -> dict[int, TaskDoc]:
    """Every committed task of a stage by item (a single-task stage's task is item 0), for tools and tests."""

    def read() -> dict[int, TaskDoc]:
        doc = parse_state(request_id, store.get(state_key(request_id)).data)
        task = doc.stages[stage].task
        if task is not None:
            return {0: task}
        tasks: dict[int, TaskDoc] = {}
        for _, _, shard in committed_shards(store, doc, stage):
            tasks.update(shard.tasks)
        return dict(sorted(tasks.items()))

    return _consistent(read, f"request {request_id}, stage {stage!r}")


_TOKEN_HEX = 8
_JSON = "application/json"
"""Hex digits of randomness after the version in a shard token (``{version:06d}{hex}``)."""


_ENCODER = Encoder()  # orjson's bytes where they mean the same (fave.jsonbytes)
_STDLIB = json.JSONEncoder(separators=(",", ":"))  # a shard's tasks, written a field at a time (shard_json)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value)


def task_to_json(task: Task) -> dict[str, Any]:
    """Compact encoding: fields at their default are left out (shards are rewritten often). Written out field
    by field: it runs twice per task of a fan-out. The status is a ``StrEnum``, which JSON encodes as its value."""
    out: dict[str, Any] = {"status": task.status}
    if task.attempt:
        out["attempt"] = task.attempt
    if task.budget_base:
        out["budget_base"] = task.budget_base
    if task.dispatched_at is not None:
        out["dispatched_at"] = task.dispatched_at
    if task.first_dispatched_at is not None:
        out["first_dispatched_at"] = task.first_dispatched_at
    if task.deadline is not None:
        out["deadline"] = task.deadline
    if task.retry_at is not None:
        out["retry_at"] = task.retry_at
    if task.finished_at is not None:
        out["finished_at"] = task.finished_at
    if task.error_type is not None:
        out["error_type"] = task.error_type
    if task.error is not None:
        out["error"] = task.error
    if task.output is not None:
        out["output"] = task.output
    if task.history:
        out["history"] = [
            {
                "n": a.attempt,
                "started_at": a.started_at,
                "ended_at": a.ended_at,
                "error_type": a.error_type,
                "error": a.error,
            }
            for a in task.history
        ]
    if task.traceback is not None:
        out["traceback"] = task.traceback
    if task.stale_attempts:
        out["stale_attempts"] = task.stale_attempts
    if task.cached:
        out["cached"] = True
    if task.cached_from is not None:
        out["cached_from"] = task.cached_from
    if task.throttled:
        out["throttled"] = task.throttled
    return out


_ascii = json.encoder.encode_basestring_ascii  # what _ENCODER writes for a string (keys included)
_int_text = int.__repr__
_float_text = float.__repr__


def shard_json(
    stage: str,
    shard: int,
    version: int,
    tasks: Iterable[tuple[int, Task]],
    memo: dict[int, tuple[Task, str]] | None = None,
    *,
    cached: str = "",
) -> bytes:
    """A task shard's bytes: exactly the standard library's compact encoding of ``{"stage", "shard", "version",
    "tasks": {item: task_to_json(task)}}``, written a field at a time instead. The tasks of one step share their
    timestamps (dispatched, deadline, finished: the step's ``now``), and writing a float is most of what encoding a
    task costs, so each distinct float is written once per shard. A shard of 128 tasks is rewritten at least twice
    per fan-out task.
    ``memo``: item -> (the task, its member) as last written: a task that is the very same (immutable) object is
    not encoded again (a re-run taking 9,900 of 10,000 tasks from the cache rewrites every shard for the 100
    others). ``cached``: the shard's cached section (``cached_section``), written after its tasks."""
    floats: dict[float, str] = {}
    # A decision gives the tasks it starts together one (immutable) RUNNING task object: its text is written once.
    texts: dict[int, str] = {}

    def text(task: Task) -> str:
        known = texts.get(id(task))
        if known is None:
            known = texts[id(task)] = _object_json(task_to_json(task), floats, True)
        return known

    if memo is None:
        fields = ",".join([f'"{item}":{text(task)}' for item, task in tasks])
    else:
        members = []
        for item, task in tasks:
            known = memo.get(item)
            if known is None or known[0] is not task:
                known = memo[item] = (task, f'"{item}":{text(task)}')
            members.append(known[1])
        fields = ",".join(members)
    head = f'{{"stage":{_ascii(stage)},"shard":{_int_text(shard)},"version":{_int_text(version)}'
    return f'{head},"tasks":{{{fields}}}{cached}}}'.encode()


def _by_shard(tasks: Map[int, Task]) -> dict[int, list[tuple[int, Task]]]:
    """The tasks by shard, each shard's in item order."""
    shards: dict[int, list[tuple[int, Task]]] = {}
    for item in sorted(tasks.keys()):
        shards.setdefault(item // SHARD_SIZE, []).append((item, tasks[item]))
    return shards


def cached_section(bulk: CachedItems, lo: int, hi: int) -> str:
    """``,"cached":{...}`` (``statefile.CachedDoc``) for the items from ``lo`` to ``hi`` (excluded) that ``bulk``
    holds; empty when it holds none of them. One encoder call for the whole section."""
    held = bulk.source_of[lo:hi]
    size = len(held)
    if held.count(-1) == size:
        return ""
    outputs = bulk.outputs[lo:hi]
    items: list[int] = []
    kept_outputs: list[Any] = []
    kept: list[int] = []
    start = 0
    # The runs between the items it does not hold, copied a slice at a time (a shard's 128 items, for each of a
    # large stage's shards; a re-run's shard lacks one or two): no object made per item.
    for gap in [*negative_at(held), size]:
        if gap > start:
            items.extend(range(lo + start, lo + gap))
            kept_outputs.extend(outputs[start:gap])
            kept.extend(held[start:gap])
        start = gap + 1
    doc = {  # lists, not tuples: orjson's bytes of a value with a null are kept only if it reads back equal
        "at": bulk.at,
        "sources": list(bulk.sources),
        "items": items,
        "outputs": kept_outputs,
        "source_of": kept,
    }
    return ',"cached":' + _ENCODER.text(doc)


def _object_json(value: dict[str, Any], floats: dict[float, str], outer: bool) -> str:
    """``_STDLIB.encode(value)`` for a dict: its scalars written directly (floats through ``floats``), and in
    the ``outer`` one, a small dict (an output) likewise; anything else through the encoder."""
    parts = []
    for key, field_value in value.items():
        if type(key) is not str:
            return _STDLIB.encode(value)  # the encoder converts other keys
        kind = type(field_value)
        if kind is float:
            text = floats.get(field_value) if field_value else None  # 0.0 == -0.0, written apart
            if text is None:
                text = _float_text(field_value) if math.isfinite(field_value) else _STDLIB.encode(field_value)
                floats[field_value] = text
        elif kind is int:
            text = _int_text(field_value)
        elif kind is bool:  # a cached task's ``cached``: 9,900 rows of a re-run, not worth an encoder call each
            text = "true" if field_value else "false"
        elif isinstance(field_value, str):  # the status is a StrEnum: written as its value
            text = _ascii(field_value)
        elif outer and kind is dict and len(field_value) <= 8:
            text = _object_json(field_value, floats, False)
        else:
            text = _STDLIB.encode(field_value)
        parts.append(f"{_ascii(key)}:{text}")
    return "{" + ",".join(parts) + "}"


def task_from_doc(doc: TaskDoc) -> Task:
    return Task(
        status=TaskStatus(doc.status),
        attempt=doc.attempt,
        budget_base=doc.budget_base,
        dispatched_at=doc.dispatched_at,
        first_dispatched_at=doc.first_dispatched_at,
        deadline=doc.deadline,
        retry_at=doc.retry_at,
        finished_at=doc.finished_at,
        error_type=doc.error_type,
        error=doc.error,
        output=doc.output,
        history=tuple(Attempt(a.n, a.started_at, a.ended_at, a.error_type, a.error) for a in doc.history),
        traceback=doc.traceback,
        stale_attempts=doc.stale_attempts,
        cached=doc.cached,
        cached_from=doc.cached_from,
        throttled=doc.throttled,
    )


@dataclass
class Handle:
    """What this process last read or wrote: state.json's etag (for If-Match) and the committed shard tokens."""

    head_etag: str | None = None
    shard_tokens: dict[tuple[str, int], str] = field(default_factory=dict)
    fanout: set[str] = field(default_factory=set)
    """The fan-out lists whose item blocks are in the store."""
    members: dict[str, dict[int, tuple[Task, str]]] = field(default_factory=dict)
    """stage -> what ``shard_json`` last wrote for each task (its ``memo``)."""
    sections: dict[tuple[str, int], tuple[CachedItems, str]] = field(default_factory=dict)
    """(stage, shard) -> the cached section last written for it, and the record it was made of."""


class Persistence:
    """Reads and writes the state of requests of one pipeline."""

    def __init__(self, store: ObjectStore, pipeline: Pipeline, engine: Engine) -> None:
        if SHARD_SIZE % engine.change_block:
            raise ValueError(f"the engine's change_block ({engine.change_block}) must divide SHARD_SIZE ({SHARD_SIZE})")
        self.store = store
        self.pipeline = pipeline
        self.engine = engine
        self._handles: dict[str, Handle] = {}

    # ---- reading -------------------------------------------------------------------------------------

    def read_doc(self, request_id: str) -> tuple[StateDoc, str]:
        try:
            blob = self.store.get(state_key(request_id))
        except NotFoundError:
            raise NotFoundError(f"no request {request_id} in {self.store.uri}") from None
        return parse_state(request_id, blob.data), blob.etag

    def load(self, request_id: str, now: float, *, full: bool = False) -> RequestState:
        """The request's state: its head (state.json) and, with ``full`` (or for a schema-1 file), every task
        and fan-out item. Otherwise the fanned-out stages' tasks and lists are loaded a block at a time as
        decisions ask for them (``load_more``): applying a completion reads its shard, not every shard."""
        return _consistent(lambda: self._load_once(request_id, now, full), f"request {request_id}")

    def _load_once(self, request_id: str, now: float, full: bool) -> RequestState:
        doc, etag = self.read_doc(request_id)
        handle = Handle(head_etag=etag, fanout=set(doc.fanout))
        if doc.pipeline.digest != self.pipeline.digest and doc.pipeline.shape != self.pipeline.shape():
            raise ValidationError(
                f"request {request_id} was made with a pipeline of a different shape "
                f"({doc.pipeline.path or doc.pipeline.name}); stages, needs and for_each must match to resume"
            )
        legacy = doc.schema_version < 2 or self.engine.change_block != SHARD_SIZE
        full = full or legacy
        stages: dict[str, StageState] = {}
        tasks: dict[str, Map[int, Task]] = {}
        ready: dict[str, ReadySet] = {}
        unsent: dict[str, ReadySet] = {}
        partial: dict[str, Map[int, None]] = {}
        for name in self.pipeline.order:
            sdoc = doc.stages.get(name, StageDoc())
            stages[name] = StageState(
                status=StageStatus(sdoc.status),
                total=sdoc.total,
                pending=sdoc.pending,
                running=sdoc.running,
                succeeded=sdoc.succeeded,
                failed=sdoc.failed,
                skipped=sdoc.skipped,
                cancelled=sdoc.cancelled,
                started_at=sdoc.started_at,
                finished_at=sdoc.finished_at,
                deadline_floor=sdoc.deadline_floor,
                retry_blocks=Map(sdoc.retry_blocks),
                fingerprint=_fingerprint(sdoc.fingerprint),
                throttled=sdoc.throttled,
                throttle_cap=sdoc.throttle_cap,
                throttle_at=sdoc.throttle_at,
            )
            for shard, token in enumerate(sdoc.shard_tokens):
                if token:
                    handle.shard_tokens[(name, shard)] = token
            if sdoc.ready is not None:
                ready[name] = _ready_set(sdoc.ready)
            if sdoc.unsent is not None:
                unsent[name] = _ready_set(sdoc.unsent)
            if sdoc.task is not None:
                tasks[name] = Map({0: task_from_doc(sdoc.task)})
            elif self.pipeline.stages[name].fanned_out and sdoc.total:
                if full:
                    items: dict[int, Task] = {}
                    for _, _, sh in committed_shards(self.store, doc, name):
                        items.update({i: task_from_doc(t) for i, t in sh.tasks.items()})
                    for i in range(sdoc.total):
                        items.setdefault(i, Task())
                    tasks[name] = Map(items)
                else:
                    tasks[name] = Map()
                    partial[name] = Map()
        failure = None
        if doc.failure is not None:
            f = doc.failure
            failure = Failure(f.stage, f.item, f.error_type, f.message, f.attempts, f.key)
        input_ref = doc.input.get(refs.REF) if refs.is_ref(doc.input) else None
        state = RequestState(
            request_id=doc.request_id,
            input=refs.resolve(self.store, doc.input) if input_ref else doc.input,
            input_ref=input_ref,
            pipeline_digest=doc.pipeline.digest,
            created_at=doc.created_at,
            status=RequestStatus(doc.status),
            updated_at=doc.updated_at,
            started_at=doc.started_at,
            finished_at=doc.finished_at,
            failure=failure,
            cancel_reason=doc.cancel_reason,
            version=doc.version,
            resumes=doc.resumes,
            stages=Map(stages),
            tasks=Map(tasks),
            ready=Map(ready),
            unsent=Map(unsent),
            partial=Map(partial),
            abandoned=doc.abandoned,
            no_cache=doc.no_cache,
            abandoned_until=doc.abandoned_until,
            selection=tuple(doc.selection),
            scope=tuple(doc.scope),
            budget=Budget.from_dict(doc.budget),
            budget_since=doc.budget_since,
            ledger=Ledger.from_json(doc.ledger),
        )
        self._handles[request_id] = handle
        if legacy:
            state = replace(state, items=self._legacy_fanout_items(state))
            handle.fanout = set()  # written in blocks by the next commit
        else:
            lists = {
                fe: FanoutList(total, list_block(doc, fe), source=doc.fanout_sources.get(fe))
                for fe, total in doc.fanout.items()
            }
            state = replace(state, items=Map(lists))
            if full:
                wanted = frozenset((fe, b) for fe, fan in lists.items() for b in range(-(-fan.total // fan.block)))
                state = self._load_items(state, wanted)
        if state.status is RequestStatus.COMPLETED:
            final_task = state.task(self.pipeline.final)
            state = replace(state, final=final_task.output if final_task else None)
        if legacy:
            return self.engine.rebuild_indexes(state, now)
        # Single-task stages are loaded whole: their running deadline and pending retry go into the indexes a
        # tick reads (without them a reloaded request never retried a failed single task, nor timed one out).
        single = {name: tasks[name] for name in tasks if not self.pipeline.stages[name].fanned_out}
        state = self.engine.index_loaded(state, single)
        return replace(state, earliest_deadline=_earliest(self.pipeline, state))

    def load_more(self, state: RequestState, missing: MissingData) -> RequestState:
        """``state`` with the task blocks and fan-out item blocks a decision asked for loaded (whole shards).

        ``ConflictError`` if a shard ``state`` names has been superseded: the state is stale, reload it."""
        handle = self._handles.get(state.request_id)
        if handle is None:
            raise ConflictError(f"request {state.request_id}: not loaded by this process")
        block = self.engine.change_block
        loaded: dict[str, dict[int, Task]] = {}
        partial = state.partial
        objects: dict[str, Mapping[int, ShardDoc]] = {}  # a segment holding several wanted shards is read once
        for stage, b in sorted(missing.tasks):
            if stage not in partial or b in partial[stage]:
                continue
            shard = b * block // SHARD_SIZE
            lo, hi = shard * SHARD_SIZE, min((shard + 1) * SHARD_SIZE, state.stages[stage].total or 0)
            token = handle.shard_tokens.get((stage, shard), "")
            found: dict[int, TaskDoc] = {}
            if token:
                try:
                    found = read_shard_object(self.store, state.request_id, stage, shard, token, objects=objects).tasks
                except NotFoundError:
                    raise ConflictError(f"request {state.request_id}: a newer commit replaced its state") from None
            tasks = loaded.setdefault(stage, {})
            for i in range(lo, hi):
                doc = found.get(i)
                tasks[i] = task_from_doc(doc) if doc is not None else Task()
            blocks = partial[stage].update({x: None for x in range(lo // block, -(-hi // block))})
            whole = len(blocks) >= -(-(state.stages[stage].total or 0) // block)
            partial = partial.delete(stage) if whole else partial.set(stage, blocks)
        state = self.engine.index_loaded(replace(state, partial=partial), loaded)
        return self._load_items(state, missing.items)

    def _load_items(self, state: RequestState, wanted: frozenset[tuple[str, int]]) -> RequestState:
        items = state.items
        for key, b in sorted(wanted):
            fanout = items.get(key)
            if fanout is None or b in fanout.blocks:
                continue
            try:
                chunk = _list_block(self.store, state.request_id, key, b, fanout.source)
            except NotFoundError:
                raise ConflictError(f"request {state.request_id}: fan-out list {key} block {b} is missing") from None
            except ValueError as exc:
                raise CorruptStateError(f"request {state.request_id}: fan-out list {key}: {exc}") from None
            if fanout.source is not None and len(chunk) != fanout.total:
                raise CorruptStateError(
                    f"request {state.request_id}: fan-out list {key} has {len(chunk)} items where {fanout.total} were"
                )
            items = items.set(key, replace(fanout, blocks=fanout.blocks.set(b, tuple(chunk))))
        return replace(state, items=items)

    def _legacy_fanout_items(self, state: RequestState) -> Map[str, FanoutList]:
        """Re-derive the fan-out lists from the source stages' outputs (a schema-1 file has no item blocks)."""
        items: dict[str, FanoutList] = {}
        for spec in self.pipeline.stages.values():
            if spec.for_each is None or str(spec.for_each) in items:
                continue
            source = state.task(spec.for_each.source)
            if source is None or source.status is not TaskStatus.SUCCEEDED:
                continue
            output = refs.resolve(self.store, source.output)
            items[str(spec.for_each)] = FanoutList.whole(tuple(spec.for_each.extract(output)), self.engine.change_block)
        return Map(items)

    # ---- writing -------------------------------------------------------------------------------------

    def create(self, state: RequestState) -> RequestState:
        """Persist a new request (fails with ``ConflictError`` if the id exists); a large input is stored
        once beside it (``input_key``)."""
        self._handles[state.request_id] = Handle()
        if state.input_ref is None and refs.json_size(dict(state.input)) > INPUT_INLINE_LIMIT:
            key = input_key(state.request_id)
            self.store.put(key, _dumps(dict(state.input)), content_type="application/json")
            state = replace(state, input_ref=key)
        committed = self.commit(state)
        self.store.put(
            index_key(state.request_id),
            _dumps({"created_at": state.created_at}),
            content_type="application/json",
        )
        return committed

    def commit(self, state: RequestState) -> RequestState:
        """Write dirty shards as new objects, then state.json (If-Match). Returns the state at its new version.

        Raises ``ConflictError`` if another writer committed first; the shards written here are then orphans
        (deleted, best effort) and the caller reloads."""
        handle = self._handles.setdefault(state.request_id, Handle())
        version = state.version + 1
        tokens = dict(handle.shard_tokens)
        written: list[str] = []
        superseded: list[str] = []
        for key, fanout in state.items.items():
            if key in handle.fanout:
                continue
            if fanout.source is not None:  # read back from its source output (one block): nothing to write
                continue
            for b, chunk in fanout.blocks.items():  # a new list is wholly in memory
                self.store.put(items_key(state.request_id, key, b), _dumps(list(chunk)), content_type=_JSON)
        replaced: set[str] = set()
        changed_by_stage = self._changed_by_stage(state)
        for stage, changed in changed_by_stage:
            # Bodies are made as the segments are written: one segment's are in memory at a time.
            for group in _segments(self._shard_bodies(state, handle, stage, changed, version)):
                shards = [shard for shard, _ in group]
                token = f"{version:06d}{secrets.token_hex(_TOKEN_HEX // 2)}"
                home = shards[0]
                key = shard_key(state.request_id, stage, home, token)
                for shard in shards:
                    old = tokens.get((stage, shard))
                    if old is not None:
                        replaced.add(shard_object_key(state.request_id, stage, shard, old))
                    tokens[(stage, shard)] = token if shard == home else f"{token}@{home}"
                segment = _segment(shards, [data for _, data in group])
                self.store.put(key, segment, if_none_match=True, content_type="application/json")
                written.append(key)
        if replaced:  # an object is garbage once no shard's entry names it (a segment may still hold some)
            stages = {stage for stage, _ in changed_by_stage}
            replaced.difference_update(
                shard_object_key(state.request_id, stage, shard, entry)
                for (stage, shard), entry in tokens.items()
                if stage in stages
            )
            superseded.extend(sorted(replaced))
        doc = self.to_doc(replace(state, version=version), tokens)
        data = _dumps(doc.to_dict())
        try:
            if handle.head_etag is None:
                etag = self.store.put(
                    state_key(state.request_id), data, if_none_match=True, content_type="application/json"
                )
            else:
                etag = self.store.put(
                    state_key(state.request_id), data, if_match=handle.head_etag, content_type="application/json"
                )
        except ConflictError:
            self._discard(written)
            raise
        handle.head_etag = etag
        handle.shard_tokens = tokens
        handle.fanout = set(state.items)
        if state.status.terminal:  # little is written after the end: not worth the memory
            handle.members.clear()
            handle.sections.clear()
        self._discard(superseded)
        return replace(state, version=version, changed=Map())

    def _changed_shards(self, state: RequestState) -> list[tuple[str, int]]:
        """The task shards holding the tasks that changed (single-task stages live in state.json itself)."""
        fanned_out = {name for name, spec in self.pipeline.stages.items() if spec.fanned_out}
        block = self.engine.change_block
        return sorted({(stage, b * block // SHARD_SIZE) for stage, b in state.changed if stage in fanned_out})

    def _shard_bodies(
        self, state: RequestState, handle: Handle, stage: str, changed: list[int], version: int
    ) -> Iterator[tuple[int, bytes]]:
        """Each changed shard of ``stage`` and its bytes at ``version`` (``shard_json``), made when asked for."""
        stage_tasks = state.tasks.get(stage) or Map()
        memo = handle.members.setdefault(stage, {})
        bulk = state.bulk_cached.get(stage)
        # A stage whose items are mostly held in bulk has few tasks: they are grouped by shard once, instead of
        # looking up every item of every shard.
        sparse = _by_shard(stage_tasks) if bulk is not None else None
        for shard in changed:
            lo, hi = shard * SHARD_SIZE, (shard + 1) * SHARD_SIZE
            in_shard: Iterable[tuple[int, Task]]
            if sparse is not None:
                in_shard = sparse.get(shard, ())
            else:
                in_shard = ((i, task) for i in range(lo, hi) if (task := stage_tasks.get(i)) is not None)
            section = ""
            if bulk is not None:  # the same record's section is encoded once, however often the shard is written
                known = handle.sections.get((stage, shard))
                if known is None or known[0] is not bulk:
                    known = handle.sections[(stage, shard)] = (bulk, cached_section(bulk, lo, hi))
                section = known[1]
            yield shard, shard_json(stage, shard, version, in_shard, memo, cached=section)

    def _changed_by_stage(self, state: RequestState) -> list[tuple[str, list[int]]]:
        """The changed shards of each stage, in shard order."""
        by_stage: dict[str, list[int]] = {}
        for stage, shard in self._changed_shards(state):
            by_stage.setdefault(stage, []).append(shard)
        return list(by_stage.items())

    def _discard(self, keys: list[str]) -> None:
        # Unreferenced shard objects are never read; deleting them only saves space, so a failure is harmless.
        for key in keys:
            with contextlib.suppress(FaveError):
                self.store.delete(key)

    def write_final(self, request_id: str, output: Any) -> None:
        """metadata/final.json = the final stage's output (references resolved). Idempotent."""
        value = refs.resolve(self.store, output)
        self.store.put(final_key(request_id), _dumps(value), content_type="application/json")

    def collect_garbage(self, request_id: str) -> list[str]:
        """Delete the task-shard objects of steps that never committed (a crash between writing shards and
        state.json, a lost race, a failed cleanup); returns their keys.

        Only objects older than the committed version are touched: a concurrent writer's step in progress
        writes version + 1, so its shards are never taken for garbage."""
        doc, _ = self.read_doc(request_id)
        committed = {
            shard_object_key(request_id, stage, shard, token)
            for stage, sdoc in doc.stages.items()
            for shard, token in enumerate(sdoc.shard_tokens)
            if token
        }
        garbage = []
        for key in self.store.list(tasks_prefix(request_id)):
            parsed = parse_shard_key(key)
            token = parsed[2] if parsed is not None else ""
            version = token[:-_TOKEN_HEX] if len(token) > _TOKEN_HEX else ""
            if key not in committed and version.isdigit() and int(version) <= doc.version:
                garbage.append(key)
        self._discard(garbage)
        return garbage

    def committed_etag(self, request_id: str) -> str | None:
        """The etag of state.json as this process last read or wrote it (None if it has not)."""
        handle = self._handles.get(request_id)
        return handle.head_etag if handle is not None else None

    def forget(self, request_id: str) -> None:
        """Drop cached etags (after a conflict, before reloading)."""
        self._handles.pop(request_id, None)

    def to_doc(self, state: RequestState, shard_tokens: dict[tuple[str, int], str]) -> StateDoc:
        stages: dict[str, StageDoc] = {}
        for name in self.pipeline.order:
            st = state.stages[name]
            spec = self.pipeline.stages[name]
            shards = ((st.total or 0) + SHARD_SIZE - 1) // SHARD_SIZE if spec.fanned_out else 0
            task = state.task(name)
            duration = None
            if st.started_at is not None and st.finished_at is not None:
                duration = round(st.finished_at - st.started_at, 6)
            stages[name] = StageDoc(
                status=st.status.value,
                fanned_out=spec.fanned_out,
                total=st.total,
                pending=st.pending,
                running=st.running,
                succeeded=st.succeeded,
                failed=st.failed,
                skipped=st.skipped,
                cancelled=st.cancelled,
                started_at=st.started_at,
                finished_at=st.finished_at,
                duration_s=duration,
                shards=shards,
                shard_tokens=[shard_tokens.get((name, shard), "") for shard in range(shards)],
                task=TaskDoc.from_dict(task_to_json(task)) if task is not None and not spec.fanned_out else None,
                ready=_ready_doc(state.ready.get(name)),
                unsent=_ready_doc(state.unsent.get(name)),
                deadline_floor=st.deadline_floor,
                retry_blocks=dict(st.retry_blocks.items()),
                fingerprint=_fingerprint_doc(st.fingerprint),
                throttled=st.throttled,
                throttle_cap=st.throttle_cap,
                throttle_at=st.throttle_at,
            )
        failure = None
        if state.failure is not None:
            f = state.failure
            failure = FailureDoc(
                stage=f.stage,
                item=f.item,
                key=f.key,
                error_type=f.error_type,
                message=f.message,
                attempts=f.attempts,
                reason=f.describe(),
            )
        return StateDoc(
            request_id=state.request_id,
            status=state.status.value,
            input={refs.REF: state.input_ref} if state.input_ref else dict(state.input),
            profile=state.profile,
            pipeline=PipelineRefDoc(
                name=self.pipeline.name,
                digest=self.pipeline.digest,
                path=str(self.pipeline.path),
                shape=self.pipeline.shape(),
            ),
            created_at=state.created_at,
            updated_at=state.updated_at,
            started_at=state.started_at,
            finished_at=state.finished_at,
            failure=failure,
            cancel_reason=state.cancel_reason,
            version=state.version,
            resumes=state.resumes,
            stages=stages,
            fanout={key: len(fanout) for key, fanout in state.items.items()},
            fanout_blocks={key: fanout.block for key, fanout in state.items.items()},
            fanout_sources={key: fanout.source for key, fanout in state.items.items() if fanout.source is not None},
            abandoned=state.abandoned,
            abandoned_until=state.abandoned_until,
            no_cache=state.no_cache,
            selection=list(state.selection),
            scope=list(state.scope),
            budget=state.budget.as_dict(),
            budget_since=state.budget_since,
            ledger=state.ledger.as_json(self.engine.rates),
        )


def _fingerprint(doc: FingerprintDoc | None) -> Fingerprint | None:
    return None if doc is None else Fingerprint(doc.function, doc.code, doc.config, doc.for_each)


def _fingerprint_doc(fp: Fingerprint | None) -> FingerprintDoc | None:
    if fp is None:
        return None
    return FingerprintDoc(function=fp.function, code=fp.code, config=dict(fp.config), for_each=fp.for_each)


def _ready_doc(ready: ReadySet | None) -> ReadyDoc | None:
    if not ready:
        return None
    return (
        ReadyDoc(lo=ready.lo, hi=ready.hi, extra=sorted(ready.extra))
        if ready.hi > ready.lo
        else ReadyDoc(extra=sorted(ready.extra))
    )


def _ready_set(doc: ReadyDoc) -> ReadySet:
    return ReadySet(doc.lo, doc.hi, Map(dict.fromkeys(doc.extra)))


def _earliest(pipeline: Pipeline, state: RequestState) -> float | None:
    """The earliest deadline of anything running: single-task stages' running tasks and fanned-out floors."""
    candidates = [d for (stage, _), d in state.running.items() if not pipeline.stages[stage].fanned_out]
    candidates += [st.deadline_floor for st in state.stages.values() if st.deadline_floor is not None]
    return min(candidates, default=None)


def read_shard_object(
    store: ObjectStore,
    request_id: str,
    stage: str,
    shard: int,
    entry: str,
    *,
    objects: dict[str, Mapping[int, ShardDoc]],
) -> ShardDoc:
    """Task shard ``shard`` from the object its state.json ``entry`` names, each object read once per ``objects``
    (a segment holds several shards). ``NotFoundError`` if the object is gone; ``CorruptStateError`` if it is
    unreadable or does not hold the shard."""
    key = shard_object_key(request_id, stage, shard, entry)
    held = objects.get(key)
    try:
        if held is None:
            held = objects[key] = parse_shards(store.get(key).data)
        shard_doc = held.get(shard)  # a segment decodes the shard asked for, now
    except DocError:
        raise CorruptStateError(f"request {request_id}: task shard {stage}/{shard} is unreadable") from None
    if shard_doc is None:
        raise CorruptStateError(f"request {request_id}: task shard {stage}/{shard} is missing from {key}")
    return shard_doc


def _segments(bodies: Iterable[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    """Consecutive changed shards with their bodies, grouped into the objects one commit writes: each takes
    ``SEGMENT_SHARDS`` shards, and more while it stays within ``SEGMENT_BYTES``. Lazy: a group is handed out as
    soon as the next body would not fit it."""
    group: list[tuple[int, bytes]] = []
    size = 0
    for shard, body in bodies:
        if len(group) >= SEGMENT_SHARDS and size + len(body) > SEGMENT_BYTES:
            yield group
            group, size = [], 0
        group.append((shard, body))
        size += len(body)
    if group:
        yield group


def _segment(shards: list[int], bodies: list[bytes]) -> bytes:
    """One shard's bytes as they are, or several shards' in a segment (``statefile.SegmentDoc``)."""
    if len(bodies) == 1:
        return bodies[0]
    members = b",".join(b'"%d":%s' % (shard, body) for shard, body in zip(shards, bodies, strict=True))
    return SEGMENT_HEAD + b"{" + members + b"}}"


def list_request_ids(store: ObjectStore) -> list[str]:
    """Every request id in the store, newest first (ids sort by creation time). A stray object in the
    index that names no request id is passed over."""
    ids = []
    for key in store.list(INDEX_PREFIX):
        name = key[len(INDEX_PREFIX) :]
        with contextlib.suppress(ValidationError):
            ids.append(validate_request_id(name))
    return sorted(ids, reverse=True)


__all__ = [
    "INPUT_INLINE_LIMIT",
    "LIST_BLOCK",
    "CorruptStateError",
    "Persistence",
    "committed_shards",
    "list_block",
    "list_request_ids",
    "parse_state",
    "read_list_block",
    "read_shard_object",
    "read_stage_tasks",
]
