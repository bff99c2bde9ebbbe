"""One invocation of the orchestrator function: apply an event, run synchronous stages inline, return.

On Lambda nothing waits between invocations, so a ``Runner`` (one per invocation) applies the incoming
event, then keeps applying what synchronous invocations return (``Orchestrator.settle`` with invocations
run inline) until only asynchronous work is in flight; those completions come back as destination events,
each a new invocation. State always comes from the store (a fresh orchestrator per invocation).

Every change to a request happens under its lease (``fave.app.exclusive``): an invocation that finds the
lease taken leaves its *message* (a destination record, a cancel, a resume) in the request's mailbox for
the holder and returns.

``ActiveRequests`` keeps ``index/active/{id}`` markers for the requests that are not finished, so the
schedule tick visits those only (not every request ever made).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fave_shared.errors import FaveError, NotFoundError, RetryableError, ValidationError
from fave_shared.store import ObjectStore
from pydantic import ValidationError as PydanticValidationError

from .. import completions
from ..ids import validate_request_id
from ..model import Cancel, Command, Event, RequestState, RequestStatus, Resume, Start, Tick
from ..service import Orchestrator
from .context import AppContext, current, lease_seconds
from .exclusive import Leases, Mailbox
from .observability import Meter, MeteredInvoker, current_meter, logger

ACTIVE_PREFIX = "index/active/"
#: A marker whose request never appeared (its creation died before the first commit) is dropped after this.
ORPHAN_AFTER_S = 3600.0
#: A request's lease when the invocation's remaining time is not known (Lambda's longest timeout).
DEFAULT_LEASE_S = 900.0
#: Lease rounds one invocation serves (each round applies what arrived during the previous one).
MAX_ROUNDS = 50

_CROCKFORD = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}


def request_id_time(request_id: str) -> float:
    """When a request id was made (its ULID timestamp), in seconds since the epoch."""
    ms = 0
    for char in validate_request_id(request_id)[:10]:
        ms = ms * 32 + _CROCKFORD[char]
    return ms / 1000.0


class ActiveRequests:
    """``index/active/{id}``: one empty marker per request that may still need a tick."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def add(self, request_id: str) -> None:
        self.store.put(ACTIVE_PREFIX + validate_request_id(request_id), b"{}", content_type="application/json")

    def discard(self, request_id: str) -> None:
        """Drop the marker (whatever its name: a malformed one is dropped too; the store validates keys)."""
        self.store.delete(ACTIVE_PREFIX + request_id)

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
        self.meter = meter
        self._baseline: dict[str, int] = {}

    def load(self, request_id: str) -> RequestState:
        state = super().load(request_id)
        self._baseline[request_id] = _succeeded(state)
        return state

    def perform(self, state: RequestState, commands: list[Command]) -> None:
        done = _succeeded(state)
        self.meter.count("TasksSucceeded", done - self._baseline.get(state.request_id, 0))
        self._baseline[state.request_id] = done
        super().perform(state, commands)


def _succeeded(state: RequestState) -> int:
    return sum(stage.succeeded for stage in state.stages.values())


def _inline(call: Any) -> None:
    call()


# ---- messages: what an invocation asks of a request (applied by whoever holds its lease) -------------------

Message = dict[str, Any]


def destination_message(envelope: Mapping[str, Any]) -> Message:
    return {"kind": "destination", "envelope": dict(envelope)}


def cancel_message(reason: str) -> Message:
    return {"kind": "cancel", "reason": reason}


def resume_message() -> Message:
    return {"kind": "resume"}


def tick_message() -> Message:
    return {"kind": "tick"}


class RequestBusyError(RetryableError):
    """Another invocation holds the request's lease and this call cannot be queued (creating it)."""


@dataclass(frozen=True)
class Submitted:
    """What became of submitted messages: ``state`` after this invocation's last step (None if it took no
    step), ``posted`` the mailbox keys of messages left to the lease holder."""

    state: RequestState | None
    posted: tuple[str, ...] = ()


class Runner:
    """The orchestrator as one Lambda invocation uses it (see the module docs)."""

    def __init__(self, context: AppContext, meter: Meter, *, lease_s: float = DEFAULT_LEASE_S) -> None:
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
        )
        self.active = ActiveRequests(context.store)
        self.leases = Leases(context.store, context.clock)
        self.mailbox = Mailbox(context.store)

    def load(self, request_id: str) -> RequestState:
        """The request's state, fresh from the store (no lease needed to read)."""
        logger.set_correlation_id(request_id)
        return self.orchestrator.load(request_id)

    def start(self, request_input: Mapping[str, Any], request_id: str) -> RequestState:
        """Create (or, after a crash or for a duplicate, find) request ``request_id`` and run it as far as
        synchronous stages go. ``RequestBusyError`` if another invocation holds its lease."""
        logger.set_correlation_id(request_id)
        try:
            existing = self.orchestrator.load(request_id)
        except NotFoundError:
            existing = None
        if existing is not None and existing.status is not RequestStatus.INIT:
            return existing  # a duplicate (idempotency key, upload event delivered twice): nothing to do
        lease = self.leases.try_acquire(request_id, self.lease_s)
        if lease is None:
            raise RequestBusyError(f"request {request_id} is being created by another invocation; try again")
        try:
            self.active.add(request_id)  # before the request exists: a tick can then never miss it
            state = self.orchestrator.create(request_input, request_id=request_id)
            state = self._settle(state)
        finally:
            self.leases.release(lease)
        if self.mailbox.keys(request_id):  # completions that arrived while we held the lease
            return self.submit(request_id, []).state or state
        return state

    def submit(self, request_id: str, messages: list[Message], *, post_if_busy: bool = True) -> Submitted:
        """Apply ``messages`` (with everything waiting in the mailbox) under the request's lease; if another
        invocation holds it, post them to the mailbox for it (unless ``post_if_busy`` is false) and return.

        Raises ``NotFoundError`` for an unknown request.
        """
        logger.set_correlation_id(request_id)
        own = list(messages)
        posted: list[str] = []
        state: RequestState | None = None
        for _ in range(MAX_ROUNDS):
            lease = self.leases.try_acquire(request_id, self.lease_s)
            if lease is None:
                if own and post_if_busy and not posted:
                    posted = [self.mailbox.post(request_id, m) for m in own]
                    own = []
                    continue  # the holder may have let go meanwhile: one more try
                if posted:
                    logger.info("request busy: messages left in its mailbox", extra={"messages": len(posted)})
                return Submitted(state, tuple(posted))
            try:
                keys = [] if own else self.mailbox.keys(request_id)
                batch = own + [m for m in map(self.mailbox.read, keys) if m is not None]
                own = []
                if batch or state is None:
                    state = self._step(request_id, batch)
                self.mailbox.remove(keys)
            finally:
                self.leases.release(lease)
            if not self.mailbox.keys(request_id):
                return Submitted(state, ())
        return Submitted(state, tuple(posted))

    def tick_all(self) -> dict[str, str]:
        """Tick every active request (timeouts, due retries, waiting messages); returns request id → status
        after the tick (``BUSY`` if another invocation holds it: that one ticks it too).

        One request's failure is logged and does not stop the others.
        """
        statuses: dict[str, str] = {}
        for request_id in self.active.ids():
            try:
                submitted = self.submit(request_id, [tick_message()], post_if_busy=False)
                statuses[request_id] = submitted.state.status.value if submitted.state is not None else "BUSY"
            except NotFoundError:
                if self.context.clock.now() - request_id_time(request_id) > ORPHAN_AFTER_S:
                    self.active.discard(request_id)
            except ValidationError as exc:  # a malformed marker, or a request of another pipeline's shape
                logger.error("tick: dropping request", extra={"request_id": request_id, "error": str(exc)})
                self.active.discard(request_id)
            except FaveError:
                logger.exception("tick: request failed to advance", extra={"request_id": request_id})
        return statuses

    # ---- under the lease ------------------------------------------------------------------------------

    def _step(self, request_id: str, messages: list[Message]) -> RequestState:
        """Load, apply the messages' events and a tick, run synchronous stages inline; commit each step.

        The tick makes every step also act on what is due (retries whose delay has passed, timeouts), so a
        busy request does not wait for the schedule; an idle one is moved on by the schedule tick.
        """
        state = self.orchestrator.load(request_id)
        events = [*self._events(state, messages), Tick()]
        return self._settle(self.orchestrator.apply(request_id, events))

    def _events(self, state: RequestState, messages: list[Message]) -> list[Event]:
        events: list[Event] = []
        for message in messages:
            kind = message.get("kind")
            if kind == "destination":
                try:
                    request_id, event = completions.from_envelope(message.get("envelope") or {})
                except PydanticValidationError as exc:
                    logger.error("mailbox: malformed destination record dropped", extra={"error": str(exc)})
                    continue
                if request_id == state.request_id:
                    events.append(event)
            elif kind == "cancel":
                events.append(Cancel(str(message.get("reason") or "cancelled by user")))
            elif kind == "resume":
                if state.status is RequestStatus.INIT:
                    events.append(Start())
                elif state.status is not RequestStatus.COMPLETED:
                    events.append(Resume())
            elif kind != "tick":
                logger.error("mailbox: unknown message dropped", extra={"kind": kind})
        return events

    def _settle(self, state: RequestState) -> RequestState:
        state = self.orchestrator.settle().get(state.request_id, state)
        if state.status.terminal:
            self.active.discard(state.request_id)
        return state


def invocation_runner() -> Runner:
    """A runner for the invocation running on this thread: its context, its meter, its lease time."""
    return Runner(current(), current_meter(), lease_s=lease_seconds())


__all__ = [
    "ACTIVE_PREFIX",
    "ActiveRequests",
    "MeteredOrchestrator",
    "RequestBusyError",
    "Runner",
    "Submitted",
    "cancel_message",
    "destination_message",
    "invocation_runner",
    "request_id_time",
    "resume_message",
    "tick_message",
]
