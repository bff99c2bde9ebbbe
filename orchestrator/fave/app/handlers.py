"""The Lambda handlers: one per kind of event, and ``handler``, which tells the kinds apart by shape.

Every handler logs with Powertools' Logger (correlation id = the fave request id) and publishes the
invocation's metrics as EMF when it returns or raises.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fave_shared.errors import NotFoundError, ValidationError
from pydantic import ValidationError as PydanticValidationError

from fave import completions
from fave.app.api import app
from fave.app.completion_queue import handle_sqs_event
from fave.app.context import current, lambda_context
from fave.app.http_guard import check_http_event
from fave.app.observability import current_meter, logger, start_meter, stop_meter
from fave.app.runner import invocation_runner
from fave.app.uploads import handle_s3_event
from fave.core.model import Start
from fave.ids import validate_request_id

Event = dict[str, Any]
Handler = Callable[[Event, Any], Any]


class _LocalContext:
    """What Powertools needs of a Lambda context, for calls made without one (a REPL, a script)."""

    function_name = "fave-orchestrator"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:fave-orchestrator"
    memory_limit_in_mb = 128
    aws_request_id = "local"
    log_group_name = "/aws/lambda/fave-orchestrator"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def lambda_entry(body: Handler) -> Handler:
    """Wrap ``body`` as a Lambda handler: logger context, one metrics document per invocation."""

    @functools.wraps(body)
    def run(event: Event, context: Any) -> Any:
        meter, token = start_meter()
        context_token = lambda_context.set(context)
        try:
            return body(event, context)
        finally:
            lambda_context.reset(context_token)
            stop_meter(token)
            meter.publish()

    logged = logger.inject_lambda_context(run, clear_state=True)

    @functools.wraps(body)
    def entry(event: Event, context: Any = None) -> Any:
        return logged(event, context if context is not None else _LocalContext())

    return entry


# ---- the kinds of event ------------------------------------------------------------------------------------

EXPECTED = (
    "expected an HTTP API 2.0 request, S3 or SQS event records, a Lambda destination record, an EventBridge "
    "Scheduled Event, a fave step or a fave alert"
)


def kind_of(event: Any) -> str:
    """``http``, ``step``, ``alert``, ``s3``, ``sqs`` (a batch of completions), ``destination`` or ``tick``;
    ``ValidationError`` for anything else."""
    if not isinstance(event, dict):
        raise ValidationError(f"unrecognised event (a JSON {type(event).__name__}): {EXPECTED}")
    request_context = event.get("requestContext")
    if (
        event.get("version") == "2.0"
        and isinstance(request_context, dict)
        and ("http" in request_context or "routeKey" in event)
    ):
        return "http"
    if event.get("fave") == "step":
        return "step"
    if "fave_alert" in event:
        return "alert"
    records = event.get("Records")
    if isinstance(records, list) and any(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records):
        return "s3"  # malformed records among them are skipped one by one (fave.app.uploads)
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return "sqs"
    if isinstance(request_context, dict) and "condition" in request_context and "requestPayload" in event:
        return "destination"
    if event.get("detail-type") == "Scheduled Event" and event.get("source") == "aws.events":
        return "tick"
    if event.get("fave") == 1 and "task" in event:
        raise ValidationError(
            "this is a stage invocation event: send it to the stage's function "
            "(sam local invoke NormalizeFunction -e events/stage-invocation.json), not to the orchestrator"
        )
    keys = ", ".join(sorted(str(k) for k in event)[:8]) or "none"
    raise ValidationError(f"unrecognised event (keys: {keys}): {EXPECTED}")


def _http(event: Event, context: Any) -> Any:
    refused = check_http_event(event)
    if refused is not None:
        logger.warning("HTTP event refused before routing", extra={"status": refused["statusCode"]})
        return refused
    return app.resolve(event, context)


def _step(event: Event, context: Any) -> Any:
    """A request's next step, kicked asynchronously by the invocation that accepted it (``Runner.kick``)."""
    try:
        request_id = validate_request_id(str(event.get("request_id")))
    except ValidationError as exc:
        raise ValidationError(f"step event: request_id: {exc}") from None
    try:
        submitted = invocation_runner().submit(request_id, [Start()], post_if_busy=False)
    except NotFoundError:
        logger.warning("step for an unknown request ignored", extra={"request_id": request_id})
        return {"request_id": request_id, "status": None, "ignored": "unknown request"}
    # BUSY: another invocation holds the request; it applies whatever waits in the mailbox before letting go.
    status = submitted.state.status.value if submitted.state is not None else "BUSY"
    return {"request_id": request_id, "status": status}


def _s3(event: Event, context: Any) -> Any:
    return handle_s3_event(event, current(), current_meter())


def _destination(event: Event, context: Any) -> Any:
    try:
        request_id, completion = completions.from_envelope(event)  # parsed once, here
    except PydanticValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'record'}: {e.get('msg')}" for e in exc.errors()
        )
        raise ValidationError(f"not a Lambda destination record of a fave stage: {fields}") from None
    logger.set_correlation_id(request_id)
    try:
        submitted = invocation_runner().submit(request_id, [completion])
    except NotFoundError:
        # The request is gone (deleted, or another store): retrying the delivery cannot help.
        logger.warning("completion for an unknown request ignored", extra={"request_id": request_id})
        return {"request_id": request_id, "status": None, "ignored": "unknown request"}
    if submitted.state is None:
        return {"request_id": request_id, "status": None, "queued": True}
    return {"request_id": request_id, "status": submitted.state.status.value}


def _sqs(event: Event, context: Any) -> Any:
    """A batch of completions from ``CompletionsQueue`` (the asynchronous stages' destination)."""
    return handle_sqs_event(invocation_runner(), event, current_meter())


def _tick(event: Event, context: Any) -> Any:
    return {"ticked": invocation_runner().tick_all()}


def _alert(event: Event, context: Any) -> Any:
    """An alert the orchestrator fired (``fave.app.alerts_doors``): delivered now; raises if the webhook did not
    take it, so that Lambda retries the event and then keeps it in the dead-letter queue."""
    from fave.app.alerts_doors import ALERT_EVENT, deliver

    return deliver(current(), event.get(ALERT_EVENT))


_BY_KIND: dict[str, Handler] = {
    "http": _http,
    "s3": _s3,
    "destination": _destination,
    "tick": _tick,
    "step": _step,
    "sqs": _sqs,
    "alert": _alert,
}


def _any(event: Event, context: Any) -> Any:
    return _BY_KIND[kind_of(event)](event, context)


handler = lambda_entry(_any)
"""The orchestrator function's handler (``Handler: fave.app.handler``): dispatches by event shape."""

http_handler = lambda_entry(_http)
s3_handler = lambda_entry(_s3)
destination_handler = lambda_entry(_destination)
tick_handler = lambda_entry(_tick)
sqs_handler = lambda_entry(_sqs)
step_handler = lambda_entry(_step)
