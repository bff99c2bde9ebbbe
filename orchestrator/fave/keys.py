"""The one object-key layout of a fave store. Every module that names an object asks here.

```
requests/{id}/metadata/state.json                 the request's state: the commit point (persistence)
requests/{id}/metadata/tasks/{stage}/{shard}.{token}.json   a committed version of a task shard
requests/{id}/metadata/final.json                 the final stage's output
requests/{id}/metadata/input.json                 a large request input, stored once
requests/{id}/metadata/lease.json                 who writes the request now (fave.lease)
requests/{id}/inbox/{time}-{random}.json          events waiting for the lease holder (Lambda)
requests/{id}/logs/{session}-{seq}.log            the request's log, a batch of lines per object (fave.cli.runlog)
requests/{id}/stages/{stage}/[{item:05d}/]...     a task's artifacts, inputs and outputs (the stage SDK's)
index/requests/{id}                               every request, for listing (ids sort by creation time)
index/active/{id}                                 the unfinished ones, for the schedule tick (Lambda)
idempotency/{sha256}.json                         an Idempotency-Key or upload, and the request it made
cache/{key[:2]}/{key}.json                        a result-cache entry: a stage task's output (fave.cache)
index/history/{day}/{id}.{resumes}.json           a summary of an ended request (fave.history)
index/history/packs/{day}.json                    a day's summaries in one object (fave.history)
alerts/sent/{sha256(event)[:32]}.json             an alert that was sent, once per event (fave.alerts)
queue/{pipeline}/entries/{id}.json                an admission-queue entry (fave.queue): the truth, swapped by CAS
queue/{pipeline}/open/{priority}/{id}             the entries not ended (QUEUED/CLAIMED/RUNNING), in claim order
queue/{pipeline}/running/{id}                     the CLAIMED and RUNNING ones (running(): in flight, restarts)
queue/{pipeline}/failed/{id}                      the FAILED ones (list --status failed, clear)
queue/{pipeline}/keys/{sha256}.json               a key's current entry (dedupe: one open entry per key)
queue/{pipeline}/done/{day}/{ms}-{id}             a completed run, for the drain rate (fave queue stats)
```

Request ids are validated (``fave.ids``) before they become part of a key, so no key can leave its request.
"""

from __future__ import annotations

import hashlib
import re

from fave.ids import validate_request_id

__all__ = [
    "ACTIVE_PREFIX",
    "ALERTS_SENT_PREFIX",
    "CACHE_PREFIX",
    "HISTORY_PACKS_PREFIX",
    "HISTORY_PREFIX",
    "IDEMPOTENCY_PREFIX",
    "INDEX_PREFIX",
    "QUEUE_PREFIX",
    "active_key",
    "alert_sent_key",
    "artifact_prefix",
    "cache_key",
    "final_key",
    "history_day_prefix",
    "history_pack_key",
    "history_summary_key",
    "idempotency_key",
    "inbox_prefix",
    "index_key",
    "input_key",
    "items_key",
    "lease_key",
    "log_key",
    "logs_prefix",
    "parse_shard_key",
    "queue_done_key",
    "queue_done_prefix",
    "queue_entries_prefix",
    "queue_entry_key",
    "queue_failed_key",
    "queue_failed_prefix",
    "queue_key_key",
    "queue_keys_prefix",
    "queue_open_key",
    "queue_open_prefix",
    "queue_prefix",
    "queue_running_key",
    "queue_running_prefix",
    "request_prefix",
    "shard_key",
    "shard_object_key",
    "state_key",
    "task_input_key",
    "task_output_key",
    "tasks_prefix",
]

INDEX_PREFIX = "index/requests/"
ACTIVE_PREFIX = "index/active/"
IDEMPOTENCY_PREFIX = "idempotency/"
CACHE_PREFIX = "cache/"
_HEX = frozenset("0123456789abcdef")


def cache_key(key: str) -> str:
    """The object of a result-cache entry: ``key`` is a sha256 hex digest (``fave.cache.cache_key``)."""
    if len(key) != 64 or not set(key) <= _HEX:
        raise ValueError(f"not a cache key: {key[:80]!r}")
    return f"{CACHE_PREFIX}{key[:2]}/{key}.json"


def request_prefix(request_id: str) -> str:
    return f"requests/{validate_request_id(request_id)}/"


def state_key(request_id: str) -> str:
    return request_prefix(request_id) + "metadata/state.json"


def final_key(request_id: str) -> str:
    return request_prefix(request_id) + "metadata/final.json"


def input_key(request_id: str) -> str:
    """A large request input, stored once (tasks reference it instead of each carrying a copy)."""
    return request_prefix(request_id) + "metadata/input.json"


def lease_key(request_id: str) -> str:
    return request_prefix(request_id) + "metadata/lease.json"


def tasks_prefix(request_id: str) -> str:
    return request_prefix(request_id) + "metadata/tasks/"


def shard_key(request_id: str, stage: str, shard: int, token: str) -> str:
    """The object holding one version of a task shard (``token`` from state.json's ``shard_tokens``)."""
    suffix = f".{token}" if token else ""  # "": the fixed key of state files written before tokens
    return f"{tasks_prefix(request_id)}{stage}/{shard:05d}{suffix}.json"


def shard_object_key(request_id: str, stage: str, shard: int, entry: str) -> str:
    """The object holding the committed version of task shard ``shard``, from its state.json entry
    (``StageDoc.shard_tokens``): ``TOKEN``, its own object (``shard_key``), or ``TOKEN@HOME``, a *segment*: the
    object of shard HOME written by the same commit, which holds this shard too (``persistence.SEGMENT_SHARDS``)."""
    token, _, home = entry.partition("@")
    return shard_key(request_id, stage, int(home) if home else shard, token)


def parse_shard_key(key: str) -> tuple[str, int, str] | None:
    """``(stage, shard, token)`` of a ``shard_key``, or None if ``key`` is not one."""
    stage_and_name = key.rsplit("/", 2)[-2:]
    if len(stage_and_name) != 2:
        return None
    stage, name = stage_and_name
    parts = name.split(".")
    if len(parts) not in (2, 3) or parts[-1] != "json" or not parts[0].isdigit():
        return None
    return stage, int(parts[0]), parts[1] if len(parts) == 3 else ""


def inbox_prefix(request_id: str) -> str:
    return request_prefix(request_id) + "inbox/"


def logs_prefix(request_id: str) -> str:
    return request_prefix(request_id) + "logs/"


def log_key(request_id: str, session: str, seq: int) -> str:
    """One batch of a request's log lines, written once by the process driving it (``fave.cli.runlog``).

    ``session`` sorts by the time the driver started (a ULID) and ``seq`` counts its batches, so listing the
    prefix gives the whole log in order."""
    return f"{logs_prefix(request_id)}{session}-{seq:06d}.log"


def artifact_prefix(request_id: str, stage: str, item: int | None) -> str:
    """Where a task's artifacts live: the stage SDK's own ``fave_shared.stage.artifact_prefix``. Imported on
    first use: the SDK loads pydantic models that most commands (``fave run``) never need."""
    from fave_shared.stage import artifact_prefix as sdk_artifact_prefix

    return sdk_artifact_prefix(request_id, stage, item)


def task_input_key(request_id: str, stage: str, item: int | None, attempt: int) -> str:
    """Where a task's invocation payload is parked when it is too large to send inline."""
    return f"{artifact_prefix(validate_request_id(request_id), stage, item)}input-{attempt}.json"


def task_output_key(request_id: str, stage: str, item: int | None, attempt: int) -> str:
    """Where a task's large output is parked (by the SDK, or by the orchestrator for a plain handler)."""
    return f"{artifact_prefix(validate_request_id(request_id), stage, item)}output-{attempt}.json"


def index_key(request_id: str) -> str:
    return INDEX_PREFIX + validate_request_id(request_id)


def active_key(request_id: str) -> str:
    """The marker of an unfinished request. Not validated: a malformed marker must still be deletable."""
    return ACTIVE_PREFIX + request_id


def idempotency_key(scope: str, key: str) -> str:
    return IDEMPOTENCY_PREFIX + hashlib.sha256(f"{scope}:{key}".encode()).hexdigest() + ".json"


HISTORY_PREFIX = "index/history/"
HISTORY_PACKS_PREFIX = HISTORY_PREFIX + "packs/"
ALERTS_SENT_PREFIX = "alerts/sent/"


def history_day_prefix(day: str) -> str:
    """The summaries recorded on ``day`` (``YYYY-MM-DD``, UTC: when their requests ended; fave.history)."""
    return f"{HISTORY_PREFIX}{day}/"


def history_summary_key(day: str, request_id: str, resumes: int) -> str:
    """One ended run of a request: written once when it reaches a terminal status (a resume that ends again
    writes another, ``resumes`` apart; readers keep the latest per request)."""
    return f"{history_day_prefix(day)}{validate_request_id(request_id)}.{resumes}.json"


def history_pack_key(day: str) -> str:
    """A day's summaries in one object, written by readers (fave.history): one GET per day afterwards."""
    return f"{HISTORY_PACKS_PREFIX}{day}.json"


def alert_sent_key(event_id: str) -> str:
    """The marker of an alert that was sent (fave.alerts): created with if_none_match, so once per event."""
    return ALERTS_SENT_PREFIX + hashlib.sha256(event_id.encode()).hexdigest()[:32] + ".json"


def items_key(request_id: str, for_each: str, block: int) -> str:
    """One block of a fan-out list (``for_each`` such as ``split.clips``), written once when it is made."""
    return request_prefix(request_id) + f"metadata/items/{for_each}/{block:05d}.json"


# ---- the admission queue (fave.queue) ---------------------------------------------------------------------

QUEUE_PREFIX = "queue/"
_PIPELINE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def queue_prefix(pipeline: str) -> str:
    """Everything of one pipeline's queue. The name is checked here: it becomes part of every queue key."""
    if not isinstance(pipeline, str) or not _PIPELINE_NAME.fullmatch(pipeline):
        raise ValueError(f"not a pipeline name: {pipeline[:80]!r}")
    return f"{QUEUE_PREFIX}{pipeline}/"


def queue_entries_prefix(pipeline: str) -> str:
    return queue_prefix(pipeline) + "entries/"


def queue_entry_key(pipeline: str, entry_id: str) -> str:
    return f"{queue_entries_prefix(pipeline)}{validate_request_id(entry_id)}.json"


def queue_open_prefix(pipeline: str) -> str:
    return queue_prefix(pipeline) + "open/"


def queue_open_key(pipeline: str, priority: int, entry_id: str) -> str:
    """The marker of an open entry: listing the prefix gives priority (1 first), then creation order."""
    return f"{queue_open_prefix(pipeline)}{int(priority)}/{validate_request_id(entry_id)}"


def queue_running_prefix(pipeline: str) -> str:
    return queue_prefix(pipeline) + "running/"


def queue_running_key(pipeline: str, entry_id: str) -> str:
    return queue_running_prefix(pipeline) + validate_request_id(entry_id)


def queue_failed_prefix(pipeline: str) -> str:
    return queue_prefix(pipeline) + "failed/"


def queue_failed_key(pipeline: str, entry_id: str) -> str:
    return queue_failed_prefix(pipeline) + validate_request_id(entry_id)


def queue_keys_prefix(pipeline: str) -> str:
    return queue_prefix(pipeline) + "keys/"


def queue_key_key(pipeline: str, key: str) -> str:
    """The pointer from an entry key (any text) to the entry that has it now."""
    return queue_keys_prefix(pipeline) + hashlib.sha256(key.encode()).hexdigest() + ".json"


def queue_done_prefix(pipeline: str, day: str) -> str:
    """``day`` as ``YYYY-MM-DD`` (UTC): a day's completions, listed by ``fave queue stats``."""
    return f"{queue_prefix(pipeline)}done/{day}/"


def queue_done_key(pipeline: str, day: str, ms: int, entry_id: str) -> str:
    return f"{queue_done_prefix(pipeline, day)}{ms:013d}-{validate_request_id(entry_id)}"
