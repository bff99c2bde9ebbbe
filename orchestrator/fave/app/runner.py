"""One invocation of the orchestrator function: apply an event, run synchronous stages inline, return.

On Lambda nothing waits between invocations, so a ``Runner`` (one per invocation) applies the incoming
event, then keeps applying what synchronous invocations return (``Orchestrator.settle`` with invocations
run inline) until only asynchronous work is in flight; those completions come back as destination events,
each a new invocation. State always comes from the store (a fresh orchestrator per invocation), so
invocations running at the same time in different execution environments, or threads of one process in
tests, only ever meet through the store's conditional writes.

``ActiveRequests`` keeps ``index/active/{id}`` markers for the requests that are not finished, so the
schedule tick visits those only (not every request ever made).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fave_shared.errors import FaveError, NotFoundError, ValidationError
from fave_shared.store import ObjectStore

from ..ids import validate_request_id
from ..model import Command, Event, RequestState, RequestStatus, Resume, Start, Tick
from ..service import Orchestrator
from .context import AppContext
from .observability import Meter, MeteredInvoker, logger

ACTIVE_PREFIX = "index/active/"
#: A marker whose request never appeared (its creation died before the first commit) is dropped after this.
ORPHAN_AFTER_S = 3600.0

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


class Runner:
    """The orchestrator as one Lambda invocation uses it."""

    def __init__(self, context: AppContext, meter: Meter) -> None:
        self.context = context
        self.meter = meter
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

    def start(self, request_input: Mapping[str, Any], request_id: str) -> RequestState:
        """Create (or, after a crash or for a duplicate, find) request ``request_id`` and run it as far as
        synchronous stages go."""
        logger.set_correlation_id(request_id)
        self.active.add(request_id)  # before the request exists: a tick can then never miss it
        state = self.orchestrator.create(request_input, request_id=request_id)
        return self._settle(state)

    def load(self, request_id: str) -> RequestState:
        logger.set_correlation_id(request_id)
        return self.orchestrator.load(request_id)

    def step(self, request_id: str, events: Iterable[Event]) -> RequestState:
        """Apply ``events`` then a tick to the request, and settle; ``NotFoundError`` for an unknown request.

        The tick makes every event also act on what is due (retries whose delay has passed, timeouts), so a
        busy request does not wait for the schedule; an idle one is moved on by the schedule tick.
        """
        logger.set_correlation_id(request_id)
        self.orchestrator.load(request_id)
        batch = [e for e in events if not isinstance(e, Tick)] + [Tick()]
        return self._settle(self.orchestrator.apply(request_id, batch))

    def resume(self, request_id: str) -> RequestState:
        """Start an INIT request, or re-run what did not succeed (a COMPLETED request is left alone)."""
        state = self.load(request_id)
        if state.status is RequestStatus.COMPLETED:
            return state
        self.active.add(request_id)
        return self.step(request_id, [Start() if state.status is RequestStatus.INIT else Resume()])

    def tick_all(self) -> dict[str, str]:
        """Tick every active request (timeouts, due retries); returns request id → status after the tick.

        One request's failure is logged and does not stop the others.
        """
        statuses: dict[str, str] = {}
        for request_id in self.active.ids():
            try:
                statuses[request_id] = self.step(request_id, [Tick()]).status.value
            except NotFoundError:
                if self.context.clock.now() - request_id_time(request_id) > ORPHAN_AFTER_S:
                    self.active.discard(request_id)
            except ValidationError as exc:  # a malformed marker, or a request of another pipeline's shape
                logger.error("tick: dropping request", extra={"request_id": request_id, "error": str(exc)})
                self.active.discard(request_id)
            except FaveError:
                logger.exception("tick: request failed to advance", extra={"request_id": request_id})
        return statuses

    def _settle(self, state: RequestState) -> RequestState:
        state = self.orchestrator.settle().get(state.request_id, state)
        if state.status.terminal:
            self.active.discard(state.request_id)
        return state


__all__ = ["ACTIVE_PREFIX", "ActiveRequests", "MeteredOrchestrator", "Runner", "request_id_time"]
