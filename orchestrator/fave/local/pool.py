"""The execution environments of one function: concurrency, queueing, warm reuse, timeouts.

A pool runs up to ``limit`` *slot* threads. Each slot serves one invocation at a time and, for process
isolation, owns at most one ``ProcessEnvironment`` that it keeps warm between invocations (Lambda's model:
an environment is reused only by invocations that arrive after it is free). Slots start lazily, only when
an invocation is queued and no idle slot will take it, so a sequential stream of invocations keeps hitting
the same warm environment and an idle function costs no threads or processes.

Every invocation in flight sits in ``_running``; whoever pops it from there (the slot that ran it, the
thread-isolation timeout, or ``close``) is the one that reports its outcome, exactly once.

``CoreGate`` (optional, shared by the pools of one runtime): on Lambda every environment brings its own CPU,
locally they all share this machine's cores. With a gate, a process pool starts its first environment at
once, but one beyond its first only after ``SCALE_UP_DELAY_S`` (so the other functions of the same
orchestrator step get their first environments before one function takes a second core), and only while
the machine has a core for it: fewer slots than the gate's cores are active (starting or running an
invocation), or the CPU the active slots *use* leaves room for one more cold start. Otherwise the invocation
waits for a warm environment of its function, which is cheaper than a cold start (interpreter, imports,
model load) competing for busy cores. A pool whose scale-up was refused is asked again as soon as a slot
anywhere goes idle or ends its cold start, or a function's CPU estimate changes.

Thread isolation has no gate (no cold start worth one), but its slots share this process's GIL: another
thread helps only handlers that wait (I/O, sleeps), and costs a CPU-bound one lock hand-offs and context
switches (a 10,000-item fan-out of a no-op handler spent more CPU on 32 threads than on 2, and more on 2 than
on 1). So a thread pool starts ``THREAD_START`` slot (one: Python code runs one thread at a time, cores or not)
and more only once its handlers are seen to wait: each of their last few calls took ``THREAD_WAIT_S`` or more
(wall time), or a call has been running for ``THREAD_STUCK_S``. Each call, not their average: a call that lost
the GIL to another thread takes a switch interval or more (5-20 ms) however quick it is, and waiting for the GIL
is what more threads cannot cure; a quick handler has some calls that ran through. (Telling a wait for the GIL
from a wait for I/O any sooner would take the kernel's view of each thread: a starved process and a GIL queue
both look idle from inside.) A refused scale-up looks again every ``THREAD_WAIT_S`` while work is queued. A
burst of submits to a busy thread pool queues without the pool's lock (``_queue_without_lock``: a lock convoy).

The CPU a slot uses is measured, not assumed: each pool that may scale beyond the gate's cores reads its workers'
CPU demand (``environment.process_cpu_demand``: time on a CPU or waiting for one) after every invocation, and
every ``SAMPLE_BUSY_S`` from the invocations still running (an LLM call of 30 s need not end before the function's
figure is known, and a child process's wait for a CPU is seen only while it lives). It keeps ``share``, the demand
per second of busy environment, and ``cold_share``, the same for its cold starts (both 1.0 until measured). A slot
starting or in a cold start counts for its function's ``cold_share``, a running one for its ``share``, and a
newcomer for the larger of the two (a cheap fork of a CPU-bound function is a full core once it runs). So an
I/O-bound function (API calls, LLM requests, sleeps: a share of a few percent) scales up to its limit while a
CPU-bound one (share ~1) stays near the core count, as before; a function whose cold start is cheap (forked, a
light module) starts several at once, one that loads a model one or two at a time.

And only if it pays off (``_pays_off``): another environment of a function that has one must get to queued work
sooner than a busy one would, i.e. its cold start (plus what a first invocation costs over a warm one), as measured
for the function, is shorter than the last queued invocation's wait. A core being free is not enough: one clip
left for a model-loading function finishes sooner on the warm environment than on a new one, whose cold start
also takes CPU from everything else. Asked again whenever more work is submitted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fave.local.environment import Outcome, ProcessEnvironment, exit_outcome, timeout_outcome
from fave.local.template import FunctionSpec
from fave.local.timer import Timer
from fave.local.worker import (
    Handler,
    HandlerLoadError,
    LambdaContext,
    exception_payload,
    load_handler,
    run_handler,
)

log = logging.getLogger("fave.local.runtime")

_JOIN_S = 5.0


@dataclass(frozen=True)
class FunctionStats:
    """Counters of one function since the runtime started.

    ``invocations`` counts attempts that ran (an async event retried twice counts 3); ``errors`` counts
    attempts that ended with a function error, timeouts and crashes included.
    """

    invocations: int = 0
    cold_starts: int = 0
    timeouts: int = 0
    errors: int = 0
    async_retries: int = 0


class Invocation:
    """One attempt waiting for or holding a slot. Subclasses decide what its outcome means."""

    __slots__ = ("payload", "request_id")

    def __init__(self, request_id: str, payload: bytes) -> None:
        self.request_id = request_id
        self.payload = payload

    def stale(self) -> bool:
        """True if it must not run any more (an async event past its maximum age)."""
        return False

    def finish(self, outcome: Outcome) -> None:
        """Report how the attempt ended (called exactly once, from a runtime thread)."""
        raise NotImplementedError

    def expire(self) -> None:
        """Dropped because ``stale()``; never ran this time."""

    def abort(self) -> None:
        """The runtime closed before the attempt ended."""


class ScalesUp(Protocol):
    """What a gate asks again when a core frees up (a pool, or the runtime's pre-warmer)."""

    def scale_up(self) -> None: ...


class CoreGate:
    """Weighs the active process slots of every pool sharing it against ``cores`` (see the module docs).

    Lock order: a pool's lock may be held while calling ``add``/``later``/``refuse`` (they take only the
    gate's own lock or the timer's); pools are called back on the timer thread, with no lock held.
    """

    SCALE_UP_DELAY_S = 0.1
    """How long a scale-up decision waits: invocations submitted together (one orchestrator step) first
    claim their functions' first environments, so a function does not take a second core before another
    function that has none got its first."""

    SLACK = 0.5
    """Cores beyond ``cores`` the estimated load may reach with a new cold start: two cold starts at once on
    two cores while I/O-bound slots run beside them, never a third CPU-bound environment on two cores."""

    def __init__(self, cores: int, timer: Timer) -> None:
        if cores < 1:
            raise ValueError(f"cores must be at least 1, got {cores}")
        self.cores = cores
        self._timer = timer
        self._lock = threading.Lock()
        self._active = 0
        self._refused: dict[int, ScalesUp] = {}
        self._pools: list[FunctionPool] = []

    @property
    def active(self) -> int:
        """Slots starting or running an invocation right now."""
        return self._active

    def register(self, pool: FunctionPool) -> None:
        """``pool`` shares this gate: its slots count in ``load``."""
        with self._lock:
            self._pools.append(pool)

    def load(self) -> float:
        """Cores the active slots are estimated to use (``FunctionPool.cpu_load``)."""
        return sum(pool.cpu_load() for pool in self._pools)

    def has_room(self, cost: float = 1.0) -> bool:
        """Room for one more environment that uses ``cost`` cores: fewer active slots than cores, or enough
        of the cores idle."""
        return self._active < self.cores or self.load() + cost <= self.cores + self.SLACK

    def add(self, delta: int) -> None:
        """A slot became active (+1) or idle / gone (-1)."""
        with self._lock:
            self._active += delta
            if delta >= 0 or not self._refused:
                return
        self.poke()

    def poke(self) -> None:
        """The load went down (a slot idle, a cold start done, a lower CPU estimate): ask the refused again."""
        if not self._refused:  # the usual case, read without the lock: a refusal racing it is asked later
            return
        with self._lock:
            refused = list(self._refused.values())
            self._refused.clear()
        if refused:
            self._timer.call_at(time.monotonic(), lambda: _scale_up(refused))

    def later(self, pool: FunctionPool) -> None:
        """Ask ``pool`` to decide on another environment ``SCALE_UP_DELAY_S`` from now."""
        self._timer.call_at(time.monotonic() + self.SCALE_UP_DELAY_S, pool.scale_up)

    def refuse(self, pool: ScalesUp) -> None:
        """``pool`` wanted another environment and got none: ask it again when a core frees up."""
        with self._lock:
            self._refused[id(pool)] = pool


def _averaged(known: float | None, seen: float) -> float:
    """A running figure that follows the latest values (half weight each), the first one as it is."""
    return seen if known is None else (known + seen) / 2


def _scale_up(pools: list[ScalesUp]) -> None:
    for pool in pools:
        pool.scale_up()


class _Watch:
    """The timeout watchdog of one thread-isolation slot: one timer entry per busy slot, not per invocation.

    The slot records each invocation it starts in ``current`` (no lock); the entry, armed at the first one's
    deadline, looks at whatever runs when it fires: past its deadline, it is timed out; still within it, the
    entry is set again for that deadline; nothing running, the watchdog disarms and the slot's next invocation
    arms it again. ``armed`` changes only under the pool's lock.
    """

    __slots__ = ("armed", "check", "current", "thread")

    def __init__(self, pool: FunctionPool) -> None:
        self.current: tuple[Invocation, float] | None = None
        self.armed = False
        self.thread = threading.current_thread()
        self.check: Callable[[], None] = functools.partial(pool._watchdog, self)


class FunctionPool:
    """Runs one function's invocations, ``limit`` at a time, in warm environments.

    ``explicit``: the limit is one the function was given (ReservedConcurrentExecutions, a pipeline's
    ``functions:`` cap), which ``admit`` enforces the way Lambda does, rather than how many environments
    this machine affords it."""

    SHARE_MIN = 0.02
    """The least CPU share a running slot counts for, however idle it measured: the parent's own work for each
    invocation (pipes, JSON, the orchestrator) is not in the workers' figures."""

    SHARE_HORIZON_S = 2.0
    """Seconds of busy environment time the CPU estimate remembers (older figures are halved away), so that
    it follows a function whose work changes (a batch of cache hits, then real work)."""

    SHARE_MIN_BUSY_S = 0.04
    """Busy environment time measured before the estimate replaces the full-core default."""

    SAMPLE_BUSY_S = 0.1
    """How often a measured pool reads its running invocations' demand (a refused scale-up waits on these
    figures too). A child process's wait
    for a CPU is seen only while the child lives (/proc forgets it when the handler reaps the child: a handler
    that runs ffmpeg waits for it before returning), so a figure taken only when the invocation ends would count
    a CPU-bound child on a busy machine as its CPU time alone, and let more environments in than there are
    cores. Readings are added up as increases only, so each child counts for the most it was seen to demand."""

    THREAD_START = 1
    """Thread slots a thread-isolated function starts at once (more once its handlers wait: module docs). One: a
    second thread runs no Python alongside the first, and two slots taking turns at the pool's lock under the
    GIL fall into a lock convoy (below)."""

    THREAD_WAIT_S = 0.005
    """Thread-isolated handler calls this long (each of the last ``THREAD_CALLS``, at least 3) are taken to wait
    on something, so another thread slot lets the queue move meanwhile."""

    THREAD_STUCK_S = 0.25
    """A thread-isolated call running this long waits on something (or computes for long): another slot helps."""

    THREAD_CALLS = 8
    """Recent thread-isolated calls whose wall times ``THREAD_WAIT_S`` is checked against."""

    COLD_SHARE_MIN = 0.2
    """The least a cold start counts for: the parent's side of it (fork, pipes, the init frame) is not in the
    environment's figures either."""

    def __init__(
        self,
        spec: FunctionSpec,
        limit: int,
        *,
        timer: Timer,
        start_process: Callable[[], ProcessEnvironment],
        thread_context: dict[str, str],
        gate: CoreGate | None = None,
        explicit: bool = False,
    ) -> None:
        self.spec = spec
        self.limit = limit
        self.explicit = explicit
        self._timeout = float(spec.timeout_s)
        self._threads_mode = spec.local_isolation == "thread"
        # Thread isolation is for trivial handlers: their slots cost no cold start worth gating.
        self._gate = None if self._threads_mode else gate
        self._scale_pending = False  # a gated scale-up decision (or a thread pool's look again) is scheduled
        self._calls: deque[float] = deque(maxlen=self.THREAD_CALLS)  # thread isolation: recent calls' wall times
        self._watches: set[_Watch] = set()  # thread isolation: what each slot runs
        self._timer = timer
        self._start_process = start_process
        self._thread_context = thread_context
        # ``with self._lock`` (a C-level context manager) on the hot path; ``_cond`` shares it to wait/notify.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[Invocation] = deque()
        self._running: dict[int, Invocation] = {}
        self._idle = 0  # slots waiting for work
        self._starting = 0  # slots started that have not looked for work yet
        self._slots = 0  # slots counted against the limit (a timed-out thread slot no longer is)
        self._threads: set[threading.Thread] = set()
        self._environments: set[ProcessEnvironment] = set()
        self._closed = False
        self._counts = {"invocations": 0, "cold_starts": 0, "timeouts": 0, "errors": 0, "async_retries": 0}
        self._handler: Handler | None = None  # thread isolation: the function's module, loaded once
        self._load_lock = threading.Lock()
        # CPU accounting (module docs): only a gated pool allowed more environments than the gate has cores
        # reads its workers' /proc figures; the others never scale past the cores, and never pay for it.
        self._measure = self._gate is not None and limit > self._gate.cores
        self._cold = 0  # slots in a cold start (interpreter, imports): a full core each
        self._cpu_s = 0.0  # CPU demand measured over ...
        self._busy_s = 0.0  # ... this much busy environment time (both decayed together)
        self.share = 1.0
        """Estimated cores one running environment of this function uses (1.0 until measured)."""
        self.cold_share = 1.0
        """Estimated cores one cold start of this function uses (1.0 until measured)."""
        # Whether another environment pays off (``_pays_off``): wall seconds, averaged, None until seen.
        self._cold_s: float | None = None  # a cold start (init)
        self._first_s: float | None = None  # an environment's first invocation (lazy loads, first-call set-up)
        self._warm_s: float | None = None  # any later invocation
        self._since: dict[int, float] = {}  # environment (id) -> when its running invocation started
        self._cpu_lock = threading.Lock()  # the environments' marks: a slot thread and the sampler both read
        self._busy: set[ProcessEnvironment] = set()  # environments running an invocation (under _cpu_lock)
        self._sample_pending = False
        if self._gate is not None:
            self._gate.register(self)

    # -- submitting ---------------------------------------------------------------------------------------

    def submit(self, invocation: Invocation) -> bool:
        """Queue an invocation; False if the pool is closed."""
        return self._submit(invocation, refuse_at_limit=False) is not None

    def admit(self, invocation: Invocation) -> bool | None:
        """``submit``, except that a pool with an ``explicit`` limit refuses (None) an invocation that would
        exceed it, counting those queued and running: what Lambda does to a synchronous invoke of a function
        at its reserved concurrency (an asynchronous one it queues, as ``submit`` does)."""
        return self._submit(invocation, refuse_at_limit=self.explicit)

    def _submit(self, invocation: Invocation, *, refuse_at_limit: bool) -> bool | None:
        if not refuse_at_limit and self._queue_without_lock(invocation):
            return True
        with self._lock:
            if self._closed:
                return False
            if refuse_at_limit and len(self._queue) + len(self._running) >= self.limit:
                return None
            self._queue.append(invocation)
            # Every slot taken (a fan-out's usual case): no need to ask about another.
            start = self._slots < self.limit and self._need_slot()
            if not start and self._idle:
                self._cond.notify()
        if start:
            self._start_slot()
        return True

    def _queue_without_lock(self, invocation: Invocation) -> bool:
        """Queue ``invocation`` without taking the pool's lock when that changes nothing else: a thread pool whose
        slots are all busy and that has no slot to start (or has a look at starting one scheduled). True if
        queued; False: the caller takes the locked way.

        Why: a fan-out submits thousands of invocations while the slot threads take and finish them. A thread
        that blocks on a ``threading.Lock`` gets the lock when it is released but runs only once it has the GIL
        again, holding the lock meanwhile; if the lock is taken once per invocation on both sides, each
        invocation then costs two context switches, and it goes on (a lock convoy: 65 µs an invocation against
        15 in a 10,000-invocation burst). ``deque.append`` is atomic; the slots' side re-checks the queue after
        counting itself idle (``_take``), so an invocation appended here is never left with every slot asleep.
        """
        if not self._threads_mode or self._idle or self._closed:
            return False
        if self._slots < self.limit and not self._scale_pending:
            return False  # it may need a slot: decided under the lock
        self._queue.append(invocation)
        if self._idle or self._closed:  # a slot went idle meanwhile (it looks at the queue again), or closing
            with self._lock:
                if self._closed:
                    with contextlib.suppress(ValueError):  # else close() took it, and aborted it
                        self._queue.remove(invocation)
                    return False
                if self._idle:
                    self._cond.notify()
        return True

    def _need_slot(self) -> bool:
        # Caller holds the lock. Start a slot only if the idle and starting ones cannot take everything.
        if not self._wants_slot():
            return False
        if self._threads_mode and self._slots >= self.THREAD_START:
            if self._scale_pending:  # the timer looks in a moment: not at every one of a burst's submits
                return False
            if not self._threads_wait():
                self._scale_pending = True  # look again in a moment, even if nothing else is submitted
                self._timer.call_at(time.monotonic() + self.THREAD_WAIT_S, self._grow_threads)
                return False
        if self._gate is not None and self._slots:
            # Another environment of a function that has one: decided a moment later (CoreGate).
            if not self._scale_pending:
                self._scale_pending = True
                self._gate.later(self)
            return False
        return self._claim_slot()

    def _wants_slot(self) -> bool:
        return len(self._queue) > self._idle + self._starting and self._slots < self.limit and not self._closed

    def _claim_slot(self) -> bool:
        if self._gate is not None:
            self._gate.add(1)
        self._slots += 1
        self._starting += 1
        return True

    def _threads_wait(self) -> bool:
        """Whether this thread pool's handlers wait (lock held; module docs)."""
        calls = self._calls
        if len(calls) >= 3 and min(calls) >= self.THREAD_WAIT_S:
            return True
        since = time.monotonic() - self.THREAD_STUCK_S + self._timeout  # a call started before then: its deadline
        running = self._running
        for watch in self._watches:
            current = watch.current
            if current is not None and current[1] <= since and running.get(id(current[0])) is current[0]:
                return True
        return False

    def _grow_threads(self) -> None:
        """The timer's look again at a thread pool whose scale-up was refused (module docs)."""
        starts = 0
        with self._lock:
            self._scale_pending = False
            while self._need_slot():
                starts += 1
        for _ in range(starts):
            self._start_slot()

    def scale_up(self) -> None:
        """Called back by the gate: start the environments queued work still needs while a core is free (or
        this function has none); otherwise wait for a core to free up."""
        starts = 0
        with self._lock:
            self._scale_pending = False
            while self._wants_slot():
                # What the newcomer will use: its cold start, then its invocations (a cheap fork of a
                # CPU-bound function is still a core once it runs).
                cost = max(self.cold_share, self.share)
                if self._slots and not self._pays_off():
                    break  # the warm environments take the queue sooner; asked again when more is submitted
                if self._gate is not None and self._slots and not self._gate.has_room(cost):
                    # Meanwhile the queue drains through the warm environment(s), whose demand is sampled while
                    # they run (SAMPLE_BUSY_S): a lower figure pokes the gate, which asks again.
                    self._gate.refuse(self)
                    break
                self._claim_slot()
                starts += 1
        for _ in range(starts):
            self._start_slot()

    def _pays_off(self) -> bool:
        """(Lock held.) Whether another environment would start on queued work sooner than the busy ones get to
        it: its cold start plus what a first invocation costs over a warm one (as measured for this function) is
        shorter than the last queued invocation's wait, the time until the first busy environment is expected to
        free up plus the rest of the queue shared among them. Unmeasured (no cold start or no warm invocation seen
        yet): yes. A CPU-bound function on a busy machine loses a cold start's CPU for nothing otherwise: on the
        video pipeline a second transcribe environment for the last clip cost ~0.4 s of the run."""
        if self._gate is None or self._cold_s is None or self._warm_s is None or not self._since:
            return True
        warm_s = self._warm_s
        cost = self._cold_s + max(0.0, (self._first_s or warm_s) - warm_s)
        now = time.monotonic()
        free_in = min(max(0.0, warm_s - (now - began)) for began in self._since.values())
        waiting = len(self._queue) - self._idle - self._starting
        return cost < free_in + max(0, waiting - 1) * warm_s / len(self._since)

    def prewarm(self) -> bool:
        """Start this function's first environment ahead of any invocation (process isolation only).

        True when done or not needed (it has a slot already, runs in threads, or is closed); False when the
        gate has no free core for it now."""
        with self._lock:
            if self._threads_mode or self._closed or self._slots:
                return True
            if self._gate is not None and not self._gate.has_room(max(self.cold_share, self.share)):
                return False
            self._claim_slot()
        self._start_slot(warm=True)
        return True

    def _start_slot(self, warm: bool = False) -> None:
        thread = threading.Thread(
            target=self._slot, args=(warm,), name=f"fave-local-{self.spec.logical_id}", daemon=True
        )
        with self._lock:
            if self._closed:  # claimed before close() (a timer's look, a gate's call back): nothing starts now
                self._slots -= 1
                self._starting -= 1
                if self._gate is not None:
                    self._gate.add(-1)
                return
            self._threads.add(thread)
            # Started under the lock, so close()/join() never see a thread that has not started (another thread,
            # the timer's, may start one while this one closes the pool). start() returns before _slot runs.
            thread.start()

    def count_retry(self) -> None:
        """Record an async retry (scheduled by the runtime)."""
        with self._lock:
            self._counts["async_retries"] += 1

    def stats(self) -> FunctionStats:
        """A snapshot of the counters."""
        with self._lock:
            return FunctionStats(**self._counts)

    # -- CPU accounting (module docs) ---------------------------------------------------------------------

    def cpu_load(self) -> float:
        """Cores this function's active slots are estimated to use: a full one per slot starting or in a cold
        start, ``share`` per slot running an invocation. Read without the lock (by the gate, which may be
        called under another pool's lock): a moment's stale figure only shifts a decision by one event."""
        cold = self._starting + self._cold
        running = self._slots - self._idle - cold
        return cold * self.cold_share + max(0, running) * self.share

    def _arm_sample(self, delay_s: float) -> None:
        """Have the timer measure the invocations in flight ``delay_s`` from now (unless a look is due already)."""
        with self._lock:
            if self._sample_pending or self._closed:
                return
            self._sample_pending = True
        self._timer.call_at(time.monotonic() + delay_s, self._sample)

    def _sample(self) -> None:
        """The timer's call while invocations run (``SAMPLE_BUSY_S``): measure the invocations in flight so far,
        and look again while some still run."""
        with self._lock:
            self._sample_pending = False
        with self._cpu_lock:
            busy = list(self._busy)
        for environment in busy:
            self._account(environment)
        if busy:
            self._arm_sample(self.SAMPLE_BUSY_S)

    def _account(self, environment: ProcessEnvironment, *, done: bool = False) -> None:
        """Add the CPU ``environment`` used since its marks, over the busy time since then; ``done``: its
        invocation ended (no longer sampled)."""
        with self._cpu_lock:
            if done:
                self._busy.discard(environment)
            elif environment not in self._busy:
                return  # ended meanwhile: its slot accounted for it
            now = environment.cpu_demand()
            clock = time.monotonic()
            mark, environment.cpu_mark = environment.cpu_mark, now
            busy_s, environment.time_mark = clock - environment.time_mark, clock
        if now is None or mark is None:
            return
        with self._lock:
            self._cpu_s += max(0.0, now - mark)
            self._busy_s += busy_s
            if self._busy_s > self.SHARE_HORIZON_S:
                self._cpu_s /= 2
                self._busy_s /= 2
            if self._busy_s < self.SHARE_MIN_BUSY_S:
                return
            before = self.share
            assert self._gate is not None  # measured only when gated
            self.share = min(float(self._gate.cores), max(self.SHARE_MIN, self._cpu_s / self._busy_s))
        if self.share < before:
            self._gate.poke()

    # -- slots --------------------------------------------------------------------------------------------

    def _slot(self, warm: bool = False) -> None:
        environment: ProcessEnvironment | None = None
        abandoned = False
        watch = _Watch(self) if self._threads_mode else None
        if watch is not None:
            with self._lock:
                self._watches.add(watch)
        try:
            if warm:
                # Still "starting" meanwhile: an invocation arriving now waits for this environment.
                try:
                    environment = self._warm_up()
                except Exception:
                    log.exception("pre-warming %s failed", self.spec.logical_id)
            with self._lock:
                self._starting -= 1
            while (invocation := self._take()) is not None:
                try:
                    if invocation.stale():
                        if self._running.pop(id(invocation), None) is not None:
                            invocation.expire()
                    elif watch is not None:
                        if not self._run_in_thread(invocation, watch):
                            abandoned = True  # timed out: a replacement slot took its place
                            return
                    else:
                        environment = self._run_in_process(invocation, environment)
                except Exception as e:
                    # A bug here must not leave a caller waiting forever: report it as the outcome (a
                    # no-op if the invocation was already reported) and continue with a clean slot.
                    log.exception("local runtime slot of %s failed", self.spec.logical_id)
                    if environment is not None:
                        environment.kill()
                        self._discard(environment)
                        environment = None
                    body = {"errorType": "Runtime.Unknown", "errorMessage": f"local runtime error: {e!r}"}
                    self._finish(invocation, Outcome(json.dumps(body).encode(), error=True, env_lost=True))
        finally:
            if environment is not None:
                self._discard(environment)
            with self._lock:
                self._threads.discard(threading.current_thread())
                if watch is not None:
                    self._watches.discard(watch)
                if not abandoned:
                    self._slots -= 1
                if self._gate is not None:
                    self._gate.add(-1)

    def _take(self) -> Invocation | None:
        with self._lock:
            while not self._queue:
                if self._closed:
                    return None
                self._idle += 1
                if self._queue:  # appended without the lock before it saw this slot idle (_queue_without_lock)
                    self._idle -= 1
                    break
                if self._gate is not None:
                    self._gate.add(-1)  # an idle warm environment holds no core
                self._cond.wait()
                if self._gate is not None:
                    self._gate.add(1)
                self._idle -= 1
            invocation = self._queue.popleft()
            self._running[id(invocation)] = invocation
            return invocation

    def _finish(self, invocation: Invocation, outcome: Outcome) -> bool:
        """Report the outcome if this caller is the one that claims the invocation."""
        with self._lock:
            if self._running.pop(id(invocation), None) is None:
                return False  # timed out (thread isolation) or aborted by close()
            counts = self._counts
            counts["invocations"] += 1
            if outcome.error:
                counts["errors"] += 1
                counts["timeouts"] += outcome.timed_out
        invocation.finish(outcome)
        return True

    # -- process isolation --------------------------------------------------------------------------------

    def _cold_start(self, request_id: str, *, starting: bool = False) -> ProcessEnvironment | Outcome:
        """A new environment through its init phase, or the outcome to report for ``request_id``.

        ``starting``: the slot still counts as starting (pre-warming), which ``cpu_load`` weighs already."""
        cold = 0 if starting else 1
        with self._lock:
            self._cold += cold
        try:
            started = self._init_environment(request_id)
        finally:
            with self._lock:
                self._cold -= cold
        if self._gate is not None:
            self._gate.poke()  # one full core less in use
        return started

    def _init_environment(self, request_id: str) -> ProcessEnvironment | Outcome:
        began = time.monotonic()
        try:
            environment = self._start_process()
        except OSError as e:
            body = {"errorType": "Runtime.ExitError", "errorMessage": f"could not start the runtime: {e}"}
            return Outcome(json.dumps(body).encode(), error=True)
        with self._lock:
            self._environments.add(environment)
            self._counts["cold_starts"] += 1
            if self._closed:
                environment.interrupt()
        failed = environment.wait_ready(request_id, self._timeout)
        if failed is not None:
            self._discard(environment)
            return failed
        if self._gate is not None:
            with self._lock:
                self._cold_s = _averaged(self._cold_s, time.monotonic() - began)
        if self._measure:
            # The environment's demand so far is its cold start's (a forked one counts from the fork): that
            # is the cold share; later invocations are measured from here.
            environment.cpu_mark = demand = environment.cpu_demand()
            if demand is not None:
                measured = min(1.0, max(self.COLD_SHARE_MIN, demand / max(time.monotonic() - began, 1e-3)))
                with self._lock:
                    self.cold_share = (self.cold_share + measured) / 2
        return environment

    def _warm_up(self) -> ProcessEnvironment | None:
        """``prewarm``'s environment; None if its init failed (the first invocation then reports why)."""
        started = self._cold_start("prewarm", starting=True)
        if isinstance(started, Outcome):
            log.debug("%s: pre-warming failed; the first invocation starts it again", self.spec.logical_id)
            return None
        return started

    def _run_in_process(
        self, invocation: Invocation, environment: ProcessEnvironment | None
    ) -> ProcessEnvironment | None:
        """Run on the slot's environment (starting a cold one if needed); returns the environment to keep."""
        if environment is None:
            started = self._cold_start(invocation.request_id)
            if isinstance(started, Outcome):
                self._finish(invocation, started)
                return None
            environment = started
        if self._gate is None:
            return self._invoke_on(invocation, environment)
        began = time.monotonic()
        with self._lock:
            self._since[id(environment)] = began
        try:
            return self._invoke_on(invocation, environment)
        finally:
            took = time.monotonic() - began
            with self._lock:
                self._since.pop(id(environment), None)
                if environment.served:
                    self._warm_s = _averaged(self._warm_s, took)
                else:
                    self._first_s = _averaged(self._first_s, took)
            environment.served = True

    def _invoke_on(self, invocation: Invocation, environment: ProcessEnvironment) -> ProcessEnvironment | None:
        """``_run_in_process`` on a started environment."""
        if self._measure:
            with self._cpu_lock:
                environment.time_mark = time.monotonic()
                self._busy.add(environment)
            self._arm_sample(self.SAMPLE_BUSY_S)
            outcome = environment.invoke(invocation.request_id, invocation.payload, self._timeout)
            if outcome.env_lost:
                with self._cpu_lock:
                    self._busy.discard(environment)
            else:
                self._account(environment, done=True)
        else:
            outcome = environment.invoke(invocation.request_id, invocation.payload, self._timeout)
        kept: ProcessEnvironment | None = environment
        if outcome.env_lost:
            # Gone before the outcome is reported, so a caller that sees it also sees the next one cold.
            self._discard(environment)
            kept = None
        self._finish(invocation, outcome)
        return kept

    def _discard(self, environment: ProcessEnvironment) -> None:
        environment.close()
        with self._lock:
            self._environments.discard(environment)

    # -- thread isolation ---------------------------------------------------------------------------------

    def _run_in_thread(self, invocation: Invocation, watch: _Watch) -> bool:
        """Run in this slot thread; False if the invocation timed out meanwhile (the slot is abandoned)."""
        handler = self._handler or self._thread_handler(invocation.request_id)  # loaded: no call
        if isinstance(handler, Outcome):
            self._finish(invocation, handler)
            return True
        deadline = time.monotonic() + self._timeout
        watch.current = (invocation, deadline)
        if not watch.armed:  # the first invocation since the slot went idle: set its watchdog
            with self._lock:
                if not watch.armed:
                    watch.armed = True
                    self._timer.call_at(deadline, watch.check)
        context = LambdaContext(invocation.request_id, deadline, self._thread_context)
        try:
            ok, body = run_handler(handler, invocation.payload, context)
        except BaseException as e:  # SystemExit/KeyboardInterrupt would silently end a thread
            code = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
            outcome = exit_outcome(invocation.request_id, code)
        else:
            outcome = Outcome(body, error=not ok)
        self._calls.append(time.monotonic() - deadline + self._timeout)  # what decides whether more threads help
        return self._finish(invocation, outcome)

    def _watchdog(self, watch: _Watch) -> None:
        """The timer's check of one thread slot (see ``_Watch``): time out its invocation if it is past its
        deadline, else look again at that deadline; disarm once the slot has nothing in flight."""
        with self._lock:
            current = watch.current
            if current is None or self._running.get(id(current[0])) is not current[0]:
                watch.armed = False
                if watch.current is not current:
                    # The slot started another invocation after ``current`` was read, and saw us armed.
                    watch.armed = True
                    self._timer.call_at(time.monotonic(), watch.check)
                return
            invocation, deadline = current
            if time.monotonic() < deadline:
                self._timer.call_at(deadline, watch.check)
                return
            start = self._thread_timed_out(invocation, watch.thread)
        # A thread cannot be killed: the handler keeps running in its slot thread, which no longer counts
        # against the limit (nor is waited for by close) and exits when the handler returns.
        log.warning(
            "%s timed out after %ss in thread isolation; its thread keeps running until the handler returns",
            self.spec.logical_id,
            self.spec.timeout_s,
        )
        if start:
            self._start_slot()
        invocation.finish(timeout_outcome(invocation.request_id, self._timeout))

    def _thread_timed_out(self, invocation: Invocation, thread: threading.Thread) -> bool:
        """Claim a timed-out invocation and give up its slot (lock held); True if a replacement must start."""
        del self._running[id(invocation)]
        self._threads.discard(thread)
        counts = self._counts
        counts["invocations"] += 1
        counts["errors"] += 1
        counts["timeouts"] += 1
        self._slots -= 1
        return self._need_slot()

    def _thread_handler(self, request_id: str) -> Handler | Outcome:
        """The handler (imported once, on first use: the cold start) or the init error to report."""
        if self._handler is not None:
            return self._handler
        spec = self.spec
        with self._load_lock:
            if self._handler is None:
                for path in reversed(spec.python_path):
                    if path.is_dir() and str(path) not in sys.path:
                        sys.path.insert(0, str(path))
                with self._lock:
                    self._counts["cold_starts"] += 1
                # Unique in sys.modules: every function folder may have its own app.py.
                module = re.sub(r"\W", "_", spec.handler.rpartition(".")[0])
                try:
                    self._handler = load_handler(
                        spec.handler,
                        code_uri=str(spec.code_uri),
                        module_name=f"fave_local_{spec.logical_id}_{module}",
                    )
                except HandlerLoadError as e:
                    error = dict(e.payload, requestId=request_id)
                    return Outcome(json.dumps(error).encode(), error=True, env_lost=True)
                except Exception as e:
                    return Outcome(json.dumps(exception_payload(e, request_id)).encode(), error=True, env_lost=True)
            return self._handler

    # -- shutdown -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new work, abort queued and running invocations, interrupt busy environments."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            aborted = list(self._queue) + list(self._running.values())
            self._queue.clear()
            self._running.clear()
            environments = list(self._environments)
            self._cond.notify_all()
        for environment in environments:
            environment.interrupt()
        for invocation in aborted:
            try:
                invocation.abort()
            except Exception:
                log.exception("aborting %s failed", invocation.request_id)

    def join(self, deadline: float) -> None:
        """Wait for slot threads (not abandoned timed-out thread handlers) to end; then kill leftovers."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers = list(self._environments)
        for environment in leftovers:
            environment.kill()

    def environment_pids(self) -> list[int]:
        """Process ids of the live environments (for tests and diagnostics)."""
        with self._lock:
            return [environment.pid for environment in self._environments]
