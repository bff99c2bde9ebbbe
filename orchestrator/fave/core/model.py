"""The engine's vocabulary: request/stage/task state, events in, commands out. All immutable.

Task state lives in persistent maps (``immutables.Map``, a HAMT) so that the pure ``decide`` function can
return a new state in O(log n) per change instead of copying every task of a 10,000-item fan-out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

from immutables import Map


class RequestStatus(StrEnum):
    INIT = "INIT"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED)


class StageStatus(StrEnum):
    PENDING = "PENDING"
    """Waiting for its inputs."""
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    """Created, not running: waiting for its per-item inputs, a free slot, or a retry delay."""
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    """An item whose upstream item failed (within the tolerated failures)."""
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


TIMEOUT_ERROR = "States.Timeout"
REF = "$ref"
"""The marker of a value stored by reference (``fave_shared.refs.REF``; stage code never sees it)."""


@dataclass(frozen=True, slots=True)
class Task:
    """One invocation target: a stage (and item, for fanned-out stages) with its attempts."""

    status: TaskStatus = TaskStatus.PENDING
    attempt: int = 0
    """Attempts started so far (the next dispatch is attempt + 1)."""
    budget_base: int = 0
    """Attempts made before the last resume: the retry budget counts from here (like a redrive)."""
    dispatched_at: float | None = None
    deadline: float | None = None
    retry_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    error: str | None = None
    output: Any = None
    """The stage's output: inline JSON, or ``{"$ref": key}``."""
    first_dispatched_at: float | None = None


@dataclass(frozen=True, slots=True)
class StageState:
    """Status and counts of one stage. Counts always equal a count over the stage's tasks."""

    status: StageStatus = StageStatus.PENDING
    total: int | None = None
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    def count(self, status: TaskStatus) -> int:
        return int(getattr(self, status.value.lower()))

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped + self.cancelled


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a request failed: names the stage, the item (if any) and the error."""

    stage: str
    item: int | None
    error_type: str
    message: str
    attempts: int = 0

    def describe(self) -> str:
        where = f"stage '{self.stage}'" + (f" item {self.item}" if self.item is not None else "")
        tries = f" after {self.attempts} attempt{'s' if self.attempts != 1 else ''}" if self.attempts else ""
        return f"{where} failed{tries}: {self.error_type}: {self.message}"


_T = TypeVar("_T", "Task", "StageState")
_FIELDS: dict[type, tuple[str, ...]] = {}
_new = object.__new__
_set = object.__setattr__


def evolve(obj: _T, **changes: Any) -> _T:
    """``dataclasses.replace`` for the engine's hot path (a task changes twice per dispatch): the same result,
    without re-running ``__init__`` and its per-field checks, about twice as fast."""
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    unknown = changes.keys() - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    new = _new(cls)
    for name in names:
        _set(new, name, changes[name] if name in changes else getattr(obj, name))
    return new


TaskKey = tuple[str, int]
Tasks = Map[str, Map[int, Task]]


@dataclass(frozen=True, slots=True)
class RequestState:
    """Everything the engine knows about one request.

        ``items``, ``ready``, ``retry_due`` and ``running`` are indexes derived from the tasks (rebuilt on
        load, never persisted); ``changed`` names the tasks changed since the last commit (persistence writes
    what holds them).
    """

    request_id: str
    input: Mapping[str, Any]
    pipeline_digest: str
    created_at: float
    status: RequestStatus = RequestStatus.INIT
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    failure: Failure | None = None
    cancel_reason: str | None = None
    version: int = 0
    resumes: int = 0
    final: Any = None
    stages: Map[str, StageState] = field(default_factory=Map)
    tasks: Tasks = field(default_factory=Map)
    items: Map[str, tuple[Any, ...]] = field(default_factory=Map)
    ready: Map[str, Map[int, None]] = field(default_factory=Map)
    retry_due: Map[TaskKey, float] = field(default_factory=Map)
    running: Map[TaskKey, float] = field(default_factory=Map)
    earliest_deadline: float | None = None
    changed: Map[TaskKey, None] = field(default_factory=Map)
    """(stage, block) of every task changed since the last commit, block = item // the engine's
    ``change_block`` (1 unless the persistence groups tasks)."""
    input_ref: str | None = None
    """Where a large input is stored once (``metadata/input.json``): tasks then carry ``{"$ref": key}`` as
    their request instead of a copy each (see persistence.INPUT_INLINE_LIMIT)."""

    def task(self, stage: str, item: int | None = None) -> Task | None:
        stage_tasks = self.tasks.get(stage)
        return None if stage_tasks is None else stage_tasks.get(0 if item is None else item)

    @property
    def profile(self) -> str:
        value = self.input.get("profile") or "default"
        return str(value)


# ---- events -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Begin a created (INIT) request."""


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    """An attempt of a task returned an output. ``fanout`` carries the resolved lists this output feeds
    to ``for_each`` stages (the executor resolves references so the engine stays pure)."""

    stage: str
    item: int | None
    attempt: int
    output: Any = None
    fanout: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """An attempt of a task ended in an error (after the invoker's own retries, if any)."""

    stage: str
    item: int | None
    attempt: int
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: start due retries, time out overdue tasks, dispatch."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Re-run everything that did not succeed (after a crash, a failure or a code fix)."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the request: nothing more is dispatched, pending tasks are cancelled."""

    reason: str = "cancelled by user"


Event = Start | TaskSucceeded | TaskFailed | Tick | Resume | Cancel


# ---- commands -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invoke:
    """Invoke a stage function for one attempt of one task."""

    stage: str
    item: int | None
    attempt: int
    function: str
    mode: str
    input: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WriteFinal:
    """Write metadata/final.json (performed before the COMPLETED state is committed)."""

    output: Any


class NotifyKind(StrEnum):
    """What a ``Notify`` reports; metrics (fave.app.observability) and progress (fave.cli.progress) key on it."""

    STAGE_STARTED = "stage_started"
    STAGE_SUCCEEDED = "stage_succeeded"
    RETRY = "retry"
    TIMEOUT = "timeout"
    TASK_FAILED = "task_failed"
    REQUEST_COMPLETED = "request_completed"
    REQUEST_FAILED = "request_failed"
    REQUEST_CANCELLED = "request_cancelled"
    REQUEST_RESUMED = "request_resumed"

    @property
    def is_trouble(self) -> bool:
        """Worth a log line or a line on the terminal as it happens (not just a count)."""
        return self in _TROUBLE


_TROUBLE = frozenset(
    {
        NotifyKind.RETRY,
        NotifyKind.TIMEOUT,
        NotifyKind.TASK_FAILED,
        NotifyKind.REQUEST_FAILED,
        NotifyKind.REQUEST_CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class Notify:
    """Something worth telling the user or the metrics (stage started/finished, retry, timeout)."""

    kind: NotifyKind
    stage: str | None = None
    item: int | None = None
    detail: str = ""


Command = Invoke | WriteFinal | Notify
