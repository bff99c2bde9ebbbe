"""The HTTP API (API Gateway HTTP API, payload format 2.0) on Powertools' ``APIGatewayHttpResolver``.

* ``POST /requests`` body ``{video_uri, query?, profile?, extra?}``, optional ``Idempotency-Key`` header →
  202 ``{request_id, status, status_url, replayed}`` (and ``Location``) as soon as the request is recorded
  (status ``INIT``): its first step runs in an asynchronous invocation of this function, never in the HTTP
  one. ``video_uri`` must be an object of this store's bucket under one of its source prefixes
  (``FAVE_INPUT_PREFIXES``, ``FAVE_UPLOAD_PREFIX``). The same key with the same body returns the same
  request (``replayed: true``); with another body, 422.
* ``GET /requests/{request_id}`` → 200, the status document of ``fave status --json`` (``final`` once
  COMPLETED); 500 naming the problem if that request's state cannot be read.
* ``POST /requests/{request_id}/resume`` → 202 with the status and ``"queued": true`` (409 if the request
  is COMPLETED): a step invocation applies it.
* ``POST /requests/{request_id}/cancel`` body ``{reason?}`` → 200 with the status, applied at once, or 202
  ``"queued": true`` when another invocation holds the request (it applies it); 409 if it had ended.

Errors are JSON ``{"message": ..., "errors": [...]}``: 400 for a bad body, header or id (the message names
the field), 404 for an unknown request, 409 for a state conflict, 413 for a body over 64 KB, 422 for a
reused idempotency key, 500 for a request whose state is unreadable, 503 for a transient store or
invocation failure. Malformed events (bad base64, bodies that are not UTF-8, JSON nested too deeply, no
HTTP method) are refused before routing (``fave.app.http_guard``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from fave_shared.errors import ConflictError, NotFoundError, RetryableError, ValidationError

from fave.app.context import current
from fave.app.idempotency import IdempotencyKeyReusedError, IdempotencyKeys, fingerprint, validate_key
from fave.app.models import CancelRequest, StartRequest
from fave.app.observability import current_meter, logger
from fave.app.runner import invocation_runner
from fave.app.sources import check_source, store_bucket
from fave.core.model import RequestStatus, Resume
from fave.ids import new_request_id, validate_request_id
from fave.persistence import CorruptStateError
from fave.status import status_document

app = APIGatewayHttpResolver(enable_validation=True)

RequestId = Annotated[str, Path(description="a request id (26 characters of Crockford base32)")]


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
    return f"https://{domain}{'' if not stage or stage == '$default' else '/' + stage}{path}"


def _request_id(value: str) -> str:
    try:
        return validate_request_id(value)
    except ValidationError as exc:
        raise ValidationError(f"request_id: {exc}") from None


# ---- routes -----------------------------------------------------------------------------------------------


@app.post("/requests")
def start_request(
    body: StartRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response[dict[str, Any]]:
    """Validate, record the request in INIT and hand its first step to an asynchronous invocation: the
    answer never waits for a stage (API Gateway gives up after 30 s; a first stage may take minutes)."""
    context = current()
    pipeline = context.pipeline
    settings = context.settings
    check_source(body.video_uri, bucket=store_bucket(context), prefixes=settings.source_prefixes)
    request_input = body.request_input(
        body.video_uri, default_query=settings.default_query, default_profile=settings.default_profile
    )
    if request_input["profile"] not in pipeline.profiles:
        known = ", ".join(sorted(pipeline.profiles))
        raise ValidationError(f"profile: unknown profile '{request_input['profile']}' (this pipeline has: {known})")
    replayed = False
    if idempotency_key is None:
        request_id = new_request_id(context.clock.now())
    else:
        claim = IdempotencyKeys(context.store).claim(
            "POST /requests",
            validate_key(idempotency_key),
            fingerprint(request_input),
            lambda: new_request_id(context.clock.now()),
        )
        request_id, replayed = claim.request_id, claim.replayed
    state = invocation_runner().create(request_input, request_id)
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


@app.get("/requests/<request_id>")
def get_request(request_id: RequestId) -> dict[str, Any]:
    request_id = _request_id(request_id)
    logger.set_correlation_id(request_id)
    return status_document(current().store, request_id)


@app.post("/requests/<request_id>/resume")
def resume_request(request_id: RequestId) -> Response[dict[str, Any]]:
    """Accepted, not applied here: resuming dispatches stage work, which a step invocation does."""
    request_id = _request_id(request_id)
    runner = invocation_runner()
    if runner.load(request_id).status is RequestStatus.COMPLETED:
        raise ConflictError(f"request {request_id} is COMPLETED: nothing to resume")
    runner.post(request_id, Resume())
    body = {**status_document(runner.context.store, request_id), "status_url": _status_url(request_id)}
    return Response(202, content_types.APPLICATION_JSON, {**body, "queued": True})


@app.post("/requests/<request_id>/cancel")
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
_register(NotFoundError, _not_found)
_register(ConflictError, _conflict)
_register(RetryableError, _unavailable)
_register(CorruptStateError, _unreadable)
