"""pipeline.yaml → ``fave.core.dag.Pipeline``: the file format (pydantic at the boundary) and its loader.

``parse_pipeline(raw, functions)`` turns a parsed document into the core's validated ``Pipeline``, given the
function logical ids that exist (the caller knows them: the local runtime from template.yaml, Lambda from
its ``FAVE_FUNCTION_*`` names); ``load_pipeline(path, functions=...)`` reads the file first. Neither reads a
SAM template: ``functions`` may be a callable that is given the pipeline's ``template`` path.

```yaml
name: video
template: template.yaml          # optional; default: template.yaml beside this file
final: aggregate                 # the stage whose output becomes metadata/final.json
input:                           # optional: what a request carries (default: any JSON object)
  fields:
    video_uri: {type: string, required: true, description: "a local path or s3://bucket/key"}
    query: string                # shorthand for {type: string}
    profile: string
trigger: {upload: {field: video_uri}}   # optional: the field an uploaded object's URI fills
defaults: {timeout: 5m, retry: {max_attempts: 2, interval: 1s, backoff_rate: 2, max_delay: 30s, jitter: full}}
profiles: {default: {}, fast: {split: {max_clip_s: 8}}}   # per-profile config overrides by stage
stages:
  split:   {function: SplitFunction, needs: [normalize], mode: sync}
  extract: {function: ExtractFunction, needs: [split], for_each: split.clips, mode: async,
            max_concurrency: 4, tolerated_failures: 10%}
  # or: for_each: {from: split.clips, key: id}   (each element's 'id' names it across requests)
```

Semantics:
* ``needs``: the stage starts when every listed stage has finished successfully; stages whose needs are
  met run in parallel.
* ``for_each: STAGE.PATH``: one task per element of the list at PATH in STAGE's output (STAGE must be a
  single-task stage listed in ``needs``). ``for_each: {from: STAGE.PATH, key: FIELD}``: FIELD (dotted) of each
  element is its key (a string or an integer, unique in the list; otherwise the source stage's task fails
  naming the element); without ``key`` an element's key is its content digest (``core.dag.content_key``).
  Keys name items in failures, ``fave status --stage``, ``fave items``. One key per list.
  Per-item stages over the same list form a *group*: a per-item
  stage that needs another per-item stage of its group runs item k as soon as that stage's item k
  succeeded (no barrier). A single-task stage that needs a per-item stage waits for all of its items.
* ``retry``: Step Functions' Retrier: ``max_attempts`` retries after the first attempt (0 = never retry),
  delay before retry n = min(interval * backoff_rate^(n-1), max_delay), ``jitter: full`` draws the delay
  uniformly from [0, delay]. Errors whose type is in ``non_retryable`` fail at once.
* ``tolerated_failures``: items of a fanned-out stage that may fail (count, or percent like ``10%``)
  before the stage and so the request fail. Downstream per-item tasks of a failed item are skipped.
* ``cache``: ``true`` (per stage or in ``defaults``; default false): a task whose key (function code, config,
  input) was computed before reuses that output (``fave.cache``). ``cache: {request: [FIELD, ...]}``: only
  those request fields enter the key, and the stage must read no other.
* ``input``: the request's input, checked at every door before anything is stored (``fave.inputs``). Either
  a JSON Schema of an object (``type: object``, drafts 4, 6, 7 or 2019-09, references inside it only), or a
  field list that compiles to one: ``fields: {NAME: FIELD}`` and ``additional`` (default false: a field not
  listed is refused, so a misspelt one is caught). FIELD is a type name (``string``, ``integer``,
  ``number``, ``boolean``, ``array``, ``object``, ``any``) or a mapping of ``type`` (default ``any``),
  ``required`` (default false), ``default`` (filled in when the field is absent; checked against the field
  at load), ``description``, ``enum``, ``minimum`` / ``maximum`` (numbers), ``min_length`` / ``max_length``
  (strings and arrays), ``pattern`` (strings, a Python regular expression) and ``items`` (an array's element
  type). Field names: a letter or ``_``, then letters, digits, ``_`` or ``-``. ``profile`` is an option of
  every request whether or not it is declared. Without ``input:`` a request may be any JSON object.
* ``operations:`` (optional; ``fave worker``, ``fave queue``, budgets): ``max_requests_in_flight`` (default 4: requests
  of this pipeline running at once), ``stale_after`` (a keyed queue entry whose last success is older is queued
  again), ``budget: {max_wall, max_invocations, max_cost_usd}`` (each optional: a request that exceeds one ends
  FAILED ``budget_exceeded: <which>``; a request or queue entry may override it), ``alerts: {webhook, command,
  queue_stuck_after (default 1h), throttle_sustained (default 5m)}``.
* ``functions: {F: {max_concurrency: N}}`` (optional): at most N invocations of function F at once across every
  request (the template's ``ReservedConcurrentExecutions`` on AWS must say the same). A stage's
  ``max_concurrency`` stays per request.
* ``trigger: {upload: {field: F}}``: the field that ``fave run SOURCE`` and an object uploaded under the
  upload prefix fill with the object's path or ``s3://`` URI. F must be a declared string field. Without
  ``input:`` it defaults to ``video_uri``; with ``input:`` and no trigger, uploads start nothing.

Hostile input (the file is read through ``fave.yamlsafe``: at most 256 KiB, UTF-8, no duplicate keys, alias
bombs and deep nesting refused while parsing):

* stage, profile and pipeline names (``name``) match ``NAME_PATTERN``: stage names end up in object keys
  (``requests/{id}/metadata/tasks/{stage}/...``) and log lines, profile and pipeline names in state.json and
  logs. ``final`` and ``needs`` must name stages; ``function`` must name a function of the template.
* ``config`` and the profiles' overrides must be JSON data (string keys; no dates, sets or binary): they are
  sent to the stage functions as JSON.
* ``template`` is a path relative to this file, deliberately unrestricted: the pipeline's author chooses it.
* Every error is a one-line ``PipelineError`` naming the file, the stage and the field; values quoted in it
  are escaped and shortened.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fave_shared.errors import FaveError, ValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from fave.core.dag import (
    DEFAULT_NON_RETRYABLE,
    NAME_PATTERN,
    CompletionPolicy,
    DagError,
    ForEach,
    Pipeline,
    RetryPolicy,
    Stage,
    check_name,
)
from fave.core.durations import parse_duration
from fave.core.operations import DEFAULT_MAX_REQUESTS_IN_FLIGHT, Alerts, Budget, Operations, OperationsError
from fave.inputs import check_default, check_schema
from fave.yamlsafe import YamlInputError, load_file

__all__ = [
    "DEFAULT_NON_RETRYABLE",
    "NAME_PATTERN",
    "Functions",
    "PipelineError",
    "load_pipeline",
    "parse_pipeline",
]

Functions = Collection[str] | Callable[[Path], Collection[str]]
"""The function logical ids that exist, or a callable that gives them for the pipeline's template path."""


class PipelineError(ValidationError):
    """pipeline.yaml is invalid. The message (one line) names the file, the stage and the field."""


# ---- the file format (pydantic at the boundary) -------------------------------------------------------


class _RetryModel(BaseModel):
    # defer_build (every model here): a validator is built on first use, not at import. A load validates
    # _PipelineModel (whose validator covers the models inside it) and builds the defaults' few: the other
    # validators were ~10 ms of every `fave run`'s start-up, built for nothing (fave bench startup).
    model_config = ConfigDict(extra="forbid", defer_build=True)
    max_attempts: int = Field(default=2, ge=0, le=100)
    interval: Any = 1.0
    backoff_rate: float = Field(default=2.0, ge=1.0, le=100.0)
    max_delay: Any = None
    jitter: Literal["full", "none"] = "full"
    non_retryable: list[str] | None = None


class _CacheModel(BaseModel):
    """``cache: {request: [FIELD, ...]}``: cached, with only these request fields in the key."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    request: list[Annotated[str, StringConstraints(min_length=1)]]


class _ForEachModel(BaseModel):
    """``for_each: {from: STAGE.FIELD, key: FIELD}`` (``for_each: STAGE.FIELD`` is ``{from: STAGE.FIELD}``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    from_: str = Field(alias="from")
    key: str | None = None


class _StageModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    function: str
    needs: list[str] = Field(default_factory=list)
    mode: Literal["sync", "async"] = "async"
    for_each: _ForEachModel | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    timeout: Any = None
    retry: _RetryModel | None = None
    tolerated_failures: StrictInt | str = 0
    config: dict[str, Any] = Field(default_factory=dict)
    cache: StrictBool | _CacheModel | None = None

    @field_validator("needs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("for_each", mode="before")
    @classmethod
    def _list_or_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"from": value}
        if value is None or isinstance(value, dict):
            return value
        # pydantic would name only the mapping form; most people write the string one.
        raise PydanticCustomError(
            "string_type", "Input should be a valid string (STAGE.FIELD) or a mapping {from: STAGE.FIELD, key: FIELD}"
        )


class _DefaultsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    timeout: Any = "5m"
    retry: _RetryModel = Field(default_factory=_RetryModel)
    cache: StrictBool = False


def _default_profiles() -> dict[str, dict[str, dict[str, Any]]]:
    return {"default": {}}


FieldType = Literal["string", "integer", "number", "boolean", "array", "object", "any"]
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


class _FieldModel(BaseModel):
    """One field of ``input: {fields: ...}``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    type: FieldType = "any"
    required: bool = False
    default: Any = None
    description: str | None = None
    enum: list[Any] | None = Field(default=None, min_length=1)
    minimum: int | float | None = None
    maximum: int | float | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    pattern: str | None = None
    items: FieldType | None = None


class _FieldsModel(BaseModel):
    """``input: {fields: {NAME: FIELD}, additional: false}``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    fields: dict[str, _FieldModel]
    additional: bool = False

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # ``query: string`` is ``query: {type: string}``.
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


class _UploadTriggerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    field: str


class _TriggerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    upload: _UploadTriggerModel | None = None


class _BudgetModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    max_wall: Any = None
    max_invocations: StrictInt | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)


class _AlertsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    webhook: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    command: Annotated[str, StringConstraints(min_length=1)] | None = None
    queue_stuck_after: Any = "1h"
    throttle_sustained: Any = "5m"


class _OperationsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    max_requests_in_flight: StrictInt = Field(default=DEFAULT_MAX_REQUESTS_IN_FLIGHT, ge=1, le=10_000)
    stale_after: Any = None
    budget: _BudgetModel = Field(default_factory=_BudgetModel)
    alerts: _AlertsModel = Field(default_factory=_AlertsModel)


class _FunctionModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    max_concurrency: StrictInt = Field(ge=1, le=100_000)


class _PipelineModel(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    operations: _OperationsModel = Field(default_factory=_OperationsModel)
    functions: dict[str, _FunctionModel] = Field(default_factory=dict)
    name: str = "pipeline"
    template: str = "template.yaml"
    final: str | None = None
    defaults: _DefaultsModel = Field(default_factory=_DefaultsModel)
    profiles: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=_default_profiles)
    input: dict[str, Any] | None = None
    trigger: _TriggerModel | None = None
    stages: dict[str, _StageModel]


# ---- messages -------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _one_line(text: str) -> str:
    # A name or key from the file may hold a newline; the message must stay one line (CLI, logs).
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _fail(path: Path, where: str, message: str) -> PipelineError:
    return PipelineError(_one_line(f"{path}: {where}: {message}"))


def _show(value: Any, limit: int = 80) -> str:
    """A value from the file as it appears in a message: quoted, escaped, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_UNION_MEMBERS = {"int", "str", "float", "bool", "constrained-str"}
_OUR_CLASSES = re.compile(r" or instance of _\w+")


def _pydantic_message(path: Path, exc: PydanticValidationError) -> PipelineError:
    err = exc.errors()[0]
    # pydantic names a union's member in the location ('tolerated_failures.int') and our private models in
    # the message ('or instance of _StageModel'): neither is anything the user wrote.
    loc = [_clip(str(p)) for p in err["loc"] if str(p) not in _UNION_MEMBERS]
    if len(loc) >= 2 and loc[0] == "stages":
        where = f"stage '{loc[1]}'" + (f", field '{'.'.join(loc[2:])}'" if len(loc) > 2 else "")
    else:
        where = f"field '{'.'.join(loc)}'" if loc else "top level"
    return _fail(path, where, _OUR_CLASSES.sub("", err["msg"]))


# ---- parsing --------------------------------------------------------------------------------------------


def _check_names(raw: Mapping[Any, Any]) -> None:
    """Names that end up in object keys, state.json and log lines: checked before anything quotes them."""
    if isinstance(raw.get("name"), str):
        check_name("pipeline", raw["name"], "field 'name'")
    stages = raw.get("stages")
    for stage in stages if isinstance(stages, dict) else ():
        check_name("stage", stage, f"stage {_show(stage)}")
    profiles = raw.get("profiles")
    for profile in profiles if isinstance(profiles, dict) else ():
        check_name("profile", profile, "field 'profiles'")


def _duration(where: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise DagError(where, str(exc)) from None


def _retry(where: str, model: _RetryModel) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=model.max_attempts,
        interval_s=_duration(f"{where}.interval'", model.interval),
        backoff_rate=model.backoff_rate,
        max_delay_s=None if model.max_delay is None else _duration(f"{where}.max_delay'", model.max_delay),
        jitter=model.jitter,
        non_retryable=tuple(model.non_retryable) if model.non_retryable is not None else DEFAULT_NON_RETRYABLE,
    )


def _completion(where: str, value: int | str) -> CompletionPolicy:
    if isinstance(value, int):
        if value < 0:
            raise DagError(where, "must be >= 0")
        return CompletionPolicy(count=value)
    text = value.strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return CompletionPolicy(percent=pct)
        return _completion(where, int(text))
    except ValueError:
        raise DagError(where, f"expected a count or a percentage like '10%', got {value!r}") from None


def _stage(
    name: str,
    s: _StageModel,
    defaults: tuple[float, RetryPolicy, bool],
    functions: Collection[str],
    template: str,
) -> Stage:
    where = f"stage '{name}'"
    if s.function not in functions:
        raise DagError(f"{where}, field 'function'", f"{_show(s.function)} is not a function in {template}")
    default_timeout, default_retry, default_cache = defaults
    retry = _retry(f"{where}, field 'retry", s.retry) if s.retry is not None else default_retry
    timeout = _duration(f"{where}, field 'timeout'", s.timeout) if s.timeout is not None else default_timeout
    return Stage(
        name=name,
        function=s.function,
        needs=tuple(s.needs),
        mode=s.mode,
        timeout_s=timeout,
        retry=retry,
        for_each=ForEach.parse(s.for_each.from_, s.for_each.key) if s.for_each is not None else None,
        max_concurrency=s.max_concurrency,
        completion=_completion(f"{where}, field 'tolerated_failures'", s.tolerated_failures),
        config=s.config,
        cache=default_cache if s.cache is None else s.cache is not False,
        cache_request=tuple(dict.fromkeys(s.cache.request)) if isinstance(s.cache, _CacheModel) else None,
    )


_SCHEMA_KEYWORD = {
    ("min_length", "string"): "minLength",
    ("max_length", "string"): "maxLength",
    ("min_length", "array"): "minItems",
    ("max_length", "array"): "maxItems",
}


def _field_schema(name: str, spec: _FieldModel) -> dict[str, Any]:
    """One field of a field list as the JSON Schema of its property; ``DagError`` for a contradiction."""
    where = f"field 'input.fields.{name}"
    kind = spec.type
    prop: dict[str, Any] = {} if kind == "any" else {"type": kind}
    if spec.description is not None:
        prop["description"] = spec.description
    if spec.enum is not None:
        prop["enum"] = spec.enum
    given: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
        ("minimum", spec.minimum, ("integer", "number")),
        ("maximum", spec.maximum, ("integer", "number")),
        ("min_length", spec.min_length, ("string", "array")),
        ("max_length", spec.max_length, ("string", "array")),
        ("pattern", spec.pattern, ("string",)),
        ("items", spec.items, ("array",)),
    )
    for key, value, kinds in given:
        if value is None:
            continue
        if kind not in kinds:
            raise DagError(f"{where}.{key}'", f"applies to a field of type {' or '.join(kinds)}, not {kind}")
        if key == "items":
            prop[key] = {} if value == "any" else {"type": value}
        else:
            prop[_SCHEMA_KEYWORD.get((key, kind), key)] = value
    if "default" in spec.model_fields_set:
        if spec.required:
            raise DagError(f"{where}.default'", "a required field has no default: drop one of them")
        try:
            json.dumps(spec.default, allow_nan=False)
        except (TypeError, ValueError):
            raise DagError(f"{where}.default'", f"{_show(spec.default)} is not JSON data: quote it") from None
        check_default(prop, spec.default, f"{where}.default'")
        prop["default"] = spec.default
    return prop


def _input_schema(raw: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``input:``: a field list compiled, or a JSON Schema as written (both checked)."""
    if "fields" not in raw:  # a JSON Schema (no JSON Schema keyword is called 'fields')
        try:
            json.dumps(raw, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DagError("field 'input'", f"the schema is not JSON data ({exc}): quote dates and such") from None
        check_schema(raw)
        return raw
    try:
        model = _FieldsModel.model_validate(raw)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(_clip(str(p)) for p in err["loc"] if str(p) not in _UNION_MEMBERS)
        raise DagError(f"field 'input.{loc}'", _OUR_CLASSES.sub("", err["msg"])) from None
    properties: dict[str, Any] = {}
    for name, spec in model.fields.items():
        if not _FIELD_NAME.fullmatch(name):
            raise DagError(
                "field 'input.fields'",
                f"{_show(name)} is not a valid field name: a letter or '_', then letters, digits, '_' or '-'",
            )
        properties[name] = _field_schema(name, spec)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [name for name, spec in model.fields.items() if spec.required]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = model.additional
    check_schema(schema)
    return schema


def _upload_field(trigger: _TriggerModel | None, schema: dict[str, Any] | None) -> str | None:
    """The trigger's upload field, which must be a declared field that takes a string."""
    if trigger is None or trigger.upload is None:
        return None
    field = trigger.upload.field
    if schema is None:
        return field
    prop = schema.get("properties", {}).get(field)
    if not isinstance(prop, dict):
        raise DagError("field 'trigger.upload.field'", f"{_show(field)} is not a field of 'input'")
    kind = prop.get("type", "string")
    if kind != "string" and not (isinstance(kind, list) and "string" in kind):
        raise DagError("field 'trigger.upload.field'", f"'{field}' must be a string field (an object's URI fills it)")
    return field


def budget_of(where: str, model: _BudgetModel) -> Budget:
    """A budget from its file form (also a request's or queue entry's override, with ``where`` naming it)."""
    try:
        return Budget(
            max_wall_s=None if model.max_wall is None else _duration(f"{where}.max_wall'", model.max_wall),
            max_invocations=model.max_invocations,
            max_cost_usd=model.max_cost_usd,
        )
    except OperationsError as exc:
        raise DagError(where, exc.message) from None


def parse_budget(value: Mapping[str, Any], where: str = "budget") -> Budget:
    """A request's or queue entry's budget override, in pipeline.yaml's form (``{max_wall: 1h, max_invocations:
    500, max_cost_usd: 2.5}``, each optional). ``ValidationError`` naming ``where`` and the field."""
    try:
        model = _BudgetModel.model_validate(value)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ValidationError(f"{where}.{field}: {first['msg']}") from None
    try:
        return budget_of(f"{where}", model)
    except DagError as exc:
        raise ValidationError(f"{exc.where.strip(chr(39))}: {exc.message}".replace("field ", "")) from None


def _operations(model: _PipelineModel, functions: Collection[str]) -> Operations:
    ops = model.operations
    for function in model.functions:
        if function not in functions:
            raise DagError(f"field 'functions.{_clip(function)}'", "not a function of the template")
    alerts = ops.alerts
    try:
        return Operations(
            max_requests_in_flight=ops.max_requests_in_flight,
            stale_after_s=None
            if ops.stale_after is None
            else _duration("field 'operations.stale_after'", ops.stale_after),
            budget=budget_of("field 'operations.budget", ops.budget),
            alerts=Alerts(
                webhook=alerts.webhook,
                command=alerts.command,
                queue_stuck_after_s=_duration("field 'operations.alerts.queue_stuck_after'", alerts.queue_stuck_after),
                throttle_sustained_s=_duration(
                    "field 'operations.alerts.throttle_sustained'", alerts.throttle_sustained
                ),
            ),
            function_caps={name: f.max_concurrency for name, f in model.functions.items()},
        )
    except OperationsError as exc:
        raise DagError(exc.where, exc.message) from None


def _located(name: str, exc: DagError) -> DagError:
    """A policy's own error (``field 'for_each'``) placed in its stage."""
    return (
        exc
        if exc.where.startswith(("stage", "field 'name'"))
        else DagError(f"stage '{name}', {exc.where}", exc.message)
    )


def parse_pipeline(
    raw: Mapping[str, Any],
    functions: Collection[str],
    *,
    path: Path = Path("pipeline.yaml"),
    template_path: Path | None = None,
) -> Pipeline:
    """The validated pipeline of a parsed pipeline.yaml document; ``functions``: the logical ids that exist.

    Raises ``PipelineError``, one line naming ``path``, the stage and the field."""
    try:
        if not isinstance(raw, Mapping):
            raise DagError("top level", "expected a mapping with 'stages'")
        _check_names(raw)
        try:
            model = _PipelineModel.model_validate(raw)
        except PydanticValidationError as exc:
            raise _pydantic_message(path, exc) from None
        template = template_path if template_path is not None else (path.parent / model.template)
        # The defaults once, where they are written (not at the first stage they happen to apply to).
        defaults = (
            _duration("field 'defaults.timeout'", model.defaults.timeout),
            _retry("field 'defaults.retry", model.defaults.retry),
            model.defaults.cache,
        )
        stages = []
        for name, spec in model.stages.items():
            try:
                stages.append(_stage(name, spec, defaults, functions, template.name))
            except DagError as exc:
                raise _located(name, exc) from None
        operations = _operations(model, functions)
        input_schema = _input_schema(model.input) if model.input is not None else None
        upload_field = _upload_field(model.trigger, input_schema)
        digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return Pipeline.build(
            name=model.name,
            stages=stages,
            final=model.final,
            profiles=model.profiles,
            digest=digest,
            path=path,
            template_path=template,
            input_schema=input_schema,
            upload_field=upload_field,
            operations=operations,
        )
    except DagError as exc:
        raise _fail(path, exc.where, exc.message) from None


def load_pipeline(path: str | Path, *, functions: Functions) -> Pipeline:
    """Read and validate the pipeline file at ``path``. ``functions``: the logical ids that exist, or a callable
    given the pipeline's template path that returns them (a ``FaveError`` it raises becomes a PipelineError on
    field 'template'); the path as the pipeline names it, in its folder (not resolved: a caller that keeps the
    result can tell a symbolic link repointed later). Raises ``PipelineError`` naming file, stage and field."""
    path = Path(path).resolve()
    try:
        raw = load_file(path)
    except FileNotFoundError:
        raise PipelineError(_one_line(f"{path}: no such pipeline file")) from None
    except YamlInputError as exc:
        raise PipelineError(str(exc)) from None
    template_name = raw.get("template", "template.yaml") if isinstance(raw, dict) else "template.yaml"
    named = path.parent / str(template_name)
    template_path = named.resolve()
    if callable(functions):
        try:
            functions = functions(named)
        except FaveError as exc:  # a missing or unrunnable template: still one PipelineError
            raise _fail(path, "field 'template'", str(exc)) from None
    return parse_pipeline(raw, functions, path=path, template_path=template_path)
