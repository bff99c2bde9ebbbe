"""The read-only JSON documents of ``/ui/api/`` (the pages draw themselves from these).

Each view reads as little as it can: the list reads each request's state.json (at most ``limit`` of them),
the summary reads one state.json and no task shard (it is polled every second while a request runs), a stage
page reads the shards its rows cover (``fave.status``), the timeline a sample of shards (``fave.web.timeline``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fave_shared.errors import NotFoundError
from fave_shared.store import ObjectStore

from fave.core.model import RequestStatus
from fave.keys import final_key
from fave.persistence import CorruptStateError
from fave.statefile import StateDoc
from fave.status import UNREADABLE, input_summary, read_state, request_states
from fave.web.artifacts import final_links
from fave.web.layout import layout

__all__ = ["LIST_LIMIT", "TERMINAL", "final_view", "request_list", "request_summary"]

LIST_LIMIT = 200
"""Requests the list shows unless asked otherwise (each is one read of its state.json)."""
TERMINAL = frozenset(s.value for s in RequestStatus if s.terminal)


def _duration(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def _row(doc: StateDoc) -> dict[str, Any]:
    return {
        "request_id": doc.request_id,
        "status": doc.status,
        "pipeline": doc.pipeline.name,
        "summary": input_summary(doc.input),
        "created_at": doc.created_at,
        "started_at": doc.started_at,
        "finished_at": doc.finished_at,
        "updated_at": doc.updated_at,
        "duration_s": _duration(doc.started_at or doc.created_at, doc.finished_at),
        "terminal": doc.status in TERMINAL,
    }


def request_list(store: ObjectStore, *, status: str | None, limit: int) -> dict[str, Any]:
    """``{"now", "requests": [row...], "truncated"}``, newest first; ``status`` keeps only those with it
    (``UNREADABLE``: those whose state.json cannot be read)."""
    rows: list[dict[str, Any]] = []
    truncated = False
    for request_id, doc in request_states(store):
        if isinstance(doc, CorruptStateError):
            row = {"request_id": request_id, "status": UNREADABLE, "error": str(doc), "terminal": True}
        else:
            row = _row(doc)
        if status and row["status"] != status:
            continue
        if len(rows) == limit:
            truncated = True
            break
        rows.append(row)
    return {"now": time.time(), "requests": rows, "truncated": truncated}


def request_summary(store: ObjectStore, request_id: str) -> dict[str, Any]:
    """What the request page polls: the request, its stages with their counts, and the DAG's layout. One read
    (state.json): no task shard, no final.json."""
    doc = read_state(store, request_id)
    shape = doc.pipeline.shape
    stages = []
    for name, s in doc.stages.items():
        stages.append(
            {
                "name": name,
                "status": s.status,
                "fanned_out": s.fanned_out,
                "total": s.total if s.fanned_out else 1,
                "succeeded": s.succeeded,
                "failed": s.failed,
                "skipped": s.skipped,
                "running": s.running,
                "pending": s.pending,
                "cancelled": s.cancelled,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
                "duration_s": s.duration_s,
                "needs": list(shape.get(name, {}).get("needs") or []),
                "for_each": shape.get(name, {}).get("for_each"),
                # A subset run (fave run --stage) leaves the stages outside its scope PENDING: not owed.
                "in_run": not doc.scope or name in doc.scope,
            }
        )
    failure = doc.failure.to_dict() if doc.failure else None
    return {
        **_row(doc),
        "now": time.time(),
        "input": doc.input,
        "profile": doc.profile,
        "pipeline_path": doc.pipeline.path,
        "failure": failure,
        "cancel_reason": doc.cancel_reason,
        "resumes": doc.resumes,
        "has_final": doc.status == RequestStatus.COMPLETED.value,
        "stages": stages,
        "selection": {"stages": doc.selection, "runs": doc.scope or list(doc.stages)} if doc.selection else None,
        "layout": layout(list(doc.stages), shape),
    }


def final_view(store: ObjectStore, request_id: str) -> dict[str, Any]:
    """``{"request_id", "kind", "final", "links"}``: ``kind`` is ``video`` for the video pipeline's result
    (scenes with keyframes, transcripts, times), else ``json``; ``links`` maps each link in it that names an
    object of the store to that object's key, for the artifact endpoint."""
    read_state(store, request_id)  # a 404 names the request before the final
    try:
        final = json.loads(store.get(final_key(request_id)).data)
    except NotFoundError:
        raise NotFoundError(f"request {request_id} has no final result (yet)") from None
    scenes = final.get("scenes") if isinstance(final, dict) else None
    kind = "video" if isinstance(scenes, list) and all(isinstance(s, dict) for s in scenes) else "json"
    return {"request_id": request_id, "kind": kind, "final": final, "links": final_links(store, final)}
