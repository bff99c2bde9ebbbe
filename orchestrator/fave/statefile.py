"""The JSON documents that persist a request (pydantic at the boundary).

``requests/{id}/metadata/state.json`` (``StateDoc``): input, pipeline digest, request status, per-stage
status, counts and timings, the tasks of single-task stages, the failure reason.
``requests/{id}/metadata/tasks/{stage}/{shard}.{token}.json`` (``ShardDoc``): the tasks of a fanned-out
stage, ``persistence.SHARD_SIZE`` items per object, so a completion rewrites a bounded object, never one that
grows with N. Each write is a new object; state.json names the committed one (``StageDoc.shard_tokens``).
``requests/{id}/metadata/items/{for_each}/{block}.json``: a fan-out list in blocks of ``StateDoc.fanout_blocks``
items (``persistence.LIST_BLOCK``; 128 before schema 3), written once when the list is made, read a block at a
time.

Schema 3 (this version) lets one object hold several shards of a stage that one commit changed (a *segment*,
``SegmentDoc``; its shards' entries in ``shard_tokens`` read ``TOKEN@HOME``, ``keys.shard_object_key``): a
commit that changes 79 shards writes 5 objects, not 79. Schema 2 persists what a decision needs to run on a
head alone: each fanned-out stage's ready set, deadline floor and retry blocks, and the fan-out lists' lengths.
A schema-1 file is read whole and its indexes rebuilt.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 3


class AttemptDoc(BaseModel):
    """``core.model.Attempt``: a failed attempt (``n`` its number)."""

    n: int
    started_at: float | None = None
    ended_at: float
    error_type: str
    error: str


class TaskDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = "PENDING"
    attempt: int = 0
    budget_base: int = 0
    dispatched_at: float | None = None
    first_dispatched_at: float | None = None
    deadline: float | None = None
    retry_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    error: str | None = None
    output: Any = None
    history: list[AttemptDoc] = Field(default_factory=list)
    """The attempts that failed, oldest first (absent when none did)."""
    traceback: str | None = None
    stale_attempts: int = 0
    """Attempts up to this number ran before a reset: their late reports are ignored."""
    cached: bool = False
    """The output came from the result cache (the function was not invoked)."""
    cached_from: str | None = None
    """The request whose invocation wrote that cache entry."""
    throttled: int = 0
    """Invocations refused as throttled (they spent no attempt)."""


class ReadyDoc(BaseModel):
    """``core.model.ReadySet``: the run ``lo..hi-1`` and the sparse items."""

    lo: int = 0
    hi: int = 0
    extra: list[int] = Field(default_factory=list)


class FingerprintDoc(BaseModel):
    """``core.model.Fingerprint``: what the stage's output was made with (``fave rerun`` compares it)."""

    function: str
    code: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    for_each: str | None = None


class StageDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = "PENDING"
    fanned_out: bool = False
    total: int | None = None
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    shards: int = 0
    shard_tokens: list[str] = Field(default_factory=list)
    """Which version of each task shard is committed (see persistence.shard_key); "" = never written."""
    task: TaskDoc | None = None
    ready: ReadyDoc | None = None
    unsent: ReadyDoc | None = None
    """The outbox: items dispatched whose invocation is not yet recorded as sent."""
    deadline_floor: float | None = None
    retry_blocks: dict[int, float] = Field(default_factory=dict)
    fingerprint: FingerprintDoc | None = None
    """Recorded when the stage succeeded (absent: it has not, or it ran before fingerprints were recorded)."""
    throttled: int = 0
    """Invocations of its tasks refused as throttled."""
    throttle_cap: float | None = None
    """The in-flight cap throttling taught (``StageState.throttle_cap``)."""
    throttle_at: float | None = None


class FailureDoc(BaseModel):
    stage: str
    item: int | None = None
    key: str | None = None
    """The item's key (``core.model.Failure.key``)."""
    error_type: str
    message: str
    attempts: int = 0
    reason: str = ""


class PipelineRefDoc(BaseModel):
    name: str
    digest: str
    path: str = ""
    shape: dict[str, Any] = Field(default_factory=dict)


class StateDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    request_id: str
    status: str
    input: dict[str, Any]
    """The request input, or ``{"$ref": key}`` when it is stored once beside the state (large inputs)."""
    profile: str | None = None
    pipeline: PipelineRefDoc
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    failure: FailureDoc | None = None
    cancel_reason: str | None = None
    version: int = 0
    resumes: int = 0
    stages: dict[str, StageDoc]
    fanout: dict[str, int] = Field(default_factory=dict)
    """Length of each fan-out list (``for_each``) made so far; its items are in ``metadata/items/``."""
    fanout_blocks: dict[str, int] = Field(default_factory=dict)
    """Items per block object of each fan-out list (``FanoutList.block``); a list not named here (a schema-2
    file) has blocks of 128 (``persistence.SHARD_SIZE``)."""
    abandoned: int = 0
    """Attempts still running when the request ended, not reported yet (``RequestState.abandoned``)."""
    abandoned_until: float | None = None
    no_cache: bool = False
    """``fave run --no-cache``: no result-cache lookups for this request."""
    selection: list[str] = Field(default_factory=list)
    """``fave run --stage``: the stages named (empty: the whole pipeline)."""
    scope: list[str] = Field(default_factory=list)
    """A subset run's stages: the selection and what it needs (empty: every stage)."""
    budget: dict[str, Any] = Field(default_factory=dict)
    """The request's limits (``max_wall_s``, ``max_invocations``, ``max_cost_usd``; absent: none)."""
    budget_since: float | None = None
    ledger: dict[str, Any] = Field(default_factory=dict)
    """What the request spent: invocations, billed_ms per function, gb_s, s3 requests, cost_usd (estimated)."""


class ShardDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stage: str
    shard: int
    version: int
    tasks: dict[int, TaskDoc]


class SegmentDoc(BaseModel):
    """Task shards of one stage that one commit wrote together, in one object (``persistence.SEGMENT_SHARDS``):
    ``{"shards": {shard: ShardDoc}}``, at the key of its first shard."""

    model_config = ConfigDict(extra="ignore")

    shards: dict[int, ShardDoc]


SEGMENT_HEAD = b'{"shards":'
"""How a segment's bytes begin (a single shard's begin with its ``stage``): persistence writes both."""


def parse_shards(data: bytes) -> dict[int, ShardDoc]:
    """The shards a task-shard object holds, by shard: a segment's, or a single shard's own. Raises pydantic's
    ``ValidationError`` if the bytes are not one of the two."""
    if data.startswith(SEGMENT_HEAD):
        return SegmentDoc.model_validate_json(data).shards
    doc = ShardDoc.model_validate_json(data)
    return {doc.shard: doc}
