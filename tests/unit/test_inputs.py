"""A pipeline's declared input (pipeline.yaml ``input:`` and ``trigger:``, issue 11 requirement 1): how a
field list compiles to a JSON Schema, which schemas and triggers are refused at load, and how a request's input
is checked at the doors (``fave.inputs.validate_input``, ``fave.app.models.request_input``): the field named,
defaults filled, ``profile`` an option of every request. In memory: the CLI and HTTP doors are
tests/functional/test_cli_input.py and tests/functional/aws/test_app_input.py."""

from __future__ import annotations

from typing import Any

import pytest
from fave.app.models import request_input
from fave.core.dag import Pipeline
from fave.inputs import InputError, accepts, declared_fields, required_fields, upload_field, validate_input
from fave.pipeline import PipelineError
from support.pipelines import make_pipeline

STAGES = {"a": {"function": "F", "mode": "sync"}}

#: The video pipeline's input, as pipeline.yaml declares it.
VIDEO = {
    "fields": {
        "video_uri": {"type": "string", "required": True, "min_length": 1, "max_length": 2048},
        "query": {"type": "string", "max_length": 1000},
        "profile": {"type": "string"},
    }
}


def pipeline(input_section: Any = None, trigger: Any = None, **top: Any) -> Pipeline:
    doc: dict[str, Any] = {"name": "p", "stages": STAGES, **top}
    if input_section is not None:
        doc["input"] = input_section
    if trigger is not None:
        doc["trigger"] = trigger
    return make_pipeline(doc)


def refused(input_section: Any = None, trigger: Any = None) -> str:
    with pytest.raises(PipelineError) as caught:
        pipeline(input_section, trigger)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def bad_input(p: Pipeline, value: dict[str, Any]) -> InputError:
    with pytest.raises(InputError) as caught:
        validate_input(p, value)
    assert "\n" not in str(caught.value)
    return caught.value


# -- what a pipeline declares ----------------------------------------------------------------------------


def test_a_field_list_compiles_to_a_closed_object_schema() -> None:
    p = pipeline(
        {
            "fields": {
                "text": {"type": "string", "required": True, "min_length": 1},
                "count": {"type": "integer", "minimum": 1, "default": 3},
                "tags": {"type": "array", "items": "string", "max_length": 5},
                "mode": {"enum": ["a", "b"]},
                "note": "string",
            }
        }
    )
    assert p.input_schema == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "count": {"type": "integer", "minimum": 1, "default": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
            "mode": {"enum": ["a", "b"]},
            "note": {"type": "string"},
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    assert declared_fields(p) == ["text", "count", "tags", "mode", "note"]
    assert required_fields(p) == ["text"]
    assert not accepts(p, "txet") and accepts(p, "profile") and accepts(p, "text")
    assert upload_field(p) is None  # declared input, no trigger: uploads start nothing


def test_a_json_schema_is_taken_as_written() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "point": {"$ref": "#/definitions/point"}},
        "definitions": {"point": {"type": "object", "required": ["x"], "properties": {"x": {"type": "number"}}}},
        "required": ["n"],
    }
    p = pipeline(schema)
    assert p.input_schema == schema
    assert validate_input(p, {"n": 1, "point": {"x": 2.5}, "more": True}) == {"n": 1, "point": {"x": 2.5}, "more": True}
    assert bad_input(p, {"n": 1, "point": {"y": 1}}).field == "point.x"


def test_without_input_anything_goes_and_the_upload_field_is_video_uri() -> None:
    p = pipeline()
    assert p.input_schema is None and upload_field(p) == "video_uri" and accepts(p, "anything")
    assert validate_input(p, {"whatever": [1, 2]}) == {"whatever": [1, 2]}


@pytest.mark.parametrize(
    ("input_section", "trigger", "needles"),
    [
        ({"type": "array"}, None, ("field 'input'", "type: object")),
        ({"type": "object", "$ref": "https://example.com/s.json"}, None, ("input.$ref", "never fetches")),
        ({"type": "object", "$schema": "https://json-schema.org/draft/2020-12/schema"}, None, ("input.$schema",)),
        ({"type": "object", "properties": {"n": {"type": "nonsense"}}}, None, ("not a valid JSON Schema",)),
        ({"fields": {"n": {"type": "integer", "pattern": "x"}}}, None, ("input.fields.n.pattern", "string")),
        ({"fields": {"n": {"type": "integer", "default": "x"}}}, None, ("input.fields.n.default", "does not fit")),
        ({"fields": {"n": {"type": "integer", "required": True, "default": 1}}}, None, ("input.fields.n.default",)),
        ({"fields": {"n": {"type": "integr"}}}, None, ("input.fields.n",)),
        ({"fields": {"1n": "string"}}, None, ("'1n' is not a valid field name",)),
        ({"fields": {"profile": "integer"}}, None, ("input.properties.profile", "string")),
        (VIDEO, {"upload": {"field": "video"}}, ("trigger.upload.field", "'video' is not a field of 'input'")),
        ({"fields": {"n": "integer"}}, {"upload": {"field": "n"}}, ("trigger.upload.field", "string field")),
        (VIDEO, {"uplaod": {"field": "video_uri"}}, ("trigger.uplaod",)),
    ],
)
def test_a_bad_input_or_trigger_is_refused_at_load_naming_the_field(
    input_section: Any, trigger: Any, needles: tuple[str, ...]
) -> None:
    message = refused(input_section, trigger)
    for needle in needles:
        assert needle in message, message


# -- a request's input at the doors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        ({"query": "cars"}, "video_uri", "required"),
        ({"video_uri": "s3://b/k", "qeury": "cars"}, "qeury", "not a field of this pipeline's input"),
        ({"video_uri": "s3://b/k", "query": 7}, "query", "must be string"),
        ({"video_uri": ""}, "video_uri", "must be longer than or equal to 1 characters"),
        ({"video_uri": "s3://b/k", "profile": 3}, "profile", "must be a string"),
    ],
)
def test_the_video_input_names_the_field_that_is_wrong(value: dict[str, Any], field: str, reason: str) -> None:
    error = bad_input(pipeline(VIDEO, {"upload": {"field": "video_uri"}}), value)
    assert error.field == field and reason in error.reason, str(error)
    assert str(error).startswith(f"{field}: ")


def test_defaults_are_filled_and_profile_is_an_option_of_every_request() -> None:
    p = pipeline(
        {"fields": {"text": {"type": "string", "required": True}, "lang": {"type": "string", "default": "en"}}}
    )
    given = {"text": "a b", "profile": "fast"}
    assert validate_input(p, given) == {"text": "a b", "lang": "en", "profile": "fast"}
    assert given == {"text": "a b", "profile": "fast"}  # the caller's object is left as it was
    nested = bad_input(p, {"text": "a", "lang": ["en"]})
    assert nested.field == "lang"


def test_request_input_keeps_the_video_body_and_applies_defaults_profile_and_upload() -> None:
    video = pipeline(VIDEO, {"upload": {"field": "video_uri"}}, profiles={"default": {}, "fast": {}})
    body = {"video_uri": "s3://b/in/a.mp4", "query": "cars", "profile": "fast"}
    assert request_input(body, video, default_query="q0", default_profile="default") == body
    assert request_input({"video_uri": "s3://b/k"}, video, default_query="q0", default_profile="default") == {
        "video_uri": "s3://b/k",
        "query": "q0",
        "profile": "default",
    }
    with pytest.raises(InputError, match="profile: unknown profile 'loud'"):
        request_input(
            {"video_uri": "s3://b/k", "profile": "loud"}, video, default_query=None, default_profile="default"
        )
    # An upload fills the upload field; its options may not set it.
    uploaded = request_input({"query": "dogs"}, video, default_query=None, default_profile="default", upload="s3://b/u")
    assert uploaded == {"video_uri": "s3://b/u", "query": "dogs", "profile": "default"}
    with pytest.raises(InputError, match="video_uri: set by the upload itself"):
        request_input({"video_uri": "x"}, video, default_query=None, default_profile="default", upload="s3://b/u")


def test_a_pipeline_without_query_gets_no_default_query_and_no_upload_without_a_trigger() -> None:
    words = pipeline({"fields": {"text": {"type": "string", "required": True}}})
    assert request_input({"text": "a"}, words, default_query="q0", default_profile="default") == {
        "text": "a",
        "profile": "default",
    }
    with pytest.raises(InputError) as caught:
        request_input({"text": "a"}, words, default_query=None, default_profile="default", upload="s3://b/u")
    assert caught.value.field == "upload" and "no upload trigger" in caught.value.reason
