"""The upload trigger: an object created under ``FAVE_UPLOAD_PREFIX`` (default ``uploads/``) starts a request.

The request's ``video_uri`` is ``s3://bucket/key`` (the key URL-decoded: S3 event keys are URL-encoded,
``+`` for a space). Its options come from, field by field, the first that sets them:

1. a sidecar JSON object at ``{key}.json`` (``{"query": ..., "profile": ..., "extra": {...}}``, the options of
   ``POST /requests``). Upload it *before* the video: the video's event reads it at once;
2. the video's user metadata ``fave-query`` and ``fave-profile`` (``x-amz-meta-fave-query``);
3. ``FAVE_DEFAULT_QUERY`` and ``FAVE_DEFAULT_PROFILE``.

Objects outside the prefix or in another bucket, sidecars (``*.json``), events other than ObjectCreated and
malformed records are skipped and logged, never a crash of the whole batch. A bad sidecar (or one over
``MAX_SIDECAR_BYTES``), an unsafe key or an unknown profile rejects that upload (logged, ``UploadsRejected``):
retrying cannot fix it. The request is recorded in INIT and its first step kicked asynchronously, so one
event with many records never runs their stages one after another.
S3 may deliver an event more than once; the idempotency record ``upload:{bucket}/{key}@{sequencer}`` makes
every delivery of one upload start the same request (re-uploading the key starts a new one).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import S3Store, translate_error
from fave_shared.store.keys import MAX_KEY_BYTES
from pydantic import ValidationError as PydanticValidationError

from fave.app.context import AppContext
from fave.app.http_guard import MAX_BODY_BYTES
from fave.app.idempotency import IdempotencyKeys
from fave.app.models import UploadSidecar
from fave.app.observability import Meter, logger
from fave.app.runner import Runner
from fave.app.sources import check_source, store_bucket
from fave.ids import new_request_id

SIDECAR_SUFFIX = ".json"
METADATA_QUERY = "fave-query"
METADATA_PROFILE = "fave-profile"
#: A sidecar holds the same options as a POST /requests body, so it gets the same cap.
MAX_SIDECAR_BYTES = MAX_BODY_BYTES


def _pydantic_message(where: str, exc: PydanticValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return f"{where}: " + "; ".join(parts)


def read_options(context: AppContext, bucket: str, key: str) -> UploadSidecar:
    """The upload's options: sidecar fields over metadata fields (defaults are applied later).

    Raises ``NotFoundError`` if the video is gone, ``ValidationError`` for a sidecar that is not valid (or
    larger than ``MAX_SIDECAR_BYTES``).
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
    data = None
    # A key within 5 bytes of S3's 1,024-byte limit cannot have a sidecar: its name would be too long.
    if len(sidecar_key.encode()) <= MAX_KEY_BYTES:
        try:
            size = int(client.head_object(Bucket=bucket, Key=sidecar_key).get("ContentLength", 0))
        except Exception as exc:
            error = translate_error(exc, "HeadObject", bucket, sidecar_key)
            if not isinstance(error, NotFoundError):
                raise error from exc
            size = -1
        if size > MAX_SIDECAR_BYTES:
            raise ValidationError(f"s3://{bucket}/{sidecar_key}: larger than {MAX_SIDECAR_BYTES} bytes")
        if size >= 0:
            try:
                data = S3Store(client, bucket).get(sidecar_key).data
            except NotFoundError:
                data = None
    if data is not None:
        try:
            sidecar = UploadSidecar.model_validate_json(data[: MAX_SIDECAR_BYTES + 1])
        except PydanticValidationError as exc:
            raise ValidationError(_pydantic_message(f"s3://{bucket}/{sidecar_key}", exc)) from None
        options.update(sidecar.model_dump(exclude_unset=True))
    try:
        return UploadSidecar.model_validate(options)
    except PydanticValidationError as exc:
        raise ValidationError(_pydantic_message(f"s3://{bucket}/{key} metadata", exc)) from None


def _record_target(record: Any) -> tuple[str, str, str, str]:
    """``(event name, bucket, key, identity)`` of one S3 event record; ``ValueError`` naming the missing or
    malformed field. Parsed by hand: a hostile or truncated record must be skipped, not crash the batch."""
    if not isinstance(record, dict):
        raise ValueError("not an object")
    event_name = record.get("eventName")
    s3 = record.get("s3")
    if not isinstance(event_name, str) or not isinstance(s3, dict):
        raise ValueError("eventName or s3: missing")
    bucket = s3.get("bucket", {}).get("name") if isinstance(s3.get("bucket"), dict) else None
    s3_object = s3.get("object")
    if not isinstance(bucket, str) or not bucket:
        raise ValueError("s3.bucket.name: missing")
    if not isinstance(s3_object, dict) or not isinstance(s3_object.get("key"), str) or not s3_object["key"]:
        raise ValueError("s3.object.key: missing or not a string")
    key = unquote_plus(s3_object["key"])
    identity = next(
        (str(s3_object[name]) for name in ("sequencer", "eTag", "versionId") if s3_object.get(name)),
        "",
    )
    return event_name, bucket, key, identity


def handle_s3_event(event: dict[str, Any], context: AppContext, meter: Meter) -> dict[str, Any]:
    """Accept a request per new upload (recorded in INIT, its first step kicked asynchronously); returns
    ``{"started": [...], "skipped": [...]}``. A record that cannot start a request is skipped and logged."""
    settings = context.settings
    started: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    runner: Runner | None = None
    bucket_of_store = store_bucket(context)
    records = event.get("Records")
    for record in records if isinstance(records, list) else []:
        try:
            event_name, bucket, key, identity = _record_target(record)
        except ValueError as exc:
            logger.warning("S3 record skipped", extra={"reason": str(exc)})
            skipped.append({"object": None, "reason": f"malformed record: {exc}"})
            continue
        where = f"s3://{bucket}/{key}"
        reason = None
        if not event_name.startswith("ObjectCreated:"):
            reason = f"event {event_name} is not an upload"
        elif bucket != bucket_of_store:
            reason = f"bucket {bucket} is not this service's bucket ({bucket_of_store})"
        elif not key.startswith(settings.upload_prefix) or key == settings.upload_prefix:
            reason = f"outside the upload prefix {settings.upload_prefix}"
        elif key.endswith(SIDECAR_SUFFIX):
            reason = "a sidecar, not a video"
        if reason is not None:
            logger.info("upload skipped", extra={"object": where, "reason": reason})
            skipped.append({"object": where, "reason": reason})
            continue
        try:
            check_source(where, bucket=bucket_of_store, prefixes=(settings.upload_prefix,), field="key")
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
        claim = IdempotencyKeys(context.store).claim(
            "upload", f"{bucket}/{key}@{identity}", None, lambda: new_request_id(context.clock.now())
        )
        runner = runner or Runner(context, meter)
        state = runner.create(request_input, claim.request_id)
        if not claim.replayed:
            meter.count("RequestsStarted")
        logger.info("upload accepted a request", extra={"object": where, "replayed": claim.replayed})
        started.append({"object": where, "request_id": claim.request_id, "status": state.status.value})
    return {"started": started, "skipped": skipped}
