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
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from fave_shared import refs
from fave_shared.errors import ConflictError, FaveError, NotFoundError, ValidationError
from fave_shared.store import ObjectStore
from immutables import Map

from .engine import Engine
from .ids import validate_request_id
from .model import (
    SHARD_SIZE,
    Failure,
    RequestState,
    RequestStatus,
    StageState,
    StageStatus,
    Task,
    TaskStatus,
)
from .pipeline import Pipeline
from .statefile import FailureDoc, PipelineRefDoc, ShardDoc, StageDoc, StateDoc, TaskDoc


def request_prefix(request_id: str) -> str:
    return f"requests/{validate_request_id(request_id)}/"


def state_key(request_id: str) -> str:
    return request_prefix(request_id) + "metadata/state.json"


def final_key(request_id: str) -> str:
    return request_prefix(request_id) + "metadata/final.json"


def shard_key(request_id: str, stage: str, shard: int, token: str) -> str:
    """The object holding one version of a task shard (``token`` from state.json's ``shard_tokens``)."""
    suffix = f".{token}" if token else ""  # "": the fixed key of state files written before tokens
    return request_prefix(request_id) + f"metadata/tasks/{stage}/{shard:05d}{suffix}.json"


class _SupersededError(Exception):
    """A shard named by the state.json just read is gone: a newer commit replaced it."""


def committed_shards(store: ObjectStore, doc: StateDoc, stage: str) -> Iterator[tuple[int, str, ShardDoc]]:
    """``(shard, token, document)`` of each committed task shard of ``stage``, as of the state.json ``doc``.

    Raises ``_SupersededError`` when a newer commit has replaced (and deleted) one: read state.json again
    (``_consistent`` does)."""
    sdoc = doc.stages.get(stage)
    if sdoc is None:
        return
    for shard in range(sdoc.shards):
        token = sdoc.shard_tokens[shard] if shard < len(sdoc.shard_tokens) else ""
        if not token and sdoc.shard_tokens:
            continue  # never written: every task of the shard is still PENDING
        try:
            blob = store.get(shard_key(doc.request_id, stage, shard, token))
        except NotFoundError:
            if token:
                raise _SupersededError from None
            continue  # a state file from before tokens, whose shard was never written
        yield shard, token, ShardDoc.model_validate_json(blob.data)


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
        doc = StateDoc.model_validate_json(store.get(state_key(request_id)).data)
        task = doc.stages[stage].task
        if task is not None:
            return {0: task}
        tasks: dict[int, TaskDoc] = {}
        for _, _, shard in committed_shards(store, doc, stage):
            tasks.update(shard.tasks)
        return dict(sorted(tasks.items()))

    return _consistent(read, f"request {request_id}, stage {stage!r}")


INDEX_PREFIX = "index/requests/"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def task_to_json(task: Task) -> dict[str, Any]:
    """Compact encoding: fields at their default are left out (shards are rewritten often)."""
    out: dict[str, Any] = {"status": task.status.value}
    if task.attempt:
        out["attempt"] = task.attempt
    if task.budget_base:
        out["budget_base"] = task.budget_base
    for name in (
        "dispatched_at",
        "first_dispatched_at",
        "deadline",
        "retry_at",
        "finished_at",
        "error_type",
        "error",
        "output",
    ):
        value = getattr(task, name)
        if value is not None:
            out[name] = value
    return out


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
    )


@dataclass
class Handle:
    """What this process last read or wrote: state.json's etag (for If-Match) and the committed shard tokens."""

    head_etag: str | None = None
    shard_tokens: dict[tuple[str, int], str] = field(default_factory=dict)


class Persistence:
    """Reads and writes the state of requests of one pipeline."""

    def __init__(self, store: ObjectStore, pipeline: Pipeline, engine: Engine) -> None:
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
        return StateDoc.model_validate_json(blob.data), blob.etag

    def load(self, request_id: str, now: float) -> RequestState:
        """The request's full state (head + committed shards) with derived indexes rebuilt."""
        return _consistent(lambda: self._load_once(request_id, now), f"request {request_id}")

    def _load_once(self, request_id: str, now: float) -> RequestState:
        doc, etag = self.read_doc(request_id)
        handle = Handle(head_etag=etag)
        if doc.pipeline.digest != self.pipeline.digest and doc.pipeline.shape != self.pipeline.shape():
            raise ValidationError(
                f"request {request_id} was made with a pipeline of a different shape "
                f"({doc.pipeline.path or doc.pipeline.name}); stages, needs and for_each must match to resume"
            )
        stages: dict[str, StageState] = {}
        tasks: dict[str, Map[int, Task]] = {}
        for name in self.pipeline.order:
            sdoc = doc.stages.get(name, StageDoc())
            stages[name] = StageState(
                status=StageStatus(sdoc.status),
                total=sdoc.total,
                started_at=sdoc.started_at,
                finished_at=sdoc.finished_at,
            )
            if sdoc.task is not None:
                tasks[name] = Map({0: task_from_doc(sdoc.task)})
            elif self.pipeline.stages[name].fanned_out and sdoc.total:
                items: dict[int, Task] = {}
                for shard, token, sh in committed_shards(self.store, doc, name):
                    handle.shard_tokens[(name, shard)] = token
                    items.update({i: task_from_doc(t) for i, t in sh.tasks.items()})
                for i in range(sdoc.total):
                    items.setdefault(i, Task())
                tasks[name] = Map(items)
        failure = None
        if doc.failure is not None:
            f = doc.failure
            failure = Failure(f.stage, f.item, f.error_type, f.message, f.attempts)
        state = RequestState(
            request_id=doc.request_id,
            input=doc.input,
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
        )
        state = replace(state, items=self._fanout_items(state))
        if state.status is RequestStatus.COMPLETED:
            final_task = state.task(self.pipeline.final)
            state = replace(state, final=final_task.output if final_task else None)
        self._handles[request_id] = handle
        return self.engine.rebuild_indexes(state, now)

    def _fanout_items(self, state: RequestState) -> Map[str, tuple[Any, ...]]:
        """Re-derive the fan-out lists from the source stages' outputs (resolving references)."""
        items: dict[str, tuple[Any, ...]] = {}
        for spec in self.pipeline.stages.values():
            if spec.for_each is None or str(spec.for_each) in items:
                continue
            source = state.task(spec.for_each.source)
            if source is None or source.status is not TaskStatus.SUCCEEDED:
                continue
            output = refs.resolve(self.store, source.output)
            items[str(spec.for_each)] = tuple(spec.for_each.extract(output))
        return Map(items)

    # ---- writing -------------------------------------------------------------------------------------

    def create(self, state: RequestState) -> RequestState:
        """Persist a new request (fails with ``ConflictError`` if the id exists)."""
        self._handles[state.request_id] = Handle()
        committed = self.commit(state)
        self.store.put(
            INDEX_PREFIX + state.request_id,
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
        for stage, shard in sorted(state.dirty):
            token = f"{version:06d}{secrets.token_hex(4)}"
            key = shard_key(state.request_id, stage, shard, token)
            stage_tasks = state.tasks.get(stage) or Map()
            lo, hi = shard * SHARD_SIZE, (shard + 1) * SHARD_SIZE
            body = {
                "stage": stage,
                "shard": shard,
                "version": version,
                "tasks": {i: task_to_json(stage_tasks[i]) for i in range(lo, hi) if i in stage_tasks},
            }
            self.store.put(key, _dumps(body), if_none_match=True, content_type="application/json")
            written.append(key)
            old = tokens.get((stage, shard))
            if old is not None:
                superseded.append(shard_key(state.request_id, stage, shard, old))
            tokens[(stage, shard)] = token
        doc = self.to_doc(replace(state, version=version), tokens)
        data = doc.model_dump_json(exclude_none=False).encode()
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
        self._discard(superseded)
        return replace(state, version=version, dirty=Map())

    def _discard(self, keys: list[str]) -> None:
        # Unreferenced shard objects are never read; deleting them only saves space, so a failure is harmless.
        for key in keys:
            with contextlib.suppress(FaveError):
                self.store.delete(key)

    def write_final(self, request_id: str, output: Any) -> None:
        """metadata/final.json = the final stage's output (references resolved). Idempotent."""
        value = refs.resolve(self.store, output)
        self.store.put(final_key(request_id), _dumps(value), content_type="application/json")

    def read_final(self, request_id: str) -> Any:
        try:
            return json.loads(self.store.get(final_key(request_id)).data)
        except NotFoundError:
            return None

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
                task=TaskDoc.model_validate(task_to_json(task)) if task is not None and not spec.fanned_out else None,
            )
        failure = None
        if state.failure is not None:
            f = state.failure
            failure = FailureDoc(
                stage=f.stage,
                item=f.item,
                error_type=f.error_type,
                message=f.message,
                attempts=f.attempts,
                reason=f.describe(),
            )
        return StateDoc(
            request_id=state.request_id,
            status=state.status.value,
            input=dict(state.input),
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
        )


def list_request_ids(store: ObjectStore) -> list[str]:
    """Every request id in the store, newest first (ids sort by creation time)."""
    ids = [key[len(INDEX_PREFIX) :] for key in store.list(INDEX_PREFIX)]
    return sorted(ids, reverse=True)


__all__ = [
    "ConflictError",
    "Persistence",
    "committed_shards",
    "final_key",
    "list_request_ids",
    "read_stage_tasks",
    "request_prefix",
    "shard_key",
    "state_key",
]
