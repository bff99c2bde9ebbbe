"""``OpenFaaSInvoker``: the invoker seam on an OpenFaaS gateway (``FAVE_INVOKER=openfaas``).

* synchronous stages: ``POST {gateway}/function/{name}`` with the stage event as the JSON body; the answer's body
  is the stage's result;
* asynchronous stages: ``POST {gateway}/async-function/{name}`` (202) with ``X-Callback-Url`` set to the
  orchestrator's callback route, ``{callback}/callbacks/{request_id}?stage=&item=&attempt=``, and
  ``X-Call-Id`` set to the task's call id (``call_id``). The gateway's queue worker runs the function and POSTs
  its answer there with ``X-Function-Status`` and the same ``X-Call-Id``; ``fave.app.callbacks`` turns that
  into the destination record Lambda would have sent, so the completion takes the same path
  (``fave.completions``), with the same exactly-once accounting (a duplicate or late callback is an event the
  engine already ignores).

The call id is derived from the task (request, stage, item, attempt) rather than generated: it is "recorded per
task" without a write, any orchestrator process can check a callback against it, and a callback that names
another task than its URL is refused.

A function error is a non-2xx answer whose body is a Lambda-shaped error object (``errorType``,
``errorMessage``, ``stackTrace``): the python3-http handler that ``fave export --format openfaas`` writes answers
so (500) when the stage's handler raises. Any other failure is the gateway's or the network's, mapped like
``LambdaInvoker`` maps botocore's:

* 429 (the gateway's or a function's ``max_inflight`` refusal) → ``ThrottledInvocationError``: it did not run;
* 5xx, a dropped connection, a timeout → ``RetryableInvocationError``;
* 404 → ``FunctionNotFoundError``; 413 → ``ValidationError``; any other 4xx (401: wrong basic-auth) →
  ``TerminalInvocationError``.

Payload limits: the same as Lambda's (6 MB sync, 1 MB async: what the engine already sizes its events for, and
below the gateway's and NATS's default limits), checked before sending.

Configuration (``from_env``): ``GATEWAY_URL`` (or ``OPENFAAS_URL``), basic-auth from ``OPENFAAS_USER`` /
``OPENFAAS_PASSWORD`` or the faas secret files ``/var/openfaas/secrets/basic-auth-user`` / ``-password``,
``FAVE_CALLBACK_URL`` (the orchestrator's HTTP API as the gateway reaches it; needed by asynchronous stages),
``FAVE_CALLBACK_SECRET`` (optional: signs the call ids, so that the callback route takes only real callbacks),
and the function names: the ``stack.yml`` named by ``FAVE_OPENFAAS_STACK`` (each function whose environment sets
``FAVE_LOGICAL_ID``, as ``fave export --format openfaas`` writes it), then ``FAVE_OPENFAAS_<LogicalId>=name``
variables, which win.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import re
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fave_shared.errors import FaveError, ValidationError

from fave.invoke.base import (
    MAX_ASYNC_PAYLOAD_BYTES,
    MAX_SYNC_PAYLOAD_BYTES,
    FunctionNotFoundError,
    InvokeResult,
    RetryableInvocationError,
    TerminalInvocationError,
    ThrottledInvocationError,
    decode_response,
    encode_payload,
)

__all__ = [
    "CALLBACK_PATH",
    "CALLBACK_SECRET_ENV",
    "FUNCTION_ENV_PREFIX",
    "LOGICAL_ID_ENV",
    "SECRETS_DIR",
    "OpenFaaSInvoker",
    "call_id",
    "callback_url",
    "function_name",
    "is_function_error",
    "stack_names",
]

#: ``FAVE_OPENFAAS_ExtractFunction=extract`` maps a logical id to an OpenFaaS function name.
FUNCTION_ENV_PREFIX = "FAVE_OPENFAAS_"
#: The environment variable each function of a generated stack.yml carries: its logical id in template.yaml.
LOGICAL_ID_ENV = "FAVE_LOGICAL_ID"
#: Where faas-netes / faasd mount the gateway's basic-auth secrets.
SECRETS_DIR = Path("/var/openfaas/secrets")
#: Signs the call ids (``call_id``): set it alike for the orchestrator that invokes and the one that is called back.
CALLBACK_SECRET_ENV = "FAVE_CALLBACK_SECRET"
#: The orchestrator's route the gateway's queue worker calls back (``fave.app.api``, ``fave serve``).
CALLBACK_PATH = "/callbacks/{request_id}"

# Longer than any stage's timeout (Lambda's maximum is 900 s): the gateway answers when the function does.
_READ_TIMEOUT_S = 910.0
_CONNECT_TIMEOUT_S = 10.0
_CALL_ID_PREFIX = "fave-"


def function_name(logical_id: str) -> str:
    """The default OpenFaaS name of a logical id: ``WordsFunction`` → ``words``, ``MakeClipsFunction`` →
    ``make-clips`` (a DNS-1123 label, as Kubernetes wants function names)."""
    base = logical_id.removesuffix("Function") or logical_id
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", base)
    name = re.sub(r"[^a-z0-9-]+", "-", words.lower()).strip("-")
    return name[:63] or "function"


def call_id(request_id: str, stage: str, item: int | None, attempt: int, secret: str | None = None) -> str:
    """The ``X-Call-Id`` of a task's asynchronous invocation: derived from the task, so that it needs no record
    and a callback can be checked against the task its URL names. With ``secret`` (``FAVE_CALLBACK_SECRET``, the
    same for the orchestrator's invoker and its callback route) it is an HMAC of the task: only who sent the
    invocation (the gateway holds it) can call back for it."""
    task = f"{request_id}\0{stage}\0{item}\0{attempt}".encode()
    if secret:
        digest = hmac.new(secret.encode(), task, hashlib.sha256).hexdigest()[:32]
    else:
        digest = hashlib.sha256(task).hexdigest()[:32]
    return f"{_CALL_ID_PREFIX}{digest}"


def callback_url(base: str, request_id: str, stage: str, item: int | None, attempt: int) -> str:
    """Where the gateway's queue worker POSTs a task's outcome."""
    query = {"stage": stage, "attempt": str(attempt), **({} if item is None else {"item": str(item)})}
    path = CALLBACK_PATH.format(request_id=urllib.parse.quote(request_id, safe=""))
    return f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"


def is_function_error(body: Any) -> bool:
    """Whether a non-2xx answer's decoded body is a stage function's error (Lambda's error payload shape) rather
    than the gateway's own refusal."""
    return isinstance(body, dict) and isinstance(body.get("errorType"), str) and "errorMessage" in body


def stack_names(path: str | Path) -> dict[str, str]:
    """logical id → function name, from a faas-cli stack.yml whose functions carry ``FAVE_LOGICAL_ID``."""
    from fave.yamlsafe import load_file

    try:
        document = load_file(path)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"FAVE_OPENFAAS_STACK: cannot read {path}: {exc}") from None
    functions = document.get("functions") if isinstance(document, dict) else None
    names: dict[str, str] = {}
    for name, spec in (functions or {}).items():
        env = spec.get("environment") if isinstance(spec, dict) else None
        lid = env.get(LOGICAL_ID_ENV) if isinstance(env, dict) else None
        if isinstance(lid, str) and lid:
            names[lid] = str(name)
    return names


def _secret(env: Mapping[str, str], variable: str, secrets_dir: Path, file: str) -> str | None:
    value = env.get(variable)
    if value:
        return value
    try:
        return (secrets_dir / file).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class OpenFaaSInvoker:
    """Runs functions by logical id through an OpenFaaS gateway. Thread-safe: one HTTP connection per call
    (the gateway is usually a cluster service a hop away; a sync stage holds its call for its whole run)."""

    def __init__(
        self,
        gateway: str,
        function_names: Mapping[str, str],
        *,
        callback: str | None = None,
        user: str | None = None,
        password: str | None = None,
        read_timeout_s: float = _READ_TIMEOUT_S,
        callback_secret: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(gateway)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValidationError(f"GATEWAY_URL: expected http(s)://host[:port], got {gateway!r}")
        self.gateway = gateway.rstrip("/")
        self.function_names = dict(function_names)
        self.callback = callback.rstrip("/") if callback else None
        self.read_timeout_s = read_timeout_s
        self.callback_secret = callback_secret or None
        self._auth = None
        if user and password:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth = f"Basic {token}"
        self._lock = threading.Lock()
        self.calls: dict[str, str] = {}
        """Per ``X-Call-Id`` the gateway answered, the task it runs (``request_id/stage/item/attempt``): this
        process's record of what it sent, for logs and tests (the callback route needs none)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, secrets_dir: Path = SECRETS_DIR) -> OpenFaaSInvoker:
        """From ``GATEWAY_URL`` and the variables the module docs list."""
        env = os.environ if env is None else env
        gateway = env.get("GATEWAY_URL") or env.get("OPENFAAS_URL")
        if not gateway:
            raise ValidationError("FAVE_INVOKER=openfaas needs GATEWAY_URL (the OpenFaaS gateway, http://host:8080)")
        names: dict[str, str] = {}
        stack = env.get("FAVE_OPENFAAS_STACK")
        if stack:
            names.update(stack_names(stack))
        for key, value in env.items():
            if key.startswith(FUNCTION_ENV_PREFIX) and key != "FAVE_OPENFAAS_STACK" and value:
                names[key.removeprefix(FUNCTION_ENV_PREFIX)] = value
        return cls(
            gateway,
            names,
            callback=env.get("FAVE_CALLBACK_URL") or None,
            callback_secret=env.get(CALLBACK_SECRET_ENV) or None,
            user=_secret(env, "OPENFAAS_USER", secrets_dir, "basic-auth-user"),
            password=_secret(env, "OPENFAAS_PASSWORD", secrets_dir, "basic-auth-password"),
        )

    # ---- the Invoker protocol -----------------------------------------------------------------------------

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        """``POST /function/{name}``; a 2xx body is the result, a Lambda-shaped error body a function error."""
        name = self._name(function)
        data = encode_payload(payload, MAX_SYNC_PAYLOAD_BYTES)
        status, headers, body = self._post(function, f"/function/{name}", data, {})
        decoded = decode_response(body)
        request_id = headers.get("x-call-id", "")
        if 200 <= status < 300:
            return InvokeResult(payload=decoded, request_id=request_id)
        if is_function_error(decoded):
            return InvokeResult(payload=decoded, function_error="Unhandled", request_id=request_id)
        raise _http_error(function, name, status, body)

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        """``POST /async-function/{name}`` (202) with the task's callback URL and call id; returns the call id."""
        name = self._name(function)
        data = encode_payload(payload, MAX_ASYNC_PAYLOAD_BYTES)
        if self.callback is None:
            raise TerminalInvocationError(
                f"{function}: an asynchronous stage on OpenFaaS needs FAVE_CALLBACK_URL (this orchestrator's HTTP "
                "API as the gateway reaches it): the gateway POSTs each outcome to its /callbacks/{request_id}"
            )
        task = payload.get("task") if isinstance(payload, dict) else None
        try:
            assert isinstance(task, dict)
            request_id, stage, item, attempt = task["request_id"], task["stage"], task.get("item"), task["attempt"]
        except (AssertionError, KeyError):
            raise ValidationError(f"{function}: an asynchronous invocation's payload must be a stage event") from None
        call = call_id(request_id, stage, item, attempt, self.callback_secret)
        headers = {
            "X-Callback-Url": callback_url(self.callback, request_id, stage, item, attempt),
            "X-Call-Id": call,
        }
        status, answered, body = self._post(function, f"/async-function/{name}", data, headers)
        if status != 202:
            if 200 <= status < 300:
                raise TerminalInvocationError(f"{function} ({name}): async-function answered {status}, expected 202")
            raise _http_error(function, name, status, body)
        returned = answered.get("x-call-id") or call
        with self._lock:
            self.calls[returned] = f"{request_id}/{stage}/{item}/{attempt}"
        return returned

    def functions(self) -> frozenset[str]:
        """The logical ids with a function name (stack.yml, ``FAVE_OPENFAAS_*``)."""
        return frozenset(self.function_names)

    def code_digest(self, function: str) -> str | None:
        """None: the gateway does not say what image a function runs to an invoker, so its tasks are never
        served from the result cache (a stale hit would be wrong; a miss only costs a run)."""
        return None

    def memory_sizes(self) -> dict[str, int]:
        """Unknown (limits are the cluster's): the ledger prices every function at Lambda's default."""
        return {}

    def close(self) -> None:
        """Nothing held between calls. Idempotent."""

    # ---- HTTP ---------------------------------------------------------------------------------------------

    def _name(self, function: str) -> str:
        try:
            return self.function_names[function]
        except KeyError:
            raise FunctionNotFoundError(
                f"no OpenFaaS function for {function!r}: set {FUNCTION_ENV_PREFIX}{function} or FAVE_OPENFAAS_STACK "
                f"(known: {', '.join(sorted(self.function_names)) or 'none'})"
            ) from None

    def _post(
        self, function: str, path: str, data: bytes, extra: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parsed = urllib.parse.urlsplit(self.gateway)
        kind = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        connection = kind(parsed.hostname or "", parsed.port, timeout=_CONNECT_TIMEOUT_S)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **extra}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        try:
            connection.connect()
            if connection.sock is not None:
                connection.sock.settimeout(self.read_timeout_s)
            connection.request("POST", f"{parsed.path.rstrip('/')}{path}", body=data, headers=headers)
            response = connection.getresponse()
            body = response.read()
            answered = {k.lower(): v for k, v in response.getheaders()}
            return response.status, answered, body
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise RetryableInvocationError(f"{function}: connection to the OpenFaaS gateway failed: {exc}") from exc
        finally:
            connection.close()


def _http_error(function: str, name: str, status: int, body: bytes) -> FaveError:
    """The fave error for a gateway answer that is not the function's result (module docs)."""
    text = body[:300].decode("utf-8", errors="replace").strip()
    message = f"{function} ({name}): the OpenFaaS gateway answered {status}: {text or '(no body)'}"
    if status == 429:
        return ThrottledInvocationError(message)
    if status >= 500:
        return RetryableInvocationError(message)
    if status == 404:
        return FunctionNotFoundError(message)
    if status == 413:
        return ValidationError(message)
    return TerminalInvocationError(message)
