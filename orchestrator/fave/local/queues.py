"""``LocalQueue``: an SQS standard queue and the Lambda event source mapping that consumes it, on this machine.

How fave uses it: the asynchronous stages' destination is ``CompletionsQueue`` (template.yaml), which the
orchestrator function consumes in batches. ``LocalRuntime(destination_handlers={"CompletionsQueue":
queue.send_record})`` puts each destination record on the queue as a message whose body is the record's JSON,
as Lambda does; ``queue.consume(target, EventSourceMapping.of(source))`` then invokes ``target`` with SQS batch
events, as the event source mapping of the function's ``Events: {Type: SQS}`` does.

What behaves like SQS and Lambda's event source mapping:

* ``send`` / ``send_many`` / ``send_record``: a message (id, MD5 of the body, sent time, sender) per body,
  up to 1 MiB each (SQS's limit; 256 KiB before August 2025).
* Batches: a poller waits for a visible message, then gathers until the batch is full (``batch_size``) or the
  batching window has passed since that first message, whichever is first, at most 6 MB of bodies (Lambda's
  synchronous payload limit; at least one message). One poller gathers at a time, so a burst fills one
  batch instead of being spread over every poller. ``concurrency`` pollers (``ScalingConfig.
  MaximumConcurrency``) run batches at once; ``target`` is called synchronously (Lambda invokes the function
  with ``RequestResponse``), with the event Lambda builds: ``{"Records": [{"messageId", "receiptHandle",
  "body", "attributes": {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
  "ApproximateFirstReceiveTimestamp"}, "messageAttributes", "md5OfBody", "eventSource": "aws:sqs",
  "eventSourceARN", "awsRegion"}]}``.
* Results: a batch whose ``target`` returns is deleted. With ``report_batch_item_failures`` (the mapping's
  ``FunctionResponseTypes: [ReportBatchItemFailures]``) the messages named in the response's
  ``batchItemFailures`` are not deleted, and, as Lambda does, a response it cannot read (not an object, an
  item without an ``itemIdentifier``, or one naming a message not in the batch) fails the whole batch; an
  empty or null response, or an empty or null list, is a success. A ``target`` that raises fails the whole
  batch (Lambda: a function error).
* A message that was not deleted becomes visible again once the queue's visibility timeout has passed
  (``visibility_timeout_s``: Lambda leaves failed messages to that timeout) and is received again with
  ``ApproximateReceiveCount`` one higher. A message received ``max_receive_count`` times (the queue's
  ``RedrivePolicy``) is moved to the dead-letter queue instead of being received once more, as SQS moves it:
  ``dead_letter`` gets it (``QueueMessage``, with its id and receive count kept).

Not emulated: SQS's own duplicates and reordering of a standard queue (messages are received in the order
sent; send a body twice for a duplicate), retention and delay queues, message attributes, Lambda scaling its
pollers up and down (a fixed ``concurrency``), and the mapping backing off while its function is throttled.

Thread-safe. ``close()`` stops the mapping: messages not yet in a batch are dropped (``pending()`` still
counts them), and the batches already running are waited for (a few seconds at most), their results
applied. ``wait_idle`` is how a caller knows every message sent so far was handled.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from fave_shared.errors import FaveError, ValidationError

from fave.invoke.base import MAX_SYNC_PAYLOAD_BYTES, Invoker
from fave.local.template import ACCOUNT_ID, QueueSpec, SqsEventSource, Template

__all__ = [
    "MAX_MESSAGE_BYTES",
    "BatchTarget",
    "EventSourceMapping",
    "LocalQueue",
    "QueueMessage",
    "QueueStats",
    "invoking",
]

log = logging.getLogger("fave.local.queues")

#: SQS's largest message body (1 MiB since August 2025).
MAX_MESSAGE_BYTES = 1024 * 1024
#: Lambda's pollers start this many batches at once for a mapping without ``ScalingConfig``.
DEFAULT_CONCURRENCY = 5
_CLOSE_S = 5.0

BatchTarget = Callable[[dict[str, Any]], Any]
"""What a mapping invokes with an SQS event; returns the function's response (or raises: a function error)."""


@dataclass(frozen=True)
class QueueMessage:
    """A message as the queue holds it (what a dead-letter handler receives)."""

    message_id: str
    body: str
    md5_of_body: str
    sent_timestamp_ms: int
    sender_id: str
    receive_count: int
    first_receive_timestamp_ms: int | None


@dataclass(frozen=True)
class QueueStats:
    """Counts since the queue was made: messages sent, batches run (and the messages they carried), messages
    deleted, returned by a failed batch, and moved to the dead-letter queue."""

    sent: int = 0
    batches: int = 0
    received: int = 0
    deleted: int = 0
    returned: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class EventSourceMapping:
    """How a mapping consumes a queue (SAM ``Events: {Type: SQS}``), with Lambda's defaults."""

    batch_size: int = 10
    batching_window_s: float = 0.0
    report_batch_item_failures: bool = False
    concurrency: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1 or self.batching_window_s < 0:
            raise ValueError(f"batch_size and concurrency must be at least 1, the window not negative: {self}")

    @classmethod
    def of(
        cls, source: SqsEventSource, *, batching_window_s: float | None = None, concurrency: int | None = None
    ) -> EventSourceMapping:
        """The mapping a template's SQS event describes; ``batching_window_s`` and ``concurrency`` override
        the template's (tests shorten the window)."""
        return cls(
            batch_size=source.batch_size,
            batching_window_s=float(source.batching_window_s if batching_window_s is None else batching_window_s),
            report_batch_item_failures=source.report_batch_item_failures,
            concurrency=concurrency or source.maximum_concurrency or DEFAULT_CONCURRENCY,
        )


def invoking(invoker: Invoker, function: str) -> BatchTarget:
    """A mapping's target that invokes ``function`` synchronously, as Lambda's pollers do: its response is
    the result, a function error (``FunctionError``) fails the batch."""

    def invoke(event: dict[str, Any]) -> Any:
        result = invoker.invoke_sync(function, event)
        if result.function_error:
            raise _FunctionError(f"{function} failed the batch: {json.dumps(result.payload)[:300]}")
        return result.payload

    return invoke


class _FunctionError(FaveError):
    """The mapping's function returned an error for a batch."""


class _Message:
    """A message held by the queue (mutable: its receive count and visibility change)."""

    __slots__ = ("body", "first_receive_ms", "md5", "message_id", "receive_count", "sender_id", "sent_ms", "size")

    def __init__(self, body: str, sender_id: str) -> None:
        data = body.encode()
        self.message_id = str(uuid.uuid4())
        self.body = body
        self.size = len(data)
        self.md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self.sent_ms = int(time.time() * 1000)
        self.sender_id = sender_id
        self.receive_count = 0
        self.first_receive_ms: int | None = None

    def snapshot(self) -> QueueMessage:
        return QueueMessage(
            self.message_id,
            self.body,
            self.md5,
            self.sent_ms,
            self.sender_id,
            self.receive_count,
            self.first_receive_ms,
        )


class LocalQueue:
    """An SQS standard queue with at most one event source mapping (see the module docs)."""

    def __init__(
        self,
        name: str,
        *,
        visibility_timeout_s: float = 30.0,
        max_receive_count: int | None = None,
        dead_letter: Callable[[QueueMessage], None] | None = None,
        region: str = "us-east-1",
        sender_id: str = ACCOUNT_ID,
    ) -> None:
        if max_receive_count is not None and max_receive_count < 1:
            raise ValueError(f"max_receive_count must be at least 1, got {max_receive_count}")
        self.name = name
        self.region = region
        self.arn = f"arn:aws:sqs:{region}:{ACCOUNT_ID}:{name}"
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receive_count = max_receive_count
        self._dead_letter = dead_letter
        self._sender_id = sender_id
        self._cond = threading.Condition()
        self._visible: deque[_Message] = deque()
        self._returning: list[tuple[float, int, _Message]] = []  # (visible again at, tie-breaker, message)
        self._order = itertools.count()
        self._in_flight = 0
        self._gathering = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._counts = dict.fromkeys(("sent", "batches", "received", "deleted", "returned", "dead_lettered"), 0)

    @classmethod
    def from_template(
        cls,
        template: Template,
        queue: str,
        *,
        visibility_timeout_s: float | None = None,
        dead_letter: Callable[[QueueMessage], None] | None = None,
        region: str = "us-east-1",
    ) -> LocalQueue:
        """The template's ``AWS::SQS::Queue`` ``queue``: its visibility timeout (``visibility_timeout_s``
        overrides it: tests wait less than a deployment's 90 minutes) and its ``RedrivePolicy``'s
        ``maxReceiveCount``; ``dead_letter`` receives what it moves to its dead-letter queue."""
        spec: QueueSpec = template.queue(queue)
        visibility = float(spec.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s)
        if spec.max_receive_count is not None and dead_letter is None:
            log.warning("%s: no dead_letter handler: messages its RedrivePolicy would move are dropped", queue)
        return cls(
            queue,
            visibility_timeout_s=visibility,
            max_receive_count=spec.max_receive_count,
            dead_letter=dead_letter,
            region=region,
        )

    # -- sending -------------------------------------------------------------------------------------------

    def send(self, body: str) -> str:
        """Put one message on the queue; returns its message id."""
        (message_id,) = self.send_many([body])
        return message_id

    def send_many(self, bodies: Iterable[str]) -> list[str]:
        """Put several messages on the queue at once (as ``SendMessageBatch``: one batch window sees them all)."""
        messages = []
        for body in bodies:
            if not isinstance(body, str):
                raise ValidationError(f"queue {self.name}: a message body is text, got {type(body).__name__}")
            message = _Message(body, self._sender_id)
            if message.size > MAX_MESSAGE_BYTES:
                raise ValidationError(
                    f"queue {self.name}: message of {message.size} bytes is over SQS's {MAX_MESSAGE_BYTES} bytes"
                )
            messages.append(message)
        with self._cond:
            if self._closed:
                raise ValidationError(f"queue {self.name} is closed")
            self._visible.extend(messages)
            self._counts["sent"] += len(messages)
            self._cond.notify_all()
        return [m.message_id for m in messages]

    def send_record(self, record: Mapping[str, Any]) -> None:
        """A Lambda destination's delivery: the record's JSON as the message body (``LocalRuntime``'s
        ``destination_handlers`` entry for an SQS destination)."""
        self.send(json.dumps(record, separators=(",", ":")))

    # -- the event source mapping -------------------------------------------------------------------------

    def consume(self, target: BatchTarget, mapping: EventSourceMapping | None = None) -> None:
        """Start the queue's event source mapping: ``mapping.concurrency`` pollers invoking ``target``."""
        mapping = mapping or EventSourceMapping()
        with self._cond:
            if self._closed:
                raise ValidationError(f"queue {self.name} is closed")
            if self._threads:
                raise ValueError(f"queue {self.name} already has an event source mapping")
            self._threads = [
                threading.Thread(
                    target=self._poll, args=(target, mapping), name=f"fave-queue-{self.name}-{n}", daemon=True
                )
                for n in range(mapping.concurrency)
            ]
        for thread in self._threads:
            thread.start()

    def _poll(self, target: BatchTarget, mapping: EventSourceMapping) -> None:
        while True:
            batch = self._gather(mapping)
            if batch is None:
                return
            self._run(target, mapping, batch)

    def _gather(self, mapping: EventSourceMapping) -> list[_Message] | None:
        """The next batch (None once closed). Dead letters found on the way are handed over outside the lock."""
        dead: list[_Message] = []
        try:
            with self._cond:
                return self._gather_locked(mapping, dead)
        finally:
            for message in dead:
                self._move_to_dead_letters(message)

    def _gather_locked(self, mapping: EventSourceMapping, dead: list[_Message]) -> list[_Message] | None:
        while True:  # our turn to gather, and a visible message
            if self._closed:
                return None
            self._return_due(dead)
            if self._visible and not self._gathering:
                break
            self._cond.wait(self._until_next_return())
        self._gathering = True
        try:
            deadline = time.monotonic() + mapping.batching_window_s
            while len(self._visible) < mapping.batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                due = self._until_next_return()
                self._cond.wait(remaining if due is None else min(remaining, due))
                self._return_due(dead)
            if self._closed or not self._visible:
                return None if self._closed else []
            batch: list[_Message] = []
            size = 0
            now_ms = int(time.time() * 1000)
            while self._visible and len(batch) < mapping.batch_size:
                message = self._visible[0]
                if batch and size + message.size > MAX_SYNC_PAYLOAD_BYTES:
                    break
                self._visible.popleft()
                size += message.size
                message.receive_count += 1
                if message.first_receive_ms is None:
                    message.first_receive_ms = now_ms
                batch.append(message)
            self._in_flight += len(batch)
            self._counts["batches"] += 1
            self._counts["received"] += len(batch)
            return batch
        finally:
            self._gathering = False
            self._cond.notify_all()

    def _return_due(self, dead: list[_Message]) -> None:
        """Messages whose visibility timeout has passed become visible again, or, received as often as the
        redrive policy allows, go to the dead-letter queue (collected in ``dead``). Holds the lock."""
        now = time.monotonic()
        moved = False
        while self._returning and self._returning[0][0] <= now:
            _, _, message = heapq.heappop(self._returning)
            moved = True
            if self.max_receive_count is not None and message.receive_count >= self.max_receive_count:
                self._counts["dead_lettered"] += 1
                dead.append(message)
            else:
                self._visible.append(message)
        if moved:
            self._cond.notify_all()

    def _until_next_return(self) -> float | None:
        if not self._returning:
            return None
        return max(0.0, self._returning[0][0] - time.monotonic())

    def _run(self, target: BatchTarget, mapping: EventSourceMapping, batch: list[_Message]) -> None:
        if not batch:
            return
        try:
            response = target(self._event(batch))
        except Exception as exc:  # a function error: the whole batch comes back
            log.warning("%s: a batch of %d failed: %s", self.name, len(batch), exc)
            failed = {m.message_id for m in batch}
        else:
            failed = self._failures(mapping, response, batch)
        visible_again = time.monotonic() + self.visibility_timeout_s
        with self._cond:
            self._in_flight -= len(batch)
            for message in batch:
                if message.message_id in failed:
                    heapq.heappush(self._returning, (visible_again, next(self._order), message))
                    self._counts["returned"] += 1
                else:
                    self._counts["deleted"] += 1
            self._cond.notify_all()

    def _failures(self, mapping: EventSourceMapping, response: Any, batch: list[_Message]) -> set[str]:
        """The ids of the messages a response leaves in the queue (Lambda's rules, see the module docs)."""
        if not mapping.report_batch_item_failures or response is None:
            return set()
        everything = {m.message_id for m in batch}
        if not isinstance(response, dict):
            log.warning("%s: unreadable batch response %r: the whole batch fails", self.name, response)
            return everything
        items = response.get("batchItemFailures")
        if items is None:
            return set()
        failed = set()
        for item in items if isinstance(items, list) else [items]:
            identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not isinstance(identifier, str) or identifier not in everything:
                log.warning("%s: batchItemFailures item %r: the whole batch fails", self.name, item)
                return everything
            failed.add(identifier)
        return failed

    def _event(self, batch: list[_Message]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": m.message_id,
                    "receiptHandle": f"{m.message_id}#{m.receive_count}#{uuid.uuid4().hex}",
                    "body": m.body,
                    "attributes": {
                        "ApproximateReceiveCount": str(m.receive_count),
                        "SentTimestamp": str(m.sent_ms),
                        "SenderId": m.sender_id,
                        "ApproximateFirstReceiveTimestamp": str(m.first_receive_ms),
                    },
                    "messageAttributes": {},
                    "md5OfBody": m.md5,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": self.region,
                }
                for m in batch
            ]
        }

    def _move_to_dead_letters(self, message: _Message) -> None:
        if self._dead_letter is None:
            log.warning(
                "%s: message %s dropped: received %d times", self.name, message.message_id, message.receive_count
            )
            return
        try:
            self._dead_letter(message.snapshot())
        except Exception:
            log.exception("%s: the dead-letter handler raised for message %s", self.name, message.message_id)

    # -- state ----------------------------------------------------------------------------------------------

    def pending(self) -> int:
        """Messages not deleted nor dead-lettered: visible, in a running batch, or waiting to be visible again."""
        with self._cond:
            return len(self._visible) + self._in_flight + len(self._returning)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending (every message deleted or dead-lettered); False on timeout."""
        deadline = time.monotonic() + timeout
        dead: list[_Message] = []
        try:
            with self._cond:
                while self._visible or self._in_flight or self._returning:
                    self._return_due(dead)  # a dead letter is due even if no poller looks
                    if not (self._visible or self._in_flight or self._returning):
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    due = self._until_next_return()
                    self._cond.wait(remaining if due is None else min(remaining, due))
                return True
        finally:
            for message in dead:
                self._move_to_dead_letters(message)

    def stats(self) -> QueueStats:
        with self._cond:
            return QueueStats(**self._counts)

    def close(self) -> None:
        """Stop the mapping: messages not yet in a batch are dropped; running batches finish (see module docs)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + _CLOSE_S
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> LocalQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
