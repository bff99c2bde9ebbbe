"""The upload trigger: an object created under ``FAVE_UPLOAD_PREFIX`` (default ``uploads/``) starts a request.

The request's ``video_uri`` is ``s3://bucket/key`` (the key URL-decoded: S3 event keys are URL-encoded,
``+`` for a space). Its options come from, field by field, the first that sets them:

1. a sidecar JSON object at ``{key}.json`` (``{"query": ..., "profile": ..., "extra": {...}}``, the options of
   ``POST /requests``). Upload it *before* the video: the video's event reads it at once;
2. the video's user metadata ``fave-query`` and ``fave-profile`` (``x-amz-meta-fave-query``);
3. ``FAVE_DEFAULT_QUERY`` and ``FAVE_DEFAULT_PROFILE``.

Objects outside the prefix, sidecars (``*.json``) and events other than ObjectCreated are skipped. A bad
sidecar or an unknown profile rejects that upload (logged, ``UploadsRejected``): retrying cannot fix it.
S3 may deliver an event more than once; the idempotency record ``upload:{bucket}/{key}@{sequencer}`` makes
every delivery of one upload start the same request (re-uploading the key starts a new one).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event
from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import S3Store, translate_error
from pydantic import ValidationError as PydanticValidationError

from ..ids import new_request_id
from .context import AppContext, lease_seconds
from .idempotency import IdempotencyKeys
from .models import UploadSidecar
from .observability import Meter, logger
from .runner import Runner

SIDECAR_SUFFIX = ".json"
METADATA_QUERY = "fave-query"
METADATA_PROFILE = "fave-profile"


def _pydantic_message(where: str, exc: PydanticValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return f"{where}: " + "; ".join(parts)


def read_options(context: AppContext, bucket: str, key: str) -> UploadSidecar:
    """The upload's options: sidecar fields over metadata fields (defaults are applied later).

    Raises ``NotFoundError`` if the video is gone, ``ValidationError`` for a sidecar that is not valid.
    """
    client = context.s3_client
    try:
        metadata = client.head_object(Bucket=bucket, Key=key).get("Metadata", {})
    except Exception as exc:
        raise translate_error(exc, "HeadObject", bucket, key) from exc
    options: dict[str, Any] = {}
    if metadata.get(METADATA_QUERY):
        options["query"] = metadata[METADATA_QUERY]
    if metadata.get(METADATA_PROFILE):
        options["profile"] = metadata[METADATA_PROFILE]
    sidecar_key = key + SIDECAR_SUFFIX
    try:
        data = S3Store(client, bucket).get(sidecar_key).data
    except NotFoundError:
        data = None
    if data is not None:
        try:
            sidecar = UploadSidecar.model_validate_json(data)
        except PydanticValidationError as exc:
            raise ValidationError(_pydantic_message(f"s3://{bucket}/{sidecar_key}", exc)) from None
        options.update(sidecar.model_dump(exclude_unset=True))
    try:
        return UploadSidecar.model_validate(options)
    except PydanticValidationError as exc:
        raise ValidationError(_pydantic_message(f"s3://{bucket}/{key} metadata", exc)) from None


def handle_s3_event(event: dict[str, Any], context: AppContext, meter: Meter) -> dict[str, Any]:
    """Start a request per new upload; returns ``{"started": [...], "skipped": [...]}``."""
    settings = context.settings
    started: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    runner: Runner | None = None
    for record in S3Event(event).records:
        bucket = record.s3.bucket.name
        s3_object = record.s3.get_object
        key = unquote_plus(s3_object.key)
        where = f"s3://{bucket}/{key}"
        reason = None
        if not record.event_name.startswith("ObjectCreated:"):
            reason = f"event {record.event_name} is not an upload"
        elif not key.startswith(settings.upload_prefix) or key == settings.upload_prefix:
            reason = f"outside the upload prefix {settings.upload_prefix}"
        elif key.endswith(SIDECAR_SUFFIX):
            reason = "a sidecar, not a video"
        if reason is not None:
            logger.info("upload skipped", extra={"object": where, "reason": reason})
            skipped.append({"object": where, "reason": reason})
            continue
        try:
            options = read_options(context, bucket, key)
            request_input = options.request_input(
                where, default_query=settings.default_query, default_profile=settings.default_profile
            )
            profiles = context.pipeline.profiles
            if request_input["profile"] not in profiles:
                raise ValidationError(
                    f"{where}: profile: unknown profile '{request_input['profile']}' "
                    f"(this pipeline has: {', '.join(sorted(profiles))})"
                )
        except (ValidationError, NotFoundError) as exc:
            meter.count("UploadsRejected")
            logger.error("upload rejected", extra={"object": where, "error": str(exc)})
            skipped.append({"object": where, "reason": str(exc)})
            continue
        identity = s3_object.get("sequencer") or s3_object.etag or s3_object.version_id or ""
        claim = IdempotencyKeys(context.store).claim(
            "upload", f"{bucket}/{key}@{identity}", None, lambda: new_request_id(context.clock.now())
        )
        runner = runner or Runner(context, meter, lease_s=lease_seconds())
        state = runner.start(request_input, claim.request_id)
        if not claim.replayed:
            meter.count("RequestsStarted")
        logger.info("upload started a request", extra={"object": where, "replayed": claim.replayed})
        started.append({"object": where, "request_id": claim.request_id, "status": state.status.value})
    return {"started": started, "skipped": skipped}
