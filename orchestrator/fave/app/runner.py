"""One invocation of the orchestrator function: apply an event, run synchronous stages inline, return.

On Lambda nothing waits between invocations, so a ``Runner`` (one per invocation) applies the incoming
event, then keeps applying what synchronous invocations return (``Orchestrator.settle`` with invocations
run inline) until only asynchronous work is in flight; those completions come back as destination events,
each a new invocation. State always comes from the store (a fresh orchestrator per invocation).

Invocations that answer a caller (the HTTP API) never run stage work: ``create`` records the request in
INIT and ``kick`` hands its first step to an asynchronous invocation of this same function (a ``step``
event); resume goes through the mailbox and a kick too. Cancel is applied at once when the request is free
(it dispatches nothing), else left in the mailbox.

Every change to a request happens under its lease (``fave.lease``, renewed while the invocation works): an
invocation that finds the lease taken leaves its *event* (a task's completion, a cancel, a resume) in the
request's mailbox (``fave.app.exclusive``) for the holder and returns.

``ActiveRequests`` keeps ``index/active/{id}`` markers for the requests that are not finished, so the
schedule tick visits those only (not every request ever made). The tick also starts a request still in INIT
(its kick was lost) and collects what crashed steps left behind.

The tick and every request's end also drain the pipeline's admission queue (``drain_queue``: ``fave queue``,
``POST /queue``), admitting up to ``operations.max_requests_in_flight`` requests by the same path as
``POST /requests``. Both also fire ``operations.alerts`` (``fave.app.alerts_doors``: a failed request at its
end; a stuck queue and sustained throttling at the tick), handed to an asynchronous invocation of this
function: never delivered here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fave_shared.errors import ConflictError, FaveError, NotFoundError, ValidationError
from fave_shared.store import ObjectStore

from fave.app.context import SELF_FUNCTION, AppContext, current, lambda_context
from fave.app.exclusive import Mailbox
from fave.app.observability import Meter, MeteredInvoker, current_meter, logger
from fave.core.model import Cancel, Command, Event, RequestState, RequestStatus, Resend, Resume, Start, Tick
from fave.core.operations import Budget
from fave.ids import request_id_time, validate_request_id
from fave.keys import ACTIVE_PREFIX, active_key
from fave.lease import LEASE_TTL_S, Keeper, Leases
from fave.service import Orchestrator, handover_margin

#: A marker whose request never appeared (its creation died before the first commit) is dropped after this.
ORPHAN_AFTER_S = 3600.0
#: Lease rounds one invocation serves (each round applies what arrived during the previous one).
MAX_ROUNDS = 50


class ActiveRequests:
    """``index/active/{id}``: one empty marker per request that may still need a tick."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def add(self, request_id: str) -> None:
        self.store.put(active_key(validate_request_id(request_id)), b"{}", content_type="application/json")

    def discard(self, request_id: str) -> None:
        """Drop the marker (whatever its name: a malformed one is dropped too; the store validates keys)."""
        self.store.delete(active_key(request_id))

    def ids(self) -> list[str]:
        """The marked request ids, oldest first (names are validated by whoever uses them)."""
        return [key[len(ACTIVE_PREFIX) :] for key in self.store.list(ACTIVE_PREFIX)]


class MeteredOrchestrator(Orchestrator):
    """An orchestrator that counts, per commit, the tasks that became SUCCEEDED (``TasksSucceeded``).

    The count is exact under conflicts: the baseline is the state each decision started from (the last
    state loaded or committed by this orchestrator), so a success committed by someone else is never counted
    here, and a duplicate delivery (no transition) counts nothing.
    """

    def __init__(self, *args: Any, meter: Meter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app_meter = meter  # not self.meter: that is the orchestrator's own RequestMeter (S3 request counts)
        self._baseline: dict[str, int] = {}

    def load(self, request_id: str, *, full: bool = False) -> RequestState:
        state = super().load(request_id, full=full)
        self._baseline[request_id] = _succeeded(state)
        return state

    def perform(self, state: RequestState, commands: list[Command]) -> None:
        done = _succeeded(state)
        self.app_meter.count("TasksSucceeded", done - self._baseline.get(state.request_id, 0))
        self._baseline[state.request_id] = done
        super().perform(state, commands)


def _succeeded(state: RequestState) -> int:
    return sum(stage.succeeded for stage in state.stages.values())


def _inline(call: Any) -> None:
    call()


#: Asynchronous invokes in flight at once while dispatching (each is one Lambda API round trip).
DISPATCH_PARALLELISM = 32


def _time_left() -> float:
    """Seconds left in this Lambda invocation (Lambda's longest, off Lambda)."""
    context = lambda_context.get()
    try:
        return float(context.get_remaining_time_in_millis()) / 1000.0
    except (AttributeError, TypeError, ValueError):
        return 900.0


def step_event(request_id: str) -> dict[str, Any]:
    """The event of an asynchronous invocation of the orchestrator that takes a request's next step."""
    return {"fave": "step", "request_id": request_id}


@dataclass(frozen=True)
class Submitted:
    """What became of submitted events: ``state`` after this invocation's last step (None if it took no
    step), ``posted`` the mailbox keys of events left to the lease holder."""

    state: RequestState | None
    posted: tuple[str, ...] = ()


class Runner:
    """The orchestrator as one Lambda invocation uses it (see the module docs)."""

    def __init__(self, context: AppContext, meter: Meter, *, lease_s: float = LEASE_TTL_S) -> None:
        self.context = context
        self.meter = meter
        self.lease_s = lease_s
        self.orchestrator = MeteredOrchestrator(
            context.pipeline,
            context.store,
            MeteredInvoker(context.invoker, meter),
            clock=context.clock,
            on_notify=meter.notify,
            sync_submit=_inline,
            meter=meter,
            dispatch_parallelism=DISPATCH_PARALLELISM,
            time_left=_time_left,
            # This invocation's time at its start sets the margin: a short Timeout keeps a third, not 30 s.
            handover_margin_s=handover_margin(_time_left()),
            rates=context.rates,
            record_history=False,  # _after_end records it, with the lease let go
        )
        self.active = ActiveRequests(context.store)
        self.leases = Leases(context.store, context.clock)
        self.mailbox = Mailbox(context.store)
        self._draining = False
        self._ended: set[str] = set()  # requests this invocation ended: their queue drain and alerts are due

    def load(self, request_id: str) -> RequestState:
        """The request's state, fresh from the store (no lease needed to read)."""
        logger.set_correlation_id(request_id)
        return self.orchestrator.load(request_id)

    def create(
        self, request_input: Mapping[str, Any], request_id: str, *, budget: Budget | None = None
    ) -> RequestState:
        """Record request ``request_id`` in INIT (or find it: a retry after a crash, a duplicate event) and
        kick its first step if it has not started. Runs no stage: returns in a few store requests. ``budget``:
        a queue entry's override of the pipeline's."""
        logger.set_correlation_id(request_id)
        try:
            state = self.orchestrator.load(request_id)
        except NotFoundError:
            self.active.add(request_id)  # before the request exists: a tick can then never miss it
            state = self.orchestrator.create(request_input, request_id=request_id, start=False, budget=budget)
        if state.status is RequestStatus.INIT:
            self.kick(request_id)
        return state

    def kick(self, request_id: str) -> None:
        """Have an asynchronous invocation of this function take the request's next step.

        If the invoke fails the request waits for the schedule tick, which starts INIT requests and applies
        waiting events. With no way to invoke itself (not on Lambda, nothing configured) the step runs
        here, inline."""
        invoker = self.context.self_invoker
        if invoker is None:
            self.submit(request_id, [Start()], post_if_busy=False)
            return
        try:
            invoker.invoke_async(SELF_FUNCTION, step_event(request_id))
            self.meter.count("StepsKicked")
        except FaveError as exc:
            logger.warning("kick failed: the schedule tick will take the step", extra={"error": str(exc)})

    def post(self, request_id: str, event: Event) -> str:
        """Leave an event in the request's mailbox and kick a step that applies it."""
        key = self.mailbox.post(request_id, [event])
        self.kick(request_id)
        return key

    def cancel(self, request_id: str, reason: str) -> Submitted:
        """Cancel now if the request is free (cancelling dispatches nothing, so no stage work runs here);
        else leave the cancel to the lease holder."""
        logger.set_correlation_id(request_id)
        lease = self.leases.try_acquire(request_id, self.lease_s)
        if lease is None:
            return Submitted(None, (self.mailbox.post(request_id, [Cancel(reason)]),))
        keeper = Keeper(self.leases, lease)
        try:
            state = self.orchestrator.apply(request_id, [Cancel(reason)])
        finally:
            keeper.stop_and_release()
        if state.status.terminal:
            self.active.discard(request_id)
            self._after_end(state)  # its history, its queue entry; a cancel fires no alert
        return Submitted(state)

    def reset(self, request_id: str, stages: list[str], *, downstream: bool) -> tuple[RequestState, dict[str, int]]:
        """Mark stages PENDING again (``Orchestrator.reset``) under the request's lease, at once (it dispatches
        nothing); ``ConflictError`` if another invocation holds the request: a reset is refused while it runs."""
        logger.set_correlation_id(request_id)
        lease = self.leases.try_acquire(request_id, self.lease_s)
        if lease is None:
            raise ConflictError(f"request {request_id} is busy (another invocation holds it): reset it once it ended")
        keeper = Keeper(self.leases, lease)
        try:
            return self.orchestrator.reset(request_id, stages, downstream=downstream)
        finally:
            keeper.stop_and_release()

    def submit(self, request_id: str, events: list[Event], *, post_if_busy: bool = True) -> Submitted:
        """Apply ``events`` (with everything waiting in the mailbox) under the request's lease; if another
        invocation holds it, post them to the mailbox for it (unless ``post_if_busy`` is false) and return.

        Raises ``NotFoundError`` for an unknown request.
        """
        logger.set_correlation_id(request_id)
        own = list(events)
        posted: list[str] = []
        state: RequestState | None = None
        for _ in range(MAX_ROUNDS):
            lease = self.leases.try_acquire(request_id, self.lease_s)
            if lease is None:
                if own and post_if_busy and not posted:
                    posted = [self.mailbox.post(request_id, own)]
                    own = []
                    continue  # the holder may have let go meanwhile: one more try
                if posted:
                    logger.info("request busy: events left in its mailbox", extra={"events": len(posted)})
                return Submitted(state, tuple(posted))
            keeper = Keeper(self.leases, lease)
            try:
                keys = [] if own else self.mailbox.keys(request_id)
                batch = own + [event for key in keys for event in self.mailbox.read(key)]
                own = []
                if batch or state is None:
                    state = self._step(request_id, batch)
                self.mailbox.remove(keys)
            finally:
                keeper.stop_and_release()
            if request_id in self._ended and state is not None:
                self._ended.discard(request_id)
                self._after_end(state)  # with the lease let go: a reset or resume of it is not refused as busy
            if not self.mailbox.keys(request_id):
                return Submitted(state, ())
        return Submitted(state, tuple(posted))

    def tick_all(self) -> dict[str, str]:
        """Tick every active request (timeouts, due retries, waiting events, a lost kick); returns request
        id → status after the tick (``BUSY`` if another invocation holds it: that one ticks it too).

        One request's failure (even an unreadable state) is logged and does not stop the others.
        """
        statuses: dict[str, str] = {}
        states: dict[str, RequestState | None] = {}  # for the alerts (fave.app.alerts_doors)
        for request_id in self.active.ids():
            try:
                validate_request_id(request_id)
                submitted = self.submit(request_id, [Tick()], post_if_busy=False)
                statuses[request_id] = submitted.state.status.value if submitted.state is not None else "BUSY"
                states[request_id] = submitted.state
            except NotFoundError:
                if self.context.clock.now() - request_id_time(request_id) > ORPHAN_AFTER_S:
                    self.active.discard(request_id)
            except ValidationError as exc:  # a malformed marker, or a request of another pipeline's shape
                logger.error("tick: dropping request", extra={"request_id": request_id, "error": str(exc)})
                self.active.discard(request_id)
                statuses[request_id] = "ERROR"
            except Exception as exc:
                logger.exception("tick: request failed to advance", extra={"request_id": request_id})
                statuses[request_id] = f"ERROR: {type(exc).__name__}"
        self.drain_queue()
        from fave.app.alerts_doors import on_tick

        on_tick(self.context, states)  # queue stuck, sustained throttling: fired, never delivered here
        return statuses

    def drain_queue(self) -> dict[str, int] | None:
        """Admit from the pipeline's admission queue up to ``max_requests_in_flight`` (``fave.app.queue_doors``):
        on every schedule tick and whenever a request ends. Never fails the caller: the next tick tries again.
        Not re-entered: a request admitted here whose first step runs inline (no self-invoker) may end inside."""
        if self._draining:
            return None
        from fave.app.queue_doors import drain

        self._draining = True
        try:
            done = drain(self)
            if done["admitted"] or done["finished"]:
                logger.info("queue drained", extra=done)
            return done
        except Exception:
            logger.exception("queue drain failed: the next tick tries again")
            return None
        finally:
            self._draining = False

    # ---- under the lease ------------------------------------------------------------------------------

    def _step(self, request_id: str, events: list[Event]) -> RequestState:
        """Load, apply the events and a tick, run synchronous stages inline; commit each step.

        The tick makes every step also act on what is due (retries whose delay has passed, timeouts), so a
        busy request does not wait for the schedule; an idle one is moved on by the schedule tick, which
        also collects the shard objects of steps that crashed before committing.
        """
        state = self.orchestrator.load(request_id)
        was_over = state.status.terminal
        if any(isinstance(event, Tick) for event in events):
            self.orchestrator.collect_garbage_after_next_commit(request_id)
        # A new holder first sends what the last one dispatched but did not record as sent (the outbox).
        applied = [Resend(), *self._adapt(state, events), Tick()]
        state = self._settle(self.orchestrator.apply(request_id, applied))
        flushed = self.orchestrator.flush_sent(request_id)  # before letting go of the request
        if flushed is not None:
            # Recording what was sent decides too (a budget may stop the request there): an end is an end.
            state = self._settle(flushed) if flushed.status.terminal and not state.status.terminal else flushed
        if state.status.terminal and not was_over:
            self._ended.add(request_id)
        if request_id in self.orchestrator.handover:  # out of time mid-dispatch: a continuation sends the rest
            self.orchestrator.handover.discard(request_id)
            self.kick(request_id)
        return state

    @staticmethod
    def _adapt(state: RequestState, events: list[Event]) -> list[Event]:
        """What the events mean for the request as it is now: a resume or a tick of a request still in INIT
        starts it (its first step's kick may have been lost); a resume of a COMPLETED one does nothing (unless
        stages of it were reset)."""
        adapted: list[Event] = []
        for event in events:
            if isinstance(event, (Resume, Tick, Start)) and state.status is RequestStatus.INIT:
                adapted.append(Start())
            elif isinstance(event, Resume) and state.nothing_to_resume:
                continue
            elif not isinstance(event, Tick):
                adapted.append(event)
        return adapted

    def _settle(self, state: RequestState) -> RequestState:
        state = self.orchestrator.settle().get(state.request_id, state)
        if state.status.terminal:
            self.active.discard(state.request_id)
            with contextlib.suppress(FaveError):  # best effort: garbage is never read
                self.orchestrator.collect_garbage(state.request_id)
        return state

    def _after_end(self, state: RequestState) -> None:
        """What follows a request's end in the invocation that ended it, once its lease is let go."""
        from fave import history

        history.record(
            self.context.store,
            state,
            self.context.pipeline.name,
            now=state.finished_at,
            rates=self.orchestrator.engine.rates,
        )
        self.drain_queue()  # a slot is free: its queue entry ends and the next one is admitted
        from fave.app.alerts_doors import request_ended

        request_ended(self.context, state)  # fired (an async self-invoke delivers it), never delivered here


def invocation_runner() -> Runner:
    """A runner for the invocation running on this thread: its context, its meter, its lease time."""
    return Runner(current(), current_meter())


__all__ = [
    "ActiveRequests",
    "MeteredOrchestrator",
    "Runner",
    "Submitted",
    "invocation_runner",
    "step_event",
]
