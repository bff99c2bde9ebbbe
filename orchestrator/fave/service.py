"""The orchestrator step: prepare → decide → commit → perform (decide apart from doing).

* **prepare** (``prepare``): the I/O an event needs before the pure engine sees it (park a large output,
  resolve the list a fan-out iterates over);
* **decide**: ``core.engine.Engine.decide_all(state, events, now)`` → the new state and its commands;
* **commit**: the commands of the *before-commit* phase (``WriteFinal``: final.json must exist once the
  COMPLETED state is visible), then ``Persistence.commit`` (state.json with If-Match: the commit point);
* **perform**: the *after-commit* commands (``Invoke``, ``Notify``, ``WriteCache``), so nothing is ever done
  for a decision that was not persisted.

Each command type has one performer and one phase in ``Orchestrator._performers``; a command without one is an
error raised before anything is written. ``Orchestrator`` is used both by the local driver (``drive`` loops
until the request ends, batching every completion that arrived into one step) and by the Lambda entry points
(one ``apply`` per incoming event).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, cast

from fave_shared import refs
from fave_shared.errors import ConflictError, FaveError, NotFoundError, ValidationError
from fave_shared.store import ObjectStore

from fave import cache, completions, history
from fave.clock import Clock, SystemClock
from fave.core.budget import Rates
from fave.core.dag import Pipeline, Stage
from fave.core.engine import Engine
from fave.core.model import (
    CachedItems,
    CacheLookup,
    Cancel,
    CodeDigests,
    Command,
    ConflictingEvent,
    Event,
    Fingerprint,
    InvalidEvent,
    Invoke,
    MissingData,
    Notify,
    RequestState,
    RequestStatus,
    Resend,
    Reset,
    Resume,
    Sent,
    StageStatus,
    Start,
    StoreRequests,
    TaskFailed,
    TasksCached,
    TaskSucceeded,
    TaskThrottled,
    Tick,
    WriteCache,
    WriteCachePack,
    WriteFinal,
    negative_at,
)
from fave.core.operations import Budget
from fave.ids import new_request_id, validate_request_id
from fave.inputs import check_profile, upload_field
from fave.invoke.base import (
    EncodedPayload,
    Invoker,
    SharedJSON,
    ThrottledInvocationError,
    invocation_is_terminal,
    task_payload,
)
from fave.jsonbytes import Encoder
from fave.keys import index_key, state_key, task_input_key, task_output_key
from fave.lease import Leases
from fave.meter import RequestMeter
from fave.persistence import LIST_BLOCK, SHARD_SIZE, Persistence
from fave.pricing import prices
from fave.source_digest import source_identity

_log = logging.getLogger(__name__)
_UNKNOWN = object()

INLINE_OUTPUT_LIMIT = 8_192
"""Task outputs larger than this (JSON bytes) are kept as objects and referenced from the task shard (a marker
with their ``"$size"``), so that state stays small. Only state: ``_payload`` puts them back inline in the events
of the stages that need them, up to what Lambda carries (``refs.event_limit``)."""
_SHORT = 32


def _surely_inline(output: Any) -> bool:
    """Whether ``output``'s JSON is within ``INLINE_OUTPUT_LIMIT`` for sure, without encoding it: a dict of at
    most 8 fields named by short strings, each null, a boolean, a number or a short string (the usual small
    stage result; ``prepare`` sees one per task). Escaped, a character is at most 12 bytes, a float 24, such an
    int 20: 8 x (2 x (12 x 32 + 2) + 2) + 2 < 8,192."""
    if type(output) is not dict or len(output) > 8:
        return False
    for key, value in output.items():
        if type(key) is not str or len(key) > _SHORT:
            return False
        kind = type(value)
        if kind is str:
            if len(value) > _SHORT:
                return False
        elif kind is int:
            if not -(10**18) < value < 10**18:
                return False
        elif value is not None and kind is not bool and kind is not float:
            return False
    return True


LIST_BLOCK_BYTES = 256 * 1024
"""About the bytes of a block object of a fan-out list: a list of small elements takes more than ``LIST_BLOCK``
items per block (a 10,000-element list of ids is one object, not five), one of large elements ``LIST_BLOCK``."""


def _encoded_with_lists(output: Any, fields: Collection[str]) -> tuple[bytes, dict[str, bytes]]:
    """``_PARK.encode(output)``, and the exact text of each of ``fields`` that is a list in it (an output object's
    member: ``for_each: STAGE.FIELD``). orjson writes an object as ``{`` + its members + ``}``, each
    ``"name":value`` with the value's own bytes: so the text of such an output is made of its members' texts,
    the lists among them kept (the same bytes, one encoding instead of two)."""
    if not fields or type(output) is not dict or not any(type(output.get(f)) is list for f in fields):
        return _PARK.encode(output), {}
    members: list[bytes] = []
    texts: dict[str, bytes] = {}
    for name, value in output.items():
        head = _PARK.exact(name) if type(name) is str else None
        text = _PARK.exact(value) if head is not None else None
        if head is None or text is None:  # a member orjson does not write exactly: the whole output as before
            return _PARK.encode(output), {}
        if name in fields and type(value) is list:
            texts[name] = text
        members.append(head + b":" + text)
    return b"{" + b",".join(members) + b"}", texts


def _list_block(count: int, size: int) -> int:
    """Items per block of the lists of an output of ``size`` bytes (0: not measured) whose longest list has
    ``count`` elements; 0 for the engine's own (``LIST_BLOCK``). The output's bytes are an upper bound of the
    list's, so the blocks are at most ``LIST_BLOCK_BYTES``."""
    if count <= LIST_BLOCK or size <= 0:
        return 0
    return max(LIST_BLOCK, min(count, LIST_BLOCK_BYTES * count // size))


_PARKED = refs.RefCache()
"""The parked outputs and stored request inputs that events put back inline (one GET each, not one per task)."""
_MARKER_BYTES = b'"$ref"'
_PARK = Encoder(ensure_ascii=False)
"""A large output as parked: as the stage returned it (its keys in its order), UTF-8 (its size is the one a payload
carrying it has)."""
MAX_CONFLICT_RETRIES = 20
MAX_LOADS = 100
"""Loads one decision may ask for (each adds blocks; a decision that needs everything asks once for all)."""
HANDOVER_MARGIN_S = 30.0
"""A dispatch stops handing out invokes when the process has less time than this left (a Lambda invocation):
the rest stays in the outbox, and a continuation sends it. A function with a short timeout keeps a third of its
time instead (``handover_margin``): with 30 s of a 10 s function, no invocation could dispatch anything."""


@dataclass
class _BulkLookup:
    """What a cached fanned-out stage's lookups read and computed in this process (``Orchestrator._bulk``)."""

    pack: str
    read: cache.Pack
    keys: dict[int, str] = field(default_factory=dict)
    """item -> key, for every task looked up (those not hits ran: their lookup is not made again)."""
    stale: set[str] = field(default_factory=set)
    """Keys whose row was found but whose parked output is gone: the pack's write replaces them."""
    rows: list[int] | None = None
    """A bulk lookup's (``CacheLookup.elements``): the pack's row of each item (-1: a miss). Every item was
    answered then: none is looked up again when it is invoked."""


def handover_margin(time_at_start: float) -> float:
    """The margin for an invocation that started with ``time_at_start`` seconds: 30 s, or a third of a shorter
    budget (at least one invoke goes out in each, so a chain of continuations always makes progress)."""
    return min(HANDOVER_MARGIN_S, max(time_at_start, 0.0) / 3.0)


class Phase(Enum):
    BEFORE_COMMIT = "before commit"
    AFTER_COMMIT = "after commit"


@dataclass(frozen=True)
class Performer:
    """How one command type is carried out, and when."""

    phase: Phase
    perform: Callable[[RequestState, Any], None]


class Orchestrator:
    """Runs requests of one pipeline against one object store and one invoker."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: ObjectStore,
        invoker: Invoker | None = None,
        *,
        clock: Clock | None = None,
        on_notify: Callable[[str, Notify, RequestState], None] | None = None,
        sync_workers: int = 8,
        sync_submit: Callable[[Callable[[], None]], None] | None = None,
        dispatch_parallelism: int = 1,
        time_left: Callable[[], float] | None = None,
        handover_margin_s: float = HANDOVER_MARGIN_S,
        rates: Rates | None = None,
        record_history: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.invoker = invoker
        self.clock = clock or SystemClock()
        # The run history (fave metrics) learns of every request that ends here, unless the caller records it
        # itself (the Lambda runner does, once the request's lease is let go).
        self.record_history = record_history
        self.engine = Engine(
            pipeline, change_block=SHARD_SIZE, list_block=LIST_BLOCK, rates=rates or default_rates(invoker)
        )
        # The stages whose for_each list a stage's output feeds (prepare resolves those lists).
        self._fed_by: dict[str, list[Stage]] = {}
        for spec in pipeline.stages.values():
            if spec.for_each is not None:
                self._fed_by.setdefault(spec.for_each.source, []).append(spec)
        self._cached_lists: dict[str, dict[str, str]] = {}
        """Source stage -> {cached stage without per-item needs: the field of the source's output it fans out over}
        (its bulk lookup compares the list's text: ``_list_texts``)."""
        for spec in pipeline.stages.values():
            if spec.for_each is not None and spec.cache and not spec.item_needs and len(spec.for_each.path) == 1:
                self._cached_lists.setdefault(spec.for_each.source, {})[spec.name] = spec.for_each.path[0]
        # The persistence's traffic, tallied per request for its ledger (``StoreRequests``).
        self.meter = RequestMeter(store)
        self.persistence = Persistence(self.meter, pipeline, self.engine)
        self.on_notify = on_notify
        self.inbox: queue.SimpleQueue[tuple[str, Event]] = queue.SimpleQueue()
        self._states: dict[str, RequestState] = {}
        self._sync_pool: ThreadPoolExecutor | None = None
        self._dispatcher: ThreadPoolExecutor | None = None
        self._sync_workers = sync_workers
        # How a synchronous invocation is run in the background (default: a thread pool). Tests pass a
        # deferring function to choose the interleaving themselves.
        self._sync_submit = sync_submit
        self._lock = threading.Lock()
        self._held: set[str] = set()
        # The outbox (RequestState.unsent): invokes sent since the last commit, recorded by the next one.
        self._sent: dict[str, list[tuple[str, int]]] = {}
        # How many of a request's ``_sent`` are asynchronous invocations: those outlive this process, the
        # synchronous ones (run in its threads, their outcome reported to its inbox) do not (``apply``).
        self._sent_async: dict[str, int] = {}
        self._sent_lock = threading.Lock()
        self.dispatch_parallelism = dispatch_parallelism
        self.time_left = time_left
        """Seconds this process may still run (a Lambda invocation's remaining time), if it is bounded."""
        self.handover_margin_s = handover_margin_s
        """Dispatch stops when ``time_left()`` falls below this (see ``handover_margin``)."""
        self.handover: set[str] = set()
        """Requests whose dispatch stopped short for lack of time: the rest is in their outbox."""
        self._performers: dict[type, Performer] = {
            WriteFinal: Performer(Phase.BEFORE_COMMIT, self._write_final),
            Invoke: Performer(Phase.AFTER_COMMIT, self._invoke),
            Notify: Performer(Phase.AFTER_COMMIT, self._notify),
            WriteCache: Performer(Phase.AFTER_COMMIT, self._write_cache),
            WriteCachePack: Performer(Phase.AFTER_COMMIT, self._write_cache_pack),
        }
        self._bulk: dict[tuple[str, str], _BulkLookup] = {}
        """(request, stage) -> what the bulk lookups of a cached fanned-out stage read and computed: its pack and
        the item keys, reused by its tasks' own lookups and by the pack's write (then dropped)."""
        self._task_keys: dict[tuple[str, str, int | None], str] = {}
        """(request, stage, item) -> the key an invocation's lookup computed, reused to store its output."""
        self._list_texts: dict[tuple[str, str], tuple[tuple[Any, ...], bytes]] = {}
        """(request, cached stage) -> the list it fans out over, as a source output's field was resolved, and its
        exact text, made when that output was encoded: the stage's bulk lookup of that very list (``cache.bulk_rows``
        compares it with the pack's list by text) takes it instead of encoding the list a second time."""
        self._uncached: set[str] = set()
        self._source_field = upload_field(pipeline)
        """The input field naming the request's source: the cache keys its content, not its name."""
        self._sources: dict[tuple[str, str], object] = {}
        """Functions whose code digest is unknown (their tasks are never cached), logged once each."""
        self._gc_due: set[str] = set()
        # Requests this orchestrator created: the crashed steps whose garbage a driver collects are another
        # writer's, which a request created here has not had (``_drive``).
        self._created: set[str] = set()
        self._shared_json: SharedJSON | None = None
        self._limits: dict[str, int] = {}

    # ---- lifecycle of a request ------------------------------------------------------------------------

    def create(
        self,
        request_input: Mapping[str, Any],
        *,
        start: bool = True,
        request_id: str | None = None,
        no_cache: bool = False,
        stages: Iterable[str] = (),
        budget: Budget | None = None,
    ) -> RequestState:
        """Validate the input, persist a new request (INIT) and, by default, start it.

        ``request_id``: a pre-generated id (e.g. one an idempotency record already holds). Then the call is
        idempotent: if that request exists (a retry after a crash, or a concurrent duplicate), it is loaded
        instead of created, and started if it was left in INIT. The existing request's input wins.

        ``no_cache``: the request looks nothing up in the result cache (``fave run --no-cache``; kept in its
        state, so a resume keeps it); what its cache stages compute is still written to the cache.

        ``stages``: a subset run (``fave run --stage``): only these stages and what they need run, and the request
        completes when they have succeeded. ``ValidationError`` naming an unknown stage, before anything is stored.

        ``budget``: limits that replace the pipeline's ``operations.budget`` where they are set.
        """
        profile = str(request_input.get("profile") or "default")
        check_profile(self.pipeline, profile)
        _check_depth(request_input)
        selection = tuple(stages)
        if selection:
            try:
                self.engine.selection_scope(selection)
            except InvalidEvent as exc:
                raise ValidationError(f"stages: {exc}") from None
        now = self.clock.now()
        if request_id is None:
            request_id = new_request_id(now)
            state = self.engine.new_request(request_id, {**request_input, "profile": profile}, now, stages=selection)
            state = _with_options(state, no_cache, budget)
            self._states[request_id] = self.persistence.create(state)
            if len(self._created) >= 10_000:
                self._created.clear()
            self._created.add(request_id)
        else:
            state = self.engine.new_request(
                validate_request_id(request_id), {**request_input, "profile": profile}, now, stages=selection
            )
            state = _with_options(state, no_cache, budget)
            try:
                self._states[request_id] = self.persistence.create(state)
                self._created.add(request_id)
            except ConflictError:
                existing = self.load(request_id)
                index = index_key(request_id)
                if self.store.head(index) is None:  # the first attempt died between its commit and the index
                    body = json.dumps({"created_at": existing.created_at}).encode()
                    self.store.put(index, body, content_type="application/json")
        if start and self._states[request_id].status is RequestStatus.INIT:
            return self.apply(request_id, [Start()])
        return self._states[request_id]

    def load(self, request_id: str, *, full: bool = False) -> RequestState:
        """The current state from the store (fresh read): its head, or with ``full`` every task too. Steps load
        the task blocks they need as they go."""
        validate_request_id(request_id)
        self.persistence.forget(request_id)
        state = self.persistence.load(request_id, self.clock.now(), full=full)
        self._states[request_id] = state
        return state

    @contextlib.contextmanager
    def hold(self, request_id: str) -> Iterator[None]:
        """Be the one writer of the request while the block runs (``fave.lease``, renewed in the background):
        a second ``fave resume`` of it elsewhere gets ``LeaseHeldError`` instead of dispatching every
        unfinished task again. Re-entrant within this orchestrator."""
        if request_id in self._held:
            yield
            return
        with Leases(self.store, self.clock, local_process=True).hold(request_id):
            self._held.add(request_id)
            try:
                yield
            finally:
                self._held.discard(request_id)

    def collect_garbage(self, request_id: str) -> int:
        """Delete what crashed steps left behind for this request; returns how many objects went."""
        return len(self.persistence.collect_garbage(request_id))

    def collect_garbage_after_next_commit(self, request_id: str) -> None:
        """Collect after this orchestrator's next commit of the request: only then can the shards of a step
        that crashed at version v + 1 be told from those of a step in progress (see Persistence)."""
        self._gc_due.add(request_id)

    def cancel(self, request_id: str, reason: str = "cancelled by user") -> RequestState:
        return self.apply(request_id, [Cancel(reason)])

    def resume(self, request_id: str, *, budget: Budget | None = None) -> RequestState:
        """Re-run what did not succeed; ``budget``: limits that replace the request's where set (raise them to
        continue a request its budget stopped)."""
        return self.apply(request_id, [Resume(budget=budget if budget is not None and budget.limited else None)])

    def reset(
        self, request_id: str, stages: Iterable[str], *, downstream: bool = False
    ) -> tuple[RequestState, dict[str, int]]:
        """Mark stages PENDING again on a request that has ended (``core.model.Reset``): a resume then re-runs
        them. Returns the state and, per stage marked, how many tasks it holds now. ``ValidationError`` naming
        an unknown stage, ``ConflictError`` if the request has not ended or a stage is in the way."""
        names = tuple(stages)
        try:
            scope = self.engine.reset_scope(names, downstream)
        except InvalidEvent as exc:
            raise ValidationError(str(exc)) from None
        state = self.apply(request_id, [Reset(names, downstream)])
        return state, {name: state.stages[name].pending for name in scope}

    # ---- the step ------------------------------------------------------------------------------------

    def code_digest(self, function: str) -> str | None:
        """The function's code digest as the invoker sees it now (it remembers them); None: unknown, never an
        error (a digest only feeds fingerprints and cache keys: no step may fail for one)."""
        digest_of = getattr(self.invoker, "code_digest", None)  # invokers written before the cache lack it
        if not callable(digest_of):
            return None
        try:
            digest = digest_of(function)
        except (AttributeError, FaveError):  # AttributeError: a wrapper over an invoker that lacks it
            return None
        return None if digest is None else str(digest)

    def fingerprints(self, profile: str) -> dict[str, Fingerprint]:
        """Every stage's fingerprint as the pipeline and the code are now, for a request of ``profile``
        (``fave rerun`` compares them with the recorded ones)."""
        code = {function: self.code_digest(function) for function in sorted(self.pipeline.functions)}
        return {name: self.engine.fingerprint(name, profile, code) for name in self.pipeline.order}

    def _code_for(self, state: RequestState) -> dict[str, str | None]:
        """The code digests a decision may record in the fingerprints of the stages that succeed in it: those of
        every stage of the run that has not succeeded (one may start and succeed in the same decision, all its
        tasks taken from the cache). Asked for per decision, not per task: the invoker remembers them (on Lambda
        for a while, so that a deployment is seen)."""
        functions = {
            self.pipeline.stages[name].function
            for name, st in state.stages.items()
            if st.status is not StageStatus.SUCCEEDED and state.in_scope(name)
        }
        return {function: self.code_digest(function) for function in sorted(functions)}

    def apply(self, request_id: str, events: Iterable[Event]) -> RequestState:
        """Apply events, commit (retrying on conflict by reloading), then perform the commands."""
        events = [self.prepare(request_id, e) for e in events]
        if (self._bulk or self._task_keys) and any(isinstance(e, Reset) for e in events):  # their inputs go
            self._bulk = {k: v for k, v in self._bulk.items() if k[0] != request_id}
            self._task_keys = {k: v for k, v in self._task_keys.items() if k[0] != request_id}
        idle = bool(events) and all(type(e) is Tick for e in events)
        for _ in range(MAX_CONFLICT_RETRIES):
            with self._sent_lock:
                sent = tuple(self._sent.get(request_id, ()))
                sent_async = self._sent_async.get(request_id, 0)
            # A tick with nothing due commits nothing only to record synchronous sends: their outcome comes back
            # to this process, whose next step records them with it; and should it die first, they died with it,
            # so that whoever resumes had better send them again than wait for their deadline.
            quiet = idle and bool(sent) and not sent_async
            step_events = [Sent(sent), *events] if sent else events
            puts, gets = self.meter.pending(request_id)
            if puts or gets:
                step_events = [StoreRequests(puts, gets), *step_events]
            try:
                state, before, commands = self._decide(request_id, step_events)
            except ConflictError:  # a shard it needed was superseded: the state it had is stale
                self._states.pop(request_id, None)
                continue
            except InvalidEvent as exc:  # refused as a whole: nothing was decided
                raise ValidationError(str(exc)) from None
            except ConflictingEvent as exc:
                raise ConflictError(str(exc)) from None
            if not _changed(before, state, commands, outbox=not quiet):
                if quiet:  # left for the next step to record (see above)
                    return before
                if sent:  # already out of the outbox (their tasks ended): nothing left to record
                    self._recorded(request_id, len(sent), sent_async)
                return state
            try:
                self._run(Phase.BEFORE_COMMIT, state, commands)
                state = self.persistence.commit(state)
            except ConflictError:
                # Someone else committed first (a cancel, another orchestrator): re-read and re-decide.
                self._states.pop(request_id, None)
                continue
            if puts or gets:
                self.meter.consume(request_id, puts, gets)
            self._states[request_id] = state
            if self.record_history and state.status.terminal and not before.status.terminal:
                # The run history (fave metrics) learns of every request that ends, whoever drove it.
                history.record(self.store, state, self.pipeline.name, now=state.finished_at, rates=self.engine.rates)
            if sent:
                self._recorded(request_id, len(sent), sent_async)
            if request_id in self._gc_due:
                self._gc_due.discard(request_id)
                with contextlib.suppress(FaveError):  # garbage is never read; the next pass gets it
                    self.collect_garbage(request_id)
            self.perform(state, commands)
            return state
        raise ConflictError(f"request {request_id}: gave up after {MAX_CONFLICT_RETRIES} conflicting writes")

    def _decide(self, request_id: str, events: list[Event]) -> tuple[RequestState, RequestState, list[Command]]:
        """Decide on the cached (or freshly loaded) state, loading the task and item blocks the decision asks
        for (``MissingData``) and deciding again: a decision is pure, so the result is the one a wholly loaded
        state would give. Returns (new state, the state it started from, commands)."""
        state = self._states.get(request_id)
        if state is None:
            state = self.load(request_id)
        wanted = self.engine.working_set(state, events)
        if wanted is not None:
            state = self.persistence.load_more(state, wanted)
        events = [CodeDigests(self._code_for(state)), *events]  # for the fingerprints of stages that succeed
        for _ in range(MAX_LOADS):
            self._states[request_id] = state
            try:
                new_state, commands = self.engine.decide_all(state, events, self.clock.now())
            except MissingData as missing:
                state = self.persistence.load_more(state, missing)
                continue
            except CacheLookup as ask:  # the same decision again, with the result cache's answers first
                events = [self._cache_lookup(state, ask), *events]
                continue
            return new_state, state, commands
        raise FaveError(f"request {request_id}: a decision still missed data after {MAX_LOADS} loads")

    def prepare(self, request_id: str, event: Event) -> Event:
        """Do the I/O an event needs before the pure engine sees it: park large outputs in the store and
        resolve the lists that a successful source stage feeds to its ``for_each`` stages."""
        if not isinstance(event, TaskSucceeded) or event.stage not in self.pipeline.stages:
            return event
        output = event.output
        small = output is None or isinstance(output, (bool, int, float))  # no need to measure these
        data = b""
        texts: dict[str, bytes] = {}
        wanted = self._cached_lists.get(event.stage, {})
        if not small and not _surely_inline(output) and not refs.is_ref(output):
            # Its size (UTF-8, as a payload carries it) and, if parked, its bytes; with the texts of the lists
            # that cached stages fan out over when they are fields of it (for their bulk lookup).
            data, texts = _encoded_with_lists(output, set(wanted.values()))
            if texts and _MARKER_BYTES in data:  # its lists are what the markers in it resolve to: not these texts
                texts = {}
        source = None
        if len(data) > INLINE_OUTPUT_LIMIT:
            key = task_output_key(request_id, event.stage, event.item, event.attempt)
            self.store.put(key, data, content_type="application/json")
            plain = output if _MARKER_BYTES not in data else _UNKNOWN  # its lists need no reading back nor walk
            # Its size as a payload carries it: the bytes just written (UTF-8, encoded as payloads are).
            output = refs.marker(key, size=len(data))
            if plain is not _UNKNOWN:  # its lists read back from it as they are: not written again (one block)
                source = key
        else:
            plain = _UNKNOWN
        fanout: dict[str, tuple[Any, ...]] = {}
        for spec in self._fed_by.get(event.stage, ()):
            assert spec.for_each is not None
            try:
                resolved = plain if plain is not _UNKNOWN else refs.resolve(self.store, output)
                listed = fanout[str(spec.for_each)] = tuple(spec.for_each.extract(resolved))
            except (ValueError, FaveError) as exc:
                return TaskFailed(event.stage, event.item, event.attempt, "ValidationError", str(exc))
            field = wanted.get(spec.name)
            text = texts.get(field) if field is not None else None
            if text is not None:  # kept with the very list it is the text of (the lookup checks it is that one)
                if len(self._list_texts) >= 8:  # lists whose stage never looked them up: forget them
                    self._list_texts.clear()
                self._list_texts[(request_id, spec.name)] = (listed, text)
        if output is event.output and not fanout:
            return event
        block = _list_block(max(map(len, fanout.values()), default=0), len(data))
        return replace(event, output=output, fanout=fanout, fanout_block=block, fanout_source=source)

    # ---- doing ----------------------------------------------------------------------------------------

    def perform(self, state: RequestState, commands: list[Command]) -> None:
        """The after-commit commands of a committed step."""
        # Per step: the values its Invokes share, encoded once (not kept past it: see SharedJSON), and the event
        # size limits, read once (FAVE_PAYLOAD_THRESHOLD).
        self._shared_json, self._limits = SharedJSON(), {}
        try:
            self._run(Phase.AFTER_COMMIT, state, commands)
        finally:
            self._shared_json = None

    def _run(self, phase: Phase, state: RequestState, commands: list[Command]) -> None:
        performers = self._performers
        if not performers.keys() >= {type(command) for command in commands}:  # checked in the first phase,
            unknown = next(type(c).__name__ for c in commands if type(c) not in performers)  # before any write
            raise FaveError(f"no performer for command {unknown}: add it to _performers")
        dispatches: list[Invoke] = []
        parallel = self.dispatch_parallelism > 1
        for command in commands:  # 10,000 of them for a fan-out: one lookup each
            performer = performers[type(command)]
            if performer.phase is not phase:
                continue
            if parallel and isinstance(command, Invoke) and command.mode == "async":
                dispatches.append(command)
            else:
                performer.perform(state, command)
        if dispatches:
            self._dispatch(state, dispatches)

    def _dispatch(self, state: RequestState, commands: list[Invoke]) -> None:
        """Asynchronous invokes with bounded parallelism (each is one API round trip). Stops handing out new
        ones when the process is about to run out of time: those stay in the outbox for a continuation."""
        pool = self._dispatch_pool()
        pending = iter(commands)
        running: set[Any] = set()
        short = False
        while True:
            while len(running) < self.dispatch_parallelism and not short:
                command = next(pending, None)
                if command is None:
                    break
                if self.time_left is not None and self.time_left() < self.handover_margin_s:
                    short = True
                    break
                running.add(pool.submit(self._invoke, state, command))
            if not running:
                break
            done, running = wait_futures(running, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
        if short:
            self.handover.add(state.request_id)

    def _dispatch_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = ThreadPoolExecutor(self.dispatch_parallelism, thread_name_prefix="fave-dispatch")
            return self._dispatcher

    def _mark_sent(self, request_id: str, stage: str, item: int | None, *, sync: bool = False) -> None:
        with self._sent_lock:
            self._sent.setdefault(request_id, []).append((stage, 0 if item is None else item))
            if not sync:
                self._sent_async[request_id] = self._sent_async.get(request_id, 0) + 1

    def _recorded(self, request_id: str, count: int, count_async: int) -> None:
        """The first ``count`` sends of the request (``count_async`` of them asynchronous) are recorded: what a
        step read of ``_sent`` (everything sent then; later sends are appended after it)."""
        with self._sent_lock:
            del self._sent[request_id][:count]
            left = self._sent_async.get(request_id, 0) - count_async
            if left > 0:
                self._sent_async[request_id] = left
            else:
                self._sent_async.pop(request_id, None)

    def _sent_here(self, request_id: str, state: RequestState) -> bool:
        """Whether this process sent every invocation of the request's outbox (it will record them itself)."""
        with self._sent_lock:
            mine = set(self._sent.get(request_id, ()))
        return bool(mine) and all((stage, item) in mine for stage, box in state.unsent.items() for item in box.items())

    def flush_sent(self, request_id: str) -> RequestState | None:
        """Commit what was sent since the last commit (before this process lets go of the request, so the next
        holder does not send it again). None if there was nothing to record."""
        with self._sent_lock:
            if not self._sent.get(request_id):
                return None
        return self.apply(request_id, [])

    def _write_final(self, state: RequestState, command: WriteFinal) -> None:
        self.persistence.write_final(state.request_id, command.output)

    def _notify(self, state: RequestState, command: Notify) -> None:
        if self.on_notify is not None:
            self.on_notify(state.request_id, command, state)

    def _invoke(self, state: RequestState, command: Invoke) -> None:
        if self.invoker is None:
            raise FaveError("this orchestrator has no invoker")
        request_id = state.request_id
        if self.pipeline.stages[command.stage].cache and not state.no_cache and self._cache_hit(state, command):
            return
        # The TaskRef's fields, as a plain dict: this runs once per dispatched task (10,000 for a fan-out).
        ref = {"request_id": request_id, "stage": command.stage, "item": command.item, "attempt": command.attempt}
        try:
            payload = self._payload(request_id, ref, command)
        except (FaveError, TypeError, ValueError) as exc:
            # The task is committed as dispatched: fail it like an invoke that raised, so the request does not
            # stay RUNNING with nothing in flight. A store error is retried; an event that cannot be built
            # (FAVE_PAYLOAD_THRESHOLD unreadable, an input that is not JSON) is terminal: retrying cannot fix it.
            terminal = isinstance(exc, (ValidationError, TypeError, ValueError))
            failed = TaskFailed(
                command.stage, command.item, command.attempt, type(exc).__name__, str(exc), terminal=terminal
            )
            self.inbox.put((request_id, failed))
            return
        if command.mode == "sync":
            task = completions.Task(request_id, command.stage, command.item, command.attempt)
            self._mark_sent(request_id, command.stage, command.item, sync=True)  # it runs now: nothing to send again
            if self._sync_submit is not None:
                self._sync_submit(lambda: self._invoke_sync(task, command.function, payload))
            else:
                self._pool().submit(self._invoke_sync, task, command.function, payload)
            return
        try:
            self.invoker.invoke_async(command.function, payload)
        except ThrottledInvocationError as exc:  # it did not run: re-queued without spending an attempt
            self.inbox.put((request_id, TaskThrottled(command.stage, command.item, command.attempt, str(exc))))
            return
        except FaveError as exc:
            # No credentials, an unknown function: failed for good (not the retry policy's attempts).
            failed = TaskFailed(
                command.stage,
                command.item,
                command.attempt,
                type(exc).__name__,
                str(exc),
                terminal=invocation_is_terminal(exc),
            )
            self.inbox.put((request_id, failed))
            return
        self._mark_sent(request_id, command.stage, command.item)

    # ---- the result cache (fave.cache) -------------------------------------------------------------------

    def _cache_key(self, state: RequestState, stage: str, function: str, task_input: Mapping[str, Any]) -> str | None:
        """The task's cache key, or None if it cannot be cached (the function's code is unknown, a parked
        value it needs cannot be read)."""
        keyed = self._keyed(state, stage, function, task_input)
        if keyed is None:
            return None
        code, value = keyed
        try:
            return cache.cache_key(function, code, value, lambda key: _PARKED.load(self.store, key))
        except (FaveError, TypeError, ValueError) as exc:
            _log.warning("result cache: no key for a task of %s: %s", function, exc)
            return None

    def _keyed(
        self, state: RequestState, stage: str, function: str, task_input: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """(the function's code digest, the task's input as it enters the key: its request as the stage declares
        it), or None if the task cannot be cached (its code or its source's content is unknown)."""
        assert self.invoker is not None
        code = self.code_digest(function)
        if code is None:
            if function not in self._uncached:
                self._uncached.add(function)
                _log.warning("result cache: the code of %s is unknown; its tasks are not cached", function)
            return None
        value = dict(task_input)
        request = state.input  # the request's content (the task's may be a marker naming the request)
        declared = self.pipeline.stages[stage].cache_request
        if declared is not None:
            request = {name: request[name] for name in declared if name in request}
        value["request"] = request = dict(request)
        field = self._source_field
        if field is not None and isinstance(request.get(field), str):
            identity = self._source_of(state.request_id, request[field])
            if identity is None:
                return None
            request[field] = {"uri": request[field], "content": identity}
        return code, value

    def _cache_lookup(self, state: RequestState, ask: CacheLookup) -> TasksCached:
        """The answers to a ``CacheLookup``: the stage's pack id (its shared key parts, hashed once), every item
        key (``cache.item_keys``), then the stage's pack, read once per request, stage and process. A hit whose
        parked output is gone, and anything when the keys cannot be made, is None (the task runs). Never raises a
        store error: a miss is never a failure."""
        if ask.elements is not None:
            return self._bulk_cache_lookup(state, ask, ask.elements)
        answers: dict[int, tuple[Any, str] | None] = dict.fromkeys(ask.inputs)
        if self.invoker is None or not ask.inputs:
            return TasksCached(ask.stage, answers)
        keyed = self._keyed(state, ask.stage, ask.function, ask.shared)
        if keyed is None:
            return TasksCached(ask.stage, answers)
        code, value = keyed
        load = lambda key: _PARKED.load(self.store, key)  # noqa: E731 - the same loader for every part
        try:
            pack = cache.pack_id(ask.function, code, value, ask.item_needs, load)
            keys = cache.item_keys(pack, ask.inputs, ask.item_needs, load)
        except (FaveError, TypeError, ValueError) as exc:
            _log.warning("result cache: no keys for the tasks of %s: %s", ask.function, exc)
            return TasksCached(ask.stage, answers)
        memo = (state.request_id, ask.stage)
        bulk = self._bulk.get(memo)
        if bulk is None or bulk.pack != pack:
            if len(self._bulk) >= 16:  # stages whose pack was never written (the request stopped): forget them
                self._bulk.clear()
            bulk = self._bulk[memo] = _BulkLookup(pack, cache.read_pack(self.store, pack))
        bulk.keys.update(keys)
        read, parked = bulk.read, bulk.read.parked
        for item, key in keys.items():
            row = read.row(key)
            if row is None:
                continue
            if not parked or self._parked_exist(row[0]):
                answers[item] = row
            else:
                bulk.stale.add(key)
        return TasksCached(ask.stage, answers)

    def _bulk_cache_lookup(self, state: RequestState, ask: CacheLookup, elements: tuple[Any, ...]) -> TasksCached:
        """The answer to a bulk ``CacheLookup``: every item of a stage starting afresh, as arrays. The stage's pack
        is read once; an element equal to the one at its position in the list the pack was written for takes
        that row without a key being made (``cache.bulk_rows``); the others are keyed and looked up by key."""
        count = len(elements)
        nothing = TasksCached(ask.stage, {}, bulk=CachedItems(0.0, (), (-1,) * count, (None,) * count))
        if self.invoker is None:
            return nothing
        keyed = self._keyed(state, ask.stage, ask.function, ask.shared)
        if keyed is None:
            return nothing
        code, value = keyed
        load = lambda key: _PARKED.load(self.store, key)  # noqa: E731
        try:
            pack = cache.pack_id(ask.function, code, value, ask.item_needs, load)
        except (FaveError, TypeError, ValueError) as exc:
            _log.warning("result cache: no keys for the tasks of %s: %s", ask.function, exc)
            return nothing
        if len(self._bulk) >= 16:
            self._bulk.clear()
        bulk = self._bulk[(state.request_id, ask.stage)] = self._recalled(
            pack, elements, load, self._list_text(state.request_id, ask.stage, elements)
        )
        read, rows = bulk.read, bulk.rows or [-1] * count
        if read.parked:  # a row whose parked output is gone is a miss, and the pack's write replaces it
            for i, r in enumerate(rows):
                if r >= 0 and not self._parked_exist(read.outputs[r]):
                    bulk.stale.add(read.key(r))
                    rows[i] = -1
        # Row -1 (none) reads the sentinel appended last: one C-speed pass each over 10,000 positions.
        held = tuple(map([*read.source_of, -1].__getitem__, rows))
        found = tuple(map([*read.outputs, None].__getitem__, rows))
        return TasksCached(ask.stage, {}, bulk=CachedItems(0.0, tuple(read.sources), held, found))

    def _item_cache_hit(self, state: RequestState, command: Invoke) -> bool:
        """The lookup of a task of a cached fanned-out stage, in its stage's pack (its outputs are stored only
        there: ``fave.cache``). A task the stage's bulk lookup answered in this process was a miss then: nothing
        to look up again. Otherwise (a retried or reset task, a request resumed by another process) the same
        lookup for it alone, the pack read once per stage."""
        assert command.item is not None
        bulk = self._bulk.get((state.request_id, command.stage))
        if bulk is not None and (bulk.rows is not None or command.item in bulk.keys):
            return False
        item_needs = self.pipeline.stages[command.stage].item_needs
        inputs = {command.item: command.input}
        if bulk is not None:  # the stage's pack id and pack are known: only this task's key to make
            try:
                key = cache.item_keys(bulk.pack, inputs, item_needs, lambda k: _PARKED.load(self.store, k))
            except (FaveError, TypeError, ValueError) as exc:
                _log.warning("result cache: no key for a task of %s: %s", command.function, exc)
                return False
            bulk.keys.update(key)
            row = bulk.read.row(key[command.item])
            answer = row if row is not None and (not bulk.read.parked or self._parked_exist(row[0])) else None
            if row is not None and answer is None:
                bulk.stale.add(key[command.item])
        else:
            ask = CacheLookup(command.stage, command.function, inputs, item_needs, command.input)
            answer = self._cache_lookup(state, ask).answers.get(command.item)
        if answer is None:
            return False
        output, source = answer
        hit = TaskSucceeded(command.stage, command.item, command.attempt, output, cached_from=source)
        self.inbox.put((state.request_id, hit))
        return True

    def _write_cache_pack(self, state: RequestState, command: WriteCachePack) -> None:
        """Merge the rows of a cached fanned-out stage's run into its pack (``fave.cache``). The pack and the item
        keys this process read and computed when the stage started are reused. A store error loses the rows
        (they run again next time), never the request."""
        if self.invoker is None or not (command.rows or command.bulk):
            return
        keyed = self._keyed(state, command.stage, command.function, command.shared)
        if keyed is None:
            return
        code, value = keyed
        load = lambda key: _PARKED.load(self.store, key)  # noqa: E731
        bulk = self._bulk.pop((state.request_id, command.stage), None)
        try:
            pack = cache.pack_id(command.function, code, value, command.item_needs, load)
            if bulk is not None and bulk.pack != pack:
                # The code (or config) changed while the stage ran: what it took from the old pack, and what its
                # tasks computed with either code, must not answer for the new one. Nothing is written.
                _log.warning("result cache: %s changed while its stage ran; its pack is not written", command.function)
                return
            if bulk is None and command.elements and not command.item_needs:
                bulk = self._recalled(pack, command.elements, load)
            known = bulk.keys if bulk is not None else {}
            placed = bulk.rows if bulk is not None and bulk.rows is not None else ()
            missing = {
                item: row[0]
                for item, row in command.rows.items()
                if item not in known and not (item < len(placed) and placed[item] >= 0)
            }
            keys = {**known, **cache.item_keys(pack, missing, command.item_needs, load)} if missing else known
            read, stale = (bulk.read, bulk.stale) if bulk is not None else (None, set())
            run: cache.PackRun | dict[str, cache.Row]
            if command.elements:
                run = self._pack_run(command, pack, keys, bulk, load)
            else:
                run = {keys[item]: (output, source) for item, (_, output, source) in command.rows.items()}
            cache.write_pack(
                self.store, pack, run, source=state.request_id, stage=command.stage, known=read, stale=stale
            )
        except (FaveError, TypeError, ValueError) as exc:
            _log.warning("result cache: writing the pack of %s failed: %s", command.stage, exc)

    def _list_text(self, request_id: str, stage: str, elements: tuple[Any, ...]) -> bytes | None:
        """The text of ``elements``, the list ``stage`` fans out over, when this process made it as it encoded
        their source output and they are that very list (``_list_texts``; taken once); None otherwise."""
        kept = self._list_texts.pop((request_id, stage), None)
        return kept[1] if kept is not None and kept[0] is elements else None

    def _recalled(
        self, pack: str, elements: tuple[Any, ...], load: Callable[[str], Any], text: bytes | None = None
    ) -> _BulkLookup:
        """The stage's pack read once and its list compared with ``elements`` by position, so that only the elements
        that differ are keyed (``cache.bulk_rows``): the bulk lookup, and the pack write of a process that did not
        make it (a request resumed elsewhere: every Lambda step). Whatever the pack holds, a miss, never a failure."""
        try:
            read = cache.read_pack(self.store, pack)
        except Exception:  # read_pack refuses what it can tell; anything else is no pack either
            _log.warning("result cache: the pack %s is unusable", pack, exc_info=True)
            read = cache.Pack()
        recalled = _BulkLookup(pack, read)

        def keys_of(positions: list[int]) -> dict[int, str]:
            made = cache.item_keys(pack, {i: {"item": elements[i]} for i in positions}, (), load)
            recalled.keys.update(made)
            return made

        try:
            recalled.rows = cache.bulk_rows(read, elements, keys_of, text)
        except (FaveError, TypeError, ValueError) as exc:
            _log.warning("result cache: no keys for the items of pack %s: %s", pack, exc)
            recalled.rows = [-1] * len(elements)
        return recalled

    @staticmethod
    def _pack_run(
        command: WriteCachePack,
        pack: str,
        keys: Mapping[int, str],
        bulk: _BulkLookup | None,
        load: Callable[[str], Any],
    ) -> cache.PackRun:
        """A stage's run as its pack keeps it: per position of its list, the key, output and source (None where
        the item did not succeed). An item whose output is a row of the pack as ``bulk`` read it (a hit of its
        lookup, or an element at its place in the pack's list) is that row, with no key; the others are keyed
        (``keys``, else made from their elements)."""
        elements = command.elements
        count = len(elements)
        found = bulk.rows if bulk is not None and bulk.rows is not None and len(bulk.rows) == count else None
        out_keys: list[str | None] = [None] * count
        outputs: list[Any] = [None] * count
        sources: list[str | None] = [None] * count
        placed = [-1] * count
        held = command.bulk if command.bulk is not None and len(command.bulk.source_of) == count else None
        misses: list[int] = []
        if held is not None:  # C-speed passes over the list (a sentinel for "not held"; the misses set apart)
            outputs = list(held.outputs)
            sources = list(map([*held.sources, None].__getitem__, held.source_of))
            misses = negative_at(held.source_of)
            if found is not None:
                placed = list(found)
                for i in misses:
                    placed[i] = -1
        for item, (_, output, source) in command.rows.items():
            outputs[item], sources[item] = output, source
            if item not in keys and found is not None and found[item] >= 0:
                placed[item] = found[item]  # not keyed (``missing``): the pack's row at its position is its row
            else:
                out_keys[item], placed[item] = keys[item], -1
        # Held items the read does not place (it is not the read they came from): rare, so counted first (in C);
        # they are keyed.
        unplaced: list[int] = []
        if held is not None and placed.count(-1) > len(misses):
            unplaced = [i for i in held.items() if placed[i] < 0]
        if unplaced:
            made = cache.item_keys(pack, {i: {"item": elements[i]} for i in unplaced}, (), load)
            for i, key in made.items():
                out_keys[i] = key
        return cache.PackRun(out_keys, outputs, sources, elements, placed)

    def _source_of(self, request_id: str, uri: str) -> str | None:
        """The content identity of the request's source (``fave.source_digest``), looked up once per request
        and process; None (logged once): its tasks are not cached."""
        known = self._sources.get((request_id, uri), _UNKNOWN)
        if known is not _UNKNOWN:
            return cast("str | None", known)
        identity = source_identity(uri, self.store)
        if identity is None:
            _log.warning("result cache: the content of %s cannot be known; this request's tasks are not cached", uri)
        if len(self._sources) >= 1024:
            self._sources.clear()
        self._sources[(request_id, uri)] = identity
        return identity

    def _cache_hit(self, state: RequestState, command: Invoke) -> bool:
        """Look the task up; on a hit, its success (with the stored output) goes to the inbox instead of an
        invocation. A missing or unreadable entry is a miss."""
        if self.invoker is None:
            return False
        if command.item is not None and self.pipeline.stages[command.stage].fanned_out:
            return self._item_cache_hit(state, command)
        key = self._cache_key(state, command.stage, command.function, command.input)
        if key is None:
            return False
        entry = cache.read_entry(self.store, key)
        if entry is None or not self._parked_exist(entry.output):
            if len(self._task_keys) >= 100_000:  # tasks that never succeeded: forget them
                self._task_keys.clear()
            self._task_keys[(state.request_id, command.stage, command.item)] = key  # its WriteCache's key
            return False
        hit = TaskSucceeded(command.stage, command.item, command.attempt, entry.output, cached_from=entry.source)
        self.inbox.put((state.request_id, hit))
        return True

    def _parked_exist(self, output: Any) -> bool:
        """Every object a cached output refers to (parked in its source request's prefix) is still there: an
        entry that outlived them is a miss, not a task that fails reading them."""
        try:
            return all(self.store.head(str(ref[refs.REF])) is not None for ref in refs.find_refs(output))
        except FaveError:
            return False

    def _write_cache(self, state: RequestState, command: WriteCache) -> None:
        """Store a fresh output under its key (create-only: a concurrent request's entry stays). A store error
        loses the entry, never the task."""
        if self.invoker is None:
            return
        key = self._task_keys.pop((state.request_id, command.stage, command.item), None)
        key = key or self._cache_key(state, command.stage, command.function, command.input)
        if key is None:
            return
        try:
            cache.write_entry(
                self.store, key, command.output, source=state.request_id, stage=command.stage, item=command.item
            )
        except FaveError as exc:
            _log.warning("result cache: writing the entry of %s failed: %s", command.stage, exc)

    def _payload(self, request_id: str, ref: dict[str, Any], command: Invoke) -> EncodedPayload:
        """The task's event (docs/stages.md), JSON-encoded once: the invoker sends these bytes.

        The input travels inline, with every marker in it (parked outputs, a stored request input) replaced by
        its value, when the event stays within ``refs.event_limit(mode)``: what Lambda carries, so a handler
        that ignores the SDK gets plain JSON. Otherwise the input is written to the store whole (its markers
        kept) and the event carries a marker to it, whose ``"$note"`` tells a handler without the SDK how to
        read it. Measured on the bytes as sent (UTF-8)."""
        shared = self._shared_json  # in a step: its stages' request and config, in each of their Invokes
        try:
            payload = task_payload(ref, command.mode, self.store.uri, dict(command.input), shared or SharedJSON())
        except (TypeError, ValueError) as exc:  # what the invoker would refuse it with
            raise ValidationError(f"invocation payload is not JSON-serialisable: {exc}") from exc
        limit = self._limits.get(command.mode) if shared is not None else None
        if limit is None:
            limit = refs.event_limit(command.mode)
            if shared is not None:
                self._limits[command.mode] = limit
        size = len(payload.data)
        markers = refs.find_refs(payload["input"]) if _MARKER_BYTES in payload.data else []
        if not markers:
            if size <= limit:
                return payload
        else:
            size = _PARKED.inlined_size(self.store, size, markers)
            if size <= limit:  # fetch them only when the event will carry them
                inline = self._encoded({**payload, "input": _PARKED.resolve(self.store, payload["input"])})
                if len(inline.data) <= limit:
                    return inline
                size = len(inline.data)  # values that held markers of their own
        key = task_input_key(request_id, command.stage, command.item, command.attempt)
        self.store.put(key, refs.dumps(payload["input"]), content_type="application/json")
        return self._encoded({**payload, "input": refs.marker(key, note=refs.input_note(size, limit, command.mode))})

    @staticmethod
    def _encoded(event: dict[str, Any]) -> EncodedPayload:
        try:
            return EncodedPayload(event)
        except (TypeError, ValueError) as exc:  # what the invoker would refuse it with
            raise ValidationError(f"invocation payload is not JSON-serialisable: {exc}") from exc

    def _invoke_sync(self, task: completions.Task, function: str, payload: dict[str, Any]) -> None:
        assert self.invoker is not None
        try:
            result = self.invoker.invoke_sync(function, payload)
            self.inbox.put(completions.from_result(task, result.payload, result.function_error, payload))
        except ThrottledInvocationError as exc:  # it did not run: re-queued without spending an attempt
            self.inbox.put((task.request_id, TaskThrottled(task.stage, task.item, task.attempt, str(exc))))
        except Exception as exc:
            self.inbox.put(
                (
                    task.request_id,
                    TaskFailed(
                        task.stage,
                        task.item,
                        task.attempt,
                        type(exc).__name__,
                        str(exc),
                        terminal=invocation_is_terminal(exc),
                    ),
                )
            )

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._sync_pool is None:
                self._sync_pool = ThreadPoolExecutor(self._sync_workers, thread_name_prefix="fave-sync")
            return self._sync_pool

    def settle(self, max_steps: int = 100_000) -> dict[str, RequestState]:
        """Apply whatever the inbox holds, step after step, until it stays empty; return the latest state of
        each request touched.

        Meant for an orchestrator whose ``sync_submit`` runs invocations inline (one Lambda invocation of
        the orchestrator function): each step's synchronous invocations then finish inside ``apply`` and
        put their results in the inbox, so when this returns no synchronous work is pending. Asynchronous
        completions come back later as destination envelopes. With the default thread pool, invocations
        still running when the inbox is empty are not waited for (use ``drive``).
        """
        states: dict[str, RequestState] = {}
        for _ in range(max_steps):
            batch: dict[str, list[Event]] = {}
            try:
                while True:
                    request_id, event = self.inbox.get_nowait()
                    batch.setdefault(request_id, []).append(event)
            except queue.Empty:
                pass
            if not batch:
                return states
            for request_id, events in batch.items():
                states[request_id] = self.apply(request_id, events)
        raise FaveError(f"settle: the inbox was still not empty after {max_steps} steps")

    def deliver(self, envelope: Mapping[str, Any]) -> None:
        """Destination handler for the local runtime: queue an async completion (thread-safe)."""
        self.inbox.put(completions.from_envelope(envelope))

    # ---- the local loop -------------------------------------------------------------------------------

    def drive(
        self,
        request_id: str,
        *,
        tick_s: float = 0.05,
        poll_s: float = 1.0,
        on_step: Callable[[RequestState], None] | None = None,
        max_batch: int = 20_000,
    ) -> RequestState:
        """Run the request to its end in this process: wait for completions, batch them into steps.

        Holds the request's lease throughout (see ``hold``) and collects the garbage of crashed steps: the
        uncommitted shard objects after its first commit, a local store's abandoned temp files at once."""
        with self.hold(request_id):
            return self._drive(request_id, tick_s=tick_s, poll_s=poll_s, on_step=on_step, max_batch=max_batch)

    def _drive(
        self,
        request_id: str,
        *,
        tick_s: float,
        poll_s: float,
        on_step: Callable[[RequestState], None] | None,
        max_batch: int,
    ) -> RequestState:
        if request_id not in self._created:  # (should a writer elsewhere have crashed on it since, the next
            self.collect_garbage_after_next_commit(request_id)  # driver that did not create it collects that)
        sweep = getattr(self.store, "sweep_temp", None)
        if callable(sweep):
            sweep()
        state = self._states.get(request_id) or self.load(request_id)
        if state.unsent and not self._sent_here(request_id, state):
            # A driver before this one dispatched and died before recording it: send again. (What this process
            # sent, its next step records.)
            state = self.apply(request_id, [Resend()])
        last_poll = self.clock.now()
        while not state.status.terminal:
            events = self._received(request_id, tick_s, max_batch)
            events.append(Tick())
            now = self.clock.now()
            if now - last_poll >= poll_s:
                last_poll = now
                state = self._notice_outside_writes(request_id, state)
            state = self.apply(request_id, events)
            if on_step is not None:
                on_step(state)
        return self._drain(request_id, state, tick_s=tick_s, on_step=on_step, max_batch=max_batch)

    def _received(self, request_id: str, tick_s: float, max_batch: int) -> list[Event]:
        """Up to ``max_batch`` events from the inbox, waiting up to ``tick_s`` for the first; ticks left out (the
        caller adds its own)."""
        events: list[Event] = []
        try:
            events.append(self._accept(request_id, self.inbox.get(timeout=tick_s)))
            while len(events) < max_batch:
                events.append(self._accept(request_id, self.inbox.get_nowait()))
        except queue.Empty:
            pass
        return [e for e in events if not isinstance(e, Tick)]

    def _drain(
        self,
        request_id: str,
        state: RequestState,
        *,
        tick_s: float,
        on_step: Callable[[RequestState], None] | None,
        max_batch: int,
    ) -> RequestState:
        """After a failure, wait for the attempts still running (up to their deadlines) and record what they
        report: their successes are kept, so a resume runs only what did not succeed. (A cancel does not wait.)"""
        while (
            state.status is RequestStatus.FAILED
            and state.abandoned
            and state.abandoned_until is not None
            and self.clock.now() < state.abandoned_until
        ):
            events = self._received(request_id, tick_s, max_batch)
            if events:
                state = self.apply(request_id, events)
                if on_step is not None:
                    on_step(state)
        return state

    def _accept(self, request_id: str, message: tuple[str, Event]) -> Event:
        # Completions for other requests (a stale run sharing the runtime) are not ours to apply.
        rid, event = message
        return event if rid == request_id else Tick()

    def _notice_outside_writes(self, request_id: str, state: RequestState) -> RequestState:
        """Pick up a ``fave cancel`` from another process even when no completion is due."""
        known = self.persistence.committed_etag(request_id)
        try:
            etag = self.store.head(state_key(request_id))
        except NotFoundError:
            return state
        if known is not None and etag != known:
            return self.load(request_id)
        return state

    def close(self) -> None:
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=False, cancel_futures=True)
        if self._dispatcher is not None:
            self._dispatcher.shutdown(wait=False, cancel_futures=True)
        if self.invoker is not None:
            self.invoker.close()


MAX_INPUT_DEPTH = 64
"""Nesting levels of a request's input: it is stored in state.json, whose serialiser refuses deep nesting."""


def _check_depth(request_input: Mapping[str, Any]) -> None:
    # Before anything is stored: deeper input would fail the first state.json write with a serialiser error.
    todo: list[tuple[Any, int]] = [(request_input, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_INPUT_DEPTH:
            raise ValidationError(f"input: nested more than {MAX_INPUT_DEPTH} levels deep")
        if isinstance(value, Mapping):
            todo.extend((inner, depth + 1) for inner in value.values())
        elif isinstance(value, list | tuple):
            todo.extend((inner, depth + 1) for inner in value)


def default_rates(invoker: Invoker | None) -> Rates:
    """The ledger's prices (``fave.pricing``: ``FAVE_PRICES`` overrides them) and each function's MemorySize as
    the invoker knows it (``memory_sizes()``: the local runtime reads the template); a function of unknown size is
    priced at Lambda's default, 128 MB."""
    p = prices()
    sizes_of = getattr(invoker, "memory_sizes", None)
    sizes = dict(sizes_of()) if callable(sizes_of) else {}
    return Rates(
        request_usd=p.lambda_request,
        gb_second_usd=p.lambda_gb_second,
        s3_put_usd=p.s3_put,
        s3_get_usd=p.s3_get,
        memory_mb=sizes,
    )


def _with_options(state: RequestState, no_cache: bool, budget: Budget | None) -> RequestState:
    if no_cache:
        state = replace(state, no_cache=True)
    if budget is not None and budget.limited:
        state = replace(state, budget=state.budget.merged(budget))
    return state


def _changed(before: RequestState, after: RequestState, commands: list[Command], *, outbox: bool = True) -> bool:
    """Whether a decision has anything to commit; ``outbox``: a change of the outbox alone counts."""
    return bool(
        commands
        or after.changed
        or (outbox and after.unsent is not before.unsent)
        or after.status != before.status
        or after.stages is not before.stages
        or after.tasks is not before.tasks
        or after.retry_due is not before.retry_due
    )
