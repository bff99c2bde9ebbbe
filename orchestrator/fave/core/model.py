"""The engine's vocabulary: request/stage/task state, events in, commands out. All immutable.

Task state lives in persistent maps (``immutables.Map``, a HAMT) so that the pure ``decide`` function can
return a new state in O(log n) per change instead of copying every task of a 10,000-item fan-out.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from itertools import chain, compress, count, repeat
from types import MemberDescriptorType
from typing import Any, TypeVar

from immutables import Map

from fave.core.budget import Ledger
from fave.core.operations import Budget


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
"""The marker of a value stored by reference (``fave_shared.refs.REF``): task outputs over 8 KB are parked in the
store; a stage sees a marker only past what Lambda carries (docs/stages.md), and the SDK resolves it."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt of a task that ended in an error (a timeout too): the evidence kept for ``fave status``."""

    attempt: int
    started_at: float | None
    ended_at: float
    error_type: str
    error: str


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
    history: tuple[Attempt, ...] = ()
    """Every attempt that failed, oldest first (the current attempt is the task's own fields)."""
    traceback: str | None = None
    """The last failed attempt's traceback, as the stage reported it (bounded: ``TRACEBACK_LIMIT``)."""
    stale_attempts: int = 0
    """Attempts up to this number ran before a ``Reset`` of the task: what they report late is ignored (the
    next dispatch still counts up from ``attempt``)."""
    cached: bool = False
    """The output was taken from the result cache (``cache: true`` stages): the function was not invoked."""
    cached_from: str | None = None
    """The request whose invocation wrote the cache entry this task's output came from."""
    throttled: int = 0
    """Invocations of this task refused as throttled (they did not run and spent no attempt)."""


TRACEBACK_LINES = 40
TRACEBACK_BYTES = 8 * 1024


def bounded_traceback(text: str | None) -> str | None:
    """The last ``TRACEBACK_LINES`` lines and at most ``TRACEBACK_BYTES`` of a traceback (its end is what
    names the error)."""
    if not text:
        return None
    lines = text.rstrip("\n").splitlines()
    kept = "\n".join(lines[-TRACEBACK_LINES:])
    data = kept.encode()
    if len(data) > TRACEBACK_BYTES:
        kept = data[-TRACEBACK_BYTES:].decode(errors="ignore")
    return kept


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a stage's output depends on besides its input, as it was when the stage last succeeded (``fave
    rerun`` compares it with today's): the function it calls, that function's code digest (None: unknown, e.g.
    an invoker that cannot tell), its config with the request's profile applied, and the list it fans out over.
    Timeouts, retries and concurrency are left out: they change how a stage runs, not what it returns."""

    function: str
    code: str | None
    config: Mapping[str, Any]
    for_each: str | None = None


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
    deadline_floor: float | None = None
    """A fanned-out stage: no RUNNING task's deadline is earlier (a lower bound, exact after a tick that
    looked at every task; None when nothing runs). Lets a tick decide without loading the stage's tasks."""
    retry_blocks: Map[int, float] = field(default_factory=Map)
    """A fanned-out stage: block -> the earliest ``retry_at`` of a PENDING task in it (blocks with none absent)."""
    fingerprint: Fingerprint | None = None
    """Recorded when the stage succeeds (None: it has not, or it ran before fave recorded them)."""
    throttled: int = 0
    """Invocations of the stage's tasks refused as throttled (``TaskThrottled``)."""
    throttle_cap: float | None = None
    """The in-flight cap that throttling taught (additive increase, multiplicative decrease); None: none, only
    ``max_concurrency`` applies."""
    throttle_at: float | None = None
    """When the cap was last lowered: a throttle of a task dispatched before then was sent under the old cap
    and does not lower it again (one decrease per round, as TCP does)."""

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
    key: str | None = None
    """The item's key (``ForEach.key_of``): what names it across requests, beside its index."""

    def describe(self) -> str:
        where = f"stage '{self.stage}'" + (f" item {self.item}" if self.item is not None else "")
        if self.key is not None:
            where += f" (key {self.key!r})"
        tries = f" after {self.attempts} attempt{'s' if self.attempts != 1 else ''}" if self.attempts else ""
        return f"{where} failed{tries}: {self.error_type}: {self.message}"


class MissingData(Exception):  # noqa: N818 - not an error: a request for more of the state
    """The decision needs tasks or fan-out items that are not loaded: ``(stage, block)`` task blocks and
    ``(for_each, block)`` item blocks. The caller loads them and decides again from the same state (decisions
    are pure, so the restarted one is the same as if everything had been loaded at first)."""

    def __init__(
        self, tasks: frozenset[tuple[str, int]] = frozenset(), items: frozenset[tuple[str, int]] = frozenset()
    ) -> None:
        super().__init__(f"need task blocks {sorted(tasks)} and item blocks {sorted(items)}")
        self.tasks = tasks
        self.items = items


@dataclass(frozen=True, slots=True)
class ReadySet:
    """The items of a stage ready to dispatch: the run ``lo .. hi - 1`` (a fresh fan-out is one run) and sparse
    ``extra`` items (those made ready one by one). Small however many items are ready, so it is persisted."""

    lo: int = 0
    hi: int = 0
    extra: Map[int, None] = field(default_factory=Map)

    def __len__(self) -> int:
        return self.hi - self.lo + len(self.extra)

    def __bool__(self) -> bool:
        return self.hi > self.lo or bool(self.extra)

    def __contains__(self, item: object) -> bool:
        return (isinstance(item, int) and self.lo <= item < self.hi) or item in self.extra

    def add(self, item: int) -> ReadySet:
        if item in self:
            return self
        if self.hi == self.lo:  # no run: start one (items made ready one by one mostly come in order)
            return ReadySet(item, item + 1, self.extra)
        if item == self.hi:
            return ReadySet(self.lo, self.hi + 1, self.extra)
        if item == self.lo - 1:
            return ReadySet(item, self.hi, self.extra)
        return ReadySet(self.lo, self.hi, self.extra.set(item, None))

    def remove(self, item: int) -> ReadySet:
        if item in self.extra:
            return ReadySet(self.lo, self.hi, self.extra.delete(item))
        if not self.lo <= item < self.hi:
            return self
        if item == self.lo:
            return ReadySet(self.lo + 1, self.hi, self.extra)
        if item == self.hi - 1:
            return ReadySet(self.lo, self.hi - 1, self.extra)
        # Out of the middle of the run (rare: a skip or a cancel): the rest of the run becomes sparse.
        extra = self.extra.update({i: None for i in range(self.lo, self.hi) if i != item})
        return ReadySet(0, 0, extra)

    def add_all(self, items: Iterable[int]) -> ReadySet:
        """``add`` of each item in turn, without a set per item (a step dispatches thousands into its outbox)."""
        lo, hi, extra = self.lo, self.hi, self.extra
        for item in items:  # add's cases, one by one
            if lo <= item < hi or item in extra:
                continue
            if hi == lo:
                lo, hi = item, item + 1
            elif item == hi:
                hi += 1
            elif item == lo - 1:
                lo = item
            else:
                extra = extra.set(item, None)
        return self if (lo, hi) == (self.lo, self.hi) and extra is self.extra else ReadySet(lo, hi, extra)

    def remove_all(self, items: Iterable[int]) -> ReadySet:
        """``remove`` of each item in turn, without a set per item (a step empties thousands from an outbox)."""
        lo, hi, extra = self.lo, self.hi, self.extra
        for item in items:  # remove's cases, one by one
            if item in extra:
                extra = extra.delete(item)
            elif not lo <= item < hi:
                continue
            elif item == lo:
                lo += 1
            elif item == hi - 1:
                hi -= 1
            else:
                extra = extra.update({i: None for i in range(lo, hi) if i != item})
                lo = hi = 0
        return self if (lo, hi) == (self.lo, self.hi) and extra is self.extra else ReadySet(lo, hi, extra)

    def take(self, n: int) -> tuple[list[int], ReadySet]:
        """The first ``n`` items and what remains: the sparse ones first (retries that came due, items whose
        upstream item just finished: they have waited longest), then the run, ascending."""
        picked: list[int] = []
        extra = self.extra
        for item in self.extra:
            if len(picked) >= n:
                break
            picked.append(item)
            extra = extra.delete(item)
        from_run = min(n - len(picked), self.hi - self.lo)
        picked.extend(range(self.lo, self.lo + from_run))
        return picked, ReadySet(self.lo + from_run, self.hi, extra)

    def items(self) -> list[int]:
        return [*range(self.lo, self.hi), *sorted(self.extra)]


@dataclass(frozen=True, slots=True)
class FanoutList:
    """The list a ``for_each`` iterates over, held in blocks of ``block`` items that may be loaded one by one
    (a 100,000-item list is not read to dispatch one task)."""

    total: int
    block: int
    blocks: Map[int, tuple[Any, ...]] = field(default_factory=Map)
    source: str | None = None
    """The object the list's source output was parked in, when the list is one block of it: the list is read
    back from there (``persistence``), not written again as a block object of its own."""

    @classmethod
    def whole(cls, values: tuple[Any, ...], block: int, source: str | None = None) -> FanoutList:
        """The list in blocks of ``block``; ``source`` (the parked output it is a field of) is kept only when the
        list is one block (a list of several is read a block at a time, not from its whole source)."""
        chunks = {b: tuple(values[b * block : (b + 1) * block]) for b in range((len(values) + block - 1) // block)}
        return cls(len(values), block, Map(chunks), source if len(values) <= block else None)

    def __len__(self) -> int:
        return self.total

    def item(self, key: str, index: int) -> Any:
        chunk = self.blocks.get(index // self.block)
        if chunk is None:
            raise MissingData(items=frozenset({(key, index // self.block)}))
        return chunk[index % self.block]

    def elements(self, key: str) -> tuple[Any, ...]:
        """The whole list in order (``MissingData`` naming every block not loaded)."""
        blocks = range(-(-self.total // self.block))
        missing = frozenset((key, b) for b in blocks if b not in self.blocks)
        if missing:
            raise MissingData(items=missing)
        if len(blocks) == 1:  # the block itself (no copy): the very tuple the list was made from, when it was
            return self.blocks[0]
        return tuple(chain.from_iterable(self.blocks[b] for b in blocks))


_T = TypeVar("_T", "Task", "StageState")
_EVOLVERS: dict[type, Any] = {}


def _evolver(cls: type) -> Any:
    """A function that copies an instance of ``cls`` with some fields changed, written out field by field for
    that class (no loop, no lookups by name): ``evolve`` runs twice per dispatched task."""
    names = tuple(f.name for f in fields(cls))
    namespace: dict[str, Any] = {"_new": object.__new__, "_set": object.__setattr__, "cls": cls}
    # A slotted class's fields are set through their slot descriptors, as object.__setattr__ would in the end,
    # without looking the name up on the class each time: a third less per copy.
    lines = []
    for n in names:
        slot = vars(cls).get(n)
        if isinstance(slot, MemberDescriptorType):
            namespace[f"_set_{n}"] = slot.__set__
            lines.append(f"    _set_{n}(new, changes.pop({n!r}) if {n!r} in changes else obj.{n})")
        else:
            lines.append(f"    _set(new, {n!r}, changes.pop({n!r}) if {n!r} in changes else obj.{n})")
    source = "\n".join(
        [
            "def evolve(obj, changes):",
            "    new = _new(cls)",
            *lines,
            "    if changes:",
            "        raise TypeError(f'{cls.__name__} has no field(s) {sorted(changes)}')",
            "    return new",
        ]
    )
    exec(source, namespace)  # generated from the dataclass's own field names, nothing else
    return namespace["evolve"]


def evolve(obj: _T, **changes: Any) -> _T:
    """``dataclasses.replace`` for the engine's hot path: the same result, without re-running ``__init__`` and
    its per-field checks (about twice as fast)."""
    cls = type(obj)
    fn = _EVOLVERS.get(cls)
    if fn is None:
        fn = _EVOLVERS[cls] = _evolver(cls)
    result: _T = fn(obj, changes)
    return result


TaskKey = tuple[str, int]
Tasks = Map[str, Map[int, Task]]


@dataclass(frozen=True, slots=True, eq=False)
class CachedItems:
    """The tasks of a fanned-out stage that the result cache answered in bulk when the stage started, held as
    arrays instead of a ``Task`` each (``fave.cache``: a re-run of 10,000 items of which 9,900 are in the cache
    must not cost 9,900 tasks). Item ``i`` is one of them when ``source_of[i] >= 0``: SUCCEEDED at ``at``,
    cached, never invoked, its output ``outputs[i]``, computed by request ``sources[source_of[i]]``. The engine
    reads such an item through ``task`` (``RequestState.task``, the engine's ``get``) and keeps it out of the
    stage's task map until something changes it (a reset makes it a ``Task``); persistence writes them in their
    shards as a compact section that readers see as tasks (``statefile.CachedDoc``)."""

    at: float
    sources: tuple[str, ...]
    source_of: tuple[int, ...]
    outputs: tuple[Any, ...]

    @property
    def count(self) -> int:
        """How many items are held (``source_of`` entries >= 0)."""
        return len(self.source_of) - self.source_of.count(-1)

    def has(self, item: int) -> bool:
        return 0 <= item < len(self.source_of) and self.source_of[item] >= 0

    def task(self, item: int) -> Task:
        return Task(
            status=TaskStatus.SUCCEEDED,
            finished_at=self.at,
            output=self.outputs[item],
            cached=True,
            cached_from=self.sources[self.source_of[item]],
        )

    def items(self) -> list[int]:
        """The items held, ascending."""
        return list(compress(range(len(self.source_of)), map(operator.le, repeat(0), self.source_of)))  # C-speed

    def without(self, item: int) -> CachedItems | None:
        """The same record without ``item`` (None when nothing is left)."""
        if not self.has(item):
            return self
        if self.count <= 1:
            return None
        source_of = list(self.source_of)
        source_of[item] = -1
        outputs = list(self.outputs)
        outputs[item] = None
        return CachedItems(self.at, self.sources, tuple(source_of), tuple(outputs))


def negative_at(values: Iterable[int]) -> list[int]:
    """The positions of the negative values, ascending: passes in C (a stage's 10,000 items: the few misses).
    The usual few -1s of a list are counted and found with ``index`` (no object per position: ~0.2 ms for 10,000
    where the general pass, which makes a bool per position, takes ~0.3)."""
    if type(values) is list or type(values) is tuple:
        few = values.count(-1)
        if few * 16 <= len(values) and (not values or min(values) >= -1):
            found: list[int] = []
            at, index = -1, values.index
            for _ in range(few):
                at = index(-1, at + 1)
                found.append(at)
            return found
    return list(compress(count(), map(operator.gt, repeat(0), values)))


def held_task(bulk: Map[str, CachedItems], stage: str, item: int) -> Task | None:
    """The task of ``item`` of ``stage`` if ``bulk`` holds it (a task taken from the cache in bulk), else None."""
    held = bulk.get(stage) if bulk else None
    return held.task(item) if held is not None and held.has(item) else None


@dataclass(frozen=True, slots=True)
class RequestState:
    """What the engine knows about one request: everything, or (loaded from a store) the head and the task
    blocks a decision needed.

    ``partial`` names the fanned-out stages not wholly loaded, with the blocks of them that are; a decision that
    needs more raises ``MissingData``. ``ready`` (persisted) says what may be dispatched; ``retry_due`` indexes
    the *loaded* tasks' retries and ``running`` the deadlines of single-task stages' running tasks (the
    fanned-out stages' ``deadline_floor`` and ``retry_blocks`` speak for the rest: a tick whose floor passed
    loads and scans the stage); ``changed`` names the task blocks changed since the last commit (persistence
    writes what holds them).
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
    items: Map[str, FanoutList] = field(default_factory=Map)
    ready: Map[str, ReadySet] = field(default_factory=Map)
    retry_due: Map[TaskKey, float] = field(default_factory=Map)
    running: Map[TaskKey, float] = field(default_factory=Map)
    earliest_deadline: float | None = None
    changed: Map[TaskKey, None] = field(default_factory=Map)
    """(stage, block) of every task changed since the last commit, block = item // the engine's
    ``change_block`` (1 unless the persistence groups tasks)."""
    partial: Map[str, Map[int, None]] = field(default_factory=Map)
    """Fanned-out stages of which only some task blocks are loaded: stage -> the loaded blocks."""
    unsent: Map[str, ReadySet] = field(default_factory=Map)
    """The outbox: tasks dispatched (committed RUNNING) whose invocation has not been recorded as sent
    (``Sent``). A new holder of the request sends them again (``Resend``), so a dispatch interrupted by a crash
    or handed to a continuation is never lost."""
    abandoned: int = 0
    """Attempts that were running when the request ended (FAILED or CANCELLED) and have not reported yet: their
    results are still recorded when they arrive (a success is kept for a resume)."""
    abandoned_until: float | None = None
    """The latest deadline among those attempts: after it nothing more is expected of them."""
    input_ref: str | None = None
    """Where a large input is stored once (``metadata/input.json``): tasks then carry ``{"$ref": key}`` as
    their request instead of a copy each (see persistence.INPUT_INLINE_LIMIT)."""
    no_cache: bool = False
    """``fave run --no-cache``: the result cache is not looked up for this request (fresh entries are still
    written); persisted, so a resume keeps it."""
    selection: tuple[str, ...] = ()
    """The stages ``fave run --stage`` named (empty: the whole pipeline). Persisted: resume and reset keep it."""
    budget: Budget = field(default_factory=Budget)
    """The request's limits: the pipeline's ``operations.budget`` with the request's overrides (a resume may
    raise them)."""
    ledger: Ledger = field(default_factory=Ledger)
    """What the request has spent so far (``fave.core.budget``)."""
    budget_since: float | None = None
    """When ``max_wall`` started counting: the latest start or resume."""
    bulk_cached: Map[str, CachedItems] = field(default_factory=Map)
    """Per fanned-out stage, its tasks taken from the result cache in bulk and not held as ``Task`` objects
    (``CachedItems``). Only in memory: a loaded state has them as tasks (read from their shards)."""
    scope: tuple[str, ...] = ()
    """A subset run: the selected stages and every stage they need, directly or not, in pipeline order; the
    request runs these and no other, and completes when they have all succeeded. Empty: every stage (also when
    the selection needs the whole pipeline)."""

    def in_scope(self, stage: str) -> bool:
        """Whether the request runs ``stage`` (every stage, unless it is a subset run)."""
        return not self.scope or stage in self.scope

    @property
    def nothing_to_resume(self) -> bool:
        """COMPLETED with every stage it runs SUCCEEDED: a resume has nothing to run (after a ``Reset`` it has)."""
        return self.status is RequestStatus.COMPLETED and all(
            st.status is StageStatus.SUCCEEDED for name, st in self.stages.items() if self.in_scope(name)
        )

    def task(self, stage: str, item: int | None = None) -> Task | None:
        stage_tasks = self.tasks.get(stage)
        index = 0 if item is None else item
        task = None if stage_tasks is None else stage_tasks.get(index)
        return task if task is not None else held_task(self.bulk_cached, stage, index)

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
    cached_from: str | None = None
    """The output came from the result cache, written by this request (the function was not invoked)."""
    fanout_block: int = 0
    """Items per block object of the ``fanout`` lists (``FanoutList.block``), sized by the executor from their
    bytes; 0: the engine's own ``list_block``."""
    fanout_source: str | None = None
    """The object the executor parked this output in, when the ``fanout`` lists read back from it as they are
    (no marker inside to resolve): a list of one block is read from there (``FanoutList.source``)."""


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """An attempt of a task ended in an error (after the invoker's own retries, if any)."""

    stage: str
    item: int | None
    attempt: int
    error_type: str
    message: str
    terminal: bool = False
    """The stage declared the error terminal (the SDK's ``TerminalError``): no retry, whatever the policy."""
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class TaskThrottled:
    """An invocation of a task was refused because its function is at its concurrency limit (Lambda's 429):
    it did not run. The task waits and is dispatched again without spending an attempt, and its stage's
    in-flight cap is lowered (``StageState.throttle_cap``)."""

    stage: str
    item: int | None
    attempt: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class StoreRequests:
    """S3 requests the orchestrator made for a request since the last one of these (its ledger counts them)."""

    puts: int = 0
    gets: int = 0


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: start due retries, time out overdue tasks, dispatch."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Re-run everything that did not succeed (after a crash, a failure or a code fix). ``budget``: limits that
    replace the request's where they are set (a request stopped by its budget continues with a raised one)."""

    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the request: nothing more is dispatched, pending tasks are cancelled."""

    reason: str = "cancelled by user"


@dataclass(frozen=True, slots=True)
class Reset:
    """Mark every task of ``stages`` (with ``downstream``, also of every stage that needs them, directly or not)
    PENDING again on a request that has ended, their outputs and fan-out lists dropped: a ``Resume`` then runs
    them (and what waits for them). Attempt numbers and failed-attempt history are kept. Refused as a whole
    (``EventRefused``) for an unknown stage, a request that has not ended, or a stage that has started, has
    not succeeded and needs a reset one (it would run on dropped outputs: reset it too)."""

    stages: tuple[str, ...]
    downstream: bool = False


class EventRefused(Exception):  # noqa: N818 - the base of the two refusals below
    """The engine will not apply an event to the request as it is: nothing changes."""


class InvalidEvent(EventRefused):
    """The event itself is wrong for this pipeline (an unknown stage): a bad request."""


class ConflictingEvent(EventRefused):
    """The request's state forbids the event now (it is running, a stage is in the way): a conflict."""


@dataclass(frozen=True, slots=True)
class Sent:
    """The invocations of these tasks ``(stage, item)`` were sent: they leave the outbox."""

    tasks: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Resend:
    """A new holder of the request: send again what the outbox still holds (its sender died, or handed the rest
    of a large dispatch to a continuation, before recording it as sent)."""


CachedOutput = tuple[Any, str]
"""A result-cache hit: (the stored output, the request whose invocation computed it)."""


@dataclass(frozen=True, slots=True)
class TasksCached:
    """The result cache's answers for tasks of a fanned-out ``cache: true`` stage that ``CacheLookup`` asked
    about: item -> a hit, or None (not in the stage's pack: the task is dispatched). Only this decision uses
    them: the hits among the stage's ready tasks are recorded SUCCEEDED (cached, never invoked) when it
    dispatches; nothing of the event itself is persisted."""

    stage: str
    answers: Mapping[int, CachedOutput | None]
    bulk: CachedItems | None = None
    """The answer to a bulk lookup (``CacheLookup.elements``): every item of the stage, the hits held as arrays
    (its ``at`` is not used: the hits are recorded at the decision's time)."""


class CacheLookup(Exception):  # noqa: N818 - not an error: a request for the result cache's answers
    """The decision is about to dispatch tasks of a fanned-out ``cache: true`` stage for the first time: the
    caller looks them all up at once and decides again from the same state with a ``TasksCached`` event first
    (like ``MissingData``, the restarted decision is the same one, with the answers). ``inputs``: item -> what
    its key is made of besides the shared parts, ``{"item": ..., "needs": {per-item needs}}`` (a whole input
    will do); ``shared``: the whole input of one of the tasks (the parts every task shares are taken from it);
    ``item_needs``: the needs that differ per item. ``elements``: instead of ``inputs``, the whole list of a stage
    that starts afresh with no per-item needs (a bulk lookup: the answer is a ``TasksCached.bulk``)."""

    def __init__(
        self,
        stage: str,
        function: str,
        inputs: Mapping[int, Mapping[str, Any]],
        item_needs: tuple[str, ...],
        shared: Mapping[str, Any],
        *,
        elements: tuple[Any, ...] | None = None,
    ) -> None:
        tasks = len(inputs) if elements is None else len(elements)
        super().__init__(f"look up {tasks} tasks of stage {stage} in the result cache")
        self.stage = stage
        self.function = function
        self.inputs = inputs
        self.item_needs = item_needs
        self.shared = shared
        self.elements = elements


@dataclass(frozen=True, slots=True)
class CodeDigests:
    """The code digest of functions (``Invoker.code_digest``; None: unknown), copied into the fingerprint of a
    stage that succeeds in this decision (``StageState.fingerprint``): the caller hashes the code (I/O), the engine
    does not. Only this decision uses them; a function missing from them is "code unknown"."""

    digests: Mapping[str, str | None]


Event = (
    Start
    | TaskSucceeded
    | TaskFailed
    | TaskThrottled
    | StoreRequests
    | Tick
    | Resume
    | Cancel
    | Reset
    | Sent
    | Resend
    | TasksCached
    | CodeDigests
)


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
    THROTTLED = "throttled"
    """An invocation was refused as throttled: counted (metrics, alerts), not a line each."""

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


@dataclass(frozen=True, slots=True)
class WriteCache:
    """A task of a ``cache: true`` stage succeeded by invocation: store its output in the result cache under
    the key of its input (the service computes the key: it knows the function's code; performed after the
    commit, never for a failure nor for an output that came from the cache)."""

    stage: str
    item: int | None
    function: str
    input: Mapping[str, Any]
    output: Any


@dataclass(frozen=True, slots=True)
class WriteCachePack:
    """A fanned-out ``cache: true`` stage ended (succeeded, or stopped with its request): merge the rows of its
    run into its pack (``fave.cache``: item key -> output, for every item that succeeded, invoked or cached; the
    only place its outputs are stored), so that the next run of the stage finds its hits with one read.
    ``rows``: item -> (what its key is made of besides ``shared``: ``{"item": ..., "needs": {per-item needs}}``,
    its output, the request that computed it); ``shared``: the whole input of one of its tasks (the parts every
    task shares are taken from it)."""

    stage: str
    function: str
    item_needs: tuple[str, ...]
    rows: Mapping[int, tuple[Mapping[str, Any], Any, str]]
    shared: Mapping[str, Any]
    bulk: CachedItems | None = None
    """The stage's items taken from the cache in bulk (not in ``rows``: their rows are the pack's already)."""
    elements: tuple[Any, ...] = ()
    """The stage's whole list, in order, for a stage with no per-item needs (the pack keeps it, to compare the next
    list with); empty for the others."""


Command = Invoke | WriteFinal | Notify | WriteCache | WriteCachePack
