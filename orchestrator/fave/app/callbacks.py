"""``POST /callbacks/{request_id}``: an OpenFaaS asynchronous invocation's outcome (``fave.invoke.openfaas``).

The gateway's queue worker POSTs the function's answer to the ``X-Callback-Url`` the invoker set:
``/callbacks/{request_id}?stage=&item=&attempt=``, with ``X-Function-Status`` (the function's HTTP status) and
``X-Call-Id`` (the task's call id) and the function's body. ``destination_record`` rewrites that into the
destination record Lambda would have sent for the same task, so that it enters by the same door
(``fave.completions.from_envelope``) and the engine's exactly-once accounting applies unchanged: a duplicated
callback, or one for an attempt that was retried meanwhile, is a completion the engine already ignores; one for
an unknown request is answered 404 and changes nothing. With ``FAVE_CALLBACK_SECRET`` set, a callback must carry
the task's signed call id (``fave.invoke.openfaas.call_id``): the route is on the public API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fave_shared.errors import ValidationError

from fave.invoke.openfaas import CALLBACK_SECRET_ENV, call_id, is_function_error

__all__ = ["CallbackTask", "destination_record", "read_task"]

CallbackTask = tuple[str, int | None, int]


def read_task(query: Mapping[str, str | None]) -> CallbackTask:
    """(stage, item, attempt) from the callback URL's query; ``ValidationError`` naming the field."""
    stage = query.get("stage")
    if not stage:
        raise ValidationError("stage: required (the callback URL the invoker set names the task)")
    try:
        attempt = int(query.get("attempt") or "")
    except ValueError:
        raise ValidationError("attempt: expected an integer >= 1") from None
    if attempt < 1:
        raise ValidationError("attempt: expected an integer >= 1")
    raw_item = query.get("item")
    try:
        item = None if raw_item in (None, "") else int(str(raw_item))
    except ValueError:
        raise ValidationError("item: expected an integer >= 0") from None
    if item is not None and item < 0:
        raise ValidationError("item: expected an integer >= 0")
    return stage, item, attempt


def _status(headers: Mapping[str, str]) -> int:
    raw = headers.get("x-function-status")
    if raw is None:
        raise ValidationError("X-Function-Status: required (the function's HTTP status, as the queue worker sends it)")
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"X-Function-Status: expected an HTTP status, got {raw[:20]!r}") from None


def destination_record(
    request_id: str, query: Mapping[str, str | None], headers: Mapping[str, str], body: bytes
) -> dict[str, Any]:
    """The Lambda destination record (``fave_shared.schemas.DestinationEnvelope``) of an OpenFaaS callback.
    ``headers``: lower-cased names. Raises ``ValidationError`` naming the field for a callback that is not one of
    a task's (no status, a call id that is not that task's)."""
    stage, item, attempt = read_task(query)
    status = _status(headers)
    call = headers.get("x-call-id")
    secret = os.environ.get(CALLBACK_SECRET_ENV) or None
    expected = call_id(request_id, stage, item, attempt, secret)
    # A call id of ours must be this task's: a callback URL edited to point at another task is refused. Without a
    # secret, a gateway that replaced our id with its own cannot be checked (the URL alone then names the task);
    # with one, only the signed id is taken.
    if (secret or (call and call.startswith("fave-"))) and call != expected:
        raise ValidationError("X-Call-Id: not the call id of the task this callback URL names")
    try:
        response: Any = json.loads(body) if body else None
    except ValueError:
        response = body.decode("utf-8", errors="replace")
    ok = 200 <= status < 300
    function_error = None
    if not ok:
        function_error = "Unhandled"
        if not is_function_error(response):  # the gateway's or the watchdog's own failure (timeout, 502...)
            text = response if isinstance(response, str) else json.dumps(response)
            response = {"errorType": f"OpenFaaS.{status}", "errorMessage": f"function answered {status}: {text}"[:2000]}
    task = {"request_id": request_id, "stage": stage, "item": item, "attempt": attempt}
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": call or expected,
            "functionArn": f"openfaas:function:{headers.get('x-function-name', '')}",
            "condition": "Success" if ok else "RetriesExhausted",
            "approximateInvokeCount": 1,
        },
        "requestPayload": {"fave": 1, "task": task, "mode": "async", "store": "", "input": {}},
        "responseContext": {"statusCode": status, "executedVersion": "$LATEST", "functionError": function_error},
        "responsePayload": response,
    }
