"""The HTTP API's own description: ``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs`` (Swagger UI).

Powertools' ``APIGatewayHttpResolver`` generates the document from the routes, their typed parameters and the
``responses=`` each route declares here (``answers``): every status code a route really answers, with its body.
Two things are put right after generation (``document``):

* Powertools adds a 422 ``HTTPValidationError`` to every route of a resolver with validation on; fave answers a
  request that fails validation with a 400 ``{message, errors}`` (``fave.app.api._bad_request``), so those
  generated 422s are taken out: the only 422 left is ``POST /requests``'s reused ``Idempotency-Key``;
* ``POST /requests``'s body (and each ``POST /queue`` entry's ``input``) is the loaded pipeline's ``input:``
  (``Pipeline.input_schema``, a JSON Schema of an object) when it declares one without ``$ref`` (a reference
  inside it would not resolve inside the OpenAPI document), with ``profile`` added when the schema does not
  declare it; any JSON object otherwise.

``/docs`` is a page of our own around the Swagger UI files that ship inside Powertools (``swagger-ui-bundle.min.js``
and ``swagger-ui.min.css``), inlined, with the document inlined too: the page loads nothing from another host (no
CDN, no ``validator.swagger.io`` badge: ``validatorUrl: null``), so it works offline (``fave serve``) and behind
the API's IAM auth alike. Powertools' own ``enable_swagger`` page would serve the generated 422s unchanged.

Importing this module costs nothing measurable (``import fave.app`` stays ~0.25 s): Powertools' OpenAPI models
are imported, and the Swagger UI files (~1.7 MB) read, only when ``/openapi.json`` or ``/docs`` is asked; the
``/docs`` answer is gzipped for a client that accepts it (~0.5 MB).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from fave.core.model import RequestStatus
from fave.inputs import PROFILE

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

    from fave.core.dag import Pipeline

__all__ = ["TITLE", "ErrorBody", "ErrorItem", "answers", "docs_page", "document"]

TITLE = "fave"
VERSION = "1"
DESCRIPTION = (
    "fave's orchestrator: start a request of the deployed pipeline, follow it, page through a stage's items, "
    "reset, resume or cancel it. On AWS every route, these docs included, takes the API's auth (IAM SigV4 unless the "
    "stack's ApiAuthorization is NONE)."
)
_GENERATED_422 = "#/components/schemas/HTTPValidationError"
_POWERTOOLS_SCHEMAS = ("HTTPValidationError", "ResponseValidationError", "ValidationError")


class ErrorItem(BaseModel):
    """One problem of a refused request, naming where it is."""

    model_config = ConfigDict(populate_by_name=True)

    field: str = Field(description="the field, parameter or header (`body` for the body as a whole)")
    in_: str = Field(alias="in", description="body, path, query or header")
    message: str


class ErrorBody(BaseModel):
    """Every error's body."""

    message: str = Field(description="one line saying what is wrong (it names the field)")
    errors: list[ErrorItem] = Field(
        default_factory=list, description="for a refused body or parameter, each problem (absent otherwise)"
    )


_STATUSES = [s.value for s in RequestStatus]
_STATUS_DOC: dict[str, Any] = {
    "type": "object",
    "description": "the request's status (`fave status ID --json`); `final` is the result once COMPLETED",
    "required": ["request_id", "status", "stages"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {"type": "string", "enum": _STATUSES},
        "stages": {"type": "object", "description": "per stage: status, total, succeeded, failed, running..."},
        "final": {"description": "the last stage's output once COMPLETED"},
        "failure": {"type": ["string", "null"]},
        "cancel_reason": {"type": ["string", "null"]},
        "ledger": {
            "type": ["object", "null"],
            "description": "what the request spent: invocations, billed_ms per function, gb_s, s3_requests, "
            "cost_usd (an estimate at public prices)",
        },
        "budget": {
            "type": ["object", "null"],
            "description": "its limits (max_wall_s, max_invocations, max_cost_usd); past one it ends FAILED "
            "budget_exceeded",
        },
        "input": {"type": "object"},
    },
    "additionalProperties": True,
}
_STAGE_PAGE: dict[str, Any] = {
    "type": "object",
    "description": "one page of the stage's tasks, a row per item (`fave status ID --stage NAME --json`)",
    "required": ["request_id", "stage", "items", "next_cursor"],
    "properties": {
        "request_id": {"type": "string"},
        "stage": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {"type": ["string", "null"], "description": "the next page's cursor; null at the end"},
    },
    "additionalProperties": True,
}
_ACCEPTED: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "status", "status_url", "replayed"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {"type": "string", "enum": _STATUSES},
        "status_url": {"type": "string", "description": "where to poll the request (also the Location header)"},
        "replayed": {"type": "boolean", "description": "true: the Idempotency-Key named an existing request"},
    },
}


_RESET: dict[str, Any] = copy.deepcopy(_STATUS_DOC)
_RESET["required"] = [*_RESET["required"], "reset"]
_RESET["properties"]["reset"] = {
    "type": "object",
    "description": "what was reset: each stage marked, with how many tasks it holds, and whether downstream",
    "required": ["stages", "downstream"],
    "properties": {
        "stages": {"type": "object", "additionalProperties": {"type": "integer"}},
        "downstream": {"type": "boolean"},
    },
}


def _queued(base: dict[str, Any], *, status_url: bool = False) -> dict[str, Any]:
    schema = copy.deepcopy(base)
    schema["required"] = [*schema["required"], "queued"]
    schema["properties"]["queued"] = {"type": "boolean", "description": "true: a step invocation applies it"}
    if status_url:
        schema["properties"]["status_url"] = {"type": "string"}
    return schema


_QUEUE_ADDED: dict[str, Any] = {
    "type": "object",
    "required": ["entries", "added"],
    "properties": {
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "status", "duplicate"],
                "properties": {
                    "id": {"type": "string"},
                    "key": {"type": ["string", "null"]},
                    "status": {"type": "string"},
                    "duplicate": {"type": "boolean", "description": "true: an open entry had this key; its id"},
                },
            },
        },
        "added": {"type": "integer", "description": "entries added (duplicates are not)"},
    },
}
_QUEUE: dict[str, Any] = {
    "type": "object",
    "description": "the pipeline's admission queue: entries in claim order and stats (`fave queue list/stats --json`)",
    "required": ["pipeline", "entries", "truncated", "stats"],
    "properties": {
        "pipeline": {"type": "string"},
        "entries": {"type": "array", "items": {"type": "object"}},
        "truncated": {"type": "boolean", "description": "true: more entries than limit"},
        "stats": {"type": "object", "description": "depth by priority, oldest age, estimated drain time"},
    },
}


_ERRORS: dict[int, str] = {
    400: "a bad body, parameter, header or request id (the message names it, e.g. entries[3].input.video_uri)",
    404: "no such request (or stage)",
    409: "the request's state forbids it",
    413: "a body over 64 KB",
    422: "the Idempotency-Key was used with another input",
    500: "the request's state cannot be read, or the function is misconfigured (`configuration error: ...`)",
    503: "a transient store or invocation failure: try again (Retry-After)",
}
_SUCCESSES: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {
    "start": {202: ("accepted and recorded (status INIT); its first step runs asynchronously", _ACCEPTED)},
    "status": {200: ("the request's status", _STATUS_DOC)},
    "stage": {200: ("one page of the stage's items", _STAGE_PAGE)},
    "resume": {202: ("accepted: a step invocation resumes it", _queued(_STATUS_DOC, status_url=True))},
    "reset": {200: ("the stages' tasks are PENDING again: a resume re-runs them", _RESET)},
    "queue_add": {202: ("queued (all of them; duplicates by key name the open entry)", _QUEUE_ADDED)},
    "queue": {200: ("the queue's entries and stats", _QUEUE)},
    "cancel": {
        200: ("cancelled at once", _queued(_STATUS_DOC)),
        202: ("accepted: the invocation that holds the request cancels it", _queued(_STATUS_DOC)),
    },
}


def answers(route: str, *errors: int) -> dict[int, OpenAPIResponse]:
    """The ``responses=`` of a route: its successes (``start``, ``status``, ``stage``, ``resume``, ``reset``,
    ``cancel``) and the error codes it really answers, each with its body."""
    declared: dict[int, OpenAPIResponse] = {}
    for code, (description, schema) in _SUCCESSES[route].items():
        declared[code] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if route == "start":
        declared[202]["headers"] = {
            "Location": {"description": "the status URL", "schema": {"type": "string"}},
            "Idempotent-Replayed": {"description": "`true` on a replay", "schema": {"type": "string"}},
        }
    for code in errors:
        declared[code] = {"description": _ERRORS[code], "content": {"application/json": {"model": ErrorBody}}}
    if 503 in errors:
        declared[503]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
    return declared


def _input_schema(pipeline: Pipeline | None) -> dict[str, Any] | None:
    """The pipeline's ``input:`` as the body's schema, when it can stand in the document as it is."""
    schema = pipeline.input_schema if pipeline is not None else None
    if schema is None or '"$ref"' in json.dumps(schema):
        return None
    body = {k: copy.deepcopy(v) for k, v in schema.items() if k not in ("$schema", "$id", "definitions", "$defs")}
    properties = body.get("properties")
    if isinstance(properties, dict) and PROFILE not in properties:
        properties[PROFILE] = {"type": "string", "description": "one of the pipeline's profiles"}
    return body


def document(app: APIGatewayHttpResolver, *, server: str, pipeline: Pipeline | None) -> dict[str, Any]:
    """The OpenAPI document of ``app`` as fave answers (see the module docs); ``server``: the API's base path."""
    from aws_lambda_powertools.event_handler.openapi.models import Server

    doc: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(title=TITLE, version=VERSION, description=DESCRIPTION, servers=[Server(url=server)])
    )
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            for code, response in list(responses.items()):
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref") == _GENERATED_422:
                    del responses[code]
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _POWERTOOLS_SCHEMAS:  # what nothing refers to any more (HTTPValidationError first)
        others = {k: v for k, v in schemas.items() if k != name}
        if f'"#/components/schemas/{name}"' not in json.dumps([doc["paths"], others]):
            schemas.pop(name, None)
    body = _input_schema(pipeline)
    start = doc["paths"].get("/requests", {}).get("post", {})
    if body is not None and "requestBody" in start:
        description = f"the input of pipeline '{pipeline.name if pipeline else ''}' (its pipeline.yaml input:)"
        start["requestBody"]["description"] = description
        start["requestBody"]["content"]["application/json"]["schema"] = body
    entry = doc.get("components", {}).get("schemas", {}).get("QueueEntryIn", {}).get("properties", {})
    if body is not None and "input" in entry:  # POST /queue: each entry's input is a POST /requests body
        entry["input"] = {**copy.deepcopy(body), "description": entry["input"].get("description", "")}
    return doc


def docs_page(spec: dict[str, Any]) -> str:
    """The Swagger UI page for ``spec``, self-contained (see the module docs)."""
    import aws_lambda_powertools.event_handler.openapi as powertools_openapi

    assets = Path(powertools_openapi.__file__).parent / "swagger_ui"
    # Inlined as Powertools inlines it (the bundle holds no "</script").
    script = (assets / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    style = (assets / "swagger-ui.min.css").read_text(encoding="utf-8")
    # "</" inside a <script> would end it: JSON allows "<\/" for the same string.
    spec_json = json.dumps(spec).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{TITLE} API</title>
<style>{style}</style>
</head>
<body>
<p>The OpenAPI document: <a href="openapi.json">openapi.json</a></p>
<div id="swagger-ui">Loading...</div>
<script>{script}</script>
<script>
SwaggerUIBundle({{
  dom_id: "#swagger-ui",
  spec: {spec_json},
  validatorUrl: null,
  deepLinking: true,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis]
}});
</script>
</body>
</html>
"""
