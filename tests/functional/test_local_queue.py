"""``fave.local.queues``: an SQS queue and its event source mapping, with real functions on the local runtime
(tests/fixtures/queues: Work delivers its results to WorkQueue, Consumer reads it in batches with Powertools'
parser and BatchProcessor, WorkDeadLetters keeps what keeps failing).

Batches by size and by window, partial failures redelivered with a higher receive count, the dead-letter
queue, a function error returning the whole batch, Lambda's rules for the batch response, and a runtime's
destination records arriving as messages.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel
from fave.local.queues import EventSourceMapping, LocalQueue, QueueMessage, invoking
from fave.local.runtime import LocalRuntime
from fave.local.template import Template, load_template
from fave_shared.errors import ValidationError
from fave_shared.schemas import DestinationEnvelope

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "queues" / "template.yaml"
WAIT_S = 20.0


@pytest.fixture(scope="module")
def queue_template() -> Template:
    return load_template(FIXTURE, region="us-east-1")


@pytest.fixture(scope="module")
def runtime(queue_template: Template) -> Iterator[LocalRuntime]:
    """Work and Consumer in warm worker processes, for the whole module (Consumer imports Powertools)."""
    with LocalRuntime(queue_template, max_environments=2) as runtime:
        yield runtime


@dataclass
class Batch:
    at: float  # seconds since the recorder was made
    bodies: list[str]
    receive_counts: list[int]


@dataclass
class Recorder:
    """A mapping's target that records each batch, then hands it to ``inner`` (a real function, mostly)."""

    inner: Any
    start: float = field(default_factory=time.monotonic)
    batches: list[Batch] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any]) -> Any:
        records = event["Records"]
        with self.lock:
            self.events.append(event)
            self.batches.append(
                Batch(
                    time.monotonic() - self.start,
                    [r["body"] for r in records],
                    [int(r["attributes"]["ApproximateReceiveCount"]) for r in records],
                )
            )
        return self.inner(event)

    def counts_of(self, body: str) -> list[int]:
        return [n for b in self.batches for text, n in zip(b.bodies, b.receive_counts, strict=True) if text == body]


def work_queue(template: Template, **kwargs: Any) -> LocalQueue:
    kwargs.setdefault("visibility_timeout_s", 0.1)  # the template's 30 s, shortened
    return LocalQueue.from_template(template, "WorkQueue", **kwargs)


def mapping(template: Template, **kwargs: Any) -> EventSourceMapping:
    (source,) = template.function("Consumer").event_sources
    return EventSourceMapping.of(source, **kwargs)


def body(**fields: Any) -> str:
    return json.dumps(fields)


def test_the_mapping_comes_from_the_template(queue_template: Template) -> None:
    assert mapping(queue_template) == EventSourceMapping(
        batch_size=4, batching_window_s=1.0, report_batch_item_failures=True, concurrency=2
    )
    assert mapping(queue_template, batching_window_s=0.05).batching_window_s == 0.05
    with LocalQueue.from_template(queue_template, "WorkQueue") as work:
        assert (work.visibility_timeout_s, work.max_receive_count) == (30.0, 3)
        assert work.arn == "arn:aws:sqs:us-east-1:000000000000:WorkQueue"


def test_a_burst_is_cut_into_batches_of_the_batch_size(queue_template: Template, runtime: LocalRuntime) -> None:
    recorder = Recorder(invoking(runtime, "Consumer"))
    with work_queue(queue_template) as work:
        work.send_many([body(n=n) for n in range(10)])
        work.consume(recorder, mapping(queue_template, batching_window_s=0.5))
        assert work.wait_idle(WAIT_S)
        stats = work.stats()
    sizes = sorted(len(b.bodies) for b in recorder.batches)
    assert sizes == [2, 4, 4]  # full batches go at once; the rest waits out the window
    assert sorted(text for b in recorder.batches for text in b.bodies) == sorted(body(n=n) for n in range(10))
    last = next(b for b in recorder.batches if len(b.bodies) == 2)
    assert last.at >= 0.45  # it waited for the window: nothing more came
    assert (stats.sent, stats.batches, stats.received, stats.deleted, stats.returned) == (10, 3, 10, 10, 0)


def test_the_window_gathers_what_arrives_within_it(queue_template: Template, runtime: LocalRuntime) -> None:
    recorder = Recorder(invoking(runtime, "Consumer"))
    with work_queue(queue_template) as work:
        work.consume(recorder, mapping(queue_template, batching_window_s=0.6))
        first = time.monotonic()
        work.send(body(n=1))
        time.sleep(0.2)
        work.send(body(n=2))
        assert work.wait_idle(WAIT_S)
    assert [b.bodies for b in recorder.batches] == [[body(n=1), body(n=2)]]  # one batch, one invocation
    assert recorder.batches[0].at + recorder.start - first >= 0.55  # sent off when the window closed


def test_a_failed_item_comes_back_with_a_higher_receive_count(queue_template: Template, runtime: LocalRuntime) -> None:
    recorder = Recorder(invoking(runtime, "Consumer"))
    slow = body(fail_until=3)
    with work_queue(queue_template) as work:
        work.consume(recorder, mapping(queue_template, batching_window_s=0.05))
        work.send_many([body(n=1), slow])
        assert work.wait_idle(WAIT_S)
        stats = work.stats()
    assert recorder.counts_of(body(n=1)) == [1]  # deleted after its first batch
    assert recorder.counts_of(slow) == [1, 2, 3]  # reported in batchItemFailures twice, then done
    assert (stats.deleted, stats.returned, stats.dead_lettered) == (2, 2, 0)
    ids = {r["messageId"] for event in recorder.events for r in event["Records"] if r["body"] == slow}
    assert len(ids) == 1  # the same message each time


def test_what_keeps_failing_goes_to_the_dead_letter_queue(queue_template: Template, runtime: LocalRuntime) -> None:
    recorder = Recorder(invoking(runtime, "Consumer"))
    dead: queue.SimpleQueue[QueueMessage] = queue.SimpleQueue()
    never = body(fail_until=99)
    with work_queue(queue_template, dead_letter=dead.put) as work:
        work.consume(recorder, mapping(queue_template, batching_window_s=0.05))
        (message_id,) = work.send_many([never])
        assert work.wait_idle(WAIT_S)
        stats = work.stats()
    letter = dead.get(timeout=1)
    assert (letter.message_id, letter.body, letter.receive_count) == (message_id, never, 3)  # maxReceiveCount
    assert letter.md5_of_body == hashlib.md5(never.encode(), usedforsecurity=False).hexdigest()
    assert recorder.counts_of(never) == [1, 2, 3]
    assert (stats.deleted, stats.returned, stats.dead_lettered) == (0, 3, 1)


def test_a_function_error_returns_the_whole_batch(queue_template: Template, runtime: LocalRuntime) -> None:
    """Without a batch response (the function raised), even the messages that would have succeeded come back,
    until the redrive policy moves them all: what ReportBatchItemFailures spares the other items."""
    recorder = Recorder(invoking(runtime, "Consumer"))
    dead: queue.SimpleQueue[QueueMessage] = queue.SimpleQueue()
    fine, poison = body(n=1), body(**{"raise": True})
    with work_queue(queue_template, dead_letter=dead.put) as work:
        work.consume(recorder, mapping(queue_template, batching_window_s=0.05))
        work.send_many([fine, poison])
        assert work.wait_idle(WAIT_S)
    assert [b.bodies for b in recorder.batches] == [[fine, poison]] * 3
    assert sorted(dead.get(timeout=1).body for _ in range(2)) == sorted([fine, poison])


def test_a_batch_response_lambda_cannot_read_fails_the_whole_batch(queue_template: Template) -> None:
    answers = iter(
        [
            {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]},  # whole batch back
            {"batchItemFailures": [{"itemIdentifier": ""}]},  # whole batch back
            "not an object",  # whole batch back
            {"batchItemFailures": None},  # success
        ]
    )
    recorder = Recorder(lambda event: next(answers))
    with LocalQueue("Plain", visibility_timeout_s=0.1) as work:  # no redrive policy: retried for ever
        work.consume(recorder, mapping(queue_template, batching_window_s=0.05))
        work.send_many([body(n=1), body(n=2)])
        assert work.wait_idle(WAIT_S)
    assert [b.receive_counts for b in recorder.batches] == [[1, 1], [2, 2], [3, 3], [4, 4]]

    # Without ReportBatchItemFailures the response is not read: a returning function deleted its batch.
    recorder = Recorder(lambda event: {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]})
    with work_queue(queue_template) as work:
        work.consume(recorder, EventSourceMapping(batch_size=10, batching_window_s=0.05))
        work.send(body(n=1))
        assert work.wait_idle(WAIT_S)
    assert len(recorder.batches) == 1


def test_the_event_is_shaped_as_lambda_sends_it(queue_template: Template) -> None:
    recorder = Recorder(lambda event: None)
    with work_queue(queue_template) as work:
        work.consume(recorder, mapping(queue_template, batching_window_s=0.05))
        (message_id,) = work.send_many(["héllo"])
        assert work.wait_idle(WAIT_S)
    (event,) = recorder.events
    (record,) = SqsModel.model_validate(event).Records  # Powertools' strict model of Lambda's SQS event
    assert record.messageId == message_id and record.body == "héllo"
    assert record.md5OfBody == hashlib.md5("héllo".encode(), usedforsecurity=False).hexdigest()
    assert (record.eventSource, record.awsRegion) == ("aws:sqs", "us-east-1")
    assert event["Records"][0]["eventSourceARN"] == "arn:aws:sqs:us-east-1:000000000000:WorkQueue"
    attributes = event["Records"][0]["attributes"]
    assert attributes["ApproximateReceiveCount"] == "1"
    assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= int(attributes["SentTimestamp"])


def test_destination_records_of_the_runtime_arrive_as_messages(queue_template: Template) -> None:
    """LocalRuntime delivers an SQS destination through ``send_record``: the message body is the record's JSON."""
    bodies: queue.SimpleQueue[str] = queue.SimpleQueue()

    def collect(event: dict[str, Any]) -> None:
        for record in event["Records"]:
            bodies.put(record["body"])

    with work_queue(queue_template) as work:
        work.consume(collect, mapping(queue_template, batching_window_s=0.05))
        with LocalRuntime(queue_template, destination_handlers={"WorkQueue": work.send_record}) as runtime:
            assert runtime.template.function("Work").event_invoke_config.on_success == "WorkQueue"
            for n in range(3):
                runtime.invoke_async("Work", {"n": n, "fail": n == 2})
            records = [DestinationEnvelope.model_validate_json(bodies.get(timeout=WAIT_S)) for _ in range(3)]
    outcomes = sorted((r.requestPayload["n"], r.requestContext.condition) for r in records)
    assert outcomes == [(0, "Success"), (1, "Success"), (2, "RetriesExhausted")]


def test_concurrent_senders_lose_nothing_and_duplicate_nothing(queue_template: Template) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def count(event: dict[str, Any]) -> None:
        with lock:
            seen.extend(r["messageId"] for r in event["Records"])

    sent: list[str] = []
    with work_queue(queue_template) as work:
        work.consume(count, EventSourceMapping(batch_size=7, batching_window_s=0.01, concurrency=3))

        def send(n: int) -> None:
            ids = [work.send(body(sender=n, k=k)) for k in range(100)]
            with lock:
                sent.extend(ids)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert work.wait_idle(WAIT_S)
        assert work.stats().deleted == 600
    assert sorted(seen) == sorted(sent) and len(set(seen)) == 600


def test_close_drops_what_waits_and_refuses_more(queue_template: Template) -> None:
    calls: list[dict[str, Any]] = []
    work = work_queue(queue_template)
    work.consume(calls.append, EventSourceMapping(batch_size=10, batching_window_s=30))
    work.send(body(n=1))
    started = time.monotonic()
    work.close()  # the poller was waiting out the window: it stops without a batch
    assert time.monotonic() - started < 2
    assert calls == [] and work.pending() == 1
    with pytest.raises(ValidationError, match="closed"):
        work.send(body(n=2))
    with pytest.raises(ValidationError, match="over SQS"):
        LocalQueue("big").send("x" * (1024 * 1024 + 1))
