"""A worker: admit requests from the admission queue and drive them all in this one process (``fave worker``).

``Orchestrator.drive`` serves one request. A worker drives up to ``concurrency`` of them with one orchestrator
(one invoker: locally, one shared runtime): it routes the inbox's completions by request id and applies, per
request and per step, what arrived for it and a ``Tick`` (as ``Orchestrator.settle`` does), holding each
request's lease while it drives it.

* **Admission**: ``queue.claim`` up to the free slots; the entry is marked started with a request id made
  *before* the request is created (``create(request_id=...)`` is idempotent), so a worker that dies in between
  leaves an entry that names its request: the next one creates or resumes that request, never a second one.
* **Pick-up at start**: every RUNNING entry of the queue whose request nobody drives (its lease is free) is
  resumed where it is: a ``Resume`` re-dispatches what had not succeeded (a local worker's invocations died with
  its process; what succeeded is never run again), INIT is started, a request that ended meanwhile finishes its
  entry.
* **Stop** (``stop`` set: SIGTERM/SIGINT): nothing more is admitted; new dispatches are *parked* (recorded as
  sent, not run: ``_Gate``), the invocations already running get up to ``grace_s`` to report and their steps
  commit; then what was sent is committed (``flush_sent``), the leases are released and the entries stay
  RUNNING for the next worker. A second signal skips what is left of the grace period.
* **Scheduled re-runs**: entries with ``every_s`` are re-queued by the queue itself; with
  ``operations.stale_after_s``, a keyed entry whose last success is older is queued again
  (``AdmissionQueue.requeue_stale``, every ``stats_every_s``).
* ``once``: drain every due entry, then return (``WorkerReport.failed`` tells the caller what failed).
"""

from __future__ import annotations

import contextlib
import logging
import queue as queue_mod
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fave_shared.errors import FaveError, NotFoundError

from fave.core.model import Event, RequestState, RequestStatus, Resume, Start, TaskThrottled, Tick
from fave.ids import new_request_id
from fave.invoke.base import Invoker, InvokeResult
from fave.keys import state_key
from fave.lease import LeaseHeldError
from fave.queue import outcome
from fave.service import Orchestrator

__all__ = [
    "QueueEntry",
    "Worker",
    "WorkerHooks",
    "WorkerOptions",
    "WorkerQueue",
    "WorkerReport",
    "WorkerStoppingError",
]

log = logging.getLogger("fave.worker")

MAX_STEP_ERRORS = 3
"""Consecutive failed steps of one request (a store outage, a corrupt state) before the worker lets go of it:
its entry is finished FAILED (the queue's cooldown retries it), and the other requests go on."""


class QueueEntry(Protocol):
    """What the worker reads of a ``fave.queue`` entry."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str | None: ...
    @property
    def input(self) -> Mapping[str, Any]: ...
    @property
    def status(self) -> str: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def budget(self) -> Mapping[str, Any] | None: ...


class WorkerQueue(Protocol):
    """What the worker asks of ``fave.queue.AdmissionQueue``."""

    def claim(self, worker: str, *, limit: int = 1) -> Sequence[QueueEntry]: ...
    def started(self, entry_id: str, request_id: str) -> QueueEntry: ...
    def finished(self, entry_id: str, status: str, *, error: str | None = None) -> QueueEntry: ...
    def release(self, entry_id: str) -> QueueEntry: ...
    def running(self) -> Sequence[QueueEntry]: ...
    def requeue_stale(self, stale_after_s: float) -> Sequence[QueueEntry]: ...
    def stats(self, now: float | None = None) -> Any: ...


class WorkerHooks:
    """What the worker tells the outside (alerts, live metrics); the default tells no one. Never raises into the
    worker: an implementation's failure is logged."""

    def request_ended(self, state: RequestState) -> None:
        """A request reached its end (COMPLETED, FAILED, CANCELLED)."""

    def queue_checked(self, stats: Any) -> None:
        """The queue's stats, read every ``stats_every_s``."""

    def in_flight(self, n: int) -> None:
        """How many requests the worker drives now."""

    def throttled(self, request_id: str, stage: str, n: int) -> None:
        """``n`` tasks of the stage were refused for their function's concurrency limit (re-queued, not failed)."""

    def close(self) -> None:
        """The worker stops."""


class WorkerStoppingError(FaveError):
    """A synchronous invocation parked because the worker is stopping: never applied (the worker lets go of its
    request before), the next worker's ``Resume`` runs the task again."""


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 4
    """Requests driven at once (``operations.max_requests_in_flight`` unless the command line says otherwise)."""
    grace_s: float = 60.0
    """After a stop: how long the invocations running then get to report before the worker lets go."""
    once: bool = False
    """Return when no entry is due and nothing runs (``fave worker --once``)."""
    poll_s: float = 1.0
    """How often the queue is asked for due entries while a slot is free (at once when a request ends)."""
    tick_s: float = 0.05
    """The longest wait for a completion before a step of Ticks (retries and timeouts come due)."""
    stats_every_s: float = 30.0
    """How often the queue's stats (alerts: a stuck queue) and staleness are checked."""
    stale_after_s: float | None = None
    """``operations.stale_after_s``: a keyed entry whose last success is older is queued again."""
    max_batch: int = 20_000


@dataclass
class WorkerReport:
    """What a run of the worker did."""

    completed: list[tuple[str, str]] = field(default_factory=list)
    """(entry id, request id) of every request that completed."""
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    """(entry id, request id, status) of every request that ended FAILED or CANCELLED."""
    picked_up: list[str] = field(default_factory=list)
    """Requests found RUNNING at start and resumed."""
    left_running: list[str] = field(default_factory=list)
    """Requests still running when the worker stopped (their entries stay RUNNING for the next worker)."""
    max_in_flight: int = 0
    stopped: bool = False
    """Stopped by ``stop`` (a signal), not because the queue was drained."""


@dataclass
class _Active:
    entry_id: str | None
    request_id: str
    state: RequestState
    lease: contextlib.ExitStack
    errors: int = 0


_TaskKey = tuple[str, str, int | None, int]


def _task_key(payload: Mapping[str, Any]) -> _TaskKey | None:
    task = payload.get("task")
    if not isinstance(task, Mapping):
        return None
    try:
        return (str(task["request_id"]), str(task["stage"]), task.get("item"), int(task["attempt"]))
    except (KeyError, TypeError, ValueError):
        return None


class _Gate:
    """The orchestrator's invoker, wrapped so that the worker knows which invocations are still running and can
    stop new ones (``close``): then an asynchronous invoke is accepted and dropped (the engine records it as
    sent; the next worker's ``Resume`` dispatches it again) and a synchronous one waits for ``release`` and
    raises ``WorkerStoppingError`` (its failure is never applied). Everything else is the wrapped invoker's."""

    def __init__(self, inner: Invoker) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._closed = False
        self._released = threading.Event()
        self._running: set[_TaskKey] = set()
        self.parked = 0

    def __getattr__(self, name: str) -> Any:  # faults, runtime options: what callers read of the runtime
        return getattr(self.inner, name)

    def _enter(self, payload: Mapping[str, Any]) -> bool:
        """Whether to run the invocation (False: parked); counts it as running if so."""
        key = _task_key(payload)
        with self._lock:
            if self._closed:
                self.parked += 1
                return False
            if key is not None:
                self._running.add(key)
            return True

    def _forget(self, payload: Mapping[str, Any]) -> None:
        key = _task_key(payload)
        if key is not None:
            with self._lock:
                self._running.discard(key)

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        if not self._enter(payload):
            return "parked-by-stopping-worker"
        try:
            return self.inner.invoke_async(function, payload)
        except BaseException:
            self._forget(payload)  # it did not go out: its failure is reported now, by the orchestrator
            raise

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        if not self._enter(payload):
            self._released.wait()
            raise WorkerStoppingError("the worker is stopping: this invocation runs again on the next worker")
        return self.inner.invoke_sync(function, payload)  # its completion (success or failure) comes as an event

    def functions(self) -> frozenset[str]:
        return self.inner.functions()

    def code_digest(self, function: str) -> str | None:
        return self.inner.code_digest(function)

    def close(self) -> None:
        self.release()
        self.inner.close()

    # -- the worker's side --

    def stop_new(self) -> None:
        with self._lock:
            self._closed = True

    def release(self) -> None:
        self._released.set()

    def reported(self, request_id: str, event: Event) -> None:
        """A completion arrived: its invocation is no longer running."""
        stage, attempt = getattr(event, "stage", None), getattr(event, "attempt", None)
        if stage is None or attempt is None:
            return
        with self._lock:
            self._running.discard((request_id, stage, getattr(event, "item", None), attempt))

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def running_for(self, request_id: str) -> int:
        with self._lock:
            return sum(1 for key in self._running if key[0] == request_id)


class Worker:
    """Drives the queue's requests with one orchestrator; ``run`` until stopped (or drained, with ``once``)."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        queue: WorkerQueue,
        *,
        worker_id: str,
        options: WorkerOptions | None = None,
        hooks: WorkerHooks | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if orchestrator.invoker is None:
            raise FaveError("a worker needs an orchestrator with an invoker")
        self.orchestrator = orchestrator
        self.queue = queue
        self.worker_id = worker_id
        self.options = options or WorkerOptions()
        if self.options.concurrency < 1:
            raise FaveError(f"concurrency: must be at least 1, got {self.options.concurrency}")
        self.hooks = hooks or WorkerHooks()
        self.say = say or log.info
        self.gate = _Gate(orchestrator.invoker)
        orchestrator.invoker = self.gate
        self.active: dict[str, _Active] = {}
        self.report = WorkerReport()
        self._next_claim = 0.0
        self._next_poll = 0.0
        self._next_stats = 0.0
        self._drained = False
        self._checked = False

    @property
    def clock_now(self) -> float:
        return self.orchestrator.clock.now()

    # ---- the loop -----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, hurry: threading.Event | None = None) -> WorkerReport:
        """Run until ``stop`` is set (then stop gracefully; ``hurry`` set as well: at once) or, with ``once``,
        until the queue has nothing due and nothing runs."""
        opts = self.options
        sweep = getattr(self.orchestrator.store, "sweep_temp", None)
        if callable(sweep):
            sweep()  # a local store's temp files of writes a killed process left
        try:
            self._pick_up()
            deadline: float | None = None
            while True:
                now = self.clock_now
                if stop.is_set() and deadline is None:
                    deadline = now + opts.grace_s
                    self.gate.stop_new()
                    self.report.stopped = True
                    self.say(
                        f"stopping: {len(self.active)} request(s) running, {self.gate.running()} invocation(s) "
                        f"get up to {opts.grace_s:g} s to finish"
                    )
                if deadline is None:
                    check = now >= self._next_stats
                    if check:  # stale entries first, so that those queued again are admitted at once
                        self._next_stats = now + opts.stats_every_s
                        self._requeue_stale()
                        if self._checked:  # (the first time, _pick_up has just run)
                            self._pick_up(limit=opts.concurrency - len(self.active))
                        self._checked = True
                    self._admit(now)
                    if check:  # what waits once this worker took its share
                        self._report_queue(now)
                    if opts.once and not self.active and self._drained:
                        break
                events = self._received()
                self._step(events)
                if deadline is not None and (
                    not self.active
                    or (not events and self.gate.running() == 0)
                    or self.clock_now >= deadline
                    or (hurry is not None and hurry.is_set())
                ):
                    break
            self._let_go()
        finally:
            self.gate.release()
            for active in self.active.values():  # an unexpected error: the leases go, the requests stay RUNNING
                with contextlib.suppress(Exception):
                    active.lease.close()
            with contextlib.suppress(Exception):
                self.hooks.close()
        return self.report

    def _received(self) -> dict[str, list[Event]]:
        """The inbox's events, by request (waiting up to ``tick_s`` for the first). Those of requests this worker
        does not drive (a request it let go of) are dropped, as ``Orchestrator.drive`` drops them."""
        inbox = self.orchestrator.inbox
        batch: dict[str, list[Event]] = {}
        throttled: dict[tuple[str, str], int] = {}
        count = 0
        try:
            message = inbox.get(timeout=self.options.tick_s)
            while True:
                request_id, event = message
                self.gate.reported(request_id, event)
                if request_id in self.active and not isinstance(event, Tick):
                    batch.setdefault(request_id, []).append(event)
                    if isinstance(event, TaskThrottled):  # refused at a concurrency limit: for alerts and metrics
                        where = (request_id, event.stage)
                        throttled[where] = throttled.get(where, 0) + 1
                count += 1
                if count >= self.options.max_batch:
                    break
                message = inbox.get_nowait()
        except queue_mod.Empty:
            pass
        for (request_id, stage), n in throttled.items():
            try:
                self.hooks.throttled(request_id, stage, n)
            except Exception as exc:  # alerts and metrics never stop the worker
                log.warning("worker hook throttled failed: %s", exc)
        return batch

    def _step(self, batch: dict[str, list[Event]]) -> None:
        """One step per request driven: what arrived for it and a Tick."""
        now = self.clock_now
        notice = now >= self._next_poll
        if notice:
            self._next_poll = now + self.options.poll_s
        for request_id, active in list(self.active.items()):
            try:
                if notice:
                    self._notice_outside_writes(active)
                active.state = self.orchestrator.apply(request_id, [*batch.get(request_id, ()), Tick()])
                active.errors = 0
            except FaveError as exc:
                active.errors += 1
                log.warning("request %s: step failed (%d in a row): %s", request_id, active.errors, exc)
                if active.errors >= MAX_STEP_ERRORS:
                    self._give_up(active, exc)
                continue
            if self._ended(active.state):
                self._retire(active)

    def _ended(self, state: RequestState) -> bool:
        """Ended, and not waiting for the attempts still running after a failure (``Orchestrator._drain``: their
        successes are kept, so a resume runs only what did not succeed). Only attempts this process runs can
        still report: with none left, there is nothing to wait for, whatever their deadlines."""
        if not state.status.terminal:
            return False
        return not (
            state.status is RequestStatus.FAILED
            and state.abandoned
            and state.abandoned_until is not None
            and self.clock_now < state.abandoned_until
            and self.gate.running_for(state.request_id) > 0
        )

    def _notice_outside_writes(self, active: _Active) -> None:
        """Pick up a ``fave cancel`` from another process (as ``Orchestrator.drive`` does)."""
        known = self.orchestrator.persistence.committed_etag(active.request_id)
        try:
            etag = self.orchestrator.store.head(state_key(active.request_id))
        except NotFoundError:
            return
        if known is not None and etag != known:
            active.state = self.orchestrator.load(active.request_id)

    # ---- admission and pick-up ----------------------------------------------------------------------------

    def _admit(self, now: float) -> None:
        free = self.options.concurrency - len(self.active)
        if free <= 0 or now < self._next_claim:
            return
        self._next_claim = now + self.options.poll_s
        entries = self.queue.claim(self.worker_id, limit=free)
        self._drained = not entries
        for entry in entries:
            self._start(entry)

    def _start(self, entry: QueueEntry) -> None:
        # The request id is the entry's before the request exists: a worker that dies in between leaves an entry
        # naming a request that the next one creates (create is idempotent on it), never a second request.
        request_id = entry.request_id or new_request_id(self.clock_now)
        try:
            self.queue.started(entry.id, request_id)
        except (FaveError, ValueError) as exc:  # the queue refused (the entry changed meanwhile)
            log.warning("entry %s: not started: %s", entry.id, exc)
            return
        self._open(entry, request_id, resumed=entry.request_id is not None)

    def _pick_up(self, limit: int | None = None) -> None:
        """Resume every RUNNING entry's request that no live process drives (at most ``limit``): at start, and
        every ``stats_every_s`` for what another worker of the store left when it died."""
        for entry in self.queue.running():
            if limit is not None and limit <= 0:
                return
            if entry.request_id is None or entry.status != "RUNNING" or entry.request_id in self.active:
                continue  # (claimed, never started: the claim's lease gives it back)
            if self._open(entry, entry.request_id, resumed=True):
                self.report.picked_up.append(entry.request_id)
                limit = None if limit is None else limit - 1

    def _open(self, entry: QueueEntry, request_id: str, *, resumed: bool) -> bool:
        """Hold the request, create it (with the entry's budget) if it does not exist, start or resume it; False
        if another process drives it or it cannot be opened (the entry is then finished FAILED)."""
        orch = self.orchestrator
        entry_id = entry.id
        lease = contextlib.ExitStack()
        try:
            try:
                state = orch.load(request_id)
            except NotFoundError:
                budget = None
                if entry.budget:
                    from fave.pipeline import parse_budget  # pydantic: only for entries that carry a budget

                    budget = parse_budget(entry.budget, f"queue entry {entry_id}: budget")
                state = orch.create(entry.input, start=False, request_id=request_id, budget=budget)
            lease.enter_context(orch.hold(request_id))
            orch.collect_garbage_after_next_commit(request_id)
            state = orch.load(request_id)  # as it is now that this worker is its one writer
            if state.status is RequestStatus.INIT:
                state = orch.apply(request_id, [Start()])
            elif state.status is RequestStatus.RUNNING and resumed:
                # Its invocations died with the process that dispatched them: what did not succeed runs again
                # (a Resume re-dispatches the outbox too); what succeeded never does.
                state = orch.apply(request_id, [Resume()])
        except LeaseHeldError:
            lease.close()
            log.info("request %s (entry %s): driven by another process; left to it", request_id, entry_id)
            return False
        except FaveError as exc:
            lease.close()
            self.say(f"entry {entry_id}: request {request_id} could not be opened: {exc}")
            with contextlib.suppress(FaveError, ValueError):
                self.queue.finished(entry_id, "FAILED", error=f"worker: {exc}")
            return False
        active = _Active(entry_id, request_id, state, lease)
        self.active[request_id] = active
        in_flight = len(self.active)
        self.report.max_in_flight = max(self.report.max_in_flight, in_flight)
        self.say(
            f"{'resumed' if resumed else 'started'} request {request_id} (entry {entry_id}); in flight {in_flight}"
        )
        self._tell(self.hooks.in_flight, in_flight)
        if self._ended(state):
            self._retire(active)
        return True

    # ---- ends ---------------------------------------------------------------------------------------------

    def _retire(self, active: _Active) -> None:
        state = active.state
        del self.active[active.request_id]
        active.lease.close()
        status, error = outcome(state)
        if active.entry_id is not None:
            try:
                self.queue.finished(active.entry_id, status, error=error)
            except (FaveError, ValueError) as exc:
                log.warning("entry %s: not marked finished: %s", active.entry_id, exc)
        if state.status is RequestStatus.COMPLETED:
            self.report.completed.append((active.entry_id or "", active.request_id))
        else:
            self.report.failed.append((active.entry_id or "", active.request_id, status))
        self.say(
            f"request {active.request_id} {status} (entry {active.entry_id})"
            + (f": {error}" if error else "")
            + f"; in flight {len(self.active)}"
        )
        self._tell(self.hooks.request_ended, state)
        self._tell(self.hooks.in_flight, len(self.active))
        self._next_claim = 0.0  # a slot is free: ask the queue at once

    def _give_up(self, active: _Active, exc: Exception) -> None:
        del self.active[active.request_id]
        active.lease.close()
        self.say(f"request {active.request_id}: let go after {active.errors} failed steps: {exc}")
        if active.entry_id is not None:
            with contextlib.suppress(FaveError, ValueError):
                self.queue.finished(active.entry_id, "FAILED", error=f"worker: {exc}")
        self.report.failed.append((active.entry_id or "", active.request_id, "FAILED"))

    def _let_go(self) -> None:
        """After a stop: commit what was sent (the next worker does not send it again), release the leases; the
        entries stay RUNNING, their requests RUNNING, for the next worker to pick up."""
        for request_id, active in list(self.active.items()):
            try:
                self.orchestrator.flush_sent(request_id)
            except FaveError as exc:  # the next holder sends it again (Resend): at worst a duplicate
                log.warning("request %s: what was sent is not recorded: %s", request_id, exc)
            active.lease.close()
            self.report.left_running.append(request_id)
        self.active.clear()
        if self.report.left_running:
            self.say(f"stopped; {len(self.report.left_running)} request(s) left RUNNING for the next worker")

    def _report_queue(self, now: float) -> None:
        try:
            stats = self.queue.stats(now)
        except (FaveError, ValueError) as exc:
            log.warning("queue stats: %s", exc)
        else:
            self._tell(self.hooks.queue_checked, stats)

    def _requeue_stale(self) -> None:
        if self.options.stale_after_s is None:
            return
        try:
            for entry in self.queue.requeue_stale(self.options.stale_after_s):
                self.say(f"entry {entry.id} (key {entry.key}) queued again: its last success is stale")
        except (FaveError, ValueError) as exc:
            log.warning("stale entries: %s", exc)

    @staticmethod
    def _tell(hook: Callable[[Any], None], value: Any) -> None:
        try:
            hook(value)
        except Exception as exc:  # alerts and metrics never stop the worker
            log.warning("worker hook %s failed: %s", getattr(hook, "__name__", hook), exc)
