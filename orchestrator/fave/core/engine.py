"""The engine: pure decisions. ``Engine(pipeline).decide(state, event, now) -> (state, commands)``.

No I/O, no clock, no randomness of its own: the caller passes ``now``, and retry jitter is a hash of the
task's identity, so the same inputs always give the same outputs. The executor performs the commands.

Invariants (tests/functional/test_engine_properties.py checks them under random interleavings, duplicate
deliveries and crashes):
* a task's completion is counted once however often it is delivered: counts change only on a status
  transition, and a terminal task never transitions again (except through ``Resume`` or ``Reset``; after a
  ``Reset``, what an attempt from before it reports is ignored);
* a task is dispatched only when its inputs exist (its stage's whole needs succeeded, and for per-item
  stages the same item of each per-item need succeeded);
* a stage never has more than ``max_concurrency`` tasks RUNNING;
* after ``Resume`` exactly the tasks that did not succeed run again (after a ``Reset``, those include the tasks it
  marked PENDING).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from immutables import Map, MapMutation

from fave.core.budget import BUDGET_EXCEEDED, Ledger, Rates, billed_ms, exceeded
from fave.core.dag import Pipeline, Stage, ancestors
from fave.core.model import (
    REF,
    TIMEOUT_ERROR,
    Attempt,
    CachedItems,
    CachedOutput,
    CacheLookup,
    Cancel,
    CodeDigests,
    Command,
    ConflictingEvent,
    Event,
    Failure,
    FanoutList,
    Fingerprint,
    InvalidEvent,
    Invoke,
    MissingData,
    Notify,
    NotifyKind,
    ReadySet,
    RequestState,
    RequestStatus,
    Resend,
    Reset,
    Resume,
    Sent,
    StageState,
    StageStatus,
    Start,
    StoreRequests,
    Task,
    TaskFailed,
    TaskKey,
    TasksCached,
    TaskStatus,
    TaskSucceeded,
    TaskThrottled,
    Tick,
    WriteCache,
    WriteCachePack,
    WriteFinal,
    bounded_traceback,
    evolve,
    held_task,
    negative_at,
)

_NO_READY = ReadySet()
_NO_TASKS: Map[int, Task] = Map()


@dataclass(slots=True)
class _StageWork:
    """A stage's state while a decision changes it: mutable, so that counting a task's transition is two
    attribute writes instead of a new ``StageState`` (twice per task). Frozen back into ``StageState`` at the
    end of the decision; its fields are ``StageState``'s (checked below)."""

    status: StageStatus
    total: int | None
    pending: int
    running: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int
    started_at: float | None
    finished_at: float | None
    deadline_floor: float | None
    retry_blocks: Map[int, float]
    fingerprint: Fingerprint | None
    throttled: int
    throttle_cap: float | None
    throttle_at: float | None

    @classmethod
    def thaw(cls, st: StageState) -> _StageWork:
        return cls(*(getattr(st, name) for name in _STAGE_FIELDS))

    def freeze(self) -> StageState:
        return StageState(*(getattr(self, name) for name in _STAGE_FIELDS))

    def count(self, status: TaskStatus) -> int:
        return int(getattr(self, _COUNTER[status]))

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped + self.cancelled


_STAGE_FIELDS = tuple(f.name for f in fields(StageState))
assert tuple(f.name for f in fields(_StageWork)) == _STAGE_FIELDS, "_StageWork must mirror StageState"
_COUNTER = {status: status.value.lower() for status in TaskStatus}


def unit_random(request_id: str, stage: str, item: int | None, attempt: int) -> float:
    """A deterministic number in [0, 1) for a task attempt (drives full jitter reproducibly)."""
    digest = hashlib.blake2b(f"{request_id}/{stage}/{item}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Engine:
    """Decides what happens next for requests of one pipeline."""

    def __init__(
        self, pipeline: Pipeline, *, change_block: int = 1, list_block: int | None = None, rates: Rates | None = None
    ) -> None:
        """``change_block``: ``RequestState.changed`` names changed tasks in blocks of this many items of a
        stage (``(stage, item // change_block)``). The persistence that writes tasks in groups passes its group
        size, so the set stays small (a 10,000-item fan-out changes 79 blocks of 128, not 10,000 entries).
        ``list_block``: the items per block of the fan-out lists this engine makes (``FanoutList.block``; default
        ``change_block``), which persistence stores a block per object.
        ``rates``: prices and memory sizes, for ``max_cost_usd`` budgets (default: ``Rates()``)."""
        if change_block < 1:
            raise ValueError(f"change_block must be at least 1, got {change_block}")
        if list_block is not None and list_block < 1:
            raise ValueError(f"list_block must be at least 1, got {list_block}")
        self.pipeline = pipeline
        self.change_block = change_block
        self.list_block = list_block if list_block is not None else change_block
        self.rates = rates if rates is not None else Rates()

    def new_request(
        self, request_id: str, input: dict[str, Any], now: float, *, stages: Iterable[str] = ()
    ) -> RequestState:
        """A request in INIT with every stage PENDING (not yet persisted, not yet started). ``stages``: run
        those and what they need only (``selection_scope``; ``InvalidEvent`` naming an unknown one)."""
        selection = tuple(dict.fromkeys(stages))
        scope = self.selection_scope(selection) if selection else ()
        return RequestState(
            request_id=request_id,
            input=dict(input),
            pipeline_digest=self.pipeline.digest,
            budget=self.pipeline.operations.budget,
            created_at=now,
            updated_at=now,
            stages=Map({name: StageState() for name in self.pipeline.order}),
            selection=selection,
            scope=scope,
        )

    def selection_scope(self, stages: Iterable[str]) -> tuple[str, ...]:
        """What a subset run of ``stages`` runs: them and every stage they need, directly or not, in pipeline
        order; () when that is every stage (a run of the final stage is a whole run). ``InvalidEvent`` naming an
        unknown stage."""
        named = list(dict.fromkeys(stages))
        _check_known(self.pipeline, named)
        needed = ancestors(self.pipeline.stages, named)
        if len(needed) == len(self.pipeline.order):
            return ()
        return tuple(name for name in self.pipeline.order if name in needed)

    def fingerprint(self, stage: str, profile: str, code: Mapping[str, str | None]) -> Fingerprint:
        """The stage's fingerprint for a request of ``profile``, given the code digest of each function (one
        missing: "code unknown", None)."""
        spec = self.pipeline.stages[stage]
        return Fingerprint(
            function=spec.function,
            code=code.get(spec.function),
            config=self.pipeline.stage_config(stage, profile),
            for_each=str(spec.for_each) if spec.for_each is not None else None,
        )

    def decide(self, state: RequestState, event: Event, now: float) -> tuple[RequestState, list[Command]]:
        """Apply one event. Returns the new state and the commands to perform (after committing it)."""
        return self.decide_all(state, (event,), now)

    def decide_all(  # noqa: PLR0912 - one branch per kind of event, in one place
        self, state: RequestState, events: Iterable[Event], now: float
    ) -> tuple[RequestState, list[Command]]:
        """Apply events in order, as one decision: the same result as folding ``decide`` over them at the
        same ``now``, without building an intermediate state per event (a batch of 10,000 completions
        would otherwise copy the request state 10,000 times)."""
        tx = _Tx(self.pipeline, state, now, self.change_block, engine=self)
        for event in events:
            match event:
                case Start():
                    tx.start()
                case TaskSucceeded():
                    tx.task_succeeded(event)
                case TaskFailed():
                    tx.task_failed(
                        event.stage,
                        event.item,
                        event.attempt,
                        event.error_type,
                        event.message,
                        terminal=event.terminal,
                        traceback=event.traceback,
                    )
                case Tick():
                    tx.tick()
                case TaskThrottled():
                    tx.task_throttled(event)
                case StoreRequests():
                    tx.ledger_add(puts=event.puts, gets=event.gets)
                    tx.dispatch()  # which checks the budget first
                case Resume():
                    if event.budget is not None:
                        tx.budget = tx.budget.merged(event.budget)
                    tx.resume()
                case Cancel():
                    tx.cancel(event.reason)
                case Reset():
                    tx.reset(event.stages, event.downstream)
                case Sent():
                    tx.sent(event.tasks)
                case Resend():
                    tx.resend()
                case TasksCached():
                    tx.answers[event.stage] = {**tx.answers.get(event.stage, {}), **event.answers}
                    if event.bulk is not None:
                        tx.bulk_answers[event.stage] = event.bulk
                case CodeDigests():
                    tx.code.update(event.digests)
        return tx.finish()

    def reset_scope(self, stages: Iterable[str], downstream: bool) -> tuple[str, ...]:
        """The stages a ``Reset`` of ``stages`` marks, in pipeline order: those, and with ``downstream`` every
        stage that needs one of them, directly or not. ``InvalidEvent`` naming an unknown stage."""
        return _reset_scope(self.pipeline, stages, downstream)

    def _reset_blocks(self, state: RequestState, event: Reset) -> set[tuple[str, int]]:
        """Every task block of the fanned-out stages a ``Reset`` marks (it rewrites each of their tasks)."""
        try:
            scope = _reset_scope(self.pipeline, event.stages, event.downstream)
        except InvalidEvent:
            return set()  # the decision refuses it
        block = self.change_block
        return {
            (stage, b)
            for stage in scope
            if stage in state.partial
            for b in range(-(-(state.stages[stage].total or 0) // block))
        }

    def rebuild_indexes(self, state: RequestState, now: float) -> RequestState:
        """Recompute every derived index (ready, retry timers, deadlines, counts, stage summaries) from the tasks:
        for a state whose tasks are all loaded and whose persisted indexes cannot be trusted (an old state file)."""
        tx = _Tx(self.pipeline, state, now, self.change_block, engine=self)
        tx.rebuild()
        new_state, _ = tx.finish()
        return new_state

    def index_loaded(self, state: RequestState, tasks: Mapping[str, Mapping[int, Task]]) -> RequestState:
        """``state`` with ``tasks`` (whole blocks just loaded) added to its loaded tasks and indexes."""
        stage_tasks = dict(state.tasks)
        running, retry_due = state.running, state.retry_due
        partial = state.partial
        for stage, items in tasks.items():
            stage_tasks[stage] = (stage_tasks.get(stage) or Map()).update(items)
            fanned_out = self.pipeline.stages[stage].fanned_out
            for item, task in items.items():
                if task.status is TaskStatus.RUNNING and task.deadline is not None:
                    if not fanned_out:
                        running = running.set((stage, item), task.deadline)
                elif task.status is TaskStatus.PENDING and task.retry_at is not None:
                    retry_due = retry_due.set((stage, item), task.retry_at)
        return replace(state, tasks=Map(stage_tasks), running=running, retry_due=retry_due, partial=partial)

    def working_set(self, state: RequestState, events: Iterable[Event]) -> MissingData | None:
        """The task and item blocks a decision on ``events`` is likely to need that are not loaded, asked for
        at once (one load instead of one restarted decision per block): each completion's block and the same
        block of the stages joined to it item by item; for a ``Resend``, the blocks of the outbox's items and
        of what their inputs read; for a ``Resume`` or ``Cancel``, every task; for a ``Reset``, every task of
        the stages it marks. (Anything else a decision turns out to need, it asks for with ``MissingData``.)"""
        if not state.partial:
            return None
        block = self.change_block
        wanted: set[tuple[str, int]] = set()
        items: set[tuple[str, int]] = set()
        for event in events:
            if isinstance(event, (TaskSucceeded, TaskFailed)) and event.item is not None:
                b = event.item // block
                wanted.add((event.stage, b))
                wanted.update((down, b) for down in self.pipeline.downstream.get(event.stage, ()))
            elif isinstance(event, Resend):
                for stage, outbox in state.unsent.items():
                    spec = self.pipeline.stages[stage]
                    blocks = {item // block for item in outbox.items()}
                    for b in blocks:
                        wanted.add((stage, b))
                        wanted.update((need, b) for need in spec.item_needs)
                    fan = state.items.get(str(spec.for_each)) if spec.for_each is not None else None
                    if fan is not None:  # a list's blocks need not be the task blocks' size
                        items.update((str(spec.for_each), item // fan.block) for item in outbox.items())
            elif isinstance(event, (Resume, Cancel)):
                for stage in state.partial:
                    total = state.stages[stage].total or 0
                    wanted.update((stage, b) for b in range(-(-total // block)))
                if isinstance(event, Resume):  # it dispatches again, and a task's input holds its item
                    for key, fan in state.items.items():
                        items.update((key, b) for b in range(-(-fan.total // fan.block)))
            elif isinstance(event, Reset):
                wanted.update(self._reset_blocks(state, event))
        tasks = frozenset((stage, b) for stage, b in wanted if stage in state.partial and b not in state.partial[stage])
        loaded_items = {key: fan.blocks for key, fan in state.items.items()}
        item_blocks = frozenset((k, b) for k, b in items if k in loaded_items and b not in loaded_items[k])
        return MissingData(tasks=tasks, items=item_blocks) if tasks or item_blocks else None


def _key(item: int | None) -> int:
    return 0 if item is None else item


def _check_known(pipeline: Pipeline, named: list[str]) -> None:
    """``InvalidEvent`` naming the stages of ``named`` the pipeline does not have (or asking for one)."""
    if not named:
        raise InvalidEvent("name at least one stage")
    unknown = [name for name in named if name not in pipeline.stages]
    if unknown:
        raise InvalidEvent(
            f"unknown stage{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)}: "
            f"pipeline '{pipeline.name}' has {', '.join(pipeline.order)}"
        )


def _reset_scope(pipeline: Pipeline, stages: Iterable[str], downstream: bool) -> tuple[str, ...]:
    named = list(dict.fromkeys(stages))
    if not named:
        raise InvalidEvent("name at least one stage to reset")
    _check_known(pipeline, named)
    scope = set(named)
    if downstream:
        for name in pipeline.order:  # topological: a stage's needs come before it
            if any(need in scope for need in pipeline.stages[name].needs):
                scope.add(name)
    return tuple(name for name in pipeline.order if name in scope)


def _reset_task(task: Task) -> Task:
    """``task`` PENDING again for a ``Reset``: output dropped, attempts and history kept, a fresh retry budget,
    and every attempt made so far stale (a late report of one is ignored)."""
    return evolve(
        task,
        status=TaskStatus.PENDING,
        budget_base=task.attempt,
        stale_attempts=task.attempt,
        deadline=None,
        retry_at=None,
        finished_at=None,
        error_type=None,
        error=None,
        output=None,
    )


class _Tx:
    """One decision in progress: a working copy of the state plus the commands it produces."""

    def __init__(
        self,
        pipeline: Pipeline,
        state: RequestState,
        now: float,
        change_block: int,
        *,
        engine: Engine,
    ) -> None:
        self.p = pipeline
        self.engine = engine
        self.code: dict[str, str | None] = {}  # ``CodeDigests``: this decision's, for the fingerprints
        self.block = change_block
        self.base = state
        self.now = now
        self.status = state.status
        self.failure = state.failure
        self.cancel_reason = state.cancel_reason
        self.started_at = state.started_at
        self.finished_at = state.finished_at
        self.resumes = state.resumes
        self.final = state.final
        self.stages = state.stages
        self.work: dict[str, _StageWork] = {}
        self._tasks = state.tasks
        # Stages whose task map ``put`` is changing in place (one mutation per stage, not a new map per task):
        # merged into ``tasks`` when anything reads it whole.
        self._changing: dict[str, MapMutation[int, Task]] = {}
        self.items = state.items
        self.ready = state.ready
        self.retry_due = state.retry_due
        self.running = state.running
        self.earliest_deadline = state.earliest_deadline
        self.changed = state.changed
        self.touched: set[tuple[str, int]] = set()  # blocks changed by this decision (added to ``changed``)
        self.partial = state.partial
        self.unsent = state.unsent
        self.abandoned = state.abandoned
        self.abandoned_until = state.abandoned_until
        self.budget = state.budget
        self.budget_since = state.budget_since
        # The ledger's counters while deciding (frozen into a Ledger by ``finish`` only if they changed).
        self.invocations = state.ledger.invocations
        self.billed: dict[str, int] | None = None  # copied from the ledger on the first bill
        self.s3_puts = state.ledger.s3_puts
        self.s3_gets = state.ledger.s3_gets
        self.commands: list[Command] = []
        # The result cache's answers for tasks of cached fanned-out stages (``TasksCached``): this decision only.
        self.answers: dict[str, Mapping[int, CachedOutput | None]] = {}
        self.bulk_answers: dict[str, CachedItems] = {}  # a bulk lookup's (``TasksCached.bulk``): this decision only
        # Tasks taken from the cache in bulk, held as arrays (``CachedItems``): ``get`` reads through them.
        self.bulk = state.bulk_cached
        # Per stage, the request and config parts of its tasks' inputs (shared by the Invoke commands of one
        # decision: nothing changes a command's input once made).
        self.inputs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        # Tasks are immutable: the PENDING tasks of a fan-out are one object, and starting them in one decision
        # (same ``now``, same timeout) gives equal RUNNING tasks, so they share one too. Keyed by the PENDING
        # task's id and the timeout; the PENDING task is held so that its id is not reused meanwhile.
        self._started: dict[tuple[int, float], tuple[Task, Task]] = {}

    # ---- plumbing ------------------------------------------------------------------------------------

    @property
    def tasks(self) -> Map[str, Map[int, Task]]:
        if self._changing:
            tasks = self._tasks
            for stage, changing in self._changing.items():
                tasks = tasks.set(stage, changing.finish())
            self._tasks, self._changing = tasks, {}
        return self._tasks

    @tasks.setter
    def tasks(self, tasks: Map[str, Map[int, Task]]) -> None:
        if self._changing:
            raise RuntimeError("tasks replaced while put was changing them: read self.tasks first")
        self._tasks = tasks

    def finish(self) -> tuple[RequestState, list[Command]]:
        if self.status is not RequestStatus.RUNNING:
            self.undo_unsent_dispatches()
        for name, work in self.work.items():
            st = work.freeze()
            if st != self.stages[name]:
                self.stages = self.stages.set(name, st)
        self.work = {}
        if self.touched:
            self.changed = self.changed.update(dict.fromkeys(self.touched))
            self.touched = set()
        changed = (
            self.commands
            or self.unsent is not self.base.unsent
            or self.tasks is not self.base.tasks
            or self.stages is not self.base.stages
            or self.status != self.base.status
            or self.ready is not self.base.ready
            or self.retry_due is not self.base.retry_due
            or self.abandoned != self.base.abandoned
            or self.bulk is not self.base.bulk_cached
        )
        state = replace(
            self.base,
            status=self.status,
            failure=self.failure,
            cancel_reason=self.cancel_reason,
            started_at=self.started_at,
            finished_at=self.finished_at,
            resumes=self.resumes,
            final=self.final,
            stages=self.stages,
            tasks=self.tasks,
            bulk_cached=self.bulk,
            items=self.items,
            ready=self.ready,
            retry_due=self.retry_due,
            running=self.running,
            earliest_deadline=self.earliest_deadline,
            changed=self.changed,
            partial=self.partial,
            unsent=self.unsent if self.status is RequestStatus.RUNNING else Map(),
            abandoned=self.abandoned,
            abandoned_until=self.abandoned_until if self.abandoned else None,
            updated_at=self.now if changed else self.base.updated_at,
            budget=self.budget,
            budget_since=self.budget_since,
            ledger=self.frozen_ledger(),
        )
        commands = self.commands
        if self.status is not RequestStatus.RUNNING:
            # The decision ended the request after dispatching in it (a timeout retried, then another task ran
            # out of retries in the same tick): a request that has ended invokes nothing.
            commands = [c for c in commands if not isinstance(c, Invoke)]
        return state, commands

    def undo_unsent_dispatches(self) -> None:
        """The decision ended the request after dispatching in it: those invocations are never sent (``finish``
        drops their commands), so their tasks are not attempts in flight that the request must wait for, nor
        invocations its ledger pays for."""
        for command in self.commands:
            if not isinstance(command, Invoke):
                continue
            item = _key(command.item)
            task = self.get(command.stage, item)
            if (
                task is not None
                and task.status is TaskStatus.CANCELLED
                and task.deadline is not None
                and task.attempt == command.attempt
                and task.dispatched_at == self.now
            ):
                self.put(command.stage, item, evolve(task, deadline=None))
                self.abandoned -= 1
                self.invocations -= 1

    def frozen_ledger(self) -> Ledger:
        old = self.base.ledger
        if (
            self.billed is None
            and self.invocations == old.invocations
            and self.s3_puts == old.s3_puts
            and self.s3_gets == old.s3_gets
        ):
            return old
        billed = old.billed_ms if self.billed is None else Map(self.billed)
        return Ledger(self.invocations, billed, self.s3_puts, self.s3_gets)

    def ledger_add(self, *, puts: int = 0, gets: int = 0) -> None:
        self.s3_puts += puts
        self.s3_gets += gets

    def bill(self, spec: Stage, task: Task) -> None:
        """An attempt of ``task`` (RUNNING until now) ended: its run time goes to the ledger."""
        if task.dispatched_at is None:
            return
        if self.billed is None:
            self.billed = dict(self.base.ledger.billed_ms.items())
        ms = billed_ms(max(0.0, self.now - task.dispatched_at))
        self.billed[spec.function] = self.billed.get(spec.function, 0) + ms

    def stage(self, name: str) -> _StageWork:
        work = self.work.get(name)
        if work is None:
            work = self.work[name] = _StageWork.thaw(self.stages[name])
        return work

    def set_stage(self, name: str, st: _StageWork) -> None:
        self.work[name] = st

    def get(self, stage: str, item: int) -> Task | None:
        loaded = self.partial.get(stage)
        if loaded is not None and item // self.block not in loaded:
            raise MissingData(tasks=frozenset({(stage, item // self.block)}))
        changing = self._changing.get(stage)
        if changing is not None:
            task = changing.get(item)
        else:
            stage_tasks = self._tasks.get(stage)
            task = None if stage_tasks is None else stage_tasks.get(item)
        return task if task is not None else held_task(self.bulk, stage, item)

    def materialise(self, stage: str) -> None:
        """The stage's tasks taken from the cache in bulk become ``Task`` objects in its map (what reads or
        rewrites every task of a stage expects: a reset, a rebuild of the indexes)."""
        bulk = self.bulk.get(stage)
        if bulk is None:
            return
        stage_tasks = self.tasks.get(stage) or _NO_TASKS
        with stage_tasks.mutate() as tasks:
            for item in bulk.items():
                if item not in tasks:
                    tasks[item] = bulk.task(item)
            self.tasks = self.tasks.set(stage, tasks.finish())
        self.bulk = self.bulk.delete(stage)

    def require_all(self, stages: Iterable[str]) -> None:
        """Every task of ``stages`` must be loaded (a decision that looks at all of them: resume, cancel, a
        fan-in's input, a timeout scan)."""
        missing: set[tuple[str, int]] = set()
        for stage in stages:
            loaded = self.partial.get(stage)
            if loaded is None:
                continue
            blocks = ((self.stage(stage).total or 0) + self.block - 1) // self.block
            missing.update((stage, b) for b in range(blocks) if b not in loaded)
        if missing:
            raise MissingData(tasks=frozenset(missing))

    def item_of(self, spec: Stage, item: int) -> Any:
        key = str(spec.for_each)
        return self.items[key].item(key, item)

    def item_key(self, spec: Stage, item: int) -> str | None:
        """The key of a fanned-out task's element, for the request's failure (its block is loaded if need be);
        None when the list is gone or the element has no usable key (then its index alone names it)."""
        fe = spec.for_each
        if fe is None or str(fe) not in self.items:
            return None
        try:
            return fe.key_of(self.item_of(spec, item), item)
        except ValueError:
            return None

    def put(self, stage: str, item: int, task: Task) -> None:
        """Store a task and keep its stage's counts equal to a count over the tasks, and the indexes in step."""
        changing = self._changing.get(stage)
        if changing is None:
            changing = self._changing[stage] = (self._tasks.get(stage) or _NO_TASKS).mutate()
        old = changing.get(item)
        if old is None and (old := held_task(self.bulk, stage, item)) is not None:
            rest = self.bulk[stage].without(item)  # it leaves the bulk record: the map holds it from now on
            self.bulk = self.bulk.delete(stage) if rest is None else self.bulk.set(stage, rest)
        changing[item] = task
        status = task.status
        was = None if old is None else old.status
        if was is not status:
            st = self.stage(stage)
            counter = _COUNTER[status]
            setattr(st, counter, getattr(st, counter) + 1)
            if was is not None:
                counter = _COUNTER[was]
                setattr(st, counter, getattr(st, counter) - 1)
            if was is TaskStatus.RUNNING:
                if st.running == 0:
                    st.deadline_floor = None  # nothing runs: no deadline to watch
                outbox = self.unsent.get(stage)
                if outbox is not None and item in outbox:
                    self.unsent = self.unsent.set(stage, outbox.remove(item))
            elif was is TaskStatus.PENDING or was is None:
                self.unready(stage, item)  # only a PENDING task is ever ready
        fanned_out = self.p.stages[stage].fanned_out
        if fanned_out:
            self.summarise(stage, item, old, task)
        self.touched.add((stage, item // self.block))
        self.index(stage, item, task, fanned_out)

    def index(self, stage: str, item: int, task: Task, fanned_out: bool) -> None:
        """Keep the deadline and retry indexes in step with a task just stored."""
        status = task.status
        key = (stage, item)
        if status is TaskStatus.RUNNING and task.deadline is not None:
            if not fanned_out:  # a fanned-out stage's deadlines: its floor, then a scan of its tasks (tick)
                self.running = self.running.set(key, task.deadline)
            if self.earliest_deadline is None or task.deadline < self.earliest_deadline:
                self.earliest_deadline = task.deadline
        elif not fanned_out and key in self.running:
            self.running = self.running.delete(key)
        if status is TaskStatus.PENDING and task.retry_at is not None:
            self.retry_due = self.retry_due.set(key, task.retry_at)
        elif self.retry_due and key in self.retry_due:
            self.retry_due = self.retry_due.delete(key)

    def summarise(self, stage: str, item: int, old: Task | None, task: Task) -> None:
        """Keep the stage's summaries of tasks that may not be loaded: the deadline floor and the earliest retry
        of each block."""
        st = self.stage(stage)
        if (
            task.status is TaskStatus.RUNNING
            and task.deadline is not None
            and (st.deadline_floor is None or task.deadline < st.deadline_floor)
        ):
            st.deadline_floor = task.deadline
        was = old.retry_at if old is not None and old.status is TaskStatus.PENDING else None
        now_at = task.retry_at if task.status is TaskStatus.PENDING else None
        if was == now_at:
            return
        block = item // self.block
        current = st.retry_blocks.get(block)
        if now_at is not None and (current is None or now_at < current):
            st.retry_blocks = st.retry_blocks.set(block, now_at)
        elif was is not None and was == current:  # the block's earliest retry went: find the next one
            stage_tasks = self.tasks[stage]
            retries = [
                t.retry_at
                for i in range(block * self.block, (block + 1) * self.block)
                if (t := stage_tasks.get(i)) is not None and t.status is TaskStatus.PENDING and t.retry_at is not None
            ]
            st.retry_blocks = st.retry_blocks.set(block, min(retries)) if retries else st.retry_blocks.delete(block)

    def make_ready(self, stage: str, item: int) -> None:
        self.ready = self.ready.set(stage, self.ready.get(stage, _NO_READY).add(item))

    def unready(self, stage: str, item: int) -> None:
        ready = self.ready.get(stage)
        if ready is not None and item in ready:
            self.ready = self.ready.set(stage, ready.remove(item))

    def notify(self, kind: NotifyKind, stage: str | None = None, item: int | None = None, detail: str = "") -> None:
        self.commands.append(Notify(kind, stage, item, detail))

    # ---- events --------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.status is not RequestStatus.INIT:
            return
        self.status = RequestStatus.RUNNING
        self.started_at = self.now
        self.budget_since = self.now
        self.advance()
        self.dispatch()

    def task_succeeded(self, ev: TaskSucceeded) -> None:
        if self.status is not RequestStatus.RUNNING:
            self.late_success(ev)
            return
        item = _key(ev.item)
        task = self.get(ev.stage, item)
        # Duplicates and unknown tasks change nothing: this is what makes counting exactly-once. Attempts made
        # before a reset of the task are stale.
        if (
            task is None
            or task.status.terminal
            or ev.attempt > task.attempt
            or ev.attempt < 1
            or ev.attempt <= task.stale_attempts
        ):
            return
        if task.status is TaskStatus.RUNNING and ev.cached_from is None:
            spec = self.p.stages[ev.stage]
            self.bill(spec, task)
            st = self.stage(ev.stage)
            if st.throttle_cap is not None:  # additive increase: one more in flight per cap's worth of successes
                cap = st.throttle_cap + 1.0 / st.throttle_cap
                st.throttle_cap = None if spec.max_concurrency is not None and cap >= spec.max_concurrency else cap
        self.record_success(ev, item, task)
        self.after_item_done(ev.stage, item)
        if ev.fanout or self.stage(ev.stage).status is not StageStatus.RUNNING:
            self.advance()  # a stage ended or items appeared: another may start (or the request completes)
        self.dispatch()

    def task_failed(
        self,
        stage: str,
        item_: int | None,
        attempt: int,
        error_type: str,
        message: str,
        *,
        terminal: bool = False,
        traceback: str | None = None,
    ) -> None:
        if self.status is not RequestStatus.RUNNING:
            self.late_failure(stage, _key(item_), attempt, error_type, message, traceback=traceback)
            return
        item = _key(item_)
        task = self.get(stage, item)
        # Only the current attempt's failure counts: a late failure of a timed-out attempt is stale.
        if task is None or task.status is not TaskStatus.RUNNING or attempt != task.attempt:
            return
        spec = self.p.stages[stage]
        self.bill(spec, task)
        task = self.with_failed_attempt(task, error_type, message, traceback)
        jitter = unit_random(self.base.request_id, stage, item_, task.attempt)
        decision = spec.retry.decide(task.attempt - task.budget_base, error_type, jitter, terminal=terminal)
        if decision.retry:
            delay = decision.delay_s
            self.put(
                stage,
                item,
                replace(
                    task,
                    status=TaskStatus.PENDING,
                    retry_at=self.now + delay,
                    deadline=None,
                    error_type=error_type,
                    error=message,
                ),
            )
            self.notify(NotifyKind.RETRY, stage, item_, f"{error_type}: {message} (retry in {delay:.2f}s)")
        else:
            self.put(
                stage,
                item,
                replace(
                    task,
                    status=TaskStatus.FAILED,
                    finished_at=self.now,
                    deadline=None,
                    retry_at=None,
                    error_type=error_type,
                    error=message,
                ),
            )
            self.notify(NotifyKind.TASK_FAILED, stage, item_, f"{error_type}: {message}")
            failure = Failure(stage, item_, error_type, message, task.attempt - task.budget_base)
            if not spec.fanned_out:
                self.fail_request(failure)
                return
            if not self.tolerated(spec, self.stage(stage)):
                self.fail_request(replace(failure, key=self.item_key(spec, item)))
                return
            self.after_item_done(stage, item)
            self.advance()
        self.dispatch()

    def task_throttled(self, ev: TaskThrottled) -> None:
        """The invocation did not run (its function is at its concurrency limit): the task is PENDING again with
        its attempt given back, waits ``throttle_delay``, and the stage's in-flight cap is halved once per
        round (a throttle of a task dispatched before the last decrease was sent under the old cap)."""
        item = _key(ev.item)
        if self.status is not RequestStatus.RUNNING:
            task = self.in_flight_when_ended(ev.stage, item, ev.attempt)
            if task is not None:  # it never ran: nothing more will come of it
                self.invocations -= 1
                self.put(ev.stage, item, evolve(task, deadline=None, throttled=task.throttled + 1))
                self.abandoned -= 1
            return
        task = self.get(ev.stage, item)
        if task is None or task.status is not TaskStatus.RUNNING or ev.attempt != task.attempt:
            return
        st = self.stage(ev.stage)
        st.throttled += 1
        if st.throttle_at is None or (task.dispatched_at is not None and task.dispatched_at > st.throttle_at):
            # Half of what was in flight when the function said no (this task included): the window that did not
            # fit, so the cap lands near what the function takes, not near half an old cap far above it.
            window = float(st.running) if st.throttle_cap is None else min(st.throttle_cap, float(st.running))
            st.throttle_cap = max(1.0, window * THROTTLE_DECREASE)
            st.throttle_at = self.now
        self.invocations -= 1
        delay = throttle_delay(task.throttled, unit_random(self.base.request_id, ev.stage, ev.item, task.throttled))
        self.put(
            ev.stage,
            item,
            evolve(
                task,
                status=TaskStatus.PENDING,
                attempt=task.attempt - 1,
                deadline=None,
                retry_at=self.now + delay,
                throttled=task.throttled + 1,
            ),
        )
        self.notify(NotifyKind.THROTTLED, ev.stage, ev.item, ev.message)
        self.dispatch()

    def with_failed_attempt(self, task: Task, error_type: str, message: str, traceback: str | None) -> Task:
        """``task`` with its current attempt added to its history (and its traceback, if the stage sent one)."""
        ended = Attempt(task.attempt, task.dispatched_at, self.now, error_type, message)
        return evolve(task, history=(*task.history, ended), traceback=bounded_traceback(traceback) or task.traceback)

    def in_flight_when_ended(self, stage: str, item: int, attempt: int) -> Task | None:
        """The task, if ``attempt`` was running when the request ended and has not reported since."""
        if self.status is RequestStatus.COMPLETED or not self.abandoned:
            return None
        task = self.get(stage, item)
        if task is None or task.status is not TaskStatus.CANCELLED or task.deadline is None:
            return None
        return task if task.attempt == attempt else None

    def record_success(self, ev: TaskSucceeded, item: int, task: Task) -> None:
        """The task SUCCEEDED with the event's output, and the lists it fans out to are known. A task of a
        ``cache: true`` stage that ran (not taken from the cache) has its output written to the cache: its entry
        now if it is a single task; a fanned-out stage's outputs go into its pack when it ends (``cache_pack``)."""
        spec = self.p.stages[ev.stage]
        if spec.cache and ev.cached_from is None and not spec.fanned_out:
            self.commands.append(WriteCache(ev.stage, None, spec.function, self.task_input(spec, None), ev.output))
        self.put(
            ev.stage,
            item,
            evolve(
                task,
                status=TaskStatus.SUCCEEDED,
                output=ev.output,
                finished_at=self.now,
                deadline=None,
                retry_at=None,
                error=None,
                error_type=None,
                cached=ev.cached_from is not None,
                cached_from=ev.cached_from,
            ),
        )
        block = ev.fanout_block if ev.fanout_block > 0 else self.engine.list_block
        for for_each, values in ev.fanout.items():
            self.items = self.items.set(for_each, FanoutList.whole(tuple(values), block, ev.fanout_source))

    def late_success(self, ev: TaskSucceeded) -> None:
        """A success after the request ended: kept (a resume will not run it again); the request's and the
        stage's status stay as they are."""
        item = _key(ev.item)
        task = self.in_flight_when_ended(ev.stage, item, ev.attempt)
        if task is None:
            return
        self.bill(self.p.stages[ev.stage], task)
        self.record_success(ev, item, task)
        self.abandoned -= 1

    def late_failure(
        self, stage: str, item: int, attempt: int, error_type: str, message: str, *, traceback: str | None
    ) -> None:
        """A failure after the request ended: its evidence is kept; the task stays CANCELLED."""
        task = self.in_flight_when_ended(stage, item, attempt)
        if task is None:
            return
        self.bill(self.p.stages[stage], task)
        task = self.with_failed_attempt(task, error_type, message, traceback)
        self.put(stage, item, evolve(task, deadline=None, error_type=error_type, error=message))
        self.abandoned -= 1

    def tick(self) -> None:
        if self.status is not RequestStatus.RUNNING:
            return
        watched = self.load_what_is_due()
        if self.retry_due:
            due = [key for key, at in self.retry_due.items() if at <= self.now]
            for stage, item in due:
                task = self.get(stage, item)
                assert task is not None
                self.put(stage, item, replace(task, retry_at=None))
                self.make_ready(stage, item)
        if self.earliest_deadline is not None and self.earliest_deadline <= self.now:
            # Oldest deadline first (then DAG order, then item): the outcome must not depend on the map's
            # iteration order, which follows string hashes that differ from one process to the next.
            rank = {name: i for i, name in enumerate(self.p.order)}
            overdue = [
                (deadline, rank[stage], item)
                for (stage, item), deadline in self.running.items()
                if deadline <= self.now
            ]
            for stage in watched:  # wholly loaded: the only fanned-out stages a task of which can be overdue
                overdue.extend(
                    (t.deadline, rank[stage], item)
                    for item, t in (self.tasks.get(stage) or _NO_TASKS).items()
                    if t.status is TaskStatus.RUNNING and t.deadline is not None and t.deadline <= self.now
                )
            overdue.sort()
            for stage, item in [(self.p.order[r], item) for _, r, item in overdue]:
                task = self.get(stage, item)
                assert task is not None
                spec = self.p.stages[stage]
                self.notify(NotifyKind.TIMEOUT, stage, item if spec.fanned_out else None)
                self.task_failed(
                    stage,
                    item if spec.fanned_out else None,
                    task.attempt,
                    TIMEOUT_ERROR,
                    f"task timed out after {spec.timeout_s:g}s (attempt {task.attempt})",
                )
                if self.status is not RequestStatus.RUNNING:
                    return
        for stage in watched:  # every task of it was looked at: its floor is exact again
            st = self.stage(stage)
            deadlines = [
                t.deadline for t in (self.tasks.get(stage) or Map()).values() if t.status is TaskStatus.RUNNING
            ]
            st.deadline_floor = min((d for d in deadlines if d is not None), default=None)
        self.earliest_deadline = self.earliest()
        self.dispatch()

    def load_what_is_due(self) -> list[str]:
        """Ask for what a tick must see that may not be loaded: every task of a fanned-out stage whose deadline
        floor has passed, and each block with a retry due. Returns the stages whose deadlines it looks at."""
        watched = []
        missing: set[tuple[str, int]] = set()
        for name in self.p.order:
            if not self.p.stages[name].fanned_out:
                continue
            st = self.stage(name)
            if st.deadline_floor is not None and st.deadline_floor <= self.now:
                watched.append(name)
            loaded = self.partial.get(name)
            if loaded is not None:
                missing.update((name, b) for b, at in st.retry_blocks.items() if at <= self.now and b not in loaded)
        if missing:
            raise MissingData(tasks=frozenset(missing))
        self.require_all(watched)
        return watched

    def earliest(self) -> float | None:
        """The earliest deadline of anything running: the loaded tasks' and the fanned-out stages' floors."""
        candidates = list(self.running.values())
        floors = (self.stage(name).deadline_floor for name in self.p.order)
        candidates += [floor for floor in floors if floor is not None]
        return min(candidates, default=None)

    def reset(self, stages: tuple[str, ...], downstream: bool) -> None:
        """Mark the tasks of the stages in scope PENDING (see ``Reset``); refuse as a whole, changing nothing."""
        scope = _reset_scope(self.p, stages, downstream)
        if not self.status.terminal:
            running = [f"'{name}' ({self.stage(name).running} running)" for name in scope if self.stage(name).running]
            busy = f"; tasks of stage {', '.join(running)} are running" if running else ""
            raise ConflictingEvent(
                f"request {self.base.request_id} is {self.status.value}{busy}: reset a request that has ended "
                "(wait for it, or cancel it first)"
            )
        chosen = set(scope)
        in_the_way = [
            f"'{name}' needs {', '.join(repr(n) for n in spec.needs if n in chosen)}"
            for name, spec in self.p.stages.items()
            if name not in chosen
            and any(need in chosen for need in spec.needs)
            and self.stage(name).status not in (StageStatus.SUCCEEDED, StageStatus.PENDING)
        ]
        if in_the_way:
            raise ConflictingEvent(
                f"stage {'; '.join(in_the_way)} and has not succeeded: it would run on the dropped outputs; "
                "reset it too (name it, or reset downstream)"
            )
        self.require_all(scope)
        for name in scope:
            self.reset_stage(name)
        for spec in self.p.stages.values():  # the lists a reset stage fanned out: made again when it succeeds
            if spec.for_each is not None and spec.for_each.source in chosen and str(spec.for_each) in self.items:
                self.items = self.items.delete(str(spec.for_each))
        self.earliest_deadline = self.earliest()

    def reset_stage(self, name: str) -> None:
        st = self.stage(name)
        self.materialise(name)
        stage_tasks = self.tasks.get(name) or _NO_TASKS
        if not stage_tasks and st.status is StageStatus.PENDING:
            return  # never started: nothing to reset
        fanned_out = self.p.stages[name].fanned_out
        fresh: dict[int, Task] = {}
        for item, task in stage_tasks.items():
            if task.status is TaskStatus.CANCELLED and task.deadline is not None and self.abandoned:
                self.abandoned -= 1  # an attempt in flight when the request ended: what it reports is stale now
            fresh[item] = _reset_task(task)
            key = (name, item)
            if key in self.retry_due:
                self.retry_due = self.retry_due.delete(key)
            if key in self.running:
                self.running = self.running.delete(key)
        self.tasks = self.tasks.set(name, Map(fresh))
        if name in self.ready:
            self.ready = self.ready.delete(name)
        if name in self.unsent:
            self.unsent = self.unsent.delete(name)
        self.set_stage(
            name,
            _StageWork(
                status=StageStatus.PENDING,
                total=st.total,
                pending=len(fresh),
                running=0,
                succeeded=0,
                failed=0,
                skipped=0,
                cancelled=0,
                started_at=None,
                finished_at=None,
                deadline_floor=None,
                retry_blocks=Map(),
                fingerprint=None,
                throttled=st.throttled,
                throttle_cap=None,
                throttle_at=None,
            ),
        )
        blocks = -(-(st.total or 0) // self.block) if fanned_out else 1
        self.touched.update((name, b) for b in range(blocks))

    def cancel(self, reason: str) -> None:
        if self.status.terminal:
            return
        self.status = RequestStatus.CANCELLED
        self.cancel_reason = reason
        self.finished_at = self.now
        self.stop_everything(StageStatus.CANCELLED)
        self.notify(NotifyKind.REQUEST_CANCELLED, detail=reason)

    def all_succeeded(self) -> bool:
        """Every stage the request runs SUCCEEDED (``RequestState.nothing_to_resume``'s test, on this decision's
        working copy)."""
        return all(
            self.stage(name).status is StageStatus.SUCCEEDED for name in self.p.order if self.base.in_scope(name)
        )

    def resume(self) -> None:
        if self.status is RequestStatus.COMPLETED and self.all_succeeded():
            return  # nothing to run (after a reset, the stages it marked are PENDING)
        self.require_all(self.p.order)
        # The request was down from its end (or, after a crash, its last commit) until now: stage durations
        # leave that out.
        down_since = self.finished_at if self.status.terminal else self.base.updated_at
        self.status = RequestStatus.RUNNING
        self.failure = None
        self.cancel_reason = None
        self.finished_at = None
        self.started_at = self.started_at or self.now
        self.budget_since = self.now
        self.resumes += 1
        self.abandoned = 0  # their attempts are superseded by the ones this resume starts
        self.abandoned_until = None
        # Reset every task that did not succeed; a fresh retry budget starts at its current attempt.
        for stage in self.p.order:
            stage_tasks = self.tasks.get(stage)
            if not stage_tasks:
                continue
            for item, task in stage_tasks.items():
                if task.status is TaskStatus.SUCCEEDED:
                    continue
                self.put(
                    stage,
                    item,
                    replace(
                        task,
                        status=TaskStatus.PENDING,
                        budget_base=task.attempt,
                        retry_at=None,
                        deadline=None,
                        finished_at=None,
                    ),
                )
        for stage in self.p.order:
            st = self.stage(stage)
            if st.status in (StageStatus.SUCCEEDED, StageStatus.PENDING):
                continue
            paused_at = st.finished_at or down_since
            if st.started_at is not None and paused_at is not None and self.now > paused_at:
                st.started_at += self.now - paused_at
            self.set_stage(stage, replace(st, status=StageStatus.RUNNING, finished_at=None))
        self.ready = Map()
        for stage in self.p.order:
            self.refresh_readiness(stage)
            self.check_stage_done(stage)
        self.earliest_deadline = self.earliest()
        self.notify(NotifyKind.REQUEST_RESUMED)
        self.advance()
        self.dispatch()

    def rebuild(self) -> None:
        """Every derived index from scratch, from a wholly loaded state (an old state file)."""
        for stage in list(self.bulk.keys()):
            self.materialise(stage)
        self.ready = Map()
        self.retry_due = Map()
        self.running = Map()
        self.earliest_deadline = None
        for stage in self.p.order:
            statuses = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")
            counts: dict[str, Any] = dict.fromkeys(statuses, 0)
            deadlines: list[float] = []
            retries: dict[int, float] = {}
            for item, task in (self.tasks.get(stage) or Map()).items():
                counts[task.status.value.lower()] += 1
                key = (stage, item)
                if task.status is TaskStatus.RUNNING and task.deadline is not None:
                    if not self.p.stages[stage].fanned_out:
                        self.running = self.running.set(key, task.deadline)
                    deadlines.append(task.deadline)
                elif task.status is TaskStatus.PENDING and task.retry_at is not None:
                    self.retry_due = self.retry_due.set(key, task.retry_at)
                    block = item // self.block
                    retries[block] = min(retries.get(block, task.retry_at), task.retry_at)
            if self.p.stages[stage].fanned_out:
                counts["deadline_floor"] = min(deadlines, default=None)
                counts["retry_blocks"] = Map(retries)
            self.set_stage(stage, replace(self.stage(stage), **counts))
        self.earliest_deadline = self.earliest()
        if self.status is RequestStatus.RUNNING:
            for stage in self.p.order:
                self.refresh_readiness(stage)

    # ---- progress ------------------------------------------------------------------------------------

    def inputs_ready(self, spec: Stage, item: int) -> bool | None:
        """For a PENDING task: True if its per-item inputs succeeded, None if one failed or was skipped
        (the task must be skipped), False if still waiting."""
        for need in spec.item_needs:
            upstream = self.get(need, item)
            if upstream is None or upstream.status in (TaskStatus.PENDING, TaskStatus.RUNNING):
                return False
            if upstream.status is not TaskStatus.SUCCEEDED:
                return None
        return True

    def refresh_readiness(self, stage: str) -> None:
        """Mark every PENDING task of a RUNNING stage ready (or skipped) according to its inputs."""
        if self.stage(stage).status is not StageStatus.RUNNING:
            return
        spec = self.p.stages[stage]
        self.require_all([stage, *spec.item_needs])
        for item, task in (self.tasks.get(stage) or Map()).items():
            if task.status is not TaskStatus.PENDING or task.retry_at is not None:
                continue
            ok = self.inputs_ready(spec, item)
            if ok:
                self.make_ready(stage, item)
            elif ok is None:
                self.skip(stage, item)

    def skip(self, stage: str, item: int) -> None:
        task = self.get(stage, item)
        assert task is not None
        self.put(stage, item, replace(task, status=TaskStatus.SKIPPED, finished_at=self.now))
        self.after_item_done(stage, item)

    def after_item_done(self, stage: str, item: int) -> None:
        """Item ``item`` of ``stage`` reached a terminal status: wake or skip the same item downstream."""
        for down in self.p.downstream[stage]:
            if self.stage(down).status is not StageStatus.RUNNING:
                continue
            task = self.get(down, item)
            if task is None or task.status is not TaskStatus.PENDING or task.retry_at is not None:
                continue
            ok = self.inputs_ready(self.p.stages[down], item)
            if ok:
                self.make_ready(down, item)
            elif ok is None:
                self.skip(down, item)
        self.check_stage_done(stage)

    def tolerated(self, spec: Stage, st: _StageWork) -> bool:
        """Whether the stage's failed items so far still let it succeed (its completion policy)."""
        return spec.fanned_out and st.total is not None and spec.completion.decide(st.failed, st.total).ok

    def check_stage_done(self, stage: str) -> None:
        st = self.stage(stage)
        if st.status is not StageStatus.RUNNING or st.total is None or st.done < st.total:
            return
        if st.failed and not self.tolerated(self.p.stages[stage], st):
            return  # fail_request has been (or will be) called by the failure path
        # What the stage's output was made with, for ``fave rerun`` (make-like: compared with today's).
        fingerprint = self.engine.fingerprint(stage, self.base.profile, self.code)
        self.set_stage(stage, replace(st, status=StageStatus.SUCCEEDED, finished_at=self.now, fingerprint=fingerprint))
        self.cache_pack(self.p.stages[stage])
        self.notify(NotifyKind.STAGE_SUCCEEDED, stage)

    def advance(self) -> None:
        """Start every stage whose inputs exist; complete the request when the final stage succeeded."""
        progressed = True
        while progressed and self.status is RequestStatus.RUNNING:
            progressed = False
            for name in self.p.order:
                if self.stage(name).status is StageStatus.PENDING and self.base.in_scope(name) and self.can_start(name):
                    self.start_stage(name)
                    progressed = True
            if self.base.scope:
                if self.all_succeeded():
                    self.complete_subset()
                    return
                continue
            final = self.stage(self.p.final)
            # Every stage leads to the final one, so they have all succeeded with it; after a reset that left
            # the final stage alone, the stages it marked must run again first.
            if final.status is StageStatus.SUCCEEDED and self.all_succeeded():
                task = self.get(self.p.final, 0)
                assert task is not None
                self.status = RequestStatus.COMPLETED
                self.finished_at = self.now
                self.final = task.output
                self.commands.append(WriteFinal(task.output))
                self.notify(NotifyKind.REQUEST_COMPLETED)
                return

    def complete_subset(self) -> None:
        """A subset run whose stages all succeeded: COMPLETED, its final output the selected stages' outputs keyed
        by stage (a fanned-out stage's as a list by item, None for an item that did not succeed)."""
        self.require_all(self.base.selection)
        final = {name: self.stage_output(name) for name in self.base.selection}
        self.status = RequestStatus.COMPLETED
        self.finished_at = self.now
        self.final = final
        self.commands.append(WriteFinal(final))
        self.notify(NotifyKind.REQUEST_COMPLETED)

    def stage_output(self, name: str) -> Any:
        """A stage's output as a stage that needs it whole gets it: its task's, or its items' in order."""
        if not self.p.stages[name].fanned_out:
            task = self.get(name, 0)
            return task.output if task is not None else None
        self.require_all([name])
        stage_tasks = self.tasks.get(name) or Map()
        bulk = self.bulk.get(name)
        if bulk is not None:  # the cached items' outputs as they are, then the tasks'
            held = list(bulk.outputs)
            for i, task in stage_tasks.items():
                held[i] = task.output if task.status is TaskStatus.SUCCEEDED else None
            return held
        outputs = []
        for i in range(self.stage(name).total or 0):
            task = stage_tasks.get(i)
            outputs.append(task.output if task is not None and task.status is TaskStatus.SUCCEEDED else None)
        return outputs

    def can_start(self, name: str) -> bool:
        spec = self.p.stages[name]
        if any(self.stage(need).status is not StageStatus.SUCCEEDED for need in spec.whole_needs):
            return False
        # Per-item needs of the same group only have to be under way: items join one by one.
        if any(self.stage(need).status is StageStatus.PENDING for need in spec.item_needs):
            return False
        return spec.for_each is None or str(spec.for_each) in self.items

    def start_stage(self, name: str) -> None:
        spec = self.p.stages[name]
        st = self.stage(name)
        if spec.for_each is None:
            before = self.get(name, 0)  # a task reset by ``Reset`` keeps counting its attempts
            self.set_stage(name, replace(st, status=StageStatus.RUNNING, total=1, started_at=self.now))
            self.put(name, 0, before if before is not None and before.status is TaskStatus.PENDING else Task())
            self.make_ready(name, 0)
            self.notify(NotifyKind.STAGE_STARTED, name)
            return
        items = self.items[str(spec.for_each)]
        total = len(items)
        pending = Task()
        previous: Map[int, Task] = _NO_TASKS
        if st.total:  # run before and reset (``Reset``): its tasks keep counting their attempts
            self.require_all([name])
            self.materialise(name)
            previous = self.tasks.get(name) or _NO_TASKS
        bulk = None if previous else self.bulk_lookup(spec, items)
        hits = 0
        # Bulk-create the fan-out: one map build instead of N persistent updates. All of it is in memory now.
        if previous:
            fresh = {i: previous.get(i) or pending for i in range(total)}
            self.tasks = self.tasks.set(
                name, Map({i: t if t.status is TaskStatus.PENDING else pending for i, t in fresh.items()})
            )
        elif bulk is not None and bulk.count:  # the hits stay arrays (``CachedItems``); only the misses are tasks
            misses = negative_at(bulk.source_of)
            hits = total - len(misses)
            self.tasks = self.tasks.set(name, Map(dict.fromkeys(misses, pending)))
            self.bulk = self.bulk.set(name, replace(bulk, at=self.now))
        else:
            self.tasks = self.tasks.set(name, Map({i: pending for i in range(total)}))
        if name in self.partial:
            self.partial = self.partial.delete(name)
        self.set_stage(
            name,
            replace(
                st,
                status=StageStatus.RUNNING,
                total=total,
                pending=total - hits,
                succeeded=st.succeeded + hits,
                started_at=self.now,
            ),
        )
        self.touched.update((name, b) for b in range((total + self.block - 1) // self.block))
        self.notify(NotifyKind.STAGE_STARTED, name, detail=f"{total} items")
        if spec.item_needs:
            self.refresh_readiness(name)
        elif hits:
            self.ready = self.ready.set(name, _ready_of(misses))
        else:
            self.ready = self.ready.set(name, ReadySet(0, total))
        if bulk is None:  # a bulk answer answered every item: the misses are not looked up again
            self.take_cached(spec, self.ready.get(name, _NO_READY).items())
        self.check_stage_done(name)

    def bulk_lookup(self, spec: Stage, fanout: FanoutList) -> CachedItems | None:
        """The result cache's answer for every item of a cached fanned-out stage starting afresh, asked for at once
        with the whole list (``CacheLookup.elements``): the service compares it with the list the stage's pack
        was last written for, so that a re-run of a list that barely changed costs no key per item. None when
        the stage is not one for it (per-item needs, or a stage downstream takes its items one by one: those
        go item by item, ``take_cached``)."""
        if (
            not spec.cache
            or not spec.fanned_out
            or spec.item_needs
            or self.base.no_cache
            or self.status is not RequestStatus.RUNNING
            or not fanout.total
            or any(spec.name in self.p.stages[down].item_needs for down in self.p.downstream.get(spec.name, ()))
        ):
            return None
        answer = self.bulk_answers.get(spec.name)
        if answer is None:
            elements = fanout.elements(str(spec.for_each))
            raise CacheLookup(
                spec.name, spec.function, {}, spec.item_needs, self.task_input(spec, 0), elements=elements
            )
        return answer if len(answer.source_of) == fanout.total else None

    # ---- the result cache in bulk (fave.cache: packs) ----------------------------------------------------

    def take_cached(self, spec: Stage, candidates: Iterable[int]) -> None:
        """Record the result cache's hits among ``candidates`` (ready tasks of ``spec``, made ready in bulk: a
        stage starting, or its upstream items taken from the cache) SUCCEEDED at once, cached and never
        invoked; the rest stay ready and are dispatched as usual. Tasks dispatched before (a retry, a reset
        task) are left to the per-item lookup of their invocation. Raises ``CacheLookup`` for the candidates
        this decision has no answer for (the caller looks them all up and decides again)."""
        if not spec.cache or not spec.fanned_out or self.base.no_cache or self.status is not RequestStatus.RUNNING:
            return
        stage = spec.name
        answers = self.answers.get(stage, {})
        ask: dict[int, dict[str, Any]] = {}
        hits: list[tuple[int, Task, CachedOutput]] = []
        for item in candidates:
            task = self.get(stage, item)
            if task is None or task.status is not TaskStatus.PENDING or task.attempt != task.stale_attempts:
                continue
            if item not in answers:
                ask[item] = {}
                continue
            answer = answers[item]
            if answer is not None:
                hits.append((item, task, answer))
        if ask:
            inputs = self.keyed_inputs(spec, ask)
            raise CacheLookup(stage, spec.function, inputs, spec.item_needs, self.task_input(spec, next(iter(ask))))
        if hits:
            self.record_cached(spec, hits)

    def record_cached(self, spec: Stage, hits: list[tuple[int, Task, CachedOutput]]) -> None:
        """Hits of PENDING ready tasks, SUCCEEDED in one pass: one map update and one count per stage, each
        touched block once (``put`` per task would cost 10,000 index updates). Then the same items of the
        per-item stages downstream wake, and those of them that are cached are taken in bulk too."""
        stage = spec.name
        with (self.tasks.get(stage) or _NO_TASKS).mutate() as tasks:
            for item, task, (output, source) in hits:
                tasks[item] = evolve(
                    task,
                    status=TaskStatus.SUCCEEDED,
                    output=output,
                    finished_at=self.now,
                    cached=True,
                    cached_from=source,
                )
            self.tasks = self.tasks.set(stage, tasks.finish())
        st = self.stage(stage)
        st.pending -= len(hits)
        st.succeeded += len(hits)
        done = {item for item, _, _ in hits}
        self.touched.update((stage, item // self.block) for item in done)
        ready = self.ready.get(stage, _NO_READY)
        self.ready = self.ready.set(stage, _ready_of(sorted(i for i in ready.items() if i not in done)))
        for down in self.p.downstream.get(stage, ()):
            down_spec = self.p.stages[down]
            if stage not in down_spec.item_needs or self.stage(down).status is not StageStatus.RUNNING:
                continue
            woken = []
            for item in sorted(done):
                waiting = self.get(down, item)
                if waiting is None or waiting.status is not TaskStatus.PENDING or waiting.retry_at is not None:
                    continue
                ok = self.inputs_ready(down_spec, item)
                if ok:
                    self.make_ready(down, item)
                    woken.append(item)
                elif ok is None:
                    self.skip(down, item)
            self.take_cached(down_spec, woken)
        self.check_stage_done(stage)

    def cache_pack(self, spec: Stage) -> None:
        """A cached fanned-out stage ended (succeeded, or stopped with the request): ask for the pack of its run
        (every item that succeeded: the pack is where its outputs are stored, ``fave.cache``)."""
        if not spec.cache or not spec.fanned_out:
            return
        self.require_all([spec.name])
        done = {
            item: (task.output, task.cached_from or self.base.request_id)
            for item, task in (self.tasks.get(spec.name) or _NO_TASKS).items()
            if task.status is TaskStatus.SUCCEEDED
        }
        bulk = self.bulk.get(spec.name)
        if done or bulk is not None:
            keyed = self.keyed_inputs(spec, done)
            rows = {item: (keyed[item], output, source) for item, (output, source) in done.items()}
            shared = self.task_input(spec, next(iter(rows), 0))  # what every task shares: any task's will do
            # The whole list, for the pack to compare the next run's with (``bulk_lookup``'s kind of stage only).
            listed = not spec.item_needs and str(spec.for_each) in self.items
            elements = self.items[str(spec.for_each)].elements(str(spec.for_each)) if listed else ()
            self.commands.append(
                WriteCachePack(spec.name, spec.function, spec.item_needs, rows, shared, bulk=bulk, elements=elements)
            )

    def keyed_inputs(self, spec: Stage, items: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What the cache keys of tasks of a fanned-out stage are made of besides the parts every task of it
        shares: each one's element and per-item needs (``fave.cache.item_keys``), item -> ``{"item", "needs"}``.
        In bulk: the list is looked up once, not per task (``task_input`` per task costs 3 times more)."""
        name = str(spec.for_each)
        elements = self.items[name]
        block, chunks = elements.block, elements.blocks
        wanted = list(items)
        missing = {(name, b) for b in {item // block for item in wanted} if b not in chunks}
        if missing:  # all at once: one load, not one per block
            raise MissingData(items=frozenset(missing))
        item_needs = spec.item_needs
        inputs: dict[int, dict[str, Any]] = {}
        for item in wanted:
            element = chunks[item // block][item % block]
            needs: dict[str, Any] = {}
            for need in item_needs:
                task = self.get(need, item)
                needs[need] = task.output if task else None
            inputs[item] = {"item": element, "needs": needs}
        return inputs

    def dispatch(self) -> None:
        """Start ready tasks, up to each stage's ``max_concurrency``."""
        if self.status is not RequestStatus.RUNNING:
            return
        if self.budget.limited and self.over_budget():
            return
        for stage, ready in list(self.ready.items()):
            if not ready:
                continue
            spec = self.p.stages[stage]
            room = len(ready)
            if spec.max_concurrency is not None:
                room = min(room, spec.max_concurrency - self.stage(stage).running)
            cap = self.stage(stage).throttle_cap
            if cap is not None:
                room = min(room, int(cap) - self.stage(stage).running)
            if room <= 0:
                continue
            limit = self.budget.max_invocations
            if limit is not None:
                if self.invocations >= limit:
                    self.over_budget(dispatching=True)
                    return
                room = min(room, limit - self.invocations)
            picked, remaining = ready.take(room)
            self.ready = self.ready.set(stage, remaining)
            for item in picked:
                self.start_task(spec, item, outbox=False)
            outbox = self.unsent.get(stage, _NO_READY)
            if (added := outbox.add_all(picked)) is not outbox:
                self.unsent = self.unsent.set(stage, added)

    def over_budget(self, *, dispatching: bool = False) -> bool:
        """End the request FAILED ``budget_exceeded: <limit>`` if it has reached a limit of its budget (every
        finished output is kept; a resume with a raised budget continues)."""
        which = exceeded(
            self.budget,
            self.frozen_ledger(),
            self.engine.rates,
            self.budget_since,
            self.now,
            dispatching=dispatching,
        )
        if which is None:
            return False
        running = [name for name in self.p.order if self.stage(name).status is StageStatus.RUNNING]
        stage = running[0] if running else self.p.final
        # error type and message read "budget_exceeded: max_invocations" in the failure's description
        self.fail_request(Failure(stage, None, BUDGET_EXCEEDED, which))
        return True

    def start_task(self, spec: Stage, item: int, *, outbox: bool = True) -> None:
        """Dispatch a PENDING task; ``outbox=False``: the caller puts it in the outbox (all of a step's at once)."""
        task = self.get(spec.name, item)
        assert task is not None and task.status is TaskStatus.PENDING
        attempt = task.attempt + 1
        key = (id(task), spec.timeout_s)
        known = self._started.get(key)
        if known is not None and known[0] is task:
            running = known[1]
        else:
            running = evolve(
                task,
                status=TaskStatus.RUNNING,
                attempt=attempt,
                dispatched_at=self.now,
                first_dispatched_at=task.first_dispatched_at or self.now,
                deadline=self.now + spec.timeout_s,
                retry_at=None,
            )
            self._started[key] = (task, running)
        self.put(spec.name, item, running)
        if outbox:
            self.unsent = self.unsent.set(spec.name, self.unsent.get(spec.name, _NO_READY).add(item))
        self.invocations += 1
        self.invoke(spec, item, attempt)

    def invoke(self, spec: Stage, item: int, attempt: int) -> None:
        item_ref = item if spec.fanned_out else None
        self.commands.append(
            Invoke(spec.name, item_ref, attempt, spec.function, spec.mode, self.task_input(spec, item_ref))
        )

    def sent(self, tasks: tuple[tuple[str, int], ...]) -> None:
        by_stage: dict[str, list[int]] = {}
        for stage, item in tasks:
            by_stage.setdefault(stage, []).append(item)
        for stage, items in by_stage.items():  # a step's worth at once: one outbox per stage, not one per item
            outbox = self.unsent.get(stage)
            if outbox is not None and (rest := outbox.remove_all(items)) is not outbox:
                self.unsent = self.unsent.set(stage, rest)

    def resend(self) -> None:
        """Invoke again every task of the outbox that is still running (same attempt: a duplicate delivery of
        it, if the first one did go out, is counted once like any duplicate)."""
        if self.status is not RequestStatus.RUNNING:
            return
        for stage, outbox in list(self.unsent.items()):
            spec = self.p.stages[stage]
            for item in outbox.items():
                task = self.get(stage, item)
                if task is not None and task.status is TaskStatus.RUNNING:
                    self.invocations += 1  # it may be the first time it goes out, or a duplicate: both billed
                    self.invoke(spec, item, task.attempt)
                else:  # ended meanwhile
                    self.unsent = self.unsent.set(stage, self.unsent[stage].remove(item))

    def task_input(self, spec: Stage, item: int | None) -> dict[str, Any]:
        """The stage's one input: request, item, upstream outputs and config."""
        needs: dict[str, Any] = {}
        for need in spec.needs:
            need_spec = self.p.stages[need]
            if spec.for_each is not None and need == spec.for_each.source:
                continue  # a per-item task gets its item, not the whole list it came from
            if need in spec.item_needs:
                task = self.get(need, _key(item))
                needs[need] = task.output if task else None
            elif need_spec.fanned_out:
                needs[need] = self.stage_output(need)
            else:
                task = self.get(need, 0)
                needs[need] = task.output if task else None
        common = self.inputs.get(spec.name)
        if common is None:  # the same for every task of the stage: built once per decision
            request = {REF: self.base.input_ref} if self.base.input_ref else dict(self.base.input)
            common = self.inputs[spec.name] = (request, self.p.stage_config(spec.name, self.base.profile))
        value: dict[str, Any] = {"request": common[0], "needs": needs, "config": common[1]}
        if spec.for_each is not None and item is not None:
            value["item"] = self.item_of(spec, item)
            value["index"] = item
        return value

    # ---- the end ---------------------------------------------------------------------------------------

    def fail_request(self, failure: Failure) -> None:
        self.status = RequestStatus.FAILED
        self.failure = failure
        self.finished_at = self.now
        st = self.stage(failure.stage)
        self.set_stage(failure.stage, replace(st, status=StageStatus.FAILED, finished_at=self.now))
        self.stop_everything(StageStatus.FAILED)
        if st.status is StageStatus.RUNNING and st.succeeded:  # what its items computed still goes to the cache
            self.cache_pack(self.p.stages[failure.stage])
        self.notify(NotifyKind.REQUEST_FAILED, failure.stage, failure.item, failure.describe())

    def stop_everything(self, stage_status: StageStatus) -> None:
        """Cancel every task that has not ended. A running attempt keeps its deadline, as the mark of an attempt
        still in flight: what it reports later is recorded (``late_success``, ``late_failure``)."""
        self.require_all(self.p.order)
        for stage in self.p.order:
            st = self.stage(stage)
            if st.pending or st.running:
                for item in _unfinished(self.tasks.get(stage) or Map()):
                    task = self.get(stage, item)
                    assert task is not None
                    running = task.status is TaskStatus.RUNNING and task.deadline is not None
                    if running:
                        self.abandoned += 1
                        assert task.deadline is not None
                        if self.abandoned_until is None or task.deadline > self.abandoned_until:
                            self.abandoned_until = task.deadline
                    self.put(
                        stage,
                        item,
                        replace(task, status=TaskStatus.CANCELLED, deadline=task.deadline if running else None),
                    )
            st = self.stage(stage)
            if st.status is StageStatus.RUNNING:
                status = StageStatus.CANCELLED if stage_status is StageStatus.CANCELLED else StageStatus.FAILED
                if stage_status is StageStatus.FAILED and not st.failed:
                    status = StageStatus.CANCELLED
                self.set_stage(stage, replace(st, status=status, finished_at=self.now))
                if st.succeeded:  # what its items computed still goes to the cache
                    self.cache_pack(self.p.stages[stage])
        self.ready = Map()
        self.retry_due = Map()
        self.running = Map()
        self.earliest_deadline = None


THROTTLE_BASE_S = 0.05
THROTTLE_DECREASE = 0.5
"""The multiplicative decrease of a stage's in-flight cap on a throttle (TCP's). Measured with a function reserved
at 2 (tests/functional/test_throttle_backoff.py): 0.7 (CUBIC's) gave the same wall time with 40% more throttles."""
THROTTLE_MAX_S = 2.0


def throttle_delay(throttled_before: int, jitter: float) -> float:
    """How long a throttled task waits before it may be dispatched again: doubling from ``THROTTLE_BASE_S`` with
    each throttle of the same task, up to ``THROTTLE_MAX_S``, jittered over its upper half (so tasks throttled
    together do not come back together). The in-flight cap, not this delay, sets the pace; the delay keeps a
    function that stays saturated (by other requests) from being asked again at once."""
    delay = min(THROTTLE_MAX_S, THROTTLE_BASE_S * 2.0 ** min(throttled_before, 10))
    return delay * (0.5 + 0.5 * jitter)


def _ready_of(items: list[int]) -> ReadySet:
    """A ready set of ``items`` (ascending): one run when they are consecutive, else sparse."""
    if not items:
        return _NO_READY
    if items[-1] - items[0] + 1 == len(items):
        return ReadySet(items[0], items[-1] + 1)
    return ReadySet(0, 0, Map(dict.fromkeys(items)))


def _unfinished(stage_tasks: Map[int, Task]) -> list[int]:
    return [i for i, t in stage_tasks.items() if not t.status.terminal]


__all__ = ["Engine", "TaskKey", "unit_random"]
