"""Read views of requests, shared by the ``fave`` command and the HTTP API (neither imports the other).

* ``status_document(store, id)``: the machine-readable status of one request (``fave status --json``,
  ``GET /requests/{id}``). Its field names are a contract: add fields freely, never rename these.
* ``list_rows(store, status=, limit=)``: one row per request, newest first (``fave list --json``); a request
  whose state cannot be read is a row with status ``UNREADABLE`` and its ``error``, not a failure of the list.
"""

from __future__ import annotations

from typing import Any

from fave_shared.errors import NotFoundError
from fave_shared.store import ObjectStore, get_json

from fave.core.model import RequestStatus
from fave.ids import validate_request_id
from fave.keys import final_key, state_key
from fave.persistence import CorruptStateError, list_request_ids, parse_state

__all__ = ["UNREADABLE", "list_rows", "status_document"]

UNREADABLE = "UNREADABLE"
"""The status ``list_rows`` gives a request whose state.json cannot be read."""


def status_document(store: ObjectStore, request_id: str) -> dict[str, Any]:
    """The status contract of one request; ``NotFoundError`` if there is none, ``CorruptStateError`` if its
    state cannot be read."""
    validate_request_id(request_id)
    try:
        doc = parse_state(request_id, store.get(state_key(request_id)).data)
    except NotFoundError:
        raise NotFoundError(f"no request {request_id} in {store.uri}") from None
    final = None
    if doc.status == RequestStatus.COMPLETED.value:
        try:
            final, _ = get_json(store, final_key(request_id))
        except NotFoundError:
            final = None
    return {
        "request_id": doc.request_id,
        "status": doc.status,
        "stages": {
            name: {
                "status": s.status,
                "total": s.total,
                "succeeded": s.succeeded,
                "failed": s.failed,
                "skipped": s.skipped,
                "running": s.running,
                "pending": s.pending,
                "duration_s": s.duration_s,
            }
            for name, s in doc.stages.items()
        },
        "final": final,
        "failure": doc.failure.reason if doc.failure else None,
        "cancel_reason": doc.cancel_reason,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
        "input": doc.input,
        "pipeline": doc.pipeline.path,
        "store": store.uri,
    }


def list_rows(store: ObjectStore, *, status: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Rows of ``fave list``, newest first: every request, or those with ``status`` (case-insensitive,
    ``UNREADABLE`` included), at most ``limit`` (0: all)."""
    wanted = status.upper() if status else None
    rows: list[dict[str, Any]] = []
    for request_id in list_request_ids(store):
        try:
            doc = parse_state(request_id, store.get(state_key(request_id)).data)
        except NotFoundError:
            continue
        except CorruptStateError as exc:  # one broken request must not hide the others
            row: dict[str, Any] = {"request_id": request_id, "status": UNREADABLE, "created_at": None}
            row["error"] = str(exc)
        else:
            row = {
                "request_id": request_id,
                "status": doc.status,
                "created_at": doc.created_at,
                "query": doc.input.get("query"),
                "video_uri": doc.input.get("video_uri"),
            }
        if wanted and row["status"] != wanted:
            continue
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows
