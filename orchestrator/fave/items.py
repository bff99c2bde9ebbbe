"""The per-item view across requests (``fave items PIPELINE``): for each fanned-out stage and item key, the latest
status of that item among the requests of one pipeline.

"Latest" is the newest request (``created_at``) in which the key appears for that stage: a key that a newer
list dropped keeps the status of the last request that had it. A row names the request it comes from, when
its task finished, whether its output came from the result cache, and the first line of its error.

Reading: every request's state.json (``status.request_states``), then, for the requests of the pipeline, each
fanned-out stage's task shards and the fan-out list's blocks (``status.read_shard``, ``status.ItemKeys``): one
pass over what the store holds for them, nothing written. Within one request, equal elements share a digest
key (``core.dag.content_key``): their row is the first of them, or the first that FAILED (a failure is never
hidden behind an equal element's success). An item whose key cannot be read (its list block is missing) is
left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import ObjectStore

from fave.persistence import SHARD_SIZE, CorruptStateError
from fave.statefile import ShardDoc, StateDoc, TaskDoc
from fave.status import ItemKeys, read_shard, request_states, retrying
from fave.yamlsafe import YamlInputError, load_file

__all__ = ["TASK_STATUSES", "ItemsQuery", "item_rows", "pipeline_name"]

TASK_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED")


def pipeline_name(text: str) -> str:
    """PIPELINE as given: a pipeline file (its ``name:``, default ``pipeline``) when ``text`` is a path to a
    file, else ``text`` itself, taken for a pipeline's name. ``ValidationError`` for a file that is not a
    pipeline document (only its name is read: a file broken elsewhere still names its history)."""
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        return text
    try:
        raw = load_file(path)
    except FileNotFoundError:
        raise ValidationError(f"{text}: no such pipeline file") from None
    except YamlInputError as exc:
        raise ValidationError(str(exc)) from None
    name = raw.get("name", "pipeline") if isinstance(raw, dict) else None
    if not isinstance(name, str):
        raise ValidationError(f"{text}: not a pipeline file (no 'name' that is a string)")
    return name


class ItemsQuery:
    """One ``fave items`` reading: the rows (``rows``) and what the store knows of the pipeline (``known``: a
    request of it exists; ``stages``: its fanned-out stages in any request)."""

    def __init__(self, store: ObjectStore, pipeline: str, *, stage: str | None = None) -> None:
        self.store = store
        self.pipeline = pipeline
        self.stage = stage
        self.known = False
        self.stages: dict[str, None] = {}
        self.pipelines: set[str] = set()
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}

    def run(self) -> list[dict[str, Any]]:
        docs = []
        for _, doc in request_states(self.store):
            if isinstance(doc, CorruptStateError):
                continue  # fave list shows it as UNREADABLE; here it holds no item we can name
            self.pipelines.add(doc.pipeline.name)
            if doc.pipeline.name == self.pipeline:
                docs.append(doc)
        self.known = bool(docs)
        # Ids sort by creation time already; created_at decides, the id breaks ties the same way.
        docs.sort(key=lambda d: (d.created_at, d.request_id), reverse=True)
        for doc in docs:
            self._read_request(doc)
        return list(self._rows.values())

    def _read_request(self, doc: StateDoc) -> None:
        fanned = [
            name for name, shape in doc.pipeline.shape.items() if isinstance(shape, dict) and shape.get("for_each")
        ]
        self.stages.update(dict.fromkeys(fanned))
        for stage in fanned:
            if self.stage is not None and stage != self.stage:
                continue
            # A running request's shard may be replaced while it is read: read its stage again, whole.
            found = retrying(partial(self._stage_items, doc, stage))
            mine: dict[str, dict[str, Any]] = {}
            for key, row in found:
                if (stage, key) in self._rows and key not in mine:
                    continue  # a newer request had it
                held = mine.get(key)
                if held is None or (row["status"] == "FAILED" and held["status"] != "FAILED"):
                    mine[key] = row
                    self._rows[(stage, key)] = row

    def _stage_items(self, doc: StateDoc, stage: str) -> list[tuple[str, dict[str, Any]]]:
        sdoc = doc.stages.get(stage)
        if sdoc is None or not sdoc.fanned_out or not sdoc.total:
            return []
        keys = ItemKeys(self.store, doc, stage)
        found = []
        objects: dict[str, Mapping[int, ShardDoc]] = {}
        for shard in range(-(-sdoc.total // SHARD_SIZE)):
            tasks = read_shard(self.store, doc, stage, sdoc, shard, objects=objects)
            for item in range(shard * SHARD_SIZE, min((shard + 1) * SHARD_SIZE, sdoc.total)):
                key = keys.key(item)
                if key is not None:
                    found.append((key, _row(doc, stage, item, key, tasks.get(item) or TaskDoc())))
        return found


def _row(doc: StateDoc, stage: str, item: int, key: str, task: TaskDoc) -> dict[str, Any]:
    error = None
    if task.status != "SUCCEEDED" and task.error is not None:
        lines = task.error.strip().splitlines()
        error = lines[0] if lines else ""
    return {
        "stage": stage,
        "key": key,
        "status": task.status,
        "request_id": doc.request_id,
        "item": item,
        "created_at": doc.created_at,
        "finished_at": task.finished_at,
        "cached": task.cached,
        "cached_from": task.cached_from,
        "error_type": task.error_type if task.status != "SUCCEEDED" else None,
        "error": error,
    }


def item_rows(
    store: ObjectStore, pipeline: str, *, stage: str | None = None, status: str | None = None, known: bool = False
) -> list[dict[str, Any]]:
    """The rows of ``fave items`` (see the module docs), by stage then in their lists' order (the newest
    request's first): each ``{"stage", "key", "status", "request_id", "item", "created_at", "finished_at",
    "cached", "cached_from", "error_type", "error"}``. ``stage``: that stage only; ``status``: only rows whose
    latest status it is (any case). ``pipeline`` is a name (``pipeline_name`` reads it from a file).
    ``NotFoundError`` when no request of the store is of that pipeline, unless ``known`` (the caller knows it:
    a pipeline not run yet has no rows), or when ``stage`` is not a fanned-out stage of its requests."""
    wanted = status.upper() if status else None
    if wanted is not None and wanted not in TASK_STATUSES:
        raise ValidationError(f"status: {status!r} is not a task status ({', '.join(TASK_STATUSES)})")
    query = ItemsQuery(store, pipeline, stage=stage)
    rows = query.run()
    if not query.known:
        if known:
            return []
        others = ", ".join(sorted(query.pipelines)) or "none"
        raise NotFoundError(f"no request of pipeline {pipeline!r} in {store.uri} (pipelines with requests: {others})")
    if stage is not None and stage not in query.stages:
        fanned = ", ".join(query.stages) or "none"
        raise NotFoundError(
            f"pipeline {pipeline!r} has no fanned-out stage {stage!r} (its fanned-out stages: {fanned})"
        )
    order = {name: n for n, name in enumerate(query.stages)}
    rows.sort(key=lambda r: order.get(r["stage"], len(order)))  # stable: each stage keeps its items' order
    return [r for r in rows if wanted is None or r["status"] == wanted]
