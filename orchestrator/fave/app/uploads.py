"""The upload trigger: an object created under ``FAVE_UPLOAD_PREFIX`` (default ``uploads/``) starts a request.

The pipeline's upload field (``trigger: {upload: {field: ...}}``; ``video_uri`` for the video pipeline) is
``s3://bucket/key`` (the key URL-decoded: S3 event keys are URL-encoded, ``+`` for a space). The rest of the
request's input comes from, field by field, the first that sets it:

1. a sidecar JSON object at ``{key}.json``: the body of ``POST /requests`` without the upload field (for the
   video pipeline ``{"query": ..., "profile": ...}``). Upload it *before* the object: its event reads it at once;
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

import json
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from fave_shared.errors import NotFoundError, ValidationError
from fave_shared.store import S3Store, translate_error
from fave_shared.store.keys import MAX_KEY_BYTES

from fave.app.context import AppContext
from fave.app.http_guard import MAX_BODY_BYTES
from fave.app.idempotency import IdempotencyKeys
from fave.app.models import request_input
from fave.app.observability import Meter, logger
from fave.app.runner import Runner
from fave.app.sources import check_source, store_bucket
from fave.ids import new_request_id
from fave.inputs import InputError, upload_field

SIDECAR_SUFFIX = ".json"
METADATA_QUERY = "fave-query"
METADATA_PROFILE = "fave-profile"
#: A sidecar holds the same options as a POST /requests body, so it gets the same cap.
MAX_SIDECAR_BYTES = MAX_BODY_BYTES


class Options(NamedTuple):
    """An upload's input fields besides the upload field, and where they came from."""

    values: dict[str, Any]
    sidecar: str | None
    """``s3://bucket/key.json`` when a sidecar was read."""
    from_sidecar: frozenset[str]
    """The fields the sidecar set (a bad one is reported as the sidecar's)."""


def read_options(context: AppContext, bucket: str, key: str) -> Options:
    """The upload's input fields besides the upload field: sidecar fields over metadata fields (defaults and
    validation come later, in ``request_input``).

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
            sidecar = json.loads(data[: MAX_SIDECAR_BYTES + 1])
        except (ValueError, RecursionError):
            raise ValidationError(f"s3://{bucket}/{sidecar_key}: not a JSON document") from None
        if not isinstance(sidecar, dict):
            raise ValidationError(f"s3://{bucket}/{sidecar_key}: expected a JSON object of input fields")
        options.update(sidecar)
        return Options(options, f"s3://{bucket}/{sidecar_key}", frozenset(str(k) for k in sidecar))
    return Options(options, None, frozenset())


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
            if upload_field(context.pipeline) is None:
                raise ValidationError(f"pipeline '{context.pipeline.name}' declares no upload trigger")
            options = read_options(context, bucket, key)
            try:
                value = request_input(
                    options.values,
                    context.pipeline,
                    default_query=settings.default_query,
                    default_profile=settings.default_profile,
                    upload=where,
                )
            except InputError as exc:
                # A field the sidecar set is the sidecar's fault: name it, so that its author finds it.
                top = exc.field.split(".", 1)[0]
                blamed = options.sidecar if options.sidecar is not None and top in options.from_sidecar else where
                raise ValidationError(f"{blamed}: {exc}") from None
            except ValidationError as exc:
                raise ValidationError(f"{where}: {exc}") from None
        except (ValidationError, NotFoundError) as exc:
            meter.count("UploadsRejected")
            logger.error("upload rejected", extra={"object": where, "error": str(exc)})
            skipped.append({"object": where, "reason": str(exc)})
            continue
        claim = IdempotencyKeys(context.store).claim(
            "upload", f"{bucket}/{key}@{identity}", None, lambda: new_request_id(context.clock.now())
        )
        runner = runner or Runner(context, meter)
        state = runner.create(value, claim.request_id)
        if not claim.replayed:
            meter.count("RequestsStarted")
        logger.info("upload accepted a request", extra={"object": where, "replayed": claim.replayed})
        started.append({"object": where, "request_id": claim.request_id, "status": state.status.value})
    return {"started": started, "skipped": skipped}
