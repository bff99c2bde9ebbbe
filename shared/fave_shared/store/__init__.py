"""The object-store seam: one small interface, two backends, and helpers.

``open_store(uri)`` is the usual entry point::

    store = open_store("fave-artifacts")          # LocalStore on ./fave-artifacts (made absolute)
    store = open_store("s3://my-bucket/runs")     # S3Store, boto3 client created on first use
    state, etag = get_json(store, "requests/r1/metadata/state.json")

Importing this package imports neither boto3 nor botocore.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from fave_shared.errors import ValidationError
from fave_shared.store.base import Blob, ObjectStore, StoreStats
from fave_shared.store.counting import CountingStore
from fave_shared.store.jsonio import dumps_json, get_json, loads_json, put_json
from fave_shared.store.keys import join_key, validate_key, validate_prefix
from fave_shared.store.local import LocalStore, md5_etag
from fave_shared.store.s3 import S3Store, translate_error

__all__ = [
    "Blob",
    "CountingStore",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "StoreStats",
    "dumps_json",
    "get_json",
    "join_key",
    "loads_json",
    "md5_etag",
    "open_store",
    "put_json",
    "translate_error",
    "validate_key",
    "validate_prefix",
]

if TYPE_CHECKING:

    def _every_backend_is_an_object_store(a: LocalStore, b: S3Store, c: CountingStore) -> list[ObjectStore]:
        return [a, b, c]  # mypy proves the structural match here, once, instead of at each call site


# Anything that starts like a URI scheme ("gs:", "http://", "s3:bucket") is not taken for a directory name;
# a directory whose name contains ":" can still be opened as "./name:x".
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_USAGE = "expected /abs/dir, relative/dir, file:///abs/dir, s3://bucket or s3://bucket/prefix"


def open_store(uri: str, *, s3_client: Any | None = None) -> ObjectStore:
    """Open the store a URI names.

    * ``/abs/dir``, ``relative/dir`` (made absolute against the current directory) and ``file:///abs/dir``
      → ``LocalStore``;
    * ``s3://bucket`` and ``s3://bucket/some/prefix`` → ``S3Store``, using ``s3_client`` if given, else a
      client created from the environment on first use (boto3 honours ``AWS_ENDPOINT_URL_S3``).

    Anything else raises ``ValidationError`` with a one-line message naming the URI.
    """
    if not isinstance(uri, str) or not uri.strip() or uri != uri.strip() or "\x00" in uri:
        raise ValidationError(f"invalid store URI {uri!r}: {_USAGE}")
    if not _SCHEME.match(uri):
        return LocalStore(os.path.abspath(uri))
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        raise ValidationError(f"invalid store URI {uri!r}: no query or fragment allowed; {_USAGE}")
    if scheme == "file" and uri[: len("file://")].lower() == "file://":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValidationError(f"invalid store URI {uri!r}: a file URI needs an absolute local path")
        return LocalStore(os.path.abspath(unquote(parts.path)))
    if scheme == "s3" and uri[: len("s3://")].lower() == "s3://":
        if not parts.netloc:
            raise ValidationError(f"invalid store URI {uri!r}: no bucket; {_USAGE}")
        try:
            return S3Store(s3_client, parts.netloc, parts.path.lstrip("/"))
        except ValidationError as e:
            raise ValidationError(f"invalid store URI {uri!r}: {e}") from e
    raise ValidationError(f"invalid store URI {uri!r}: {_USAGE}")
