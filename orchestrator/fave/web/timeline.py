"""The request's timeline (Gantt): one bar per stage, and bars for its tasks, sampled for large stages.

A fanned-out stage's tasks live in task shards (``SHARD_SIZE`` items each). Drawing all of a 10,000-item stage
would read 79 shards and draw 10,000 bars nobody can tell apart, so the timeline reads at most
``SHARDS_PER_STAGE`` shards per stage, spread evenly over its items, and draws at most ``BARS_PER_STAGE`` of
their tasks (evenly spaced). The document says so: ``sampled``, ``shown`` and ``total`` per stage. The stage's
own bar (from state.json) always spans all of its tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fave_shared.store import ObjectStore

from fave.persistence import SHARD_SIZE
from fave.statefile import ShardDoc, StateDoc, TaskDoc
from fave.status import read_shard, read_state, retrying

__all__ = ["BARS_PER_STAGE", "SHARDS_PER_STAGE", "timeline"]

SHARDS_PER_STAGE = 3
BARS_PER_STAGE = 120


def _bar(item: int | None, task: TaskDoc) -> dict[str, Any]:
    start = task.first_dispatched_at if task.first_dispatched_at is not None else task.dispatched_at
    return {"item": item, "status": task.status, "start": start, "end": task.finished_at, "attempts": task.attempt}


def _spread(count: int, pick: int) -> list[int]:
    """``pick`` indexes of ``range(count)``, evenly spaced, first and last included."""
    if count <= pick:
        return list(range(count))
    return sorted({round(i * (count - 1) / (pick - 1)) for i in range(pick)}) if pick > 1 else [0]


def _stage_bars(store: ObjectStore, doc: StateDoc, stage: str) -> dict[str, Any]:
    sdoc = doc.stages[stage]
    entry: dict[str, Any] = {
        "stage": stage,
        "status": sdoc.status,
        "start": sdoc.started_at,
        "end": sdoc.finished_at,
        "fanned_out": sdoc.fanned_out,
        "total": sdoc.total if sdoc.fanned_out else 1,
    }
    if not sdoc.fanned_out:
        task = sdoc.task or TaskDoc()
        single = [_bar(None, task)] if task.status != "PENDING" or task.dispatched_at is not None else []
        return {**entry, "bars": single, "shown": len(single), "sampled": False}
    total = sdoc.total or 0
    shards = -(-total // SHARD_SIZE)
    bars: list[dict[str, Any]] = []
    chosen = _spread(shards, SHARDS_PER_STAGE)
    objects: dict[str, Mapping[int, ShardDoc]] = {}
    for shard in chosen:
        tasks = read_shard(store, doc, stage, sdoc, shard, objects=objects)
        for item in range(shard * SHARD_SIZE, min((shard + 1) * SHARD_SIZE, total)):
            found = tasks.get(item)
            if found is not None and found.dispatched_at is not None:
                bars.append(_bar(item, found))
    kept = [bars[i] for i in _spread(len(bars), BARS_PER_STAGE)]
    return {**entry, "bars": kept, "shown": len(kept), "sampled": len(chosen) < shards or len(kept) < len(bars)}


def timeline(store: ObjectStore, request_id: str) -> dict[str, Any]:
    """``{"request_id", "status", "start", "end", "stages": [{stage, status, start, end, total, bars, shown,
    sampled}]}``: times are epoch seconds, ``end`` None while running."""

    def read() -> dict[str, Any]:
        doc = read_state(store, request_id)
        return {
            "request_id": request_id,
            "status": doc.status,
            "start": doc.started_at if doc.started_at is not None else doc.created_at,
            "end": doc.finished_at,
            "stages": [_stage_bars(store, doc, stage) for stage in doc.stages],
        }

    return retrying(read)
