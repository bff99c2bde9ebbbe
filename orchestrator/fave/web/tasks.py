"""A stage's tasks for the grid and the task panel: pages, any-status filters, one task in full.

Pages are ``fave.status.stage_page``'s (the contract ``fave status --stage`` and the HTTP API share), filtered
by any task status: a task shard at a time, within a budget of ``SCAN_SHARDS`` shards beyond the rows, so no
page ever reads a whole 10,000-item stage. ``task_detail`` adds what the grid
does not show: the task's output, its item of the fan-out list and an input parked in the store.
"""

from __future__ import annotations

import json
from typing import Any

from fave_shared import refs
from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import ObjectStore

from fave.keys import request_prefix, task_input_key
from fave.persistence import SHARD_SIZE, list_block, read_list_block
from fave.statefile import StateDoc, TaskDoc
from fave.status import read_shard, read_state, retrying, stage_of, stage_page

__all__ = ["TASK_STATUSES", "filtered_page", "task_detail"]

TASK_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED")
SHOWN_BYTES = 256 * 1024
"""A parked input or output larger than this is not inlined in the task panel: its key is shown instead."""


def filtered_page(
    store: ObjectStore, request_id: str, stage: str, *, cursor: int, limit: int, status: str | None
) -> dict[str, Any]:
    """A page of the grid: ``stage_page``'s document, its rows only those whose task has ``status``."""
    return stage_page(store, request_id, stage, cursor=str(cursor), limit=limit, status=status)


def _small_json(store: ObjectStore, key: str) -> Any:
    """A JSON object of the store for the panel: its value, or a note when it is too large or unreadable."""
    try:
        data = store.get(key).data
    except NotFoundError:
        return None
    if len(data) > SHOWN_BYTES:
        return {"$ref": key, "$note": f"{len(data)} bytes: too large to show here"}
    try:
        return json.loads(data)
    except ValueError:
        return {"$ref": key, "$note": "not JSON"}


def _shown(store: ObjectStore, request_id: str, value: Any) -> Any:
    """An output as the panel shows it: a marker to an object of this request is replaced by its value."""
    if refs.is_ref(value) and value["$ref"].startswith(request_prefix(request_id)):
        found = _small_json(store, value["$ref"])
        return value if found is None else found
    return value


def _fanout_item(store: ObjectStore, doc: StateDoc, for_each: str | None, item: int | None) -> Any:
    if not for_each or item is None or for_each not in doc.fanout:
        return None
    size = list_block(doc, for_each)
    try:
        block = read_list_block(store, doc, for_each, item // size)
    except (NotFoundError, ValueError):
        return None
    offset = item % size
    return block[offset] if offset < len(block) else None


def task_detail(store: ObjectStore, request_id: str, stage: str, item: int | None) -> dict[str, Any]:
    """One task in full: its grid row with the traceback and failed attempts, its output, and its input as far as
    the store keeps it (the element of the fan-out list, the stages it needs, a parked invocation input)."""
    page = stage_page(store, request_id, stage, item=0 if item is None else item)
    fanned_out = bool(page["fanned_out"])
    if fanned_out and item is None:
        raise ValidationError(f"item: stage {stage!r} is fanned out: name an item (0 to {(page['total'] or 1) - 1})")
    if not fanned_out and item not in (None, 0):
        raise NotFoundError(f"request {request_id}, stage {stage!r}: no item {item} (it is a single task)")
    row = page["items"][0]

    def read() -> tuple[StateDoc, TaskDoc]:
        doc = read_state(store, request_id)
        sdoc = stage_of(doc, request_id, stage)
        if not sdoc.fanned_out:
            return doc, sdoc.task or TaskDoc()
        assert item is not None
        return doc, read_shard(store, doc, stage, sdoc, item // SHARD_SIZE).get(item) or TaskDoc()

    doc, task = retrying(read)
    for_each = doc.pipeline.shape.get(stage, {}).get("for_each")
    key = item if fanned_out else None
    parked = _small_json(store, task_input_key(request_id, stage, key, task.attempt)) if task.attempt else None
    return {
        **row,
        "request_id": request_id,
        "stage": stage,
        "fanned_out": fanned_out,
        "input": {
            "item": _fanout_item(store, doc, for_each, key),
            "for_each": for_each,
            "needs": doc.pipeline.shape.get(stage, {}).get("needs", []),
            "parked": parked,
        },
        "output": _shown(store, request_id, task.output),
    }
