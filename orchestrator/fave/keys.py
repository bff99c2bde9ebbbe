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
```

Request ids are validated (``fave.ids``) before they become part of a key, so no key can leave its request.
"""

from __future__ import annotations

import hashlib

from fave.ids import validate_request_id

__all__ = [
    "ACTIVE_PREFIX",
    "CACHE_PREFIX",
    "IDEMPOTENCY_PREFIX",
    "INDEX_PREFIX",
    "active_key",
    "artifact_prefix",
    "cache_key",
    "final_key",
    "idempotency_key",
    "inbox_prefix",
    "index_key",
    "input_key",
    "items_key",
    "lease_key",
    "log_key",
    "logs_prefix",
    "parse_shard_key",
    "request_prefix",
    "shard_key",
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


def items_key(request_id: str, for_each: str, block: int) -> str:
    """One block of a fan-out list (``for_each`` such as ``split.clips``), written once when it is made."""
    return request_prefix(request_id) + f"metadata/items/{for_each}/{block:05d}.json"
