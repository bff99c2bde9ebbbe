"""Where a request's source may be: an object of this store's bucket under one of its source prefixes.

Without this check any caller could make the pipeline read any object the stage functions can reach:
another request's state.json, ``idempotency/`` records, another user's upload, another bucket, or a key that
climbs with ``..``. IAM limits normalize to the same prefixes (template.yaml); this check answers first, with a
400 naming the field, instead of a request that fails later with AccessDenied.
"""

from __future__ import annotations

from collections.abc import Sequence

from fave_shared.errors import ValidationError
from fave_shared.store import S3Store, validate_key

from fave.app.context import AppContext

__all__ = ["check_source", "store_bucket"]


def store_bucket(context: AppContext) -> str:
    """The bucket of the function's store (``FAVE_STORE``)."""
    store = context.store
    if isinstance(store, S3Store):
        return store.bucket
    return context.settings.store_uri.removeprefix("s3://").partition("/")[0]


def check_source(uri: str, *, bucket: str, prefixes: Sequence[str], field: str = "video_uri") -> str:
    """``uri`` if it is ``s3://{bucket}/{key}`` with a safe key under one of ``prefixes``; else
    ``ValidationError`` naming ``field``."""
    if not uri.startswith("s3://"):
        raise ValidationError(f"{field}: expected s3://{bucket}/KEY")
    source_bucket, _, key = uri.removeprefix("s3://").partition("/")
    if source_bucket != bucket:
        raise ValidationError(f"{field}: must be an object of this service's bucket ({bucket}), not {source_bucket!r}")
    try:
        validate_key(key)
    except ValidationError as exc:
        raise ValidationError(f"{field}: {str(exc).replace('object key', 'key')}") from None
    if not any(key.startswith(prefix) and len(key) > len(prefix) for prefix in prefixes):
        allowed = ", ".join(f"s3://{bucket}/{prefix}" for prefix in prefixes)
        raise ValidationError(f"{field}: must be under {allowed}")
    return uri
