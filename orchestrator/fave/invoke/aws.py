"""``LambdaInvoker``: the invoker seam on AWS Lambda, through an injected boto3 Lambda client.

Logical ids (template.yaml) map to deployed function names, normally from ``FAVE_FUNCTION_<LogicalId>``
environment variables set by the stack (``from_env``). botocore failures are wrapped into fave errors:

* throttling (429 ``TooManyRequestsException``, ``EC2ThrottledException``) → ``ThrottledInvocationError``: the
  invocation did not run, and the orchestrator re-queues the task without spending an attempt;
* 5xx that are not configuration problems, dropped connections and timeouts → ``RetryableInvocationError`` (a
  ``RetryableError``);
* no AWS credentials (or only part of them) → ``TerminalInvocationError`` saying so: the orchestrator fails the
  task at once (``invocation_is_terminal``), never spends its retries on a call that cannot be signed;
* ``ResourceNotFoundException`` → ``FunctionNotFoundError`` (a ``NotFoundError``);
* a payload Lambda refuses (too large, not JSON) → ``ValidationError``; anything else →
  ``TerminalInvocationError``.

Payload size limits are checked before sending (``MAX_SYNC_PAYLOAD_BYTES``, ``MAX_ASYNC_PAYLOAD_BYTES``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError, PartialCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
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

if TYPE_CHECKING:
    from types_boto3_lambda.client import LambdaClient

__all__ = [
    "FUNCTION_ENV_PREFIX",
    "MAX_ASYNC_PAYLOAD_BYTES",
    "MAX_SYNC_PAYLOAD_BYTES",
    "LambdaInvoker",
    "wrap_lambda_error",
]

#: ``FAVE_FUNCTION_ExtractFunction=my-stack-ExtractFunction-AbC123`` maps a logical id to a function name.
FUNCTION_ENV_PREFIX = "FAVE_FUNCTION_"

_log = logging.getLogger(__name__)

# Longer than Lambda's 900 s maximum timeout: botocore's default 60 s read timeout would abandon (and, with
# retries on, re-send) a synchronous invocation that is still running.
_READ_TIMEOUT_S = 910

# The function (or the account) is at its concurrency or rate limit: the invocation did not run. The engine
# re-queues the task without spending an attempt and lowers the stage's in-flight cap (TaskThrottled).
_THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling", "EC2ThrottledException"})
_RETRYABLE_CODES = frozenset(
    {
        "ServiceException",
        "ResourceNotReadyException",
        "ResourceConflictException",  # the function is being updated
        "EC2UnexpectedException",
        "ENILimitReachedException",
        "SubnetIPAddressLimitReachedException",
        "EFSIOException",
        "EFSMountConnectivityException",
        "EFSMountTimeoutException",
        "SnapStartNotReadyException",
        "SnapStartTimeoutException",
    }
)
# 502s that describe the function's configuration: retrying the same call cannot help.
_TERMINAL_5XX_PREFIXES = ("KMS", "Invalid", "EC2AccessDenied")
_VALIDATION_CODES = frozenset(
    {"RequestTooLargeException", "InvalidRequestContentException", "UnsupportedMediaTypeException"}
)


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value >= 0 else default


class LambdaInvoker:
    """An ``Invoker`` backed by AWS Lambda. Thread-safe (boto3 clients are)."""

    def __init__(self, client: LambdaClient | None, function_names: Mapping[str, str]) -> None:
        """``client``: a boto3 ``lambda`` client (None: created on first use with ``default_client``).
        ``function_names``: logical id → function name or ARN.
        """
        self._client = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        self.function_names = dict(function_names)
        self.code_digest_ttl_s = _seconds(os.environ.get("FAVE_CODE_DIGEST_TTL"), 30.0)
        self._digests: dict[str, tuple[float, str | None]] = {}
        self._memory: dict[str, int] = {}  # MemorySize per function, from the same GetFunctionConfiguration
        self._digest_lock = threading.Lock()

    @classmethod
    def from_env(cls, client: LambdaClient | None = None, *, environ: Mapping[str, str] | None = None) -> LambdaInvoker:
        """Map logical ids from ``FAVE_FUNCTION_<LogicalId>`` variables (of ``environ``, default
        ``os.environ``). Without a client, one is created on first use (never at import)."""
        env = os.environ if environ is None else environ
        names = {
            key.removeprefix(FUNCTION_ENV_PREFIX): value
            for key, value in env.items()
            if key.startswith(FUNCTION_ENV_PREFIX) and len(key) > len(FUNCTION_ENV_PREFIX) and value
        }
        return cls(client, names)

    @staticmethod
    def default_client() -> LambdaClient:
        """A Lambda client suited to invoking: a read timeout above Lambda's 900 s maximum and no botocore
        retries, so a slow synchronous invocation is never silently sent twice; fave's own retry policy
        acts on the ``RetryableError`` this invoker raises instead."""
        import boto3
        from botocore.config import Config

        config = Config(read_timeout=_READ_TIMEOUT_S, connect_timeout=10, retries={"total_max_attempts": 1})
        return boto3.client("lambda", config=config)

    @property
    def client(self) -> LambdaClient:
        """The boto3 client (created on first use if none was injected)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self.default_client()
        return self._client

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        """``Invoke`` with ``RequestResponse``; the payload is decoded, ``FunctionError`` passed through."""
        name = self._name(function)
        data = encode_payload(payload, MAX_SYNC_PAYLOAD_BYTES)
        try:
            response = self.client.invoke(FunctionName=name, InvocationType="RequestResponse", Payload=data)
            raw = response["Payload"].read()
        except (ClientError, BotoCoreError) as e:
            raise wrap_lambda_error(e, function) from e
        return InvokeResult(
            payload=decode_response(raw),
            function_error=response.get("FunctionError"),
            request_id=response.get("ResponseMetadata", {}).get("RequestId", ""),
        )

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        """``Invoke`` with ``Event`` (expects 202); returns the request id the destination record carries."""
        name = self._name(function)
        data = encode_payload(payload, MAX_ASYNC_PAYLOAD_BYTES)
        try:
            response = self.client.invoke(FunctionName=name, InvocationType="Event", Payload=data)
        except (ClientError, BotoCoreError) as e:
            raise wrap_lambda_error(e, function) from e
        if response["StatusCode"] != 202:
            raise TerminalInvocationError(
                f"{function} ({name}): asynchronous invoke answered {response['StatusCode']}, expected 202"
            )
        return response["ResponseMetadata"]["RequestId"]

    def functions(self) -> frozenset[str]:
        """The logical ids with a deployed name (``FAVE_FUNCTION_*``)."""
        return frozenset(self.function_names)

    def code_digest(self, function: str) -> str | None:
        """What the deployed function runs, for the result cache: sha256 of its ``CodeSha256`` (the zip's or
        the image's digest) and its layers' version ARNs, from ``GetFunctionConfiguration`` (the orchestrator's
        role has ``lambda:GetFunctionConfiguration`` on the stage functions). Remembered for
        ``code_digest_ttl_s`` (``FAVE_CODE_DIGEST_TTL``, default 30 s): a deployment is seen within that time,
        without a control-plane call per task. None (not cached) when Lambda does not answer (denied,
        throttled, unknown function): a task is never failed for its cache key."""
        now = time.monotonic()
        with self._digest_lock:
            known = self._digests.get(function)
        if known is not None and now - known[0] < self.code_digest_ttl_s:
            return known[1]
        try:
            config = self.client.get_function_configuration(FunctionName=self._name(function))
        except (ClientError, BotoCoreError, FaveError) as exc:
            _log.warning("code digest of %s: %s", function, exc)
            with self._digest_lock:  # a refusal is remembered too: not one failing call per step
                self._digests[function] = (now, None)
            return None
        h = hashlib.sha256(b"lambda\0" + str(config.get("CodeSha256", "")).encode())
        for layer in config.get("Layers") or ():
            h.update(b"\0layer\0" + str(layer.get("Arn", "")).encode())
        digest = h.hexdigest()
        with self._digest_lock:
            self._digests[function] = (now, digest)
            if isinstance(config.get("MemorySize"), int):
                self._memory[function] = config["MemorySize"]
        return digest

    def memory_sizes(self) -> dict[str, int]:
        """Each deployed function's MemorySize (what a request's ledger prices its GB-seconds at), read with the
        ``GetFunctionConfiguration`` call ``code_digest`` makes; a function Lambda does not describe (denied,
        throttled) is left out and priced at Lambda's default."""
        for function in sorted(self.function_names):
            with self._digest_lock:
                known = function in self._memory or function in self._digests
            if not known:
                self.code_digest(function)
        with self._digest_lock:
            return dict(self._memory)

    def close(self) -> None:
        """Close the client's connection pool (only if this invoker created the client). Idempotent."""
        with self._client_lock:
            client, self._client = (self._client, None) if self._owns_client else (None, self._client)
        if client is not None:
            client.close()

    def _name(self, function: str) -> str:
        try:
            return self.function_names[function]
        except KeyError:
            raise FunctionNotFoundError(
                f"no deployed function for {function!r}: set {FUNCTION_ENV_PREFIX}{function} "
                f"(known: {', '.join(sorted(self.function_names)) or 'none'})"
            ) from None


def wrap_lambda_error(error: ClientError | BotoCoreError, function: str) -> FaveError:
    """The fave error for a botocore failure of ``Invoke`` (see the module docs for the mapping)."""
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return RetryableInvocationError(f"{function}: connection to Lambda failed: {error}")
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return TerminalInvocationError(
            f"{function}: no AWS credentials to invoke Lambda with ({error}): set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where a role provides them"
        )
    if not isinstance(error, ClientError):
        return TerminalInvocationError(f"{function}: {error}")
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    message = f"{function}: {code or 'error'} ({status}): {error}"
    if code == "ResourceNotFoundException":
        return FunctionNotFoundError(message)
    if code in _VALIDATION_CODES:
        return ValidationError(message)
    if code in _THROTTLE_CODES or status == 429:
        return ThrottledInvocationError(message)
    if code in _RETRYABLE_CODES:
        return RetryableInvocationError(message)
    if status >= 500 and not code.startswith(_TERMINAL_5XX_PREFIXES):
        return RetryableInvocationError(message)
    return TerminalInvocationError(message)
