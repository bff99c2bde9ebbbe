"""The engine: pure decisions. ``Engine(pipeline).decide(state, event, now) -> (state, commands)``.

No I/O, no clock, no randomness of its own: the caller passes ``now``, and retry jitter is a hash of the
task's identity, so the same inputs always give the same outputs. The executor performs the commands.

Invariants (tests/functional/test_engine_properties.py checks them under random interleavings, duplicate
deliveries and crashes):
* a task's completion is counted once however often it is delivered: counts change only on a status
  transition, and a terminal task never transitions again (except through ``Resume``);
* a task is dispatched only when its inputs exist (its stage's whole needs succeeded, and for per-item
  stages the same item of each per-item need succeeded);
* a stage never has more than ``max_concurrency`` tasks RUNNING;
* after ``Resume`` exactly the tasks that did not succeed run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from immutables import Map

from fave.core.dag import Pipeline, Stage
from fave.core.model import (
    REF,
    TIMEOUT_ERROR,
    Cancel,
    Command,
    Event,
    Failure,
    Invoke,
    Notify,
    NotifyKind,
    RequestState,
    RequestStatus,
    Resume,
    StageState,
    StageStatus,
    Start,
    Task,
    TaskFailed,
    TaskKey,
    TaskStatus,
    TaskSucceeded,
    Tick,
    WriteFinal,
    evolve,
)

_EMPTY_READY: Map[int, None] = Map()


def unit_random(request_id: str, stage: str, item: int | None, attempt: int) -> float:
    """A deterministic number in [0, 1) for a task attempt (drives full jitter reproducibly)."""
    digest = hashlib.blake2b(f"{request_id}/{stage}/{item}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Engine:
    """Decides what happens next for requests of one pipeline."""

    def __init__(self, pipeline: Pipeline, *, change_block: int = 1) -> None:
        """``change_block``: ``RequestState.changed`` names changed tasks in blocks of this many items of a
        stage (``(stage, item // change_block)``). The persistence that writes tasks in groups passes its group
        size, so the set stays small (a 10,000-item fan-out changes 79 blocks of 128, not 10,000 entries)."""
        if change_block < 1:
            raise ValueError(f"change_block must be at least 1, got {change_block}")
        self.pipeline = pipeline
        self.change_block = change_block

    def new_request(self, request_id: str, input: dict[str, Any], now: float) -> RequestState:
        """A request in INIT with every stage PENDING (not yet persisted, not yet started)."""
        stages: Map[str, StageState] = Map({name: StageState() for name in self.pipeline.order})
        return RequestState(
            request_id=request_id,
            input=dict(input),
            pipeline_digest=self.pipeline.digest,
            created_at=now,
            updated_at=now,
            stages=stages,
        )

    def decide(self, state: RequestState, event: Event, now: float) -> tuple[RequestState, list[Command]]:
        """Apply one event. Returns the new state and the commands to perform (after committing it)."""
        return self.decide_all(state, (event,), now)

    def decide_all(
        self, state: RequestState, events: Iterable[Event], now: float
    ) -> tuple[RequestState, list[Command]]:
        """Apply events in order, as one decision: the same result as folding ``decide`` over them at the
        same ``now``, without building an intermediate state per event (a batch of 10,000 completions
        would otherwise copy the request state 10,000 times)."""
        tx = _Tx(self.pipeline, state, now, self.change_block)
        for event in events:
            match event:
                case Start():
                    tx.start()
                case TaskSucceeded():
                    tx.task_succeeded(event)
                case TaskFailed():
                    tx.task_failed(event.stage, event.item, event.attempt, event.error_type, event.message)
                case Tick():
                    tx.tick()
                case Resume():
                    tx.resume()
                case Cancel():
                    tx.cancel(event.reason)
        return tx.finish()

    def rebuild_indexes(self, state: RequestState, now: float) -> RequestState:
        """Recompute the derived indexes (ready, retry timers, deadlines, counts) from the tasks."""
        tx = _Tx(self.pipeline, state, now, self.change_block)
        tx.rebuild()
        new_state, _ = tx.finish()
        return new_state


def _key(item: int | None) -> int:
    return 0 if item is None else item


class _Tx:
    """One decision in progress: a working copy of the state plus the commands it produces."""

    def __init__(self, pipeline: Pipeline, state: RequestState, now: float, change_block: int) -> None:
        self.p = pipeline
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
        self.tasks = state.tasks
        self.items = state.items
        self.ready = state.ready
        self.retry_due = state.retry_due
        self.running = state.running
        self.earliest_deadline = state.earliest_deadline
        self.changed = state.changed
        self.commands: list[Command] = []

    # ---- plumbing ------------------------------------------------------------------------------------

    def finish(self) -> tuple[RequestState, list[Command]]:
        changed = (
            self.commands
            or self.tasks is not self.base.tasks
            or self.stages is not self.base.stages
            or self.status != self.base.status
            or self.ready is not self.base.ready
            or self.retry_due is not self.base.retry_due
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
            items=self.items,
            ready=self.ready,
            retry_due=self.retry_due,
            running=self.running,
            earliest_deadline=self.earliest_deadline,
            changed=self.changed,
            updated_at=self.now if changed else self.base.updated_at,
        )
        commands = self.commands
        if self.status is not RequestStatus.RUNNING:
            # The decision ended the request after dispatching in it (a timeout retried, then another task ran
            # out of retries in the same tick): a request that has ended invokes nothing.
            commands = [c for c in commands if not isinstance(c, Invoke)]
        return state, commands

    def stage(self, name: str) -> StageState:
        return self.stages[name]

    def set_stage(self, name: str, st: StageState) -> None:
        self.stages = self.stages.set(name, st)

    def get(self, stage: str, item: int) -> Task | None:
        stage_tasks = self.tasks.get(stage)
        return None if stage_tasks is None else stage_tasks.get(item)

    def put(self, stage: str, item: int, task: Task) -> None:
        """Store a task and keep its stage's counts equal to a count over the tasks."""
        stage_tasks = self.tasks.get(stage) or Map()
        old = stage_tasks.get(item)
        self.tasks = self.tasks.set(stage, stage_tasks.set(item, task))
        if old is None or old.status != task.status:
            st = self.stage(stage)
            changes: dict[str, int] = {task.status.value.lower(): st.count(task.status) + 1}
            if old is not None:
                changes[old.status.value.lower()] = st.count(old.status) - 1
            self.set_stage(stage, evolve(st, **changes))
        self.changed = self.changed.set((stage, item // self.block), None)
        # Keep the derived indexes in step with the status.
        key = (stage, item)
        if task.status is TaskStatus.RUNNING and task.deadline is not None:
            self.running = self.running.set(key, task.deadline)
            if self.earliest_deadline is None or task.deadline < self.earliest_deadline:
                self.earliest_deadline = task.deadline
        elif key in self.running:
            self.running = self.running.delete(key)
        if task.status is TaskStatus.PENDING and task.retry_at is not None:
            self.retry_due = self.retry_due.set(key, task.retry_at)
        elif key in self.retry_due:
            self.retry_due = self.retry_due.delete(key)
        if task.status is not TaskStatus.PENDING:
            self.unready(stage, item)

    def make_ready(self, stage: str, item: int) -> None:
        self.ready = self.ready.set(stage, self.ready.get(stage, _EMPTY_READY).set(item, None))

    def unready(self, stage: str, item: int) -> None:
        ready = self.ready.get(stage)
        if ready is not None and item in ready:
            self.ready = self.ready.set(stage, ready.delete(item))

    def notify(self, kind: NotifyKind, stage: str | None = None, item: int | None = None, detail: str = "") -> None:
        self.commands.append(Notify(kind, stage, item, detail))

    # ---- events --------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.status is not RequestStatus.INIT:
            return
        self.status = RequestStatus.RUNNING
        self.started_at = self.now
        self.advance()
        self.dispatch()

    def task_succeeded(self, ev: TaskSucceeded) -> None:
        if self.status is not RequestStatus.RUNNING:
            return
        item = _key(ev.item)
        task = self.get(ev.stage, item)
        # Duplicates and unknown tasks change nothing: this is what makes counting exactly-once.
        if task is None or task.status.terminal or ev.attempt > task.attempt or ev.attempt < 1:
            return
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
            ),
        )
        for for_each, values in ev.fanout.items():
            self.items = self.items.set(for_each, tuple(values))
        self.after_item_done(ev.stage, item)
        self.advance()
        self.dispatch()

    def task_failed(self, stage: str, item_: int | None, attempt: int, error_type: str, message: str) -> None:
        if self.status is not RequestStatus.RUNNING:
            return
        item = _key(item_)
        task = self.get(stage, item)
        # Only the current attempt's failure counts: a late failure of a timed-out attempt is stale.
        if task is None or task.status is not TaskStatus.RUNNING or attempt != task.attempt:
            return
        spec = self.p.stages[stage]
        jitter = unit_random(self.base.request_id, stage, item_, task.attempt)
        decision = spec.retry.decide(task.attempt - task.budget_base, error_type, jitter)
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
                self.fail_request(failure)
                return
            self.after_item_done(stage, item)
            self.advance()
        self.dispatch()

    def tick(self) -> None:
        if self.status is not RequestStatus.RUNNING:
            return
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
            overdue = sorted(
                (deadline, rank[stage], item)
                for (stage, item), deadline in self.running.items()
                if deadline <= self.now
            )
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
            self.earliest_deadline = min(self.running.values(), default=None)
        self.dispatch()

    def cancel(self, reason: str) -> None:
        if self.status.terminal:
            return
        self.status = RequestStatus.CANCELLED
        self.cancel_reason = reason
        self.finished_at = self.now
        self.stop_everything(StageStatus.CANCELLED)
        self.notify(NotifyKind.REQUEST_CANCELLED, detail=reason)

    def resume(self) -> None:
        if self.status is RequestStatus.COMPLETED:
            return
        self.status = RequestStatus.RUNNING
        self.failure = None
        self.cancel_reason = None
        self.finished_at = None
        self.started_at = self.started_at or self.now
        self.resumes += 1
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
            self.set_stage(stage, replace(st, status=StageStatus.RUNNING, finished_at=None))
        self.ready = Map()
        for stage in self.p.order:
            self.refresh_readiness(stage)
            self.check_stage_done(stage)
        self.notify(NotifyKind.REQUEST_RESUMED)
        self.advance()
        self.dispatch()

    def rebuild(self) -> None:
        """Derived indexes from scratch (after loading from the store)."""
        self.ready = Map()
        self.retry_due = Map()
        self.running = Map()
        self.earliest_deadline = None
        stages = self.stages
        for stage in self.p.order:
            counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "skipped", "cancelled"), 0)
            for item, task in (self.tasks.get(stage) or Map()).items():
                counts[task.status.value.lower()] += 1
                key = (stage, item)
                if task.status is TaskStatus.RUNNING and task.deadline is not None:
                    self.running = self.running.set(key, task.deadline)
                elif task.status is TaskStatus.PENDING and task.retry_at is not None:
                    self.retry_due = self.retry_due.set(key, task.retry_at)
            stages = stages.set(stage, replace(stages[stage], **counts))  # type: ignore[arg-type]
        self.stages = stages
        self.earliest_deadline = min(self.running.values(), default=None)
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

    def tolerated(self, spec: Stage, st: StageState) -> bool:
        """Whether the stage's failed items so far still let it succeed (its completion policy)."""
        return spec.fanned_out and st.total is not None and spec.completion.decide(st.failed, st.total).ok

    def check_stage_done(self, stage: str) -> None:
        st = self.stage(stage)
        if st.status is not StageStatus.RUNNING or st.total is None or st.done < st.total:
            return
        if st.failed and not self.tolerated(self.p.stages[stage], st):
            return  # fail_request has been (or will be) called by the failure path
        self.set_stage(stage, replace(st, status=StageStatus.SUCCEEDED, finished_at=self.now))
        self.notify(NotifyKind.STAGE_SUCCEEDED, stage)

    def advance(self) -> None:
        """Start every stage whose inputs exist; complete the request when the final stage succeeded."""
        progressed = True
        while progressed and self.status is RequestStatus.RUNNING:
            progressed = False
            for name in self.p.order:
                if self.stage(name).status is StageStatus.PENDING and self.can_start(name):
                    self.start_stage(name)
                    progressed = True
            final = self.stage(self.p.final)
            if final.status is StageStatus.SUCCEEDED:
                task = self.get(self.p.final, 0)
                assert task is not None
                self.status = RequestStatus.COMPLETED
                self.finished_at = self.now
                self.final = task.output
                self.commands.append(WriteFinal(task.output))
                self.notify(NotifyKind.REQUEST_COMPLETED)
                return

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
            self.set_stage(name, replace(st, status=StageStatus.RUNNING, total=1, started_at=self.now))
            self.put(name, 0, Task())
            self.make_ready(name, 0)
            self.notify(NotifyKind.STAGE_STARTED, name)
            return
        items = self.items[str(spec.for_each)]
        total = len(items)
        pending = Task()
        # Bulk-create the fan-out: one map build instead of N persistent updates.
        self.tasks = self.tasks.set(name, Map({i: pending for i in range(total)}))
        self.set_stage(name, replace(st, status=StageStatus.RUNNING, total=total, pending=total, started_at=self.now))
        self.changed = self.changed.update({(name, b): None for b in range((total + self.block - 1) // self.block)})
        self.notify(NotifyKind.STAGE_STARTED, name, detail=f"{total} items")
        if spec.item_needs:
            self.refresh_readiness(name)
        else:
            self.ready = self.ready.set(name, Map({i: None for i in range(total)}))
        self.check_stage_done(name)

    def dispatch(self) -> None:
        """Start ready tasks, up to each stage's ``max_concurrency``."""
        if self.status is not RequestStatus.RUNNING:
            return
        for stage, ready in list(self.ready.items()):
            if not ready:
                continue
            spec = self.p.stages[stage]
            room = len(ready)
            if spec.max_concurrency is not None:
                room = min(room, spec.max_concurrency - self.stage(stage).running)
            if room <= 0:
                continue
            picked = list(_take(ready, room))
            remaining = ready
            for item in picked:
                remaining = remaining.delete(item)
            self.ready = self.ready.set(stage, remaining)
            for item in picked:
                self.start_task(spec, item)

    def start_task(self, spec: Stage, item: int) -> None:
        task = self.get(spec.name, item)
        assert task is not None and task.status is TaskStatus.PENDING
        attempt = task.attempt + 1
        self.put(
            spec.name,
            item,
            evolve(
                task,
                status=TaskStatus.RUNNING,
                attempt=attempt,
                dispatched_at=self.now,
                first_dispatched_at=task.first_dispatched_at or self.now,
                deadline=self.now + spec.timeout_s,
                retry_at=None,
            ),
        )
        item_ref = item if spec.fanned_out else None
        self.commands.append(
            Invoke(spec.name, item_ref, attempt, spec.function, spec.mode, self.task_input(spec, item_ref))
        )

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
                stage_tasks = self.tasks.get(need) or Map()
                total = self.stage(need).total or 0
                outputs = []
                for i in range(total):
                    task = stage_tasks.get(i)
                    ok = task is not None and task.status is TaskStatus.SUCCEEDED
                    outputs.append(task.output if ok and task is not None else None)
                needs[need] = outputs
            else:
                task = self.get(need, 0)
                needs[need] = task.output if task else None
        value: dict[str, Any] = {
            "request": {REF: self.base.input_ref} if self.base.input_ref else dict(self.base.input),
            "needs": needs,
            "config": self.p.stage_config(spec.name, self.base.profile),
        }
        if spec.for_each is not None and item is not None:
            value["item"] = self.items[str(spec.for_each)][item]
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
        self.notify(NotifyKind.REQUEST_FAILED, failure.stage, failure.item, failure.describe())

    def stop_everything(self, stage_status: StageStatus) -> None:
        """Cancel every task that has not ended; running attempts are abandoned (late results ignored)."""
        for stage in self.p.order:
            st = self.stage(stage)
            if st.pending or st.running:
                for item in _unfinished(self.tasks.get(stage) or Map()):
                    task = self.get(stage, item)
                    assert task is not None
                    self.put(stage, item, replace(task, status=TaskStatus.CANCELLED, deadline=None))
            st = self.stage(stage)
            if st.status is StageStatus.RUNNING:
                status = StageStatus.CANCELLED if stage_status is StageStatus.CANCELLED else StageStatus.FAILED
                if stage_status is StageStatus.FAILED and not st.failed:
                    status = StageStatus.CANCELLED
                self.set_stage(stage, replace(st, status=status, finished_at=self.now))
        self.ready = Map()
        self.retry_due = Map()
        self.running = Map()
        self.earliest_deadline = None


def _take(ready: Map[int, None], n: int) -> Iterable[int]:
    for count, item in enumerate(ready):
        if count >= n:
            return
        yield item


def _unfinished(stage_tasks: Map[int, Task]) -> list[int]:
    return [i for i, t in stage_tasks.items() if not t.status.terminal]


__all__ = ["Engine", "TaskKey", "unit_random"]
