"""The admission queue over HTTP (``POST /queue``, ``GET /queue``; the routes are in ``fave.app.api``) and its
drain on AWS (``drain``, called by ``fave.app.runner`` on the schedule tick and when a request ends).

``POST /queue`` body ``{"entries": [{"input": {...}, "priority"?, "key"?, "at"?, "every_s"?, "max_attempts"?,
"budget"?}], "priority"?}``: every entry's input is made and checked as ``POST /requests`` makes its body
(``fave.app.models.request_input``: defaults, profile, the upload field's bucket and prefixes) before anything
is stored; the first bad one is a 400 naming it (``entries[3].input.video_uri``) and nothing is added. 202
``{"entries": [{id, key, status, duplicate}], "added": n}``.

The drain admits from the queue while fewer than the pipeline's ``operations.max_requests_in_flight`` entries
are running: each claimed entry becomes a request made by the same path as ``POST /requests`` (recorded in
INIT, its first step kicked asynchronously), and an entry whose request ended is reported ``finished``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fave_shared.errors import NotFoundError, ValidationError
from pydantic import BaseModel, ConfigDict, Field

from fave.app.context import AppContext
from fave.app.models import request_input
from fave.app.sources import check_source, store_bucket
from fave.ids import new_request_id
from fave.inputs import InputError, upload_field
from fave.pipeline import parse_budget
from fave.queue import AdmissionQueue, Entry, QueueError, outcome

if TYPE_CHECKING:
    from fave.app.runner import Runner

__all__ = ["QueueBatch", "QueueEntryIn", "add_entries", "drain", "entry_document", "queue_listing"]

#: Entries one POST /queue takes (its body is at most 64 KB anyway).
MAX_ENTRIES = 500
#: Entries GET /queue lists at most, in claim order.
LIST_LIMIT = 1000


class QueueEntryIn(BaseModel):
    """One entry of ``POST /queue``."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(description="the pipeline's input, as the body of POST /requests")
    priority: int | None = Field(None, ge=1, le=5, description="1 (highest) to 5; default: the batch's")
    key: str | None = Field(None, min_length=1, max_length=256, description="an open entry's key is not added twice")
    at: float | None = Field(None, ge=0, description="not before this time (seconds since the epoch)")
    every_s: float | None = Field(None, gt=0, description="queued again this long after each success")
    max_attempts: int = Field(3, ge=1, le=100, description="failed runs before the entry is FAILED")
    budget: dict[str, Any] | None = Field(
        None, description="this entry's requests' budget: {max_wall?, max_invocations?, max_cost_usd?}"
    )


class QueueBatch(BaseModel):
    """``POST /queue``: entries to queue, all or none."""

    model_config = ConfigDict(extra="forbid")

    entries: list[QueueEntryIn] = Field(min_length=1, max_length=MAX_ENTRIES)
    priority: int = Field(3, ge=1, le=5, description="the priority of entries that set none")


def entry_document(entry: Entry) -> dict[str, Any]:
    return {**entry.to_json(), "duplicate": entry.duplicate}


def _queue(context: AppContext) -> AdmissionQueue:
    return AdmissionQueue(context.store, context.pipeline.name, clock=context.clock.now)


def add_entries(context: AppContext, batch: QueueBatch) -> list[Entry]:
    """Check every entry's input (``InputError`` naming ``entries[i].input.FIELD``), then queue them all."""
    pipeline = context.pipeline
    settings = context.settings
    field = upload_field(pipeline)
    rows = []
    for i, item in enumerate(batch.entries):
        where = f"entries[{i}].input"
        try:
            value = request_input(
                item.input, pipeline, default_query=settings.default_query, default_profile=settings.default_profile
            )
            if field is not None and field in value:
                source = value[field]
                if not isinstance(source, str):
                    raise InputError(field, "expected an s3:// URI")
                try:
                    check_source(source, bucket=store_bucket(context), prefixes=settings.source_prefixes, field=field)
                except ValidationError as exc:
                    raise InputError(field, str(exc).removeprefix(f"{field}: ")) from None
        except InputError as exc:
            raise InputError(f"{where}.{exc.field}", exc.reason) from None
        if item.budget is not None:
            try:
                parse_budget(item.budget, f"entries[{i}].budget")
            except ValidationError as exc:  # "entries[i].budget.FIELD: reason"
                named, _, reason = str(exc).partition(": ")
                raise InputError(named, reason) from None
        rows.append({**item.model_dump(exclude={"input"}), "input": value, "priority": item.priority or batch.priority})
    try:
        return _queue(context).add_batch(rows)
    except QueueError as exc:
        raise ValidationError(f"entries: {exc}") from None


def queue_listing(context: AppContext, status: list[str] | None, limit: int) -> dict[str, Any]:
    queue = _queue(context)
    try:
        entries = queue.list(status)
    except QueueError as exc:
        raise ValidationError(str(exc)) from None
    return {
        "pipeline": context.pipeline.name,
        "entries": [entry_document(e) for e in entries[:limit]],
        "truncated": len(entries) > limit,
        "stats": queue.stats().to_json(),
    }


def drain(runner: Runner) -> dict[str, int]:
    """Report the entries whose request ended, then admit entries up to ``max_requests_in_flight``; returns
    what it did (``finished``, ``admitted``). A failure is logged by the caller and retried on the next tick.

    An admitted entry is marked started with its request's id *before* the request is made (``Runner.create``
    is idempotent on the id): an invocation that dies in between leaves a RUNNING entry naming a request that
    does not exist, which a later drain makes (after ``RECREATE_AFTER_S``, so as not to race its maker), never
    a second request for the entry."""
    context = runner.context
    queue = _queue(context)
    now = context.clock.now()
    finished = admitted = in_flight = 0
    for entry in queue.running():
        if entry.request_id is None:
            in_flight += 1  # claimed, not started: its lease brings it back if the claimer died
            continue
        try:
            state = runner.load(entry.request_id)
        except NotFoundError:
            in_flight += 1
            if entry.status == "RUNNING" and now - (entry.started_at or now) > RECREATE_AFTER_S:
                _create(runner, queue, entry, entry.request_id)
            continue
        if entry.status == "CLAIMED":  # released while running, claimed again: resume that request
            queue.started(entry.id, entry.request_id)
        if state.status.terminal:
            status, error = outcome(state)
            queue.finished(entry.id, status, error=error)
            finished += 1
        else:
            in_flight += 1
    room = context.pipeline.operations.max_requests_in_flight - in_flight
    if room <= 0:
        return {"finished": finished, "admitted": 0}
    for entry in queue.claim(f"lambda:{context.pipeline.name}", limit=room):
        request_id = entry.request_id or new_request_id(context.clock.now())
        queue.started(entry.id, request_id)
        admitted += _create(runner, queue, entry, request_id)
    return {"finished": finished, "admitted": admitted}


#: A RUNNING entry whose request does not exist this long after it started lost its maker: a drain makes it.
RECREATE_AFTER_S = 120.0


def _create(runner: Runner, queue: AdmissionQueue, entry: Entry, request_id: str) -> int:
    """Make (or find) the entry's request and kick its first step; 1 if it was made. An input or budget the
    pipeline refuses now (it changed since the entry was queued) fails the entry: no retry would do better."""
    try:
        budget = parse_budget(entry.budget, f"queue entry {entry.id}: budget") if entry.budget else None
        runner.create(dict(entry.input), request_id, budget=budget)
    except ValidationError as exc:
        queue.finished(entry.id, "CANCELLED", error=f"refused: {exc}".splitlines()[0])
        return 0
    return 1
