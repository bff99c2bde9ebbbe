"""A request's input: what a pipeline declares it takes, checked at every door before anything is stored.

pipeline.yaml's ``input:`` (parsed by ``fave.pipeline``) is either a JSON Schema of an object or a field list
that compiles to one; ``fave.core.dag.Pipeline.input_schema`` carries the result as plain data (the core
imports no validator). This module checks such a schema when the pipeline is loaded (``check_schema``) and
validates a request's input against it (``validate_input``) for ``fave run``, ``POST /requests`` and the
upload trigger, filling the declared defaults.

* A pipeline without ``input:`` takes any JSON object (``input_schema`` None): nothing is validated here.
* ``profile`` is an option of every request, whatever the schema says: a top-level string naming one of the
  pipeline's profiles (``fave.service`` checks the name). A schema may declare it (the video pipeline does,
  so that its input documents it); if it does not, ``profile`` is taken out before validation and put back.
* ``trigger: {upload: {field: F}}`` names the field an uploaded object's URI fills (``upload_field``). A
  pipeline that declares no input keeps the old contract: its upload field is ``video_uri``.

The validator is fastjsonschema (pure Python, no dependencies: it ships in the orchestrator's Lambda bundle
as one small wheel; drafts 4, 6, 7 and most of 2019-09). It compiles a schema into a Python function once,
on first use, and is imported only then, so a pipeline without ``input:`` never loads it. The orchestrator
never fetches a schema: a ``$ref`` must point inside the schema (``#/...``), refused at load otherwise.

Errors are one line naming the field: ``InputError`` (a ``ValidationError``: exit 2 in the CLI, 400 over
HTTP), ``field`` and ``reason`` apart for the HTTP API's ``errors`` list.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fave_shared.errors import ValidationError

from fave.core.dag import DagError

if TYPE_CHECKING:
    from fastjsonschema import JsonSchemaValueException

    from fave.core.dag import Pipeline

__all__ = [
    "LEGACY_UPLOAD_FIELD",
    "PROFILE",
    "InputError",
    "accepts",
    "check_default",
    "check_profile",
    "check_schema",
    "declared_fields",
    "required_fields",
    "upload_field",
    "validate_input",
]

PROFILE = "profile"
"""The option every request may set, declared or not."""
LEGACY_UPLOAD_FIELD = "video_uri"
"""The upload field of a pipeline that declares no ``input:`` (the contract before inputs were declared)."""

_SUPPORTED_DRAFTS = ("draft-04", "draft-06", "draft-07", "draft/2019-09", "draft-2019-09")
_MESSAGE_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,80}")


class InputError(ValidationError):
    """A request's input does not match its pipeline's ``input:``: ``field`` (dotted path; ``input`` for the
    whole object) and ``reason``. ``str()`` is one line, ``"{field}: {reason}"``."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = _one_line(reason)
        super().__init__(f"{field}: {self.reason}")


# ---- what a pipeline declares -------------------------------------------------------------------------


def _properties(schema: Mapping[str, Any] | None) -> Mapping[str, Any]:
    props = schema.get("properties") if schema is not None else None
    return props if isinstance(props, Mapping) else {}


def declared_fields(pipeline: Pipeline) -> list[str]:
    """The fields the pipeline's input declares (``properties``), in their order; [] without ``input:``."""
    return list(_properties(pipeline.input_schema))


def required_fields(pipeline: Pipeline) -> list[str]:
    """The fields the pipeline's input requires; [] without ``input:``."""
    schema = pipeline.input_schema
    required = schema.get("required") if schema is not None else None
    return [str(name) for name in required] if isinstance(required, list) else []


def accepts(pipeline: Pipeline, field: str) -> bool:
    """Whether a top-level ``field`` may be set: declared, or the schema allows fields it does not list (a
    pipeline without ``input:`` takes anything)."""
    schema = pipeline.input_schema
    if schema is None or field == PROFILE or field in _properties(schema):
        return True
    return schema.get("additionalProperties", True) is not False and not schema.get("patternProperties")


def upload_field(pipeline: Pipeline) -> str | None:
    """The field an uploaded object's URI (and ``fave run SOURCE``) fills: the pipeline's
    ``trigger.upload.field``; ``video_uri`` for a pipeline without ``input:``; else None (no upload trigger)."""
    if pipeline.upload_field is not None:
        return pipeline.upload_field
    return LEGACY_UPLOAD_FIELD if pipeline.input_schema is None else None


def check_profile(pipeline: Pipeline, profile: str) -> None:
    """``InputError`` (field ``profile``) unless ``profile`` is one of the pipeline's profiles."""
    if profile not in pipeline.profiles:
        shown = profile if len(profile) <= 64 else profile[:61] + "..."
        known = ", ".join(sorted(pipeline.profiles))
        raise InputError(PROFILE, f"unknown profile {shown!r} (this pipeline has: {known})")


# ---- checking a schema at load ----------------------------------------------------------------------------


def _walk(value: Any) -> Iterator[Mapping[str, Any]]:
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, Mapping):
            yield item
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)


def check_schema(schema: Any, field: str = "input") -> None:
    """``DagError`` (naming ``field 'input...'``) unless ``schema`` is a JSON Schema of an object that
    fastjsonschema compiles, whose references all point inside it."""
    where = f"field '{field}'"
    if not isinstance(schema, Mapping):
        raise DagError(where, "expected a JSON Schema (a mapping) or a field list ({fields: {...}})")
    if schema.get("type") != "object":
        raise DagError(
            where, "a request's input is a JSON object: the schema needs 'type: object' (fields under 'properties')"
        )
    draft = schema.get("$schema")
    if draft is not None and not (isinstance(draft, str) and any(d in draft for d in _SUPPORTED_DRAFTS)):
        raise DagError(
            f"field '{field}.$schema'", f"{_shown(draft)}: supported drafts are 4, 6, 7 and 2019-09 (or leave it out)"
        )
    for node in _walk(schema):
        ref = node.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
            raise DagError(
                f"field '{field}.$ref'",
                f"{_shown(ref)}: only references inside the schema ('#/...') are allowed; fave never fetches one",
            )
    props = schema.get("properties", {})
    if not isinstance(props, Mapping) or not all(isinstance(name, str) for name in props):
        raise DagError(f"field '{field}.properties'", "expected a mapping of field names to schemas")
    profile = props.get(PROFILE)
    if isinstance(profile, Mapping) and profile.get("type", "string") not in ("string", ["string"]):
        raise DagError(
            f"field '{field}.properties.profile'", "a request's profile is a string: declare it type: string"
        )
    try:
        _validator(schema)
    except DagError:
        raise
    except Exception as exc:  # fastjsonschema's definition errors, and whatever a broken schema makes it raise
        raise DagError(where, f"not a valid JSON Schema: {_one_line(str(exc)) or type(exc).__name__}") from None


def check_default(prop: Mapping[str, Any], default: Any, where: str) -> None:
    """``DagError`` unless ``default`` is valid for the field schema ``prop`` (a field list's field)."""
    try:
        _validator({"type": "object", "properties": {"value": dict(prop)}})({"value": copy.deepcopy(default)})
    except Exception as exc:
        raise DagError(where, f"the default does not fit the field: {_reason(exc)}") from None


# ---- validating a request's input --------------------------------------------------------------------------


def validate_input(pipeline: Pipeline, value: Mapping[str, Any]) -> dict[str, Any]:
    """The request input ``value`` checked against the pipeline's ``input:`` and completed with its defaults
    (a new object: ``value`` is left as it was). Raises ``InputError`` naming the first field that is wrong."""
    data = copy.deepcopy(dict(value))
    profile = data.get(PROFILE)
    if profile is not None and not isinstance(profile, str):
        raise InputError(PROFILE, "must be a string (one of the pipeline's profiles)")
    schema = pipeline.input_schema
    if schema is None:
        return data
    option = data.pop(PROFILE) if PROFILE in data and PROFILE not in _properties(schema) else None
    from fastjsonschema import JsonSchemaValueException

    try:
        checked = _validator(schema)(data)
    except JsonSchemaValueException as exc:
        raise _input_error(exc, schema) from None
    result: dict[str, Any] = checked if isinstance(checked, dict) else data
    if option is not None:
        result[PROFILE] = option
    return result


def _input_error(exc: JsonSchemaValueException, schema: Mapping[str, Any]) -> InputError:
    path = exc.path[1:]  # fastjsonschema names the root "data"
    value = exc.value
    if exc.rule == "required" and isinstance(value, Mapping):
        missing = [str(k) for k in (exc.rule_definition or ()) if k not in value]
        return InputError(_field([*path, *missing[:1]]), "required")
    if exc.rule == "additionalProperties" and isinstance(value, Mapping) and isinstance(exc.definition, Mapping):
        props = exc.definition.get("properties")
        patterns = exc.definition.get("patternProperties") or {}
        known = list(props) if isinstance(props, Mapping) else []
        extra = sorted(str(k) for k in value if k not in known and not any(re.search(str(p), str(k)) for p in patterns))
        listed = ", ".join(known + ([PROFILE] if not path and PROFILE not in known else []))
        where = "this pipeline's input" if not path else "this object"
        return InputError(_field([*path, *extra[:1]]), f"not a field of {where} (fields: {listed or 'none'})")
    return InputError(_field(path), _reason(exc))


def _reason(exc: Exception) -> str:
    message = str(getattr(exc, "message", exc))
    name = getattr(exc, "name", None)
    if isinstance(name, str) and message.startswith(name + " "):
        message = message[len(name) + 1 :]
    return message


def _field(path: list[str]) -> str:
    text = ".".join(path) or "input"
    return text if _PLAIN_NAME.fullmatch(text) else _shown(text)


# ---- compiled validators, one per schema ----------------------------------------------------------------

_VALIDATORS: dict[str, Callable[[Any], Any]] = {}
_LOCK = threading.Lock()


def _refuse_remote(uri: str) -> Any:
    raise DagError("field 'input'", f"{_shown(uri)}: fave never fetches a schema")


# Every scheme urllib would open: fastjsonschema fetches a remote $ref it has no handler for.
_NO_REMOTE = dict.fromkeys(("http", "https", "ftp", "file", "data", "urn", ""), _refuse_remote)


def _validator(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    """fastjsonschema's validator of ``schema``, compiled once per schema (a Lambda environment validates every
    POST with it). It fills ``default``s into the object it validates."""
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _VALIDATORS.get(key)
    if validator is None:
        import fastjsonschema

        validator = fastjsonschema.compile(copy.deepcopy(dict(schema)), handlers=_NO_REMOTE, use_default=True)
        with _LOCK:
            _VALIDATORS[key] = validator
    return validator


# ---- messages -------------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
