"""The HTTP API (API Gateway HTTP API, payload format 2.0) on Powertools' ``APIGatewayHttpResolver``.

* ``POST /requests``: the body is the pipeline's input, a JSON object validated against its ``input:``
  (``fave.app.models.request_input``: ``profile`` is an option of every request; the video pipeline's body is
  ``{video_uri, query?, profile?}``; a pipeline without ``input:`` takes any object). The upload field
  (``trigger.upload.field``; ``video_uri`` without ``input:``), when set, must be an object of this store's
  bucket under one of its source prefixes (``FAVE_INPUT_PREFIXES``, ``FAVE_UPLOAD_PREFIX``). Optional
  ``Idempotency-Key`` header → 202 ``{request_id, status, status_url, replayed}`` (and ``Location``) as soon
  as the request is recorded (status ``INIT``): its first step runs in an asynchronous invocation of this
  function, never in the HTTP one. The same key with the same input returns the same request
  (``replayed: true``); with another input, 422.
* ``GET /requests/{request_id}`` → 200, the status document of ``fave status --json`` (``final`` once
  COMPLETED); 500 naming the problem if that request's state cannot be read.
* ``GET /requests/{request_id}/stages/{stage}?limit=&cursor=&failed=&traceback=&item=`` → 200, one page of
  the stage's tasks, a row per item (``fave.status.stage_page``, as ``fave status ID --stage NAME --json``):
  status, attempts, duration, error, the failed attempts; ``traceback=true`` adds each row's traceback,
  ``item=K`` gives that item alone with its traceback. ``limit`` 1-1000 (default 100); ``next_cursor`` asks
  for the next page (null at the end). A page reads only the task shards it covers.
* ``POST /requests/{request_id}/resume`` → 202 with the status and ``"queued": true`` (409 if the request
  is COMPLETED and nothing of it was reset): a step invocation applies it.
* ``POST /requests/{request_id}/reset`` body ``{stages: [...], downstream?}`` → 200 with the status and
  ``reset: {stages: {name: tasks}, downstream}``, applied at once under the request's lease (``fave reset``):
  the stages' tasks are PENDING again, and a resume re-runs them. 400 naming ``stages`` for an unknown stage,
  409 while the request runs (or another invocation holds it) or if a stage that needs one of them has started
  and not succeeded.
* ``POST /requests/{request_id}/cancel`` body ``{reason?}`` → 200 with the status, applied at once, or 202
  ``"queued": true`` when another invocation holds the request (it applies it); 409 if it had ended.
* ``POST /queue`` body ``{entries: [{input, priority?, key?, at?, every_s?, max_attempts?}], priority?}`` → 202
  ``{entries: [{id, key, status, duplicate}], added}``: the pipeline's admission queue (``fave.queue``), every
  input checked first (400 naming ``entries[i].input.FIELD``, nothing added). ``GET /queue?status=&limit=`` →
  200 ``{entries, stats, truncated}``. The schedule tick and each request's end admit from it
  (``fave.app.queue_doors.drain``).
* ``POST /callbacks/{request_id}?stage=&item=&attempt=`` → 200 ``{request_id, status}``: an OpenFaaS gateway's
  asynchronous outcome (``FAVE_INVOKER=openfaas``; ``fave.app.callbacks``), applied as a Lambda destination
  record would be (a duplicate or late one changes nothing); 404 for an unknown request. Not in the OpenAPI
  document nor in template.yaml (only a queue worker calls it).
* ``GET /openapi.json`` → this API's OpenAPI 3.1 document (each route's real status codes and bodies, as the
  ``responses=`` below declare them); ``GET /docs`` → Swagger UI on it, a self-contained page
  (``fave.app.openapi``).

Errors are JSON ``{"message": ..., "errors": [...]}``: 400 for a bad body, header or id (the message names
the field), 404 for an unknown request or stage, 409 for a state conflict, 413 for a body over 64 KB, 422 for
a reused idempotency key, 500 for a request whose state is unreadable or a function that is not configured
(``configuration error: ...``: no ``FAVE_STORE``, a pipeline naming a function without ``FAVE_FUNCTION_*``),
503 for a transient store or invocation failure. Malformed events (bad base64, bodies that are not UTF-8, JSON
nested too deeply, no HTTP method) are refused before routing (``fave.app.http_guard``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from fave_shared.errors import ConflictError, NotFoundError, RetryableError, ValidationError

from fave.app.context import ConfigurationError, current
from fave.app.idempotency import IdempotencyKeyReusedError, IdempotencyKeys, fingerprint, validate_key
from fave.app.models import CancelRequest, ResetRequest, request_input
from fave.app.observability import current_meter, logger
from fave.app.openapi import answers, docs_page, document
from fave.app.queue_doors import LIST_LIMIT, QueueBatch, add_entries, queue_listing
from fave.app.runner import invocation_runner
from fave.app.sources import check_source, store_bucket
from fave.core.dag import Pipeline
from fave.core.model import Resume
from fave.ids import new_request_id, validate_request_id
from fave.inputs import InputError, upload_field
from fave.persistence import CorruptStateError
from fave.status import MAX_PAGE_LIMIT, PAGE_LIMIT, stage_page, status_document

app = APIGatewayHttpResolver(enable_validation=True)

RequestId = Annotated[str, Path(description="a request id (26 characters of Crockford base32)")]
StageName = Annotated[str, Path(description="a stage of the request's pipeline")]


def _error(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"message": message}
    if errors:
        body["errors"] = errors
    return Response(status, content_types.APPLICATION_JSON, body)


def _status_url(request_id: str) -> str:
    """Where to poll the request: the API's own URL when the event says it (API Gateway), else a path."""
    path = f"/requests/{request_id}"
    context = app.current_event.request_context
    domain = context.domain_name
    if not domain:
        return path
    stage = context.stage
    # API Gateway serves HTTPS only and says so in X-Forwarded-Proto; `fave serve` says http.
    scheme = "http" if (app.current_event.headers or {}).get("x-forwarded-proto") == "http" else "https"
    return f"{scheme}://{domain}{'' if not stage or stage == '$default' else '/' + stage}{path}"


def _request_id(value: str) -> str:
    try:
        return validate_request_id(value)
    except ValidationError as exc:
        raise ValidationError(f"request_id: {exc}") from None


# ---- routes -----------------------------------------------------------------------------------------------


@app.post("/requests", responses=answers("start", 400, 413, 422, 500, 503))
def start_request(
    body: Annotated[dict[str, Any], Body(description="the pipeline's input (its pipeline.yaml input:), and profile")],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response[dict[str, Any]]:
    """Validate, record the request in INIT and hand its first step to an asynchronous invocation: the
    answer never waits for a stage (API Gateway gives up after 30 s; a first stage may take minutes)."""
    context = current()
    pipeline = context.pipeline
    settings = context.settings
    value = request_input(
        body, pipeline, default_query=settings.default_query, default_profile=settings.default_profile
    )
    field = upload_field(pipeline)
    if field is not None and field in value:
        source = value[field]
        if not isinstance(source, str):
            raise InputError(field, "expected an s3:// URI")
        bucket = store_bucket(context)
        try:
            check_source(source, bucket=bucket, prefixes=settings.source_prefixes, field=field)
        except ValidationError as exc:  # "{field}: reason", as the errors list gives it
            raise InputError(field, str(exc).removeprefix(f"{field}: ")) from None
    replayed = False
    if idempotency_key is None:
        request_id = new_request_id(context.clock.now())
    else:
        claim = IdempotencyKeys(context.store).claim(
            "POST /requests",
            validate_key(idempotency_key),
            fingerprint(value),
            lambda: new_request_id(context.clock.now()),
        )
        request_id, replayed = claim.request_id, claim.replayed
    state = invocation_runner().create(value, request_id)
    if not replayed:
        current_meter().count("RequestsStarted")
    logger.info("request accepted", extra={"replayed": replayed, "status": state.status.value})
    url = _status_url(request_id)
    return Response(
        202,
        content_types.APPLICATION_JSON,
        {"request_id": request_id, "status": state.status.value, "status_url": url, "replayed": replayed},
        headers={"Location": url, **({"Idempotent-Replayed": "true"} if replayed else {})},
    )


@app.get("/requests/<request_id>", responses=answers("status", 400, 404, 500, 503))
def get_request(request_id: RequestId) -> dict[str, Any]:
    request_id = _request_id(request_id)
    logger.set_correlation_id(request_id)
    return status_document(current().store, request_id)


@app.get("/requests/<request_id>/stages/<stage>", responses=answers("stage", 400, 404, 500, 503))
def get_stage(  # noqa: PLR0917 - one parameter per query option
    request_id: RequestId,
    stage: StageName,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="rows per page")] = PAGE_LIMIT,
    cursor: Annotated[str | None, Query(max_length=32, description="a page's next_cursor")] = None,
    failed: Annotated[bool, Query(description="only the items that FAILED")] = False,
    traceback: Annotated[bool, Query(description="each row's last traceback")] = False,
    item: Annotated[int | None, Query(ge=0, description="that item alone, with its traceback")] = None,
) -> dict[str, Any]:
    """One page of a stage's tasks, a row per item (``fave status ID --stage NAME --json``)."""
    request_id = _request_id(request_id)
    logger.set_correlation_id(request_id)
    return stage_page(
        current().store,
        request_id,
        stage,
        cursor=cursor,
        limit=limit,
        failed=failed,
        item=item,
        tracebacks=traceback,
    )


@app.post("/requests/<request_id>/resume", responses=answers("resume", 400, 404, 409, 413, 500, 503))
def resume_request(request_id: RequestId) -> Response[dict[str, Any]]:
    """Accepted, not applied here: resuming dispatches stage work, which a step invocation does."""
    request_id = _request_id(request_id)
    runner = invocation_runner()
    if runner.load(request_id).nothing_to_resume:
        raise ConflictError(f"request {request_id} is COMPLETED: nothing to resume")
    runner.post(request_id, Resume())
    body = {**status_document(runner.context.store, request_id), "status_url": _status_url(request_id)}
    return Response(202, content_types.APPLICATION_JSON, {**body, "queued": True})


@app.post("/requests/<request_id>/reset", responses=answers("reset", 400, 404, 409, 413, 500, 503))
def reset_request(request_id: RequestId, body: Annotated[ResetRequest, Body()]) -> Response[dict[str, Any]]:
    """Applied at once (it dispatches nothing): the stages' tasks are PENDING again; a resume re-runs them."""
    request_id = _request_id(request_id)
    runner = invocation_runner()
    pipeline = runner.context.pipeline
    unknown = [name for name in body.stages if name not in pipeline.stages]
    if unknown:
        raise InputError(
            "stages",
            f"unknown stage {', '.join(repr(n) for n in unknown)}: '{pipeline.name}' has {', '.join(pipeline.order)}",
        )
    runner.load(request_id)  # 404 or 500 before the lease
    _, counts = runner.reset(request_id, body.stages, downstream=body.downstream)
    doc = status_document(runner.context.store, request_id)
    return Response(
        200, content_types.APPLICATION_JSON, {**doc, "reset": {"stages": counts, "downstream": body.downstream}}
    )


@app.post("/requests/<request_id>/cancel", responses=answers("cancel", 400, 404, 409, 413, 500, 503))
def cancel_request(
    request_id: RequestId, body: Annotated[CancelRequest | None, Body()] = None
) -> Response[dict[str, Any]]:
    """Applied at once when the request is free (200); left to the invocation that holds it otherwise (202)."""
    request_id = _request_id(request_id)
    runner = invocation_runner()
    state = runner.load(request_id)
    if state.status.terminal:
        raise ConflictError(f"request {request_id} is already {state.status.value}")
    submitted = runner.cancel(request_id, (body or CancelRequest()).reason)
    doc = status_document(runner.context.store, request_id)
    return Response(
        202 if submitted.posted else 200, content_types.APPLICATION_JSON, {**doc, "queued": bool(submitted.posted)}
    )


@app.post("/queue", responses=answers("queue_add", 400, 413, 503))
def add_to_queue(body: Annotated[QueueBatch, Body()]) -> Response[dict[str, Any]]:
    """Queue entries, all or none: every input is checked as ``POST /requests`` checks its body first
    (``fave.app.queue_doors``); an entry whose key an open entry has is not added (its id is returned)."""
    entries = add_entries(current(), body)
    added = sum(1 for e in entries if not e.duplicate)
    logger.info("queued", extra={"added": added, "entries": len(entries)})
    rows = [{"id": e.id, "key": e.key, "status": e.status, "duplicate": e.duplicate} for e in entries]
    return Response(202, content_types.APPLICATION_JSON, {"entries": rows, "added": added})


@app.get("/queue", responses=answers("queue", 400, 503))
def get_queue(
    status: Annotated[
        str | None, Query(max_length=64, description="QUEUED, CLAIMED, RUNNING, DONE, FAILED, comma-separated")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT, description="entries at most, in claim order")] = 100,
) -> dict[str, Any]:
    """The queue's entries (priority, then oldest) and its stats (depth by priority, oldest age, drain time)."""
    wanted = [s.strip() for s in status.split(",") if s.strip()] if status else None
    return queue_listing(current(), wanted, limit)


@app.post("/callbacks/<request_id>", include_in_schema=False)
def openfaas_callback(request_id: RequestId) -> Response[dict[str, Any]]:
    """An OpenFaaS asynchronous invocation's outcome (``fave.app.callbacks``): applied like a Lambda destination
    record, through the same completion path. Left out of the OpenAPI document and of template.yaml: only an
    OpenFaaS gateway's queue worker calls it (``fave.local.gateway.OPENFAAS_ONLY_ROUTES``)."""
    from fave import completions
    from fave.app.callbacks import destination_record

    request_id = _request_id(request_id)
    logger.set_correlation_id(request_id)
    event = app.current_event
    headers = {k.lower(): v for k, v in (event.headers or {}).items()}
    body = event.decoded_body or ""
    record = destination_record(request_id, event.query_string_parameters or {}, headers, body.encode())
    _, completion = completions.from_envelope(record)
    submitted = invocation_runner().submit(request_id, [completion])  # 404 for an unknown request
    current_meter().count("CallbacksApplied")
    status = submitted.state.status.value if submitted.state is not None else None
    return Response(200, content_types.APPLICATION_JSON, {"request_id": request_id, "status": status})


@app.get("/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    """This API's OpenAPI document (``fave.app.openapi``)."""
    return Response(200, content_types.APPLICATION_JSON, json.dumps(_openapi()))


@app.get("/docs", include_in_schema=False, compress=True)
def docs() -> Response[str]:
    """Swagger UI on the document, self-contained: it loads nothing from another host."""
    return Response(200, "text/html; charset=utf-8", docs_page(_openapi()))


def _openapi() -> dict[str, Any]:
    stage = app.current_event.request_context.stage
    try:
        pipeline: Pipeline | None = current().pipeline
    except ConfigurationError:  # the document still describes the API; the body is any object
        pipeline = None
    return document(app, server="/" if not stage or stage == "$default" else f"/{stage}", pipeline=pipeline)


# ---- errors -----------------------------------------------------------------------------------------------


def _bad_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        where = loc[0] if loc else "body"
        field = ".".join(loc[1:]) or where
        if where == "body" and error.get("type") == "json_invalid":
            field = "body"
        errors.append({"field": field, "in": where, "message": str(error.get("msg", "invalid"))})
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return _error(400, message, errors)


def _key_reused(exc: IdempotencyKeyReusedError) -> Response[dict[str, Any]]:
    return _error(422, str(exc))


def _invalid(exc: ValidationError) -> Response[dict[str, Any]]:
    return _error(400, str(exc))


def _bad_input(exc: InputError) -> Response[dict[str, Any]]:
    return _error(400, str(exc), [{"field": exc.field, "in": "body", "message": exc.reason}])


def _misconfigured(exc: ConfigurationError) -> Response[dict[str, Any]]:
    logger.error("function misconfigured", extra={"error": str(exc)})
    return _error(500, str(exc))


def _not_found(exc: NotFoundError) -> Response[dict[str, Any]]:
    return _error(404, str(exc))


def _conflict(exc: ConflictError) -> Response[dict[str, Any]]:
    return _error(409, str(exc))


def _unreadable(exc: CorruptStateError) -> Response[dict[str, Any]]:
    logger.error("request state unreadable", extra={"error": str(exc)})
    return _error(500, str(exc))


def _unavailable(exc: RetryableError) -> Response[dict[str, Any]]:
    logger.warning("transient failure", extra={"error": str(exc)})
    response = _error(503, f"temporarily unavailable, try again: {exc}")
    response.headers["Retry-After"] = "1"
    return response


def _register(exc_class: type[Exception], handler: Callable[[Any], Response[dict[str, Any]]]) -> None:
    app.exception_handler(exc_class)(handler)


_register(RequestValidationError, _bad_request)
_register(IdempotencyKeyReusedError, _key_reused)
_register(ValidationError, _invalid)
_register(InputError, _bad_input)
_register(ConfigurationError, _misconfigured)
_register(NotFoundError, _not_found)
_register(ConflictError, _conflict)
_register(RetryableError, _unavailable)
_register(CorruptStateError, _unreadable)
