"""``fave bench api`` (run as a script: the ``fave`` command never imports the Lambda entry points): how long
``POST /requests`` takes to answer through the real Lambda entry point.

    python benchmarks/api/post_latency.py [--requests N] [--json]


The handler (``fave.app.handler``) runs in this process on in-process moto S3 with the video pipeline: it
validates the body, claims the idempotency key, records the request (INIT) and kicks its first step (the kick
is recorded, not run: the answer must never wait for a stage). Reported: latency percentiles, store requests
per POST, and as a baseline in the same run, one plain ``PutObject`` of a small object on the same moto (the
answer costs a handful of those, whatever the pipeline).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "fave-bench-api"


class _Kicks:
    """The orchestrator's self-invoker, recording kicks instead of running them."""

    def __init__(self) -> None:
        self.kicks = 0

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        self.kicks += 1
        return f"kick-{self.kicks}"

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> Any:
        raise AssertionError("not used")

    def functions(self) -> frozenset[str]:
        from fave.local.template import template_functions

        return template_functions(ROOT / "template.yaml")

    def close(self) -> None:
        """Nothing to release."""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def api_start(requests: int) -> dict[str, Any]:
    import boto3
    import fave.app
    from fave.app.observability import logger
    from fave_shared.store import CountingStore, S3Store
    from moto import mock_aws

    logger.setLevel("WARNING")  # one log line and one EMF document per POST would drown the figures
    event = json.loads((ROOT / "events" / "http-start.json").read_text())
    event["headers"].pop("idempotency-key", None)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        store = CountingStore(S3Store(client, BUCKET))
        kicks = _Kicks()
        settings = fave.app.Settings(store_uri=f"s3://{BUCKET}", pipeline_path=ROOT / "pipeline.yaml")
        fave.app.configure(
            settings=settings,
            store=store,
            pipeline=ROOT / "pipeline.yaml",
            invoker=kicks,
            s3_client=client,
            self_invoker=kicks,
        )
        try:
            latencies = []
            for i in range(requests + 1):
                body = {"video_uri": f"s3://{BUCKET}/inputs/video-{i}.mp4", "query": "find scenes with cars"}
                event["body"] = json.dumps(body)
                before = store.stats.requests
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    response = fave.app.handler(json.loads(json.dumps(event)), None)
                elapsed = time.perf_counter() - started
                if response["statusCode"] != 202:
                    raise RuntimeError(f"POST /requests answered {response['statusCode']}: {response['body']}")
                if i:  # the first call pays the imports and the pipeline load: a cold start, reported apart
                    latencies.append(elapsed)
                else:
                    cold = elapsed
                store_requests = store.stats.requests - before
            puts = []
            for i in range(requests):
                started = time.perf_counter()
                client.put_object(Bucket=BUCKET, Key=f"baseline/{i}.json", Body=b"{}")
                puts.append(time.perf_counter() - started)
        finally:
            fave.app.reset()
    return {
        "requests": requests,
        "cold_s": round(cold, 4),
        "p50_s": round(statistics.median(latencies), 4),
        "p95_s": round(_percentile(latencies, 0.95), 4),
        "max_s": round(max(latencies), 4),
        "store_requests_per_post": store_requests,
        "kicks": kicks.kicks,
        "baseline_put_p50_s": round(statistics.median(puts), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = api_start(args.requests)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"POST /requests through fave.app.handler on in-process moto, {result['requests']} requests:")
    p50, p95, top = (result[k] * 1000 for k in ("p50_s", "p95_s", "max_s"))
    print(f"  p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {top:.1f} ms", end="")
    print(f" (first call, with imports and the pipeline load: {result['cold_s'] * 1000:.0f} ms)")
    print(f"  {result['store_requests_per_post']} store requests per POST; {result['kicks']} first steps kicked")
    print(f"  baseline: one PutObject on the same moto, p50 {result['baseline_put_p50_s'] * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
