"""``fave serve``: the stack of a SAM template on this machine, checked from outside as a client sees it.

Nothing is mocked: ``fave serve`` runs as a subprocess on the demo pipeline (tests/fixtures/demo), the real
``fave.app.handler`` runs in the local runtime's worker processes, and requests arrive over HTTP (urllib) and
through the local S3 endpoint (boto3). The unit-ish tests at the end run the gateway and the Lambda API
in-process on a tiny template of thread-isolated functions.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fave.local.gateway import (
    DEFAULT_ROUTES,
    OPENFAAS_ONLY_ROUTES,
    Gateway,
    Route,
    http_event,
    http_response,
    routes_of,
)
from fave.local.lambda_api import LambdaApi
from fave.local.runtime import LocalRuntime
from fave.local.template import load_template
from support.e2e import ROOT, fave, wait_for
from support.served import BUCKET, TERMINAL, Served, serve

DEMO = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("serve")
    running = serve(DEMO, base / "store", base / "logs", "--tick", "1")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def demo_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"video_uri": f"s3://{BUCKET}/inputs/a.mp4", "extra": {"text": text, **extra}}


def shouted(text: str) -> str:
    return " ".join(w.upper() + "!" for w in text.split())


# ---- through the HTTP API and the S3 endpoint ------------------------------------------------------------


def test_post_then_get_until_completed(served: Served) -> None:
    assert "IAM auth: off (local)" in served.banner
    code, doc = served.call("POST", "/requests", demo_body("hello local world"))
    assert code == 202, doc
    assert doc["status"] == "INIT"
    assert doc["status_url"] == f"{served.api}/requests/{doc['request_id']}"  # http locally, as the client called
    final = served.wait(doc["request_id"])
    assert final["status"] == "COMPLETED", final
    assert final["final"]["text"] == shouted("hello local world")


def test_api_errors_are_api_gateway_and_handler_answers(served: Served) -> None:
    assert served.call("GET", "/nowhere") == (404, {"message": "Not Found"})
    assert served.call("DELETE", "/requests") == (404, {"message": "Not Found"})
    code, doc = served.call("POST", "/requests", {"video_uri": "s3://another-bucket/inputs/a.mp4"})
    assert code == 400, doc
    assert "video_uri" in json.dumps(doc)
    code, doc = served.call("GET", "/requests/01M8CK6EGTHSEK3X9Y010RNGE0")
    assert code == 404, doc


def test_upload_with_sidecar_starts_a_request(served: Served) -> None:
    client = served.s3_client()
    sidecar = json.dumps({"extra": {"text": "uploaded words"}}).encode()
    client.put_object(Bucket=BUCKET, Key="uploads/notes.txt.json", Body=sidecar)
    client.put_object(Bucket=BUCKET, Key="uploads/notes.txt", Body=b"anything")

    def started() -> str | None:
        listed = fave("list", "--json", "--store", str(served.store), timeout=30)
        assert listed.code == 0, listed.describe()
        for row in listed.json:
            if str(row.get("video_uri", "")).endswith("/uploads/notes.txt"):
                return str(row["request_id"])
        return None

    request_id = wait_for(started, timeout=20, interval=0.2, what="the upload's request")
    doc = served.wait(request_id)
    assert doc["status"] == "COMPLETED", doc
    assert doc["final"]["text"] == shouted("uploaded words")
    # The bucket is written through to the store folder: fave status reads the same request there.
    assert (served.store / "uploads" / "notes.txt").read_bytes() == b"anything"
    status = fave("status", request_id, "--json", "--store", str(served.store), timeout=30)
    assert status.json["status"] == "COMPLETED"


def test_sigterm_stops_promptly_and_the_next_start_finishes_the_request(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = serve(DEMO, store, tmp_path / "logs1", "--tick", "1")
    # A first stage that sleeps: the request is still running when the signal arrives.
    code, doc = first.call("POST", "/requests", demo_body("one two three", words_sleep_s=1.5))
    assert code == 202, doc
    request_id = doc["request_id"]
    # And an upload just before the signal: S3 accepted it, so its event is delivered before the stop.
    client = first.s3_client()
    client.put_object(Bucket=BUCKET, Key="uploads/late.txt.json", Body=b'{"extra": {"text": "late upload"}}')
    client.put_object(Bucket=BUCKET, Key="uploads/late.txt", Body=b"x")
    started = time.monotonic()
    assert first.stop() == 0, first.stderr()
    assert time.monotonic() - started < 15
    interrupted = fave("status", request_id, "--json", "--store", str(store), timeout=30).json
    assert interrupted["status"] not in TERMINAL, interrupted
    listed = fave("list", "--json", "--store", str(store), timeout=30).json
    (late,) = [row["request_id"] for row in listed if str(row.get("video_uri", "")).endswith("/uploads/late.txt")]

    second = serve(DEMO, store, tmp_path / "logs2", "--tick", "1")
    try:
        if interrupted["status"] == "RUNNING":  # resumed at start (a request still in INIT gets the first tick)
            assert request_id in second.banner
        doc = second.wait(request_id, timeout=45)
        assert doc["status"] == "COMPLETED", doc
        assert doc["final"]["text"] == shouted("one two three")
        doc = second.wait(late, timeout=45)
        assert doc["status"] == "COMPLETED", doc
        assert doc["final"]["text"] == shouted("late upload")
    finally:
        assert second.stop() == 0, second.stderr()


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = fave("serve", "--pipeline", str(DEMO), "--store", str(tmp_path), "--s3-port", str(port), timeout=60)
    assert result.code == 2, result.describe()
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"--s3-port {port}" in result.stderr


# ---- the pieces, in-process ---------------------------------------------------------------------------------


def test_default_routes_are_template_yaml_routes() -> None:
    # OPENFAAS_ONLY_ROUTES (the OpenFaaS callback) stay out of the AWS template: see the constant.
    expected = tuple(r for r in DEFAULT_ROUTES if r not in OPENFAAS_ONLY_ROUTES)
    assert routes_of(load_template(ROOT / "template.yaml"), "OrchestratorFunction") == expected


def test_http_event_is_api_gateway_payload_2() -> None:
    route = Route("GET", "/requests/{id}/stages/{stage}")
    params = route.match("GET", "/requests/R1/stages/sh%20out")
    assert params == {"id": "R1", "stage": "sh out"}
    event = http_event(
        route,
        params,
        method="GET",
        raw_path="/requests/R1/stages/sh%20out",
        raw_query="limit=5&failed=true&limit=6",
        headers=[
            ("Host", "localhost:3000"),
            ("User-Agent", "curl/8"),
            ("X-A", "1"),
            ("x-a", "2"),
            ("Cookie", "a=1; b=2"),
        ],
        now=1_700_000_000.5,
    )
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /requests/{id}/stages/{stage}"
    assert event["rawPath"] == "/requests/R1/stages/sh%20out"
    assert event["rawQueryString"] == "limit=5&failed=true&limit=6"
    assert event["queryStringParameters"] == {"limit": "5,6", "failed": "true"}
    assert event["pathParameters"] == params
    assert event["headers"]["x-a"] == "1,2" and "cookie" not in event["headers"]
    assert event["cookies"] == ["a=1", "b=2"]
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/requests/R1/stages/sh out",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "curl/8",
    }
    assert context["stage"] == "$default" and context["routeKey"] == event["routeKey"]
    assert context["timeEpoch"] == 1_700_000_000_500
    assert event["isBase64Encoded"] is False and "body" not in event
    binary = http_event(
        Route("POST", "/x"), {}, method="POST", raw_path="/x", headers=[("content-type", "image/png")], body=b"\x89P"
    )
    assert binary["isBase64Encoded"] is True and binary["body"] == "iVA="


FUNCTIONS = """\
import time


def ok(event, context):
    if isinstance(event, dict) and event.get("rawPath") == "/slow":
        time.sleep(2)
    return {"statusCode": 201, "headers": {"X-Seen": str(event.get("routeKey"))}, "body": "made"}


def boom(event, context):
    raise RuntimeError("boom")
"""


@pytest.fixture
def tiny_runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(FUNCTIONS)
    (tmp_path / "template.yaml").write_text(
        textwrap.dedent(f"""\
            Transform: AWS::Serverless-2016-10-31
            Resources:
              OkFunction:
                Type: AWS::Serverless::Function
                Metadata: {{FaveLocal: {{Isolation: thread}}}}
                Properties: {{CodeUri: {code}, Handler: app.ok, Runtime: python3.12}}
              BoomFunction:
                Type: AWS::Serverless::Function
                Metadata: {{FaveLocal: {{Isolation: thread}}}}
                Properties: {{CodeUri: {code}, Handler: app.boom, Runtime: python3.12}}
            """)
    )
    with LocalRuntime(tmp_path / "template.yaml") as runtime:
        yield runtime


def test_lambda_api_answers_as_lambda(tiny_runtime: LocalRuntime) -> None:
    import boto3
    from botocore.exceptions import ClientError

    with LambdaApi(tiny_runtime) as api:
        client = boto3.client(
            "lambda", endpoint_url=api.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
        )
        answer = client.invoke(FunctionName="OkFunction", Payload=b'{"routeKey": "r"}')
        assert answer["StatusCode"] == 200 and "FunctionError" not in answer
        assert json.loads(answer["Payload"].read())["statusCode"] == 201
        failed = client.invoke(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:BoomFunction")
        assert failed["FunctionError"] == "Unhandled"
        assert json.loads(failed["Payload"].read())["errorMessage"] == "boom"
        assert client.invoke(FunctionName="OkFunction", InvocationType="Event")["StatusCode"] == 202
        with pytest.raises(ClientError) as raised:
            client.invoke(FunctionName="NoSuchFunction", Payload=b"{}")
        assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_gateway_limits(tiny_runtime: LocalRuntime) -> None:
    routes = [Route("POST", "/fast"), Route("GET", "/slow")]
    with Gateway(tiny_runtime, "OkFunction", routes, integration_timeout_s=0.5, max_body_bytes=100) as gateway:
        request = urllib.request.Request(gateway.url + "/fast", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert (response.status, response.read(), response.headers["X-Seen"]) == (201, b"made", "POST /fast")
        too_big = urllib.request.Request(gateway.url + "/fast", data=b"x" * 101, method="POST")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(too_big, timeout=10)
        assert raised.value.code == 413
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(gateway.url + "/slow", timeout=10)
        assert (raised.value.code, json.loads(raised.value.read())) == (503, {"message": "Service Unavailable"})
    assert http_response(tiny_runtime.invoke_sync("BoomFunction", {}))[:1] == (500,)


def test_local_bucket_mirrors_its_writes_and_notifies_uploads(tmp_path: Path) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from fave.local.s3bucket import LocalBucket
    from fave_shared.store import LocalStore

    events: list[dict[str, Any]] = []
    folder = LocalStore(tmp_path / "bucket")
    with LocalBucket("mirrored", mirror=folder, upload_prefix="uploads/", notify=events.append) as bucket:
        client = boto3.client(
            "s3", endpoint_url=bucket.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
        )
        client.put_object(Bucket="mirrored", Key="uploads/a b(1).txt", Body=b"one")
        client.put_object(Bucket="mirrored", Key="requests/r/state.json", Body=b"{}")
        (tmp_path / "big.bin").write_bytes(b"z" * (6 * 1024 * 1024))  # outside the mirror folder
        multipart = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
        client.upload_file(str(tmp_path / "big.bin"), "mirrored", "uploads/big.bin", Config=multipart)
        client.delete_objects(Bucket="mirrored", Delete={"Objects": [{"Key": "requests/r/state.json"}]})
    records = [event["Records"][0] for event in events]
    assert [r["eventName"] for r in records] == ["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload"]
    assert records[0]["s3"]["object"]["key"] == "uploads/a+b%281%29.txt"  # URL-encoded, as S3 sends it
    assert records[0]["s3"]["object"]["size"] == 3 and records[0]["s3"]["bucket"]["name"] == "mirrored"
    assert records[0]["s3"]["object"]["sequencer"] < records[1]["s3"]["object"]["sequencer"]
    assert sorted(folder.list("")) == ["uploads/a b(1).txt", "uploads/big.bin"]
    with LocalBucket("mirrored", mirror=folder) as again:  # a restart loads the folder back
        assert again.loaded == 2
        client = boto3.client(
            "s3", endpoint_url=again.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
        )
        assert client.get_object(Bucket="mirrored", Key="uploads/a b(1).txt")["Body"].read() == b"one"
