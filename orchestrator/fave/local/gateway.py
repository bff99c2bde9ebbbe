"""A local API Gateway HTTP API in front of one function: each HTTP request becomes the payload 2.0 event AWS
sends, the function runs in the local runtime, and its response goes back as API Gateway maps it.

``Gateway(runtime, "OrchestratorFunction", routes_of(template, "OrchestratorFunction"))`` serves the routes of
the function's ``HttpApi`` events (``Method`` + ``Path``, ``{name}`` path parameters, ``{name+}`` greedy).
What behaves like API Gateway:

* the event (``http_event``): ``version`` 2.0, ``routeKey``, ``rawPath``, ``rawQueryString``, ``cookies``,
  headers lower-cased (repeated ones joined with ``,``), ``queryStringParameters`` (repeated ones joined with
  ``,``), ``pathParameters``, ``requestContext`` (``http`` method, path, protocol, sourceIp, userAgent;
  ``requestId``, ``routeKey``, ``stage`` ``$default``, ``time``, ``timeEpoch``), ``body`` and
  ``isBase64Encoded`` (a body that is not text is base64-encoded);
* the response (``http_response``): a ``statusCode`` / ``headers`` / ``cookies`` / ``body`` /
  ``isBase64Encoded`` object is used as it is; any other value is a 200 with that value as JSON (payload 2.0's
  inferred format); a function error is a 500 ``{"message":"Internal Server Error"}``;
* limits: no route matches → 404 ``{"message":"Not Found"}``; a body over 10 MB → 413; no answer within the
  integration timeout (30 s) → 503 ``{"message":"Service Unavailable"}``, while the function runs on.

Not emulated: authorizers (IAM auth is off locally), CORS configuration, custom domains and stages other than
``$default``, and the payload 1.0 format. ``fallback`` (a WSGI application) answers every request no route
matches, instead of the 404: ``fave serve`` mounts the web view there.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from fave.invoke.base import Invoker, InvokeResult
from fave.local.httpserver import BackgroundServer, StartResponse, WsgiApp
from fave.local.template import Template

__all__ = [
    "DEFAULT_ROUTES",
    "INTEGRATION_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "OPENFAAS_ONLY_ROUTES",
    "Gateway",
    "Route",
    "http_event",
    "http_response",
    "routes_of",
]

log = logging.getLogger("fave.local.gateway")

Answer = tuple[int, list[tuple[str, str]], bytes]

#: API Gateway's limits: the largest request body, and how long it waits for the integration.
MAX_BODY_BYTES = 10 * 1024 * 1024
INTEGRATION_TIMEOUT_S = 30.0

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded", "+json", "+xml")
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    404: "Not Found",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Route:
    """One route of an HTTP API: ``method`` (``ANY`` matches every method) and ``path`` with ``{params}``."""

    method: str
    path: str

    @property
    def key(self) -> str:
        """The route key API Gateway puts in the event: ``POST /requests``."""
        return f"{self.method} {self.path}"

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        """The path parameters (URL-decoded) when this route takes the request, else None."""
        if self.method not in ("ANY", method):
            return None
        found = _pattern(self.path).match(raw_path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}


#: template.yaml's routes (OrchestratorFunction's HttpApi events), for a template whose orchestrator declares
#: none (the test pipelines' templates): the API fave.app serves. tests/functional/test_serve.py keeps them equal.
DEFAULT_ROUTES = (
    Route("POST", "/requests"),
    Route("GET", "/requests/{id}"),
    Route("GET", "/requests/{id}/stages/{stage}"),
    Route("POST", "/requests/{id}/resume"),
    Route("POST", "/requests/{id}/reset"),
    Route("POST", "/requests/{id}/cancel"),
    Route("POST", "/queue"),
    Route("GET", "/queue"),
    Route("GET", "/openapi.json"),
    Route("GET", "/docs"),
    Route("POST", "/callbacks/{id}"),
)

#: The routes of DEFAULT_ROUTES that template.yaml leaves out: ``POST /callbacks/{id}`` is where an OpenFaaS
#: gateway's queue worker delivers asynchronous outcomes (``FAVE_INVOKER=openfaas``); a deployment on AWS takes
#: them from Lambda destinations instead and is never called back, and template.yaml has no room to spare under
#: its size limit (tests/functional/test_yaml_files.py). ``fave serve`` adds them to the template's own routes.
OPENFAAS_ONLY_ROUTES = (Route("POST", "/callbacks/{id}"),)


def _pattern(path: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\{[^}]+\})", path):
        if piece.startswith("{") and piece.endswith("}"):
            name = piece[1:-1]
            greedy = name.endswith("+")
            parts.append(f"(?P<{name.rstrip('+')}>{'.+' if greedy else '[^/]+'})")
        else:
            parts.append(re.escape(piece))
    return re.compile("^" + "".join(parts) + "$")


def routes_of(template: Template, function: str) -> tuple[Route, ...]:
    """The routes of ``function``'s ``HttpApi`` events in ``template`` (empty if it has none)."""
    resource = template.raw.get("Resources", {}).get(function)
    props = resource.get("Properties") if isinstance(resource, dict) else None
    events = props.get("Events") if isinstance(props, dict) else None
    routes = []
    for event in events.values() if isinstance(events, dict) else ():
        if not isinstance(event, dict) or event.get("Type") != "HttpApi":
            continue
        eprops = event.get("Properties") or {}
        method, path = eprops.get("Method", "ANY"), eprops.get("Path", "/{proxy+}")
        if isinstance(method, str) and isinstance(path, str):
            upper = method.upper()
            routes.append(Route("ANY" if upper in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD") else upper, path))
    return tuple(routes)


def _is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return not kind or kind.startswith(_TEXT_TYPES[0]) or any(t in kind for t in _TEXT_TYPES[1:])


def http_event(
    route: Route,
    path_parameters: Mapping[str, str],
    *,
    method: str,
    raw_path: str,
    raw_query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    source_ip: str = "127.0.0.1",
    protocol: str = "HTTP/1.1",
    request_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The API Gateway HTTP API payload 2.0 event for one request (see the module docs)."""
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        joined[lower] = f"{joined[lower]},{value}" if lower in joined else value
    when = time.time() if now is None else now
    stamp = datetime.fromtimestamp(when, UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": joined.get("host", "localhost"),
        "domainPrefix": joined.get("host", "localhost").split(".", 1)[0].split(":", 1)[0],
        "http": {
            "method": method,
            "path": unquote(raw_path),
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": request_id or base64.b64encode(uuid.uuid4().bytes[:10]).decode(),
        "routeKey": route.key,
        "stage": "$default",
        "time": stamp.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(when * 1000),
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        if _is_text(joined.get("content-type", "")):
            try:
                event["body"], event["isBase64Encoded"] = body.decode("utf-8"), False
            except UnicodeDecodeError:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["isBase64Encoded"] = False
    return event


def _message(status: int, message: str) -> Answer:
    return status, [("Content-Type", "application/json")], json.dumps({"message": message}).encode()


def http_response(result: InvokeResult) -> Answer:
    """What API Gateway answers for the function's result (status, headers, body: see the module docs)."""
    if result.function_error:
        return _message(500, "Internal Server Error")
    payload = result.payload
    if not (isinstance(payload, dict) and "statusCode" in payload):
        return 200, [("Content-Type", "application/json")], json.dumps(payload).encode()
    try:
        status = int(payload["statusCode"])
        headers = [(str(k), str(v)) for k, v in (payload.get("headers") or {}).items()]
        headers += [("Set-Cookie", str(c)) for c in payload.get("cookies") or ()]
        raw = payload.get("body")
        text = raw if isinstance(raw, str) else "" if raw is None else json.dumps(raw)
        body = base64.b64decode(text) if payload.get("isBase64Encoded") else text.encode()
    except (TypeError, ValueError, AttributeError):  # a malformed response: API Gateway's 500
        return _message(500, "Internal Server Error")
    if not 100 <= status <= 599:
        return _message(500, "Internal Server Error")
    return status, headers, body


class Gateway(BackgroundServer):
    """An HTTP API on ``host:port`` (port 0: a free one) invoking ``function`` (see the module docs)."""

    thread_name = "fave-gateway"

    def __init__(
        self,
        invoker: Invoker,
        function: str,
        routes: Sequence[Route],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fallback: WsgiApp | None = None,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        super().__init__(host, port)
        self._invoker = invoker
        self.function = function
        self.routes = tuple(routes)
        self._fallback = fallback
        self._timeout = integration_timeout_s
        self._max_body = max_body_bytes

    def _wsgi_app(self) -> WsgiApp:
        return self

    # -- WSGI ---------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        raw_uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
        raw_path = raw_uri.split("?", 1)[0] if raw_uri.startswith("/") else _quote_path(environ)
        for route in self.routes:
            params = route.match(method, raw_path)
            if params is not None:
                status, headers, body = self._integrate(environ, route, params, method, raw_path)
                break
        else:
            if self._fallback is not None:
                return self._fallback(environ, start_response)
            status, headers, body = _message(404, "Not Found")
        if method == "HEAD":
            body = b""
        names = {name.lower() for name, _ in headers}
        if "content-length" not in names:
            headers = [*headers, ("Content-Length", str(len(body)))]
        start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
        return [body]

    def _integrate(
        self, environ: Mapping[str, Any], route: Route, params: dict[str, str], method: str, raw_path: str
    ) -> Answer:
        body = _read_body(environ, self._max_body)
        if body is None:
            return _message(413, "Request Entity Too Large")
        event = http_event(
            route,
            params,
            method=method,
            raw_path=raw_path,
            raw_query=str(environ.get("QUERY_STRING", "")),
            headers=[
                *_headers(environ),
                # What API Gateway adds: the caller's address, and the port and scheme it was reached on.
                ("x-forwarded-for", str(environ.get("REMOTE_ADDR") or "127.0.0.1")),
                ("x-forwarded-port", str(environ.get("SERVER_PORT") or "")),
                ("x-forwarded-proto", str(environ.get("wsgi.url_scheme") or "http")),
            ],
            body=body,
            source_ip=str(environ.get("REMOTE_ADDR") or "127.0.0.1"),
            protocol=str(environ.get("SERVER_PROTOCOL") or "HTTP/1.1"),
        )
        done = threading.Event()
        outcome: list[InvokeResult | BaseException] = []

        def invoke() -> None:
            try:
                outcome.append(self._invoker.invoke_sync(self.function, event))
            except Exception as exc:
                outcome.append(exc)
            finally:
                done.set()
                self.call_ended()

        self.call_started()  # ended by the invoking thread: a stop waits for the function, not for the 503
        # Its own thread: when API Gateway gives up after the integration timeout, the function runs on.
        threading.Thread(target=invoke, name="fave-gateway-invoke", daemon=True).start()
        if not done.wait(self._timeout):
            log.warning("%s %s: no answer within %.0f s: 503 (the function runs on)", method, raw_path, self._timeout)
            return _message(503, "Service Unavailable")
        result = outcome[0]
        if isinstance(result, BaseException):
            log.error("%s %s: %s could not be invoked: %s", method, raw_path, self.function, result)
            return _message(500, "Internal Server Error")
        return http_response(result)


def _quote_path(environ: Mapping[str, Any]) -> str:
    from urllib.parse import quote

    path = str(environ.get("PATH_INFO", "/")).encode("latin-1", "replace")
    return quote(path, safe="/:@!$&'()*+,;=-._~")


def _headers(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), str(value)))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.replace("_", "-").lower(), str(value)))
    return headers


def _read_body(environ: Mapping[str, Any], limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    if length > limit:
        _drain(stream, length)  # so the client, still sending, reads the 413 instead of a reset connection
        return None
    if stream is None:
        return b""
    if length:
        data: bytes = stream.read(length)
    elif environ.get("wsgi.input_terminated") or environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        data = stream.read(limit + 1)
    else:
        data = b""
    return None if len(data) > limit else data


_DRAIN_AT_MOST = 64 * 1024 * 1024


def _drain(stream: Any, length: int) -> None:
    left = min(length, _DRAIN_AT_MOST)
    while stream is not None and left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            return
        left -= len(chunk)
