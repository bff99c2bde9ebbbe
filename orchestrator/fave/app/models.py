"""Request bodies at the function's boundary: ``POST /requests`` and an upload's sidecar are the pipeline's
input (validated against its ``input:`` by ``fave.inputs``); ``POST /requests/{id}/cancel`` and ``/reset`` are
pydantic models.

``request_input`` turns either into the request input the orchestrator stores and every stage receives:

* the body's fields are the input's fields; ``profile`` is an option of every request (default
  ``FAVE_DEFAULT_PROFILE``), checked against the pipeline's profiles;
* ``extra``, the field that carried further input fields before pipelines declared their input, is still
  read when the input declares no field of that name: its fields are merged in (and validated with the rest);
  it may not set a top-level field, ``profile`` or the upload field;
* ``query`` gets ``FAVE_DEFAULT_QUERY`` when the request sets none and the pipeline's input takes a query;
* the input's own ``default``s are filled in, then everything is checked: a missing, misspelt or wrong field
  is an ``InputError`` naming it (a 400), before anything is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fave.core.dag import Pipeline
from fave.inputs import (
    PROFILE,
    InputError,
    accepts,
    check_profile,
    declared_fields,
    upload_field,
    validate_input,
)

LEGACY_EXTRA = "extra"
LEGACY_RESERVED = ("video_uri", "query", "profile")


def request_input(
    body: Mapping[str, Any],
    pipeline: Pipeline,
    *,
    default_query: str | None,
    default_profile: str,
    upload: str | None = None,
) -> dict[str, Any]:
    """The request input of a ``POST /requests`` body or an upload's options (see the module docs). ``upload``:
    the uploaded object's URI, which fills the pipeline's upload field (the options may not set it)."""
    data = dict(body)
    field = upload_field(pipeline)
    if LEGACY_EXTRA in data and LEGACY_EXTRA not in declared_fields(pipeline):
        extra = data.pop(LEGACY_EXTRA)
        if not isinstance(extra, dict):
            raise InputError(LEGACY_EXTRA, "must be an object of further input fields")
        reserved = {*data, *LEGACY_RESERVED, *([field] if field else [])}
        clash = sorted(str(k) for k in extra if k in reserved)
        if clash:
            raise InputError(LEGACY_EXTRA, f"set {', '.join(clash)} at the top level, not in extra")
        data.update(extra)
    if upload is not None:
        if field is None:
            raise InputError("upload", f"pipeline '{pipeline.name}' declares no upload trigger (trigger.upload.field)")
        if field in data:
            raise InputError(field, "set by the upload itself, not by its options")
        data[field] = upload
    if data.get("query") is None:
        data.pop("query", None)  # null was how a body said "no query" before pipelines declared their input
        if default_query and accepts(pipeline, "query"):
            data["query"] = default_query
    if data.get(PROFILE) is None:
        data[PROFILE] = default_profile
    result = validate_input(pipeline, data)
    check_profile(pipeline, result[PROFILE])
    return result


class CancelRequest(BaseModel):
    """``POST /requests/{id}/cancel`` (the body is optional)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field("cancelled by user", min_length=1, max_length=500)


class ResetRequest(BaseModel):
    """``POST /requests/{id}/reset``: the stages to mark PENDING again (``fave reset``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    stages: list[str] = Field(min_length=1, max_length=100, description="stages of the request's pipeline")
    downstream: bool = Field(False, description="also every stage that needs them, directly or not")
