"""``S3Store``: the object store on an S3 bucket (or an emulator speaking the S3 API).

Conditional writes map onto S3's own: ``if_none_match=True`` sends ``IfNoneMatch: *`` and ``if_match=ETAG``
sends ``IfMatch: ETAG``, so compare-and-swap is as atomic as S3 makes it. Every botocore failure is
translated into the project's error hierarchy by ``translate_error`` (and chained).

Importing this module does not import boto3: a store opened with ``s3_client=None`` creates its client on
first use, so the local runtime never pays for boto3 and tests can set up the environment (credentials,
``AWS_ENDPOINT_URL_S3``) after constructing the store.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fave_shared.errors import (
    ConflictError,
    FaveError,
    NotFoundError,
    RetryableError,
    TerminalError,
    ValidationError,
)
from fave_shared.store.base import Blob
from fave_shared.store.keys import validate_key, validate_prefix

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import PutObjectRequestTypeDef

__all__ = ["S3Store", "default_s3_client", "translate_error", "validate_bucket"]

# Lenient on purpose (legacy us-east-1 buckets allow upper case and "_"): only reject what could change the
# meaning of a URI or a request path.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")

# S3 answers a lost conditional write with 412 PreconditionFailed, or with 409 ConditionalRequestConflict
# when two conditional writes race inside S3; both mean "re-read and re-decide".
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# HEAD responses have no body, so botocore reports their 404 as code "404" (or "NotFound").
# NoSuchBucket is deliberately absent: a missing bucket is a configuration error, never "no such object".
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",  # "a conflicting conditional operation is in progress; try again"
        "PriorRequestNotComplete",
    }
)
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if it can be a bucket name, else raise ``ValidationError``."""
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
        raise ValidationError(f"invalid S3 bucket name {bucket!r}")
    return bucket


def default_s3_client() -> S3Client:
    """A new S3 client from the environment (credentials, region, ``AWS_ENDPOINT_URL_S3``).

    A pool large enough for a fan-out's worth of threads (botocore's default of 10 makes threads queue
    and log "connection pool is full"), and botocore's "standard" retry mode (throttling and 5xx retried
    with backoff) as AWS recommends.
    """
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5})
    # A private session: boto3's default session is not thread-safe to create clients from.
    return boto3.session.Session().client("s3", config=config)


def translate_error(error: Exception, op: str, bucket: str, key: str) -> FaveError:
    """Map a botocore exception raised by ``op`` on ``s3://bucket/key`` to the fave error hierarchy.

    412 / 409 ConditionalRequestConflict → ``ConflictError``; NoSuchKey / 404 → ``NotFoundError``;
    throttling, 429/5xx and connection failures → ``RetryableError``; anything else → ``TerminalError``.
    The caller raises the result ``from error``.
    """
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    where = f"s3://{bucket}/{key}"
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = " ".join(str(details.get("Message", "")).split())  # one line, whatever S3 sent
        message = f"S3 {op} {where} failed: {code or status} (HTTP {status}) {reason}".rstrip()
        if code in _CONFLICT_CODES or status == 412:
            return ConflictError(message)
        if code in _NOT_FOUND_CODES:
            return NotFoundError(message)
        if code in _RETRYABLE_CODES or status in _RETRYABLE_STATUS:
            return RetryableError(message)
        return TerminalError(message)
    # Connection refused/reset, timeouts, truncated bodies: the request may well succeed next time.
    if isinstance(error, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return RetryableError(f"S3 {op} {where} failed: {type(error).__name__}: {error}")
    return TerminalError(f"S3 {op} {where} failed: {type(error).__name__}: {error}")


class S3Store:
    """An ``ObjectStore`` on ``s3://bucket/prefix``; thread-safe (boto3 clients are)."""

    def __init__(self, client: S3Client | Any | None, bucket: str, prefix: str = "") -> None:
        """Wrap ``client`` (or create one from the environment on first use if it is None).

        ``prefix`` is a key prefix inside the bucket, normalised to end with ``/`` (``"runs/1"`` stores key
        ``a.json`` at ``runs/1/a.json``); the store never reads, writes or lists outside it.
        """
        self._client: S3Client | None = client
        self._client_lock = threading.Lock()
        self._bucket = validate_bucket(bucket)
        if prefix.startswith("/"):
            raise ValidationError(f"invalid S3 prefix {prefix!r}: starts with '/'")
        stripped = prefix.removesuffix("/")
        self._prefix = validate_key(stripped) + "/" if stripped else ""

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    @property
    def uri(self) -> str:
        """``s3://bucket`` or ``s3://bucket/prefix`` (``open_store(uri)`` reopens this store)."""
        return f"s3://{self._bucket}/{self._prefix.rstrip('/')}" if self._prefix else f"s3://{self._bucket}"

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket: ``""`` or a string ending with ``/``."""
        return self._prefix

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client (created from the environment on first access if none was given)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = default_s3_client()
                client = self._client
        return client

    # -- ObjectStore -----------------------------------------------------------------------------------

    def get(self, key: str) -> Blob:
        """Read an object. Raises ``NotFoundError`` if it does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full_key(key)
        try:
            response = self.client.get_object(Bucket=self._bucket, Key=full)
            body = response["Body"]
            try:
                data = body.read()  # the body streams: connection errors can surface here too
            finally:
                body.close()
        except (ClientError, BotoCoreError) as e:
            raise translate_error(e, "get", self._bucket, full) from e
        return Blob(data, response["ETag"])

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Write an object with one PutObject and return its etag.

        ``if_none_match=True``: create only (``ConflictError`` if it exists). ``if_match=ETAG``: replace only
        if the current etag is ETAG (``ConflictError`` if it changed, ``NotFoundError`` if it is gone).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full_key(key)
        if if_match is not None and if_none_match:
            raise ValidationError(f"put {key!r}: pass if_match or if_none_match, not both")
        request: PutObjectRequestTypeDef = {
            "Bucket": self._bucket,
            "Key": full,
            "Body": data,
            "ContentType": content_type,
        }
        if if_match is not None:
            request["IfMatch"] = if_match
        elif if_none_match:
            request["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(**request)
        except (ClientError, BotoCoreError) as e:
            raise translate_error(e, "put", self._bucket, full) from e
        return response["ETag"]

    def head(self, key: str) -> str | None:
        """The current etag, or None if the object does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full_key(key)
        try:
            response = self.client.head_object(Bucket=self._bucket, Key=full)
        except (ClientError, BotoCoreError) as e:
            error = translate_error(e, "head", self._bucket, full)
            if isinstance(error, NotFoundError):
                return None
            raise error from e
        return response["ETag"]

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error (S3 answers 204 either way)."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full_key(key)
        try:
            self.client.delete_object(Bucket=self._bucket, Key=full)
        except (ClientError, BotoCoreError) as e:
            error = translate_error(e, "delete", self._bucket, full)
            if not isinstance(error, NotFoundError):
                raise error from e

    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with ``prefix`` (S3's plain string prefix), in lexicographic (UTF-8) order.

        Pages through ListObjectsV2 lazily (1000 keys per request); keys are returned without the store's
        own prefix.
        """
        validate_prefix(prefix)
        return self._list(self._prefix + prefix)

    def link(self, key: str) -> str:
        """The object's ``s3://bucket/key`` URI."""
        return f"s3://{self._bucket}/{self._full_key(key)}"

    # -- internals -------------------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _list(self, full_prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self._prefix)
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except (ClientError, BotoCoreError) as e:
            raise translate_error(e, "list", self._bucket, full_prefix) from e
