"""Fetch the request's source video (local path, file:// URI or s3://bucket/key) to a local file."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from fave_shared.errors import RetryableError
from normalize_errors import MediaInputError

_s3_client: Any = None

# S3 error codes that retrying the same call cannot fix: the object or bucket is gone or forbidden.
_S3_TERMINAL_CODES = {"404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied", "NotFound"}


def _s3() -> Any:
    """One boto3 S3 client per warm environment, created on first use (never at import: cold-start cost)."""
    global _s3_client  # noqa: PLW0603 - a lazily created module-level client is the Lambda idiom
    if _s3_client is None:
        import boto3  # imported here so a local-only run never pays for botocore's import

        _s3_client = boto3.client("s3")  # honours AWS_ENDPOINT_URL_S3 (moto, LocalStack)
    return _s3_client


def source_suffix(uri: str) -> str:
    """The lower-case file extension of ``uri`` (".mp4"), or "" if it has no plausible one."""
    suffix = PurePosixPath(urlparse(uri).path if "://" in uri else uri).suffix.lower()
    # Only short alphanumeric suffixes: the suffix becomes part of a store key.
    return suffix if 2 <= len(suffix) <= 6 and suffix[1:].isalnum() else ""


def fetch_source(uri: str, dest: Path, max_bytes: int) -> int:
    """Copy the source at ``uri`` to ``dest``; return its size in bytes.

    Raises ``MediaInputError`` if it does not exist, is empty or is larger than ``max_bytes`` (checked before
    copying, so an oversize upload never fills /tmp), ``RetryableError`` on a transient S3 failure.
    """
    if uri.startswith("s3://"):
        return _fetch_s3(uri, dest, max_bytes)
    path = Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else Path(uri)
    if not path.is_file():
        raise MediaInputError(f"source not found: {uri}")
    size = path.stat().st_size
    _check_size(uri, size, max_bytes)
    shutil.copyfile(path, dest)
    return size


def _fetch_s3(uri: str, dest: Path, max_bytes: int) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise MediaInputError(f"not an s3://bucket/key URI: {uri}")
    try:
        size = int(_s3().head_object(Bucket=bucket, Key=key)["ContentLength"])
        _check_size(uri, size, max_bytes)
        _s3().download_file(bucket, key, str(dest))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            raise MediaInputError(f"source not found: {uri}") from exc
        if code in _S3_TERMINAL_CODES:
            raise MediaInputError(f"cannot read source {uri}: {code}") from exc
        raise RetryableError(f"reading {uri} failed: {code or exc}") from exc
    except BotoCoreError as exc:  # connection reset, timeout: worth another attempt
        raise RetryableError(f"reading {uri} failed: {exc}") from exc
    return size


def _check_size(uri: str, size: int, max_bytes: int) -> None:
    name = PurePosixPath(urlparse(uri).path if "://" in uri else uri).name or uri
    if size == 0:
        raise MediaInputError(f"empty file: {name} is 0 bytes")
    if size > max_bytes:
        raise MediaInputError(f"size {size / 1e6:.1f} MB of {name} exceeds the profile limit of {max_bytes / 1e6:g} MB")
