"""``fave bench cost``: what orchestration costs per 1,000 tasks through the real Lambda entry point, as deployed.

    python benchmarks/cost/cost.py --items N [--arrival serial|concurrent] [--invoke-latency-ms L] [--json]

A no-op fan-out (benchmarks/cost/pipeline.yaml, with benchmarks/fanout's functions: plan -> N no-op async tasks
-> reduce) runs through ``fave.app.handler`` on
in-process moto S3, wired as template.yaml wires it:

* ``POST /requests`` answers at once and kicks the first step (an orchestrator invocation);
* the asynchronous tasks' destination records go to ``CompletionsQueue``; an emulated event source mapping
  hands them to the orchestrator in batches (``BatchSize`` 1000, ``MaximumBatchingWindowInSeconds`` 1, as in
  template.yaml). ``--arrival concurrent``: every completion is there at once; ``serial``: one arrives every
  ``--arrival-gap-ms`` (virtual time), so a batch holds what arrived within its window;
* the stage functions run in this process (their cost is the same under any orchestrator and is not counted);
  each Invoke API call takes ``--invoke-latency-ms`` (a real sleep: dispatch runs ``DISPATCH_PARALLELISM`` of them
  at once).

Counted: orchestrator invocations and their billed duration at the template's MemorySize (the measured handler
time, plus ``--s3-latency-ms`` per store request for the round trips in-process moto does not have), every S3
request by type (a refused conditional write too), and the SQS requests (one SendMessage per completion, one
ReceiveMessage and one DeleteMessageBatch per ten messages of a batch). Priced with ``fave.pricing`` beside Step
Functions Standard (N + 3 transitions), a Distributed Map with Express children and Lambda durable functions
(N + 3 operations) for the same DAG.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FANOUT = ROOT / "benchmarks" / "fanout"
PIPELINE = Path(__file__).resolve().parent / "pipeline.yaml"
BUCKET = "fave-bench-cost"
ORCHESTRATOR_MEMORY_MB = 1024  # template.yaml's OrchestratorFunction MemorySize
BATCH_SIZE = 1000
BATCH_WINDOW_S = 1.0


class OpCounter:
    """An ObjectStore wrapper counting requests by type (as S3 bills them)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self.conflicts = 0
        self._lock = threading.Lock()

    def _count(self, op: str, n: int = 1) -> None:
        with self._lock:
            self.counts[op] += n

    @property
    def uri(self) -> str:
        return str(self.inner.uri)

    @property
    def bucket(self) -> str:
        return str(self.inner.bucket)

    def get(self, key: str) -> Any:
        self._count("GET")
        return self.inner.get(key)

    def head(self, key: str) -> Any:
        self._count("HEAD")
        return self.inner.head(key)

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        from fave_shared.errors import ConflictError

        self._count("PUT")
        try:
            return str(self.inner.put(key, data, **kwargs))
        except ConflictError:
            with self._lock:
                self.conflicts += 1
            raise

    def delete(self, key: str) -> None:
        self._count("DELETE")
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        self._count("LIST")
        for n, key in enumerate(self.inner.list(prefix), 1):
            if n % 1000 == 0:
                self._count("LIST")
            yield key

    def link(self, key: str) -> str:
        return str(self.inner.link(key))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Context:
    """A Lambda context whose remaining time counts down from the function's timeout."""

    function_name = "fave-bench-orchestrator"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fave-bench-orchestrator"
    memory_limit_in_mb = ORCHESTRATOR_MEMORY_MB
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/fave-bench-orchestrator"
    log_stream_name = "bench"

    def __init__(self) -> None:
        self.started = time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return int((900 - (time.monotonic() - self.started)) * 1000)


class Lambda:
    """The stage functions, as the Lambda service runs them (in this process) and delivers their results."""

    def __init__(self, latency_s: float) -> None:
        sys.path[:0] = [str(FANOUT / "functions" / name) for name in ("plan", "noop", "reduce")]
        import importlib.util

        def load(name: str) -> Any:
            spec = importlib.util.spec_from_file_location(f"bench_{name}", FANOUT / "functions" / name / "app.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.handler

        self.handlers = {"PlanFunction": load("plan"), "NoopFunction": load("noop"), "ReduceFunction": load("reduce")}
        self.latency_s = latency_s
        self.queued: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.invokes = 0
        self._lock = threading.Lock()

    def functions(self) -> frozenset[str]:
        return frozenset(self.handlers) | {"OrchestratorFunction"}

    def invoke_sync(self, function: str, payload: Any) -> Any:
        from fave.invoke.base import InvokeResult

        time.sleep(self.latency_s)
        event = json.loads(bytes(getattr(payload, "data", b"")) or json.dumps(payload))
        return InvokeResult(self.handlers[function](event, None))

    def invoke_async(self, function: str, payload: Any) -> str:
        time.sleep(self.latency_s)
        event = json.loads(bytes(getattr(payload, "data", b"")) or json.dumps(payload))
        with self._lock:
            self.invokes += 1
            if function == "OrchestratorFunction":
                self.steps.append(event)
            else:
                self.queued.append({"function": function, "event": event})
        return "bench"

    def close(self) -> None:
        """Nothing to release."""

    def run_queued(self) -> list[dict[str, Any]]:
        """Run every queued asynchronous invocation; returns their destination records."""
        with self._lock:
            queued, self.queued = self.queued, []
        records = []
        for call in queued:
            output = self.handlers[call["function"]](call["event"], None)
            records.append(
                {
                    "version": "1.0",
                    "timestamp": "2026-11-26T00:00:00.000Z",
                    "requestContext": {
                        "requestId": "bench",
                        "functionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{call['function']}",
                        "condition": "Success",
                        "approximateInvokeCount": 1,
                    },
                    "requestPayload": call["event"],
                    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
                    "responsePayload": output,
                }
            )
        return records


def sqs_event(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fave-bench-CompletionsQueue",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def batches(
    records: list[dict[str, Any]], arrival: str, gap_s: float, batch_size: int = BATCH_SIZE
) -> list[list[dict[str, Any]]]:
    """How an event source mapping (``batch_size``, BATCH_WINDOW_S) hands out completions that arrive all at
    once (concurrent) or one every ``gap_s`` (serial, virtual time)."""
    if arrival == "concurrent":
        return [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    per_window = max(1, min(batch_size, int(BATCH_WINDOW_S / gap_s) if gap_s > 0 else batch_size))
    return [records[i : i + per_window] for i in range(0, len(records), per_window)]


def run(
    items: int, *, arrival: str, invoke_latency_ms: float, s3_latency_ms: float, gap_ms: float, batch_size: int
) -> dict[str, Any]:
    import boto3
    import fave.app
    from fave.app.observability import logger
    from fave.pricing import billed_ms, prices
    from fave_shared.store import S3Store
    from moto import mock_aws

    logger.setLevel("WARNING")
    price = prices()
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        store = OpCounter(S3Store(client, BUCKET))
        service = Lambda(invoke_latency_ms / 1000)
        settings = fave.app.Settings(store_uri=f"s3://{BUCKET}", pipeline_path=PIPELINE)
        fave.app.configure(
            settings=settings,
            store=store,  # type: ignore[arg-type]
            pipeline=PIPELINE,
            invoker=service,  # type: ignore[arg-type]
            s3_client=client,
            self_invoker=service,  # type: ignore[arg-type]
        )
        invocations: list[dict[str, Any]] = []

        def invoke(event: dict[str, Any]) -> Any:
            before, completions = store.total, len(event.get("Records", []))
            gets_before = store.counts["GET"]
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                result = fave.app.handler(event, Context())
            elapsed = time.perf_counter() - started
            requests = store.total - before
            invocations.append(
                {
                    "seconds": elapsed + requests * s3_latency_ms / 1000,
                    "completions": completions,
                    "gets": store.counts["GET"] - gets_before,
                }
            )
            return result

        try:
            started = time.perf_counter()
            http = json.loads((ROOT / "events" / "http-start.json").read_text())
            http["headers"].pop("idempotency-key", None)
            http["body"] = json.dumps({"video_uri": f"s3://{BUCKET}/inputs/none", "extra": {"items": items}})
            response = invoke(http)
            assert response["statusCode"] == 202, response
            request_id = json.loads(response["body"])["request_id"]
            sqs_requests = 0
            while True:
                while service.steps:
                    invoke(service.steps.pop(0))
                records = service.run_queued()
                if not records:
                    break
                sqs_requests += len(records)  # SendMessage by the Lambda service, one per destination record
                for batch in batches(records, arrival, gap_ms / 1000, batch_size):
                    sqs_requests += 2 * math.ceil(len(batch) / 10)  # ReceiveMessage + DeleteMessageBatch
                    invoke(sqs_event(batch))
            status = fave.app.current().store.get(f"requests/{request_id}/metadata/state.json")
            state = json.loads(status.data)
            wall = time.perf_counter() - started
        finally:
            fave.app.reset()
    assert state["status"] == "COMPLETED", state["status"]
    n_inv = len(invocations)
    billed = sum(billed_ms(i["seconds"]) for i in invocations)
    s3 = dict(store.counts)
    put_like = s3.get("PUT", 0) + s3.get("LIST", 0)
    get_like = s3.get("GET", 0) + s3.get("HEAD", 0)
    lambda_cost = price.lambda_cost(n_inv, billed, ORCHESTRATOR_MEMORY_MB)
    s3_cost = put_like * price.s3_put + get_like * price.s3_get
    sqs_cost = sqs_requests * price.sqs_request
    total = lambda_cost + s3_cost + sqs_cost
    per_k = 1000 / items
    completion_invocations = [i for i in invocations if i["completions"]]
    completions = sum(i["completions"] for i in completion_invocations)
    return {
        "items": items,
        "arrival": arrival,
        "batch_size": batch_size,
        "invoke_latency_ms": invoke_latency_ms,
        "s3_latency_ms": s3_latency_ms,
        "wall_s": round(wall, 2),
        "orchestrator_invocations": n_inv,
        "billed_gb_s": round(billed / 1000 * ORCHESTRATOR_MEMORY_MB / 1024, 3),
        "s3_requests": s3,
        "s3_conflicts": store.conflicts,
        "sqs_requests": sqs_requests,
        "longest_invocation_s": round(max(i["seconds"] for i in invocations), 2),
        "gets_per_completion": round(sum(i["gets"] for i in completion_invocations) / max(completions, 1), 4),
        "max_gets_per_batch": max((i["gets"] for i in completion_invocations), default=0),
        "usd_per_1k_tasks": {
            "fave": round(total * per_k, 6),
            "fave_lambda": round(lambda_cost * per_k, 6),
            "fave_s3": round(s3_cost * per_k, 6),
            "fave_sqs": round(sqs_cost * per_k, 6),
            "step_functions_standard": round(price.step_functions_standard(items + 3) * per_k, 6),
            "distributed_map_express": round(price.distributed_map_express(items, 4) * per_k, 6),
            "lambda_durable_functions": round(price.durable_functions(items + 3) * per_k, 6),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--arrival", choices=["serial", "concurrent"], default="concurrent")
    parser.add_argument("--invoke-latency-ms", type=float, default=20.0)
    parser.add_argument("--s3-latency-ms", type=float, default=20.0)
    parser.add_argument("--arrival-gap-ms", type=float, default=10.0, help="serial: between two completions")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="the event source mapping's (1: a completion per invocation)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.items < 1:
        print("fave: error: --items must be at least 1", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("fave: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    result = run(
        args.items,
        arrival=args.arrival,
        invoke_latency_ms=args.invoke_latency_ms,
        s3_latency_ms=args.s3_latency_ms,
        gap_ms=args.arrival_gap_ms,
        batch_size=args.batch_size,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    usd = result["usd_per_1k_tasks"]
    print(
        f"{result['items']} tasks, {result['arrival']} arrival: {result['orchestrator_invocations']} orchestrator "
        f"invocations, {result['billed_gb_s']} GB-s, S3 {result['s3_requests']} ({result['s3_conflicts']} "
        f"refused), {result['sqs_requests']} SQS requests, {result['gets_per_completion']} GETs/completion, "
        f"longest invocation {result['longest_invocation_s']} s"
    )
    print(
        f"$ per 1,000 tasks: fave {usd['fave']:.6f} (Lambda {usd['fave_lambda']:.6f}, S3 {usd['fave_s3']:.6f}, "
        f"SQS {usd['fave_sqs']:.6f}) | Step Functions Standard {usd['step_functions_standard']:.6f} | "
        f"Distributed Map + Express {usd['distributed_map_express']:.6f} | "
        f"Lambda durable functions {usd['lambda_durable_functions']:.6f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
