"""Play AWS around the orchestrator function, with nothing mocked: ``fave.app.handler`` is the orchestrator
Lambda, the local runtime runs the demo pipeline's stage functions, and the store is the tier's S3.

* ``demo_runtime`` (session): a ``LocalRuntime`` on tests/fixtures/demo/template.yaml, kept warm for the
  whole run. Its OnSuccess / OnFailure destination (``CompletionsQueue``) is a switch that hands each
  envelope to the current test's ``OrchestratorLambda`` (and drops it between tests).
* ``orchestrator_lambda`` (per test): configures ``fave.app`` with the tier's store, the demo pipeline and
  the runtime, and invokes the handler like Lambda would: ``invoke(event)`` for events a test sends, and
  completions as SQS batches. Each envelope becomes a message of the test's ``CompletionsQueue``
  (``fave.local.queues.LocalQueue``, as the template declares it), whose event source mapping (the
  template's, with a 0.05 s batching window and a 0.1 s visibility timeout so that tests stay fast) invokes
  the handler with batches on a thread pool (one thread on the ``moto`` tier, whose in-process S3 is not
  atomic; several elsewhere, so batches and steps race on state.json as on AWS). What the dead-letter queue
  receives is kept in ``dead_letters``. ``hold()`` keeps envelopes back for a test to ``take`` and
  ``deliver`` itself (as a plain destination record) or ``release`` into the queue at once; ``copies``
  sends each one N times (SQS delivers at least once).

The orchestrator's clock is a ``ManualClock`` (``lam.clock``) that stands still unless a test moves it: with
deliveries queued one at a time (moto tier) on a busy CI machine, the wait before an envelope is applied
would otherwise count against the demo's 2 s measure timeout and turn into retries a test did not ask for.
Timeouts and retries are tested on purpose by moving the clock (``clock.advance``, ``wait(tick=True)``).
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

import pytest
from fave.clock import ManualClock
from fave.local.queues import EventSourceMapping, LocalQueue, QueueMessage
from fave.local.runtime import LocalRuntime
from fave_shared.store import ObjectStore

from support.events import http_event, tick_event
from support.lambda_context import LambdaContext
from support.tiers import Tier, TierBackend

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "pipeline.yaml"
DEMO_TEMPLATE = DEMO.parent / "template.yaml"
ORCHESTRATOR = "OrchestratorFunction"
COMPLETIONS = "CompletionsQueue"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
#: The completions' event source mapping in tests: the template's, with a window short enough for tests.
BATCHING_WINDOW_S = 0.05
#: How soon a completion that a batch reported failed comes back (a deployment waits the queue's 90 minutes).
VISIBILITY_TIMEOUT_S = 0.1


class DestinationSwitch:
    """The runtime's destination handler: forwards to the current test's orchestrator function, if any."""

    def __init__(self) -> None:
        self.target: Callable[[dict[str, Any]], None] | None = None

    def __call__(self, envelope: dict[str, Any]) -> None:
        target = self.target
        if target is not None:
            target(envelope)


class OrchestratorLambda:
    """``fave.app.handler`` invoked like the orchestrator Lambda function (see the module docs)."""

    def __init__(self, runtime: LocalRuntime, store: ObjectStore, *, serial: bool) -> None:
        self.runtime = runtime
        self.store = store
        self._lock: contextlib.AbstractContextManager[Any] = threading.Lock() if serial else contextlib.nullcontext()
        self._pool = ThreadPoolExecutor(1 if serial else 4, thread_name_prefix="orchestrator-lambda")
        self._futures: list[Future[Any]] = []
        self._futures_lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.held: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.holding = False
        self.copies = 1
        self.kicks = 0
        self.source_uri = "s3://bucket/inputs/a.mp4"
        """An allowed source for POST /requests (the fixture sets the tier's)."""
        self.clock = ManualClock(time.time())
        self._baseline = {name: s.invocations for name, s in runtime.stats().items()}
        self.sqs_invocations = 0
        """Invocations with an SQS batch of completions (and the records they carried: ``sqs_records``)."""
        self.sqs_records = 0
        self.dead_letters: queue.SimpleQueue[QueueMessage] = queue.SimpleQueue()
        self.completions = LocalQueue.from_template(
            runtime.template, COMPLETIONS, visibility_timeout_s=VISIBILITY_TIMEOUT_S, dead_letter=self.dead_letters.put
        )
        (source,) = [s for s in runtime.template.function(ORCHESTRATOR).event_sources if s.queue == COMPLETIONS]
        self.completions.consume(self._invoke_batch, EventSourceMapping.of(source, batching_window_s=BATCHING_WINDOW_S))

    # -- invoking ---------------------------------------------------------------------------------------

    def invoke(self, event: dict[str, Any]) -> Any:
        """One invocation of the orchestrator function with ``event`` (a JSON round trip, like Lambda)."""
        import fave.app

        payload = json.loads(json.dumps(event))
        with self._lock:
            result = fave.app.handler(payload, LambdaContext())
        return json.loads(json.dumps(result))

    def http(self, name: str, **patch: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Invoke with the HTTP sample ``name`` (patched, see ``http_event``): status, JSON body, headers."""
        response = self.invoke(http_event(name, **patch))
        return response["statusCode"], json.loads(response["body"] or "null"), response.get("headers", {})

    def start(self, text: str, **fields: Any) -> str:
        """POST /requests for the demo text (an allowed source, no idempotency key), then wait for the kicked
        first step to finish; returns the request id."""
        body = {"video_uri": self.source_uri, "extra": {"text": text, **fields.pop("extra", {})}, **fields}
        code, response, _ = self.http("http-start.json", body=body, without_headers=("idempotency-key",))
        assert code == 202, response
        self.settle()
        return str(response["request_id"])

    def status(self, request_id: str) -> dict[str, Any]:
        code, body, _ = self.http("http-status.json", request_id=request_id)
        assert code == 200, body
        return body

    def wait(
        self, request_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30.0, *, tick: bool = False
    ) -> dict[str, Any]:
        """Poll ``GET /requests/{id}`` until the status is one of ``statuses``. ``tick``: between polls, move
        the clock on by a second and send the schedule tick (what starts retries that are due when nothing
        else arrives for the request)."""
        deadline = time.monotonic() + timeout
        while True:
            self.raise_errors()
            doc = self.status(request_id)
            if doc["status"] in statuses:
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"request {request_id} still {doc['status']} after {timeout} s: {doc['stages']}")
            time.sleep(0.05)
            if tick:
                self.clock.advance(1.0)
                self.invoke(tick_event())

    # -- destinations -----------------------------------------------------------------------------------

    def receive(self, envelope: dict[str, Any]) -> None:
        """The runtime's OnSuccess / OnFailure delivery: a message on CompletionsQueue (``copies`` of it)."""
        if self.holding:
            self.held.put(envelope)
            return
        self.completions.send_many([json.dumps(envelope)] * self.copies)

    def release(self, envelopes: list[dict[str, Any]]) -> None:
        """Put held envelopes on CompletionsQueue at once (one burst: the batching window sees them all)."""
        self.completions.send_many([json.dumps(envelope) for envelope in envelopes])

    def _invoke_batch(self, event: dict[str, Any]) -> Any:
        """The event source mapping's invocation: synchronous, run on the pool; its response decides which
        messages come back (a raise: all of them)."""
        with self._futures_lock:
            self.sqs_invocations += 1
            self.sqs_records += len(event["Records"])
        return self._submit(event).result()

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        """The orchestrator invoking itself asynchronously (``fave.app`` ``self_invoker``): a step event,
        run on the pool like Lambda would run it, never held back by ``hold``."""
        assert function == ORCHESTRATOR, function
        self.kicks += 1
        self._submit(payload)
        return f"kick-{self.kicks}"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        raise AssertionError("the orchestrator never invokes itself synchronously")

    def functions(self) -> frozenset[str]:
        return frozenset({ORCHESTRATOR})

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every invocation submitted so far (and those they submitted) has finished, and every
        completion on the queue so far has been handled."""
        deadline = time.monotonic() + timeout
        while True:
            with self._futures_lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending and self.completions.pending() == 0:
                self.raise_errors()
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(pending)} orchestrator invocations still running, {self.completions.pending()} "
                    f"completions still queued after {timeout} s"
                )
            if pending:
                wait_futures(pending, timeout=remaining)
            else:
                self.completions.wait_idle(remaining)

    def hold(self) -> None:
        """Keep destination envelopes back (``take`` / ``deliver`` them by hand)."""
        self.holding = True

    def take(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The next ``count`` held envelopes (waits for them)."""
        deadline = time.monotonic() + timeout
        taken = []
        while len(taken) < count:
            try:
                taken.append(self.held.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"only {len(taken)} of {count} destination envelopes arrived") from None
        return taken

    def deliver(self, envelope: dict[str, Any]) -> Any:
        """Invoke with a destination envelope now, on this thread, as a plain destination record (the
        orchestrator still takes one that invokes it directly)."""
        return self.invoke(envelope)

    def _submit(self, event: dict[str, Any]) -> Future[Any]:
        future = self._pool.submit(self.invoke, event)
        future.add_done_callback(self._done)
        with self._futures_lock:
            self._futures.append(future)
        return future

    def _done(self, future: Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.errors.append(exc)

    def raise_errors(self) -> None:
        if self.errors:
            raise AssertionError(f"the orchestrator function raised on an event: {self.errors[0]!r}")

    # -- what happened ----------------------------------------------------------------------------------

    def invocations(self, function: str) -> int:
        """Invocations of a stage function since this test began."""
        return self.runtime.stats()[function].invocations - self._baseline.get(function, 0)

    def close(self) -> None:
        self.holding = True  # late envelopes of this test are dropped from here on
        self.completions.close()  # batches running finish; what still waits is dropped
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def demo_destinations() -> DestinationSwitch:
    return DestinationSwitch()


@pytest.fixture(scope="session")
def demo_runtime(tier_backend: TierBackend, demo_destinations: DestinationSwitch) -> Iterator[LocalRuntime]:
    """The demo pipeline's functions on the local runtime, warm for the whole session."""
    runtime = LocalRuntime(
        DEMO_TEMPLATE,
        env_overrides=tier_backend.child_env,
        function_env=tier_backend.function_env,
        destination_handlers={COMPLETIONS: tier_backend.destinations(demo_destinations)},
        async_retry_delays_s=(0.05, 0.05),
    )
    try:
        yield runtime
    finally:
        runtime.close()


def configure_app(
    lam: OrchestratorLambda,
    tier: Tier,
    pipeline: Path = DEMO,
    *,
    invoker: Any = None,
    self_invoker_of: Any = None,
) -> None:
    """Point ``fave.app`` at the tier's store, the pipeline (the demo's), the runtime and ``lam.clock``: as the
    orchestrator function sees them (on tier iam, through its own role; ``lam.store`` stays the test's).
    ``invoker``: the stage invoker instead of the tier's over ``lam.runtime``; ``self_invoker_of``: what the
    orchestrator's self-invokes go to instead of ``lam``."""
    import fave.app

    settings = fave.app.Settings(
        store_uri=tier.store.uri,
        pipeline_path=pipeline,
        upload_prefix=tier.upload_prefix,
        input_prefixes=(tier.input_prefix,),
        default_query="find the words",
        default_profile="default",
    )
    fave.app.configure(
        settings=settings,
        store=tier.orchestrator_store,
        pipeline=pipeline,
        invoker=invoker if invoker is not None else tier.orchestrator_invoker(lam.runtime),
        clock=lam.clock,
        s3_client=tier.orchestrator_s3_client,
        self_invoker=tier.orchestrator_self_invoker(self_invoker_of if self_invoker_of is not None else lam),
    )


@pytest.fixture
def orchestrator_lambda(
    tier: Tier, demo_runtime: LocalRuntime, demo_destinations: DestinationSwitch
) -> Iterator[OrchestratorLambda]:
    """``fave.app.handler`` as the orchestrator function of the demo pipeline on this test's tier."""
    lam = OrchestratorLambda(demo_runtime, tier.store, serial=tier.backend.serial)
    lam.source_uri = tier.source_uri()
    configure_app(lam, tier)
    demo_destinations.target = lam.receive
    try:
        yield lam
    finally:
        demo_destinations.target = None
        lam.close()
        import fave.app

        fave.app.reset()
    lam.raise_errors()
    # A completion the orchestrator failed to apply five times (the redrive policy) is a bug in every test here.
    assert lam.dead_letters.empty(), f"completions dead-lettered: {lam.dead_letters.get().body[:500]}"
