"""Load and commit request state in the object store, with compare-and-swap on every object.

Commit protocol (one *step* = all events applied since the last commit):
1. write each dirty task shard with If-Match (If-None-Match for a new one), stamped with the new version;
2. write state.json with If-Match: this is the commit point.
Commands are performed only after the commit, so no invocation is ever made for a decision that was not
persisted. If the process dies between 1 and 2, shards may hold tasks marked RUNNING by a step that never
committed; ``load`` recognises them (``dispatch_version`` newer than state.json's version) and puts them
back to PENDING, so they are dispatched again instead of waiting for a timeout. A ``ConflictError`` from
any write means another writer (``fave cancel``, a concurrent orchestrator) got there first: the caller
reloads and re-applies its events, which the engine treats idempotently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from fave_shared import refs
from fave_shared.errors import ConflictError, NotFoundError, ValidationError
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


def shard_key(request_id: str, stage: str, shard: int) -> str:
    return request_prefix(request_id) + f"metadata/tasks/{stage}/{shard:05d}.json"


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
    if task.dispatch_version:
        out["dispatch_version"] = task.dispatch_version
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
        dispatch_version=doc.dispatch_version,
    )


@dataclass
class Handle:
    """Etags of what this process last read or wrote, for the next conditional writes."""

    head_etag: str | None = None
    shard_etags: dict[tuple[str, int], str] = field(default_factory=dict)


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
        """The request's full state (head + shards) with derived indexes rebuilt."""
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
                for shard in range(sdoc.shards):
                    key = shard_key(request_id, name, shard)
                    try:
                        blob = self.store.get(key)
                    except NotFoundError:
                        continue
                    handle.shard_etags[(name, shard)] = blob.etag
                    sh = ShardDoc.model_validate_json(blob.data)
                    items.update({i: task_from_doc(t) for i, t in sh.tasks.items()})
                for i in range(sdoc.total):
                    items.setdefault(i, Task())
                tasks[name] = Map(items)
        tasks = {name: self._undo_uncommitted(t, doc.version) for name, t in tasks.items()}
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

    @staticmethod
    def _undo_uncommitted(stage_tasks: Map[int, Task], version: int) -> Map[int, Task]:
        # A RUNNING attempt stamped by a version that never committed was never invoked: dispatch it again.
        lost = {
            i: replace(t, status=TaskStatus.PENDING, attempt=t.attempt - 1, deadline=None)
            for i, t in stage_tasks.items()
            if t.status is TaskStatus.RUNNING and t.dispatch_version > version
        }
        return stage_tasks.update(lost) if lost else stage_tasks

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
        """Write dirty shards then state.json, all conditionally. Returns the state at its new version."""
        handle = self._handles.setdefault(state.request_id, Handle())
        version = state.version + 1
        for stage, shard in sorted(state.dirty):
            key = shard_key(state.request_id, stage, shard)
            stage_tasks = state.tasks.get(stage) or Map()
            lo, hi = shard * SHARD_SIZE, (shard + 1) * SHARD_SIZE
            body = {
                "stage": stage,
                "shard": shard,
                "version": version,
                "tasks": {i: task_to_json(stage_tasks[i]) for i in range(lo, hi) if i in stage_tasks},
            }
            etag = handle.shard_etags.get((stage, shard))
            if etag is None:
                # A shard this process never saw may be left over from a step that never committed.
                etag = self.store.head(key)
            if etag is None:
                new = self.store.put(key, _dumps(body), if_none_match=True, content_type="application/json")
            else:
                new = self.store.put(key, _dumps(body), if_match=etag, content_type="application/json")
            handle.shard_etags[(stage, shard)] = new
        doc = self.to_doc(replace(state, version=version))
        data = doc.model_dump_json(exclude_none=False).encode()
        if handle.head_etag is None:
            handle.head_etag = self.store.put(
                state_key(state.request_id), data, if_none_match=True, content_type="application/json"
            )
        else:
            handle.head_etag = self.store.put(
                state_key(state.request_id), data, if_match=handle.head_etag, content_type="application/json"
            )
        return replace(state, version=version, dirty=Map())

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

    def to_doc(self, state: RequestState) -> StateDoc:
        stages: dict[str, StageDoc] = {}
        for name in self.pipeline.order:
            st = state.stages[name]
            spec = self.pipeline.stages[name]
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
                shards=((st.total or 0) + SHARD_SIZE - 1) // SHARD_SIZE if spec.fanned_out else 0,
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
    "final_key",
    "list_request_ids",
    "request_prefix",
    "shard_key",
    "state_key",
]
