"""A local Lambda Invoke API over the local runtime, as ``sam local start-lambda`` serves one.

Functions that call Lambda with boto3 (the orchestrator invoking its stages and itself: ``LambdaInvoker``) reach
the local runtime through it when ``AWS_ENDPOINT_URL_LAMBDA`` points here. One route, Lambda's own:

``POST /2015-03-31/functions/{FunctionName}/invocations`` with the event as the body, and
``X-Amz-Invocation-Type``:

* ``RequestResponse`` (the default): runs the function and answers 200 with its response;
  ``X-Amz-Function-Error: Unhandled`` when the function failed (the body is then Lambda's error payload);
* ``Event``: queues an asynchronous invocation (the runtime's retries and destinations apply) and answers 202;
* ``DryRun``: 204.

``FunctionName`` is a logical id of the template, an alias given in ``names`` (e.g. a template's
``FunctionName``), or an ARN / partial ARN ending in either (``:function:NAME[:QUALIFIER]``). Errors are
Lambda's, as botocore reads them (``x-amzn-ErrorType`` and ``{"Type", "message"}``): an unknown function is a
404 ``ResourceNotFoundException``, a throttled invoke a 429 ``TooManyRequestsException``, a body that is not
JSON a 400 ``InvalidRequestContentException``, a payload over the limit a 413 ``RequestTooLargeException``
and a runtime that is shutting down a 503 ``ServiceException`` (retryable, as on AWS).

No authentication: the signature is not checked (the endpoint listens on the loopback interface).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from fave_shared.errors import ValidationError

from fave.invoke.base import FunctionNotFoundError, Invoker, RetryableInvocationError, TerminalInvocationError
from fave.local.httpserver import BackgroundServer, StartResponse, WsgiApp

__all__ = ["LambdaApi", "resolve_function"]

log = logging.getLogger("fave.local.lambda_api")


_ROUTE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_MAX_BODY_BYTES = 7 * 1024 * 1024  # above Lambda's 6 MB: the runtime's own check names the limit


def resolve_function(name: str, known: Iterable[str], aliases: Mapping[str, str]) -> str | None:
    """The logical id ``name`` means (see the module docs), or None."""
    functions = set(known)
    candidates = [name]
    if ":function:" in name:  # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER] or ACCOUNT:function:NAME
        candidates.append(name.split(":function:", 1)[1].split(":", 1)[0])
    elif ":" in name:  # NAME:QUALIFIER
        candidates.append(name.split(":", 1)[0])
    for candidate in candidates:
        if candidate in functions:
            return candidate
        if candidate in aliases:
            return aliases[candidate]
    return None


class LambdaApi(BackgroundServer):
    """Lambda's Invoke API for ``invoker``'s functions on ``host:port`` (port 0: a free one). Thread-safe.
    ``url`` is what ``AWS_ENDPOINT_URL_LAMBDA`` names."""

    thread_name = "fave-lambda-api"

    def __init__(
        self,
        invoker: Invoker,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        names: Mapping[str, str] | None = None,
        region: str = "us-east-1",
    ) -> None:
        super().__init__(host, port)
        self._invoker = invoker
        self._names = dict(names or {})
        self._region = region

    def _wsgi_app(self) -> WsgiApp:
        return self

    # -- WSGI ---------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = self.answer(environ)
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def answer(self, environ: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """The HTTP answer to one request: status line, headers, body."""
        match = _ROUTE.match(str(environ.get("PATH_INFO", "")))
        if match is None or environ.get("REQUEST_METHOD") != "POST":
            return _error(404, "UnknownOperationException", "only POST /2015-03-31/functions/NAME/invocations")
        name = unquote(match["name"])
        log.debug("invoke %s %s", name, environ.get("HTTP_X_AMZ_INVOCATION_TYPE"))
        function = resolve_function(name, self._invoker.functions(), self._names)
        if function is None:
            return _error(
                404,
                "ResourceNotFoundException",
                f"Function not found: arn:aws:lambda:{self._region}:000000000000:function:{name}",
            )
        kind = str(environ.get("HTTP_X_AMZ_INVOCATION_TYPE") or "RequestResponse")
        body = _read_body(environ)
        if body is None:
            return _error(413, "RequestTooLargeException", "Request must be smaller than 6291456 bytes")
        try:
            payload = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            return _error(400, "InvalidRequestContentException", "Could not parse request body into json")
        try:
            if kind == "Event":
                request_id = self._invoker.invoke_async(function, payload)
                return "202 Accepted", [("x-amzn-RequestId", request_id)], b""
            if kind == "DryRun":
                return "204 No Content", [], b""
            if kind != "RequestResponse":
                return _error(400, "InvalidParameterValueException", f"unknown X-Amz-Invocation-Type {kind!r}")
            with self.in_flight():
                result = self._invoker.invoke_sync(function, payload)
        except FunctionNotFoundError as exc:
            return _error(404, "ResourceNotFoundException", str(exc))
        except RetryableInvocationError as exc:
            return _error(429, "TooManyRequestsException", str(exc))
        except TerminalInvocationError as exc:  # the runtime is closing: the caller may try again later
            return _error(503, "ServiceException", str(exc))
        except ValidationError as exc:  # over the payload limit
            return _error(413, "RequestTooLargeException", str(exc))
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", result.request_id),
            ("X-Amz-Executed-Version", "$LATEST"),
        ]
        if result.function_error:
            headers.append(("X-Amz-Function-Error", result.function_error))
        return "200 OK", headers, json.dumps(result.payload).encode()


def _read_body(environ: Mapping[str, Any]) -> bytes | None:
    """The request body, or None when it is over the limit."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > _MAX_BODY_BYTES:
        return None
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    if length:
        data: bytes = stream.read(length)
    elif environ.get("wsgi.input_terminated") or str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower() == "chunked":
        data = stream.read(_MAX_BODY_BYTES + 1)  # a chunked body: the server ends the stream
    else:
        data = b""  # no length, not chunked: no body (reading would wait for the client's next request)
    return None if len(data) > _MAX_BODY_BYTES else data


_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def _error(status: int, code: str, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    body = json.dumps({"Type": "User", "message": message}).encode()
    return f"{status} {_REASONS[status]}", [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)], body
