"""The video pipeline with every function under its own role (the iam tier; ``--tier iam`` only, which is
``./dev test``'s second run: the main run skips it).

template.yaml as SAM deploys it, on a moto server with IAM enforcement (``support.iam``): the stack's bucket,
each function's role from the translated template. ``fave.app.handler`` plays the orchestrator function with
its role's credentials (its store, its stage invokes and self-invokes, each authorised by moto), the local
runtime runs the seven stage functions, each process with its own role's credentials; the asynchronous stages'
completions go through CompletionsQueue (sent with the stage's role, received with the orchestrator's) and
reach the orchestrator in SQS batches. The sample is uploaded
to ``uploads/`` with a sidecar, and the upload event starts the request, as on AWS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fave.clock import SystemClock
from fave.keys import final_key
from fave.local.orchestrator import load_local_pipeline
from fave.local.runtime import LocalRuntime
from fave_shared.store import S3Store
from support.app_lambda import DestinationSwitch, OrchestratorLambda
from support.e2e import RUN_TIMEOUT_S, SAMPLE, check_sample_answer
from support.events import s3_upload_event
from support.iam import COMPLETIONS, ORCHESTRATOR, IamServer, IamStack, deploy_template
from support.sam import TEMPLATE
from support.tiers import selected_tier

pytestmark = pytest.mark.e2e

PIPELINE = TEMPLATE.parent / "pipeline.yaml"
QUERY = "find scenes with cars"
UPLOAD = "uploads/scenes20.mp4"


@pytest.fixture(scope="module")
def video_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamStack]:
    """template.yaml deployed on an IAM server of this module's own."""
    if selected_tier(request.config) != "iam":
        pytest.skip("the video pipeline under its own roles runs with --tier iam (./dev test's second run)")
    server = IamServer(tmp_path_factory.mktemp("iam-video"))
    try:
        yield deploy_template(server, TEMPLATE)
    finally:
        server.close()


@pytest.fixture
def orchestrator(video_stack: IamStack, aws_env: None) -> Iterator[OrchestratorLambda]:
    """``fave.app.handler`` as the deployed orchestrator of the video pipeline, the stages on the local runtime."""
    import fave.app

    stack = video_stack
    pipeline = load_local_pipeline(PIPELINE)
    destinations = DestinationSwitch()
    runtime = LocalRuntime(
        TEMPLATE,
        env_overrides=stack.child_env(),
        function_env=stack.function_env(),
        destination_handlers={COMPLETIONS: stack.authorise_destinations(destinations)},
        prewarm=list(dict.fromkeys(pipeline.stages[name].function for name in pipeline.order)),
    )
    lam = OrchestratorLambda(runtime, S3Store(stack.client("s3"), stack.bucket), serial=False)
    destinations.target = lam.receive
    env = stack.orchestrator_env()
    settings = fave.app.Settings.from_env({**env, "FAVE_PIPELINE": str(PIPELINE)})
    assert settings.store_uri == f"s3://{stack.bucket}"
    fave.app.configure(
        settings=settings,
        store=S3Store(stack.client("s3", ORCHESTRATOR), stack.bucket),
        invoker=stack.orchestrator_invoker(runtime),
        self_invoker=stack.self_invoker(lam),
        clock=SystemClock(),
        s3_client=stack.client("s3", ORCHESTRATOR),
    )
    try:
        yield lam
    finally:
        destinations.target = None
        lam.close()
        runtime.close()
        fave.app.reset()


def wait(lam: OrchestratorLambda, request_id: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """``GET /requests/{id}`` (the orchestrator's own reads) every second until the request has ended."""
    deadline = time.monotonic() + timeout
    while True:
        lam.raise_errors()
        doc = lam.status(request_id)
        if doc["status"] in ("COMPLETED", "FAILED", "CANCELLED") or time.monotonic() > deadline:
            return doc
        time.sleep(1.0)


def test_an_upload_runs_the_video_pipeline_with_each_function_under_its_own_role(
    video_stack: IamStack, orchestrator: OrchestratorLambda
) -> None:
    stack, lam = video_stack, orchestrator
    mark = stack.server.mark()
    admin = stack.client("s3")
    admin.put_object(Bucket=stack.bucket, Key=UPLOAD + ".json", Body=json.dumps({"query": QUERY}).encode())
    put = admin.put_object(Bucket=stack.bucket, Key=UPLOAD, Body=Path(SAMPLE).read_bytes())
    event = s3_upload_event(stack.bucket, UPLOAD, etag=put["ETag"], sequencer="0062E9A5F6B4D2A1C9")

    started = lam.invoke(event)["started"]
    assert [s["object"] for s in started] == [f"s3://{stack.bucket}/{UPLOAD}"], started
    request_id = started[0]["request_id"]
    doc = wait(lam, request_id)

    assert doc["status"] == "COMPLETED", doc
    assert all(stage["status"] == "SUCCEEDED" for stage in doc["stages"].values()), doc["stages"]
    final = json.loads(lam.store.get(final_key(request_id)).data)
    check_sample_answer(final, request_id, QUERY)
    assert doc["final"] == final

    assert stack.server.refusals(since=mark) == []
    async_tasks = sum(s["total"] for name, s in doc["stages"].items() if name in ("extract", "transcribe", "detect"))
    # Every completion came through SQS (a retried attempt adds one), in batches of one or more.
    assert lam.sqs_records >= async_tasks > 0 and 0 < lam.sqs_invocations <= lam.sqs_records
    assert lam.dead_letters.empty()
    # Where moto could not decide (a condition), the project's evaluator did: split listing its own clips.
    fallbacks = {(d["principal"].split("/")[1], d["action"], d["allowed"]) for d in stack.server.decisions(since=mark)}
    assert fallbacks == {(stack.roles["SplitFunction"], "s3:ListBucket", True)}, fallbacks
