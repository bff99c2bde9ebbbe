"""The orchestrator Lambda function (``Handler: fave.app.handler``, ``CodeUri: orchestrator/``).

``handler(event, context)`` tells events apart by shape:

* API Gateway HTTP API (payload 2.0) → the HTTP API (``fave.app.api``): ``POST /requests``,
  ``GET /requests/{id}``, ``GET /requests/{id}/stages/{stage}``, ``POST /requests/{id}/resume``,
  ``POST /requests/{id}/reset``, ``POST /requests/{id}/cancel``, the admission queue (``POST /queue``,
  ``GET /queue``: ``fave.app.queue_doors``), and its description, ``GET /openapi.json`` and ``GET /docs``;
* S3 event records (``eventSource: aws:s3``) → the upload trigger (``fave.app.uploads``);
* a Lambda destination record (``requestContext.condition``, ``requestPayload``) → a stage's completion;
* an EventBridge ``Scheduled Event`` → a tick of every unfinished request (timeouts, due retries), then the
  admission queue's drain and the time-based alerts;
* ``{"fave_alert": {...}}`` (its own asynchronous self-invoke) → an alert's delivery (``fave.app.alerts_doors``);
* anything else → ``ValidationError`` naming what was expected.

``http_handler``, ``s3_handler``, ``destination_handler`` and ``tick_handler`` handle one kind each.

An HTTP or upload invocation records the request and hands its first step to an asynchronous invocation of
this function (a ``step`` event); every other invocation applies its event to the request, runs synchronous
stages inline until only asynchronous ones are in flight, and returns (see ``fave.app.runner``);
asynchronous stages report back through their OnSuccess / OnFailure destinations, which must be this
function.

Environment:

* ``FAVE_STORE``: where requests live, ``s3://bucket[/prefix]`` (required);
* ``FAVE_PIPELINE``: the pipeline file, relative to the code root (default ``pipeline.yaml``, i.e. next
  to the ``fave`` package: ``orchestrator/pipeline.yaml`` in the bundle);
* ``FAVE_FUNCTION_<LogicalId>``: the deployed name (or ARN) of each stage function of the pipeline;
* ``FAVE_UPLOAD_PREFIX``: the key prefix whose new objects start requests (default ``uploads/``);
* ``FAVE_INPUT_PREFIXES``: comma-separated key prefixes a ``POST /requests`` source may also be under
  (default ``uploads/,inputs/``); any other object of the bucket, or another bucket, is refused;
* ``FAVE_SELF_FUNCTION``: this function's name for the asynchronous self-invoke that takes a request's
  steps (default: Lambda's ``AWS_LAMBDA_FUNCTION_NAME``);
* ``FAVE_DEFAULT_QUERY``: the query of a request that sets none (default: none);
* ``FAVE_DEFAULT_PROFILE``: the profile of a request that sets none (default ``default``);
* ``POWERTOOLS_SERVICE_NAME`` (default ``fave``), ``POWERTOOLS_METRICS_NAMESPACE`` (default ``fave``),
  and Powertools' other settings (``POWERTOOLS_LOG_LEVEL``, ``POWERTOOLS_TRACE_DISABLED``...).

No AWS client is created at import: the store's S3 client and the Lambda client are made on first use.
``configure(store=, pipeline=, invoker=, clock=, s3_client=, settings=, self_invoker=)`` replaces any dependency (tests
pass the moto store and the local runtime); ``reset()`` goes back to the environment.
"""

from __future__ import annotations

from fave.app.context import AppContext, configure, current, reset
from fave.app.handlers import (
    destination_handler,
    handler,
    http_handler,
    kind_of,
    s3_handler,
    sqs_handler,
    step_handler,
    tick_handler,
)
from fave.app.settings import Settings

__all__ = [
    "AppContext",
    "Settings",
    "configure",
    "current",
    "destination_handler",
    "handler",
    "http_handler",
    "kind_of",
    "reset",
    "s3_handler",
    "sqs_handler",
    "step_handler",
    "tick_handler",
]
