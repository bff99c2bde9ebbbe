"""LambdaInvoker against a real botocore Lambda client whose HTTP layer is a botocore Stubber.

moto cannot run Lambda handlers here (no Docker), so the Stubber stands in for the service: requests are
built and validated by botocore exactly as for AWS, and responses are parsed by botocore.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from fave.invoke import Invoker, LambdaInvoker
from fave.invoke.aws import MAX_ASYNC_PAYLOAD_BYTES, MAX_SYNC_PAYLOAD_BYTES
from fave.invoke.base import (
    FunctionNotFoundError,
    RetryableInvocationError,
    TerminalInvocationError,
    ThrottledInvocationError,
)
from fave_shared.errors import (
    FaveError,
    InvocationError,
    NotFoundError,
    RetryableError,
    TerminalError,
    ValidationError,
)

NAMES = {"Echo": "fave-EchoFunction-AbC123"}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA"):
        monkeypatch.delenv(name, raising=False)
    # No botocore retries: connection-error tests must fail at once instead of backing off.
    return boto3.client(
        "lambda",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def stubber(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def payload(data: Any) -> StreamingBody:
    raw = json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_invoke_sync_decodes_payload(client: Any, stubber: Stubber) -> None:
    invoker = LambdaInvoker(client, NAMES)
    assert isinstance(invoker, Invoker)
    stubber.add_response(
        "invoke",
        {"StatusCode": 200, "Payload": payload({"ok": True}), "ResponseMetadata": {"RequestId": "req-1"}},
        {"FunctionName": NAMES["Echo"], "InvocationType": "RequestResponse", "Payload": b'{"a":1}'},
    )
    result = invoker.invoke_sync("Echo", {"a": 1})
    assert (result.payload, result.function_error, result.request_id) == ({"ok": True}, None, "req-1")


def test_invoke_sync_reports_function_error(client: Any, stubber: Stubber) -> None:
    error = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}
    stubber.add_response(
        "invoke",
        {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": payload(error)},
        {"FunctionName": NAMES["Echo"], "InvocationType": "RequestResponse", "Payload": b"{}"},
    )
    result = LambdaInvoker(client, NAMES).invoke_sync("Echo", {})
    assert (result.payload, result.function_error, result.ok) == (error, "Unhandled", False)


def test_invoke_async_returns_request_id(client: Any, stubber: Stubber) -> None:
    stubber.add_response(
        "invoke",
        {"StatusCode": 202, "Payload": payload(""), "ResponseMetadata": {"RequestId": "evt-7"}},
        {"FunctionName": NAMES["Echo"], "InvocationType": "Event", "Payload": b'{"n":"\xc3\xa9"}'},
    )
    assert LambdaInvoker(client, NAMES).invoke_async("Echo", {"n": "é"}) == "evt-7"


def test_invoke_async_rejects_unexpected_status(client: Any, stubber: Stubber) -> None:
    stubber.add_response("invoke", {"StatusCode": 200, "ResponseMetadata": {"RequestId": "x"}})
    with pytest.raises(TerminalInvocationError, match="expected 202"):
        LambdaInvoker(client, NAMES).invoke_async("Echo", {})


@pytest.mark.parametrize(
    ("code", "status", "expected", "category"),
    [
        ("TooManyRequestsException", 429, ThrottledInvocationError, RetryableError),
        ("EC2ThrottledException", 502, ThrottledInvocationError, RetryableError),
        ("ServiceException", 500, RetryableInvocationError, RetryableError),
        ("ResourceNotReadyException", 502, RetryableInvocationError, RetryableError),
        ("EC2UnexpectedException", 502, RetryableInvocationError, RetryableError),
        ("SomethingNew", 503, RetryableInvocationError, RetryableError),
        ("ResourceNotFoundException", 404, FunctionNotFoundError, NotFoundError),
        ("KMSAccessDeniedException", 502, TerminalInvocationError, TerminalError),
        ("InvalidParameterValueException", 400, TerminalInvocationError, TerminalError),
        ("AccessDeniedException", 403, TerminalInvocationError, TerminalError),
        ("RequestTooLargeException", 413, ValidationError, TerminalError),
    ],
)
def test_client_errors_are_wrapped(  # noqa: PLR0917 - one parameter per column of the table above
    client: Any,
    stubber: Stubber,
    code: str,
    status: int,
    expected: type[Exception],
    category: type[Exception],
) -> None:
    stubber.add_client_error("invoke", service_error_code=code, http_status_code=status)
    with pytest.raises(expected) as info:
        LambdaInvoker(client, NAMES).invoke_sync("Echo", {})
    assert isinstance(info.value, category)
    assert isinstance(info.value, FaveError)
    assert info.value.retryable is (category is RetryableError)
    assert code in str(info.value)
    if expected is not ValidationError:
        assert isinstance(info.value, InvocationError)


@pytest.mark.parametrize(
    "error",
    [EndpointConnectionError(endpoint_url="https://lambda"), ReadTimeoutError(endpoint_url="https://lambda")],
)
def test_connection_errors_are_retryable(client: Any, error: Exception) -> None:
    def fail(**_: Any) -> None:
        raise error

    client.meta.events.register("before-send.lambda.Invoke", fail)
    with pytest.raises(RetryableInvocationError) as info:
        LambdaInvoker(client, NAMES).invoke_async("Echo", {})
    assert info.value.retryable and info.value.__cause__ is error


def test_oversized_payloads_are_refused_before_sending(client: Any, stubber: Stubber) -> None:
    invoker = LambdaInvoker(client, NAMES)
    with pytest.raises(ValidationError, match="over Lambda's limit"):
        invoker.invoke_sync("Echo", {"x": "a" * MAX_SYNC_PAYLOAD_BYTES})
    with pytest.raises(ValidationError, match="over Lambda's limit"):
        invoker.invoke_async("Echo", {"x": "a" * MAX_ASYNC_PAYLOAD_BYTES})
    with pytest.raises(ValidationError, match="not JSON"):
        invoker.invoke_async("Echo", {"x": float("nan")})
    # Nothing reached the stubbed service (the fixture asserts no response was left unused either).


def test_unknown_logical_id(client: Any) -> None:
    with pytest.raises(FunctionNotFoundError, match="FAVE_FUNCTION_Other"):
        LambdaInvoker(client, NAMES).invoke_sync("Other", {})


def test_from_env_maps_logical_ids_and_creates_the_client_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"FAVE_FUNCTION_Echo": "stack-Echo-1", "FAVE_FUNCTION_": "ignored", "OTHER": "x"}
    invoker = LambdaInvoker.from_env(environ=environ)
    assert invoker.function_names == {"Echo": "stack-Echo-1"}
    assert invoker._client is None  # nothing created yet
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = invoker.client
    config: Any = client.meta.config
    assert client.meta.region_name == "eu-west-1"
    assert config.read_timeout > 900  # longer than Lambda's maximum function timeout
    assert config.retries["total_max_attempts"] == 1
    assert invoker.client is client
    invoker.close()
    invoker.close()


def test_from_env_uses_os_environ_and_an_injected_client(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAVE_FUNCTION_Extract", "fave-Extract-9")
    invoker = LambdaInvoker.from_env(client)
    assert invoker.function_names["Extract"] == "fave-Extract-9"
    assert invoker.client is client
    invoker.close()
    assert invoker.client is client  # an injected client is the caller's to close
