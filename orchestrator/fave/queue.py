"""The admission queue: requests waiting to be started, persistent in the object store (local or S3).

``fave queue add`` / ``POST /queue`` put entries in; a worker (``fave worker``) or, on AWS, the orchestrator's
tick and completions (``fave.app.runner``) ``claim`` them in order (priority 1 first, then oldest), start a
request for each (``started``) and report how it ended (``finished``). The rules of an entry's life are
``fave.queue_model``'s; this module stores entries (``fave.keys``: ``queue/{pipeline}/...``) and changes them.

Concurrency: nothing here is last-writer-wins. Every change to an entry is a compare-and-swap on its object
(``if_match`` the etag it was read at), so two workers claiming at once never both get one entry: the loser's
write fails and it moves on to the next. A key is taken by creating its pointer (``if_none_match``) or swapping
it from an entry that has ended, so two ``add``s of one key make one entry.

Markers (``open/``, ``running/``, ``failed/``, ``done/``) are indexes that keep ``claim``, ``running``,
``list --status`` and ``stats`` to the entries that matter; the entry object is the truth and a stale marker is
skipped. A marker is written before its entry joins the set it indexes and deleted only after the entry left it,
so a crash leaves a marker too many (harmless). Two exceptions, both healed: a keyed ``add`` writes its open
marker only once it holds the key (a loser of the race on a key must never be claimed), so if it dies in between
its entry waits unclaimed until the key is added again (that ``add`` writes the marker) or ``fave queue retry``;
a claim writes its running marker after the claim, and a claim never started is given back when its lease ends.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from fave_shared.errors import ConflictError, NotFoundError, ValidationError
from fave_shared.store import ObjectStore, get_json, put_json

from fave import keys
from fave.core.model import RequestState
from fave.ids import new_request_id, validate_request_id
from fave.queue_model import (
    CLAIM_LEASE_S,
    CLOSED,
    OPEN,
    STATUSES,
    Entry,
    QueueError,
    QueueStats,
    check_priority,
    claimable,
    on_claim,
    on_finished,
    on_release,
    on_retry,
    on_started,
    queue_stats,
)

__all__ = ["AdmissionQueue", "Entry", "QueueError", "QueueStats", "outcome"]

#: Compare-and-swap attempts on one entry before giving up (each lost race means someone else changed it).
_CAS_TRIES = 20
#: Parallel store requests when reading or adding many entries (S3: each is a round trip).
_PARALLEL = 8
_KEY_LIMIT = 256
_T = TypeVar("_T")
_R = TypeVar("_R")


class AdmissionQueue:
    """One pipeline's queue in ``store``. Cheap to make: it keeps nothing of the queue (every call reads the
    store), so a new ``AdmissionQueue`` over the same store (a restarted worker) sees everything."""

    def __init__(
        self,
        store: ObjectStore,
        pipeline: str,
        *,
        clock: Callable[[], float] = time.time,
        lease_s: float = CLAIM_LEASE_S,
    ) -> None:
        keys.queue_prefix(pipeline)  # a bad name fails here, not at the first key
        self.store = store
        self.pipeline = pipeline
        self.clock = clock
        self.lease_s = lease_s
        self._last_id = ""
        self._id_lock = threading.Lock()

    # ---- adding -------------------------------------------------------------------------------------------

    def add(
        self,
        input: Mapping[str, Any],
        *,
        priority: int = 3,
        key: str | None = None,
        at: float | None = None,
        every_s: float | None = None,
        max_attempts: int = 3,
        budget: Mapping[str, Any] | None = None,
    ) -> Entry:
        """Queue a request-to-be (its input already validated against the pipeline). With a ``key`` that an
        open entry (QUEUED, CLAIMED, RUNNING) has, nothing is added: that entry comes back, ``duplicate``."""
        entry = self._new_entry(
            {
                "input": input,
                "priority": priority,
                "key": key,
                "at": at,
                "every_s": every_s,
                "max_attempts": max_attempts,
                "budget": budget,
            }
        )
        return self._store_new(entry)

    def add_batch(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        priority: int = 3,
        at: float | None = None,
        every_s: float | None = None,
        max_attempts: int = 3,
        budget: Mapping[str, Any] | None = None,
    ) -> builtins.list[Entry]:
        """Queue many: each row is ``{"input": {...}}`` with optionally its own ``priority``, ``key``, ``at``,
        ``every_s``, ``max_attempts``, ``budget`` (the keyword arguments are the defaults). Every row is checked
        before any is stored: a bad one raises ``QueueError`` naming ``rows[i]`` and nothing is added."""
        defaults = {"priority": priority, "at": at, "every_s": every_s, "max_attempts": max_attempts, "budget": budget}
        entries = []
        for i, row in enumerate(rows):
            try:
                entries.append(self._new_entry({**defaults, **row}))
            except QueueError as exc:
                raise QueueError(f"rows[{i}].{exc}") from None
        return self._parallel(self._store_new, entries)

    def _new_entry(self, spec: Mapping[str, Any]) -> Entry:
        now = self.clock()
        value = spec.get("input")
        if not isinstance(value, Mapping):
            raise QueueError("input: must be a JSON object")
        key = spec.get("key")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= _KEY_LIMIT or not key.isprintable()):
            raise QueueError(f"key: must be 1-{_KEY_LIMIT} printable characters")
        max_attempts = spec.get("max_attempts", 3)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise QueueError(f"max_attempts: must be an integer >= 1, got {max_attempts!r}")
        every_s = _seconds(spec.get("every_s"), "every_s")
        at = _seconds(spec.get("at"), "at")
        budget = spec.get("budget")
        if budget is not None and not isinstance(budget, Mapping):
            raise QueueError("budget: must be an object")
        return Entry(
            id=self._next_id(now),
            key=key,
            input=dict(value),
            priority=check_priority(spec.get("priority", 3)),
            status="QUEUED",
            attempts=0,
            max_attempts=max_attempts,
            created_at=now,
            not_before=at if at is not None else now,
            every_s=every_s if every_s else None,
            request_id=None,
            worker=None,
            error=None,
            budget=dict(budget) if budget is not None else None,
            paused=False,
            updated_at=now,
        )

    def _store_new(self, entry: Entry) -> Entry:
        marker = keys.queue_open_key(self.pipeline, entry.priority, entry.id)
        if entry.key is None:  # marker first: a crash in between leaves a marker without an entry (skipped)
            self.store.put(marker, b"")
            put_json(self.store, self._entry_key(entry.id), entry.to_json(), if_none_match=True)
            return entry
        # A keyed entry is claimable only once it holds its key: a loser of the key race is deleted unseen.
        put_json(self.store, self._entry_key(entry.id), entry.to_json(), if_none_match=True)
        holder = self._take_key(entry)
        if holder is not None:
            self.store.delete(self._entry_key(entry.id))
            if holder.status == "QUEUED":  # heals a holder whose add died before its marker was written
                self.store.put(keys.queue_open_key(self.pipeline, holder.priority, holder.id), b"")
            return _as_duplicate(holder)
        self.store.put(marker, b"")
        return entry

    def _take_key(self, entry: Entry) -> Entry | None:
        """Point ``entry.key`` at ``entry``, unless an open entry holds it (returned then)."""
        assert entry.key is not None
        pointer = keys.queue_key_key(self.pipeline, entry.key)
        for _ in range(_CAS_TRIES):
            try:
                current, etag = get_json(self.store, pointer)
            except NotFoundError:
                current, etag = None, None
            if current is not None:
                holder = self._get_or_none(str(current.get("id", "")))
                if holder is not None and holder.status in OPEN:
                    return holder
            try:
                put_json(
                    self.store,
                    pointer,
                    {"key": entry.key, "id": entry.id},
                    if_match=etag,
                    if_none_match=etag is None,
                )
                return None
            except (ConflictError, NotFoundError):
                continue  # someone else took or moved it: look again
        raise ConflictError(f"queue key {entry.key!r}: too much contention, try again")

    # ---- reading ------------------------------------------------------------------------------------------

    def get(self, entry_id: str) -> Entry:
        entry = self._get_or_none(entry_id)
        if entry is None:
            raise QueueError(f"no queue entry {entry_id}")
        return entry

    def list(self, status: Iterable[str] | None = None) -> builtins.list[Entry]:
        """Entries (all, or those with one of ``status``), in claim order: priority, then oldest."""
        wanted = None if status is None else {s.upper() for s in status}
        if wanted is not None and wanted - set(STATUSES):
            raise QueueError(f"status: unknown {sorted(wanted - set(STATUSES))}; one of {', '.join(STATUSES)}")
        if wanted is not None and wanted <= {"CLAIMED", "RUNNING"}:
            ids = [_id_of(k) for k in self.store.list(keys.queue_running_prefix(self.pipeline))]
        elif wanted is not None and wanted <= OPEN:
            ids = [_id_of(k) for k in self.store.list(keys.queue_open_prefix(self.pipeline))]
        elif wanted == {"FAILED"}:
            ids = [_id_of(k) for k in self.store.list(keys.queue_failed_prefix(self.pipeline))]
        else:
            ids = [_id_of(k).removesuffix(".json") for k in self.store.list(keys.queue_entries_prefix(self.pipeline))]
        entries = [e for e in self._read_many(dict.fromkeys(ids)) if wanted is None or e.status in wanted]
        return sorted(entries, key=lambda e: (e.priority, e.created_at, e.id))

    def running(self) -> builtins.list[Entry]:
        """The CLAIMED and RUNNING entries: what a restarted worker picks up, and what counts against
        ``max_requests_in_flight``."""
        return self.list(["CLAIMED", "RUNNING"])

    def stats(self, now: float | None = None) -> QueueStats:
        now = self.clock() if now is None else now
        open_entries = self.list(OPEN)
        completions = []
        for day in {_day(now), _day(now - 86400.0)}:
            for key in self.store.list(keys.queue_done_prefix(self.pipeline, day)):
                ms = key.rsplit("/", 1)[-1].split("-", 1)[0]
                if ms.isdigit():
                    completions.append(int(ms) / 1000.0)
        failed = len(self.list(["FAILED"]))  # read, not counted: a failure's marker may outlive a retry
        return queue_stats(open_entries, completions, now, failed=failed)

    # ---- working through it -------------------------------------------------------------------------------

    def claim(self, worker: str, *, limit: int = 1) -> builtins.list[Entry]:
        """Take up to ``limit`` due entries for ``worker``: priority 1 first, then oldest; paused and
        cooling-down ones are skipped, and so are entries another worker claimed first (compare-and-swap)."""
        claimed: builtins.list[Entry] = []
        if limit < 1:
            return claimed
        for marker in self.store.list(keys.queue_open_prefix(self.pipeline)):
            entry_id = _id_of(marker)
            try:
                value, etag = get_json(self.store, self._entry_key(entry_id))
                entry = Entry.from_json(value)
            except NotFoundError:
                continue  # removed meanwhile
            now = self.clock()
            if not claimable(entry, now):
                continue
            taken = on_claim(entry, worker, now, self.lease_s)
            try:
                put_json(self.store, self._entry_key(entry_id), taken.to_json(), if_match=etag)
            except (ConflictError, NotFoundError):
                continue  # another worker got it (or it was removed): next
            # After the claim: a crash before this leaves a claim that its lease gives back anyway.
            self.store.put(keys.queue_running_key(self.pipeline, entry_id), b"")
            claimed.append(taken)
            if len(claimed) >= limit:
                break
        return claimed

    def renew(self, entry_id: str) -> Entry:
        """Extend a claim's lease (a worker that needs longer than ``lease_s`` between claim and start)."""
        return self._update(entry_id, lambda e, now: e.evolve(now, lease_until=now + self.lease_s))

    def started(self, entry_id: str, request_id: str) -> Entry:
        """CLAIMED -> RUNNING: ``request_id`` is the request made for it."""
        validate_request_id(request_id)
        return self._update(entry_id, lambda e, now: on_started(e, request_id, now))

    def finished(self, entry_id: str, status: str, *, error: str | None = None) -> Entry:
        """The entry's request ended with ``status`` (COMPLETED, FAILED, CANCELLED): DONE, or QUEUED again
        (``every_s``; a failure's cooldown), or FAILED once ``max_attempts`` runs failed."""
        failed_marker = keys.queue_failed_key(self.pipeline, entry_id)
        if status != "COMPLETED":  # before: it may end FAILED (taken back below if it does not)
            self.store.put(failed_marker, b"")
        entry = self._update(entry_id, lambda e, now: on_finished(e, status, now, error))
        if status == "COMPLETED" and entry.last_success_at is not None:
            ms = int(entry.last_success_at * 1000)
            self.store.put(keys.queue_done_key(self.pipeline, _day(entry.last_success_at), ms, entry.id), b"")
        if status != "COMPLETED" and entry.status != "FAILED":
            self.store.delete(failed_marker)
        if entry.status in CLOSED:
            self.store.delete(keys.queue_open_key(self.pipeline, entry.priority, entry.id))
        self.store.delete(keys.queue_running_key(self.pipeline, entry.id))
        return entry

    def release(self, entry_id: str) -> Entry:
        """A claimed or running entry back to QUEUED without counting an attempt (a worker shutting down).
        A RUNNING one keeps its ``request_id``: the next claimer resumes that request."""
        released = self._update(entry_id, on_release)
        self.store.delete(keys.queue_running_key(self.pipeline, entry_id))
        return released

    # ---- by hand (fave queue retry / pause / unpause / remove / clear) ------------------------------------

    def retry(self, key_or_id: str) -> Entry:
        """Due now, attempts from zero (a FAILED entry, or one cooling down or scheduled later)."""
        entry = self.resolve(key_or_id)
        self.store.put(keys.queue_open_key(self.pipeline, entry.priority, entry.id), b"")  # marker first
        retried = self._update(entry.id, on_retry)
        self.store.delete(keys.queue_failed_key(self.pipeline, entry.id))
        return retried

    def pause(self, key_or_id: str) -> Entry:
        entry = self.resolve(key_or_id)
        return self._update(entry.id, lambda e, now: e.evolve(now, paused=True))

    def unpause(self, key_or_id: str) -> Entry:
        entry = self.resolve(key_or_id)
        return self._update(entry.id, lambda e, now: e.evolve(now, paused=False))

    def remove(self, key_or_id: str) -> Entry:
        """Delete an entry that is not running (a CLAIMED or RUNNING one: ``ConflictError``)."""
        entry = self.resolve(key_or_id)
        if entry.status in ("CLAIMED", "RUNNING"):
            raise ConflictError(f"queue entry {entry.id} is {entry.status}: cancel its request first")
        self._delete(entry)
        return entry

    def clear(self, status: str = "failed") -> int:
        """Delete every entry with ``status`` (failed, done or queued); returns how many."""
        wanted = status.upper()
        if wanted not in ("FAILED", "DONE", "QUEUED"):
            raise QueueError(f"status: clear takes failed, done or queued, not {status!r}")
        entries = self.list([wanted])
        self._parallel(self._delete, entries)
        return len(entries)

    def requeue_stale(self, stale_after_s: float) -> builtins.list[Entry]:
        """Keyed entries that are DONE and whose last success is older than ``stale_after_s``: QUEUED again
        (pipeline.yaml ``operations.stale_after``). Returns them."""
        now = self.clock()
        requeued = []
        for pointer in self.store.list(keys.queue_keys_prefix(self.pipeline)):
            try:
                value, _ = get_json(self.store, pointer)
            except NotFoundError:
                continue
            entry = self._get_or_none(str(value.get("id", "")))
            if entry is None or entry.status != "DONE" or entry.last_success_at is None:
                continue
            if now - entry.last_success_at > stale_after_s:
                requeued.append(self.retry(entry.id))
        return requeued

    def resolve(self, key_or_id: str) -> Entry:
        """The entry with this id, or the one that holds this key now."""
        entry = self._get_or_none(key_or_id)
        if entry is not None:
            return entry
        try:
            value, _ = get_json(self.store, keys.queue_key_key(self.pipeline, key_or_id))
        except NotFoundError:
            raise QueueError(f"no queue entry with key or id {key_or_id!r}") from None
        entry = self._get_or_none(str(value.get("id", "")))
        if entry is None:
            raise QueueError(f"no queue entry with key or id {key_or_id!r}")
        return entry

    def _next_id(self, now: float) -> str:
        """A new entry id, after every id this queue object made: ids are ULIDs (creation time, then random
        bits), and the rows of one batch, made in the same millisecond, must still sort in their order."""
        with self._id_lock:
            made = new_request_id(now)
            if made <= self._last_id:
                made = _ulid_after(self._last_id)
            self._last_id = made
            return made

    # ---- storage ------------------------------------------------------------------------------------------

    def _entry_key(self, entry_id: str) -> str:
        return keys.queue_entry_key(self.pipeline, entry_id)

    def _get_or_none(self, entry_id: str) -> Entry | None:
        try:
            validate_request_id(entry_id)
        except ValidationError:
            return None
        try:
            value, _ = get_json(self.store, self._entry_key(entry_id))
        except NotFoundError:
            return None
        return Entry.from_json(value)

    def _read_many(self, ids: Iterable[str]) -> builtins.list[Entry]:
        found = self._parallel(self._get_or_none, list(ids))
        return [e for e in found if e is not None]

    def _update(self, entry_id: str, change: Callable[[Entry, float], Entry]) -> Entry:
        """Compare-and-swap ``change`` onto the entry until it sticks (``QueueError`` if it is gone)."""
        key = self._entry_key(entry_id)
        for _ in range(_CAS_TRIES):
            try:
                value, etag = get_json(self.store, key)
            except NotFoundError:
                raise QueueError(f"no queue entry {entry_id}") from None
            entry = Entry.from_json(value)
            new = change(entry, self.clock())
            if new is entry:
                return entry
            try:
                put_json(self.store, key, new.to_json(), if_match=etag)
            except (ConflictError, NotFoundError):
                continue
            return new
        raise ConflictError(f"queue entry {entry_id}: too much contention, try again")

    def _delete(self, entry: Entry) -> None:
        self.store.delete(keys.queue_open_key(self.pipeline, entry.priority, entry.id))
        self.store.delete(keys.queue_running_key(self.pipeline, entry.id))
        self.store.delete(keys.queue_failed_key(self.pipeline, entry.id))
        if entry.key is not None:
            pointer = keys.queue_key_key(self.pipeline, entry.key)
            try:
                value, _ = get_json(self.store, pointer)
                if value.get("id") == entry.id:
                    self.store.delete(pointer)
            except NotFoundError:
                pass
        self.store.delete(self._entry_key(entry.id))

    @staticmethod
    def _parallel(work: Callable[[_T], _R], items: Sequence[_T]) -> builtins.list[_R]:
        if len(items) <= 2:
            return [work(item) for item in items]
        with ThreadPoolExecutor(min(_PARALLEL, len(items))) as pool:
            return list(pool.map(work, items))


def outcome(state: RequestState) -> tuple[str, str | None]:
    """What to tell ``finished`` about an ended request: its status and error (a budget stop as
    ``budget_exceeded: <which>``, which fails the entry at once; another failure as its one-line description)."""
    failure = state.failure
    if failure is None:
        return state.status.value, (state.cancel_reason if state.status.value == "CANCELLED" else None)
    if failure.error_type == "budget_exceeded":
        return state.status.value, f"{failure.error_type}: {failure.message}"
    return state.status.value, failure.describe().splitlines()[0] if failure.describe() else failure.error_type


def _as_duplicate(entry: Entry) -> Entry:
    return dataclasses.replace(entry, duplicate=True)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid_after(ulid: str) -> str:
    """The ULID right after ``ulid`` (its 130-bit value plus one)."""
    value = 0
    for char in ulid:
        value = value * 32 + _CROCKFORD.index(char)
    value += 1
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _seconds(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise QueueError(f"{name}: must be a number of seconds >= 0, got {value!r}")
    return float(value)
