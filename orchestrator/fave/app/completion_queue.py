"""Completions in batches: the asynchronous stages' destination is an SQS queue the orchestrator consumes.

Every asynchronous stage function sends its OnSuccess / OnFailure record to ``CompletionsQueue``
(template.yaml), and the orchestrator reads it through an event source mapping with a batching window: one
invocation applies up to a thousand completions, grouped by request, each group in one step (one lease, one
head read, the shards it touches, one commit). A per-completion Lambda destination would cost an invocation, a
lease write and a commit per task; batched, those are shared by the whole batch.

A record whose body is not a destination record of a fave stage is logged and dropped (retrying cannot make it
one). A group whose request is unknown is dropped too. A group that fails for another reason (the store
unreachable, a conflict storm) is reported in ``batchItemFailures``: SQS delivers those messages again, and
after ``maxReceiveCount`` moves them to the dead-letter queue. Completions are idempotent in the engine, so a
redelivery of a group that had in fact been applied changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from fave_shared.errors import FaveError, NotFoundError
from pydantic import ValidationError as PydanticValidationError

from fave import completions
from fave.app.observability import Meter, logger
from fave.app.runner import Runner
from fave.core.model import Event

__all__ = ["handle_sqs_event"]


def handle_sqs_event(runner: Runner, event: dict[str, Any], meter: Meter) -> dict[str, Any]:
    """Apply an SQS batch of destination records; returns the partial-batch response (``batchItemFailures``)."""
    groups: dict[str, list[tuple[str, Event]]] = {}
    records = event.get("Records")
    for record in records if isinstance(records, list) else []:
        message_id = str(record.get("messageId", "")) if isinstance(record, dict) else ""
        try:
            body = json.loads(record["body"])
            request_id, completion = completions.from_envelope(body)
        except (KeyError, TypeError, ValueError, PydanticValidationError) as exc:
            logger.error(
                "completion queue: not a destination record, dropped",
                extra={"message_id": message_id, "error": str(exc)[:300]},
            )
            meter.count("CompletionsDropped")
            continue
        groups.setdefault(request_id, []).append((message_id, completion))
    failures: list[dict[str, str]] = []
    applied = 0
    for request_id, group in groups.items():
        try:
            runner.submit(request_id, [completion for _, completion in group])
            applied += len(group)
        except NotFoundError:
            logger.warning(
                "completions for an unknown request ignored",
                extra={"request_id": request_id, "completions": len(group)},
            )
        except FaveError as exc:  # SQS redelivers these (and the queue's DLQ keeps them if it keeps failing)
            logger.error(
                "completions not applied: redelivery asked", extra={"request_id": request_id, "error": str(exc)[:300]}
            )
            failures.extend({"itemIdentifier": message_id} for message_id, _ in group)
    meter.count("CompletionsApplied", applied)
    return {"batchItemFailures": failures}
