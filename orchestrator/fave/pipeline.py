"""pipeline.yaml: the one DAG definition, loaded into frozen dataclasses and validated as a whole.

```yaml
name: video
template: template.yaml          # optional; default: template.yaml beside this file
final: aggregate                 # the stage whose output becomes metadata/final.json
defaults: {timeout: 5m, retry: {max_attempts: 2, interval: 1s, backoff_rate: 2, max_delay: 30s, jitter: full}}
profiles: {default: {}, fast: {split: {max_clip_s: 8}}}   # per-profile config overrides by stage
stages:
  split:   {function: SplitFunction, needs: [normalize], mode: sync}
  extract: {function: ExtractFunction, needs: [split], for_each: split.clips, mode: async,
            max_concurrency: 4, tolerated_failures: 10%}
```

Semantics:
* ``needs``: the stage starts when every listed stage has finished successfully; stages whose needs are
  met run in parallel.
* ``for_each: STAGE.PATH``: one task per element of the list at PATH in STAGE's output (STAGE must be a
  single-task stage listed in ``needs``). Per-item stages over the same list form a *group*: a per-item
  stage that needs another per-item stage of its group runs item k as soon as that stage's item k
  succeeded (no barrier). A single-task stage that needs a per-item stage waits for all of its items.
* ``retry``: Step Functions' Retrier: ``max_attempts`` retries after the first attempt (0 = never retry),
  delay before retry n = min(interval * backoff_rate^(n-1), max_delay), ``jitter: full`` draws the delay
  uniformly from [0, delay]. Errors whose type is in ``non_retryable`` fail at once.
* ``tolerated_failures``: items of a fanned-out stage that may fail (count, or percent like ``10%``)
  before the stage and so the request fail. Downstream per-item tasks of a failed item are skipped.

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
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fave_shared.errors import FaveError, ValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from fave.core.durations import parse_duration
from fave.yamlsafe import YamlInputError, load_file

DEFAULT_NON_RETRYABLE = (
    "TerminalError",
    "ValidationError",
    "NotFoundError",
    "InputError",
    "MediaInputError",
)


NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
"""Stage, profile and pipeline names: a letter, then up to 63 letters, digits, ``_`` or ``-``."""
_NAME = re.compile(NAME_PATTERN)
_NAME_RULE = "use a letter, then letters, digits, '_' or '-' (64 characters at most)"


class PipelineError(ValidationError):
    """pipeline.yaml is invalid. The message names the file, the stage and the field."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Step Functions-style retrier (see module docstring)."""

    max_attempts: int = 2
    interval_s: float = 1.0
    backoff_rate: float = 2.0
    max_delay_s: float | None = None
    jitter: Literal["full", "none"] = "full"
    non_retryable: tuple[str, ...] = DEFAULT_NON_RETRYABLE

    def retryable(self, error_type: str) -> bool:
        """Whether an error of this type may be retried at all."""
        return error_type not in self.non_retryable

    def delay(self, retry_number: int, unit_random: float) -> float:
        """Delay before retry ``retry_number`` (1-based); ``unit_random`` in [0, 1) drives full jitter."""
        base = self.interval_s * self.backoff_rate ** (retry_number - 1)
        if self.max_delay_s is not None:
            base = min(base, self.max_delay_s)
        return base * unit_random if self.jitter == "full" else base


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How many items of a fanned-out stage may fail: a count, or a percentage of the items."""

    count: int = 0
    percent: float | None = None

    def allows(self, failed: int, total: int) -> bool:
        if self.percent is not None:
            return total > 0 and failed * 100.0 <= self.percent * total
        return failed <= self.count


@dataclass(frozen=True, slots=True)
class ForEach:
    """Fan out over the list at ``path`` (dotted) inside ``source`` stage's output."""

    source: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join((self.source, *self.path))

    def extract(self, output: Any) -> list[Any]:
        """The list this fan-out iterates over; ``ValueError`` if the output has no list there."""
        value = output
        for part in self.path:
            if not isinstance(value, Mapping) or part not in value:
                raise ValueError(f"output of stage '{self.source}' has no field '{'.'.join(self.path)}'")
            value = value[part]
        if not isinstance(value, list):
            raise ValueError(f"'{self}' is a {type(value).__name__}, not a list")
        return value


@dataclass(frozen=True, slots=True)
class Stage:
    """One validated stage."""

    name: str
    function: str
    needs: tuple[str, ...]
    mode: Literal["sync", "async"]
    timeout_s: float
    retry: RetryPolicy
    for_each: ForEach | None = None
    max_concurrency: int | None = None
    tolerated: Tolerance = Tolerance()
    config: Mapping[str, Any] = field(default_factory=dict)
    # Derived by the loader:
    item_needs: tuple[str, ...] = ()
    """Needs that are per-item stages of the same group (joined item by item, no barrier)."""
    whole_needs: tuple[str, ...] = ()
    """Needs that must be complete before this stage starts."""

    @property
    def fanned_out(self) -> bool:
        return self.for_each is not None


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A validated DAG. ``order`` is a topological order; ``digest`` identifies the definition."""

    name: str
    path: Path
    template_path: Path
    stages: Mapping[str, Stage]
    order: tuple[str, ...]
    final: str
    profiles: Mapping[str, Mapping[str, Mapping[str, Any]]]
    digest: str
    downstream: Mapping[str, tuple[str, ...]]
    """For each stage, the per-item stages that join it item by item."""

    def stage_config(self, stage: str, profile: str) -> dict[str, Any]:
        """The stage's config with the profile's overrides applied (shallow merge)."""
        merged = dict(self.stages[stage].config)
        merged.update(self.profiles.get(profile, {}).get(stage, {}))
        return merged

    def shape(self) -> dict[str, Any]:
        """What resume compatibility depends on: names, edges and fan-outs (not timeouts or code)."""
        return {
            name: {"needs": sorted(s.needs), "for_each": str(s.for_each) if s.for_each else None}
            for name, s in self.stages.items()
        }


# ---- the file format (pydantic at the boundary) -------------------------------------------------------


class _RetryModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(default=2, ge=0, le=100)
    interval: Any = 1.0
    backoff_rate: float = Field(default=2.0, ge=1.0, le=100.0)
    max_delay: Any = None
    jitter: Literal["full", "none"] = "full"
    non_retryable: list[str] | None = None


class _StageModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: str
    needs: list[str] = Field(default_factory=list)
    mode: Literal["sync", "async"] = "async"
    for_each: str | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    timeout: Any = None
    retry: _RetryModel | None = None
    tolerated_failures: int | str = 0
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("needs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class _DefaultsModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: Any = "5m"
    retry: _RetryModel = Field(default_factory=_RetryModel)


def _default_profiles() -> dict[str, dict[str, dict[str, Any]]]:
    return {"default": {}}


class _PipelineModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "pipeline"
    template: str = "template.yaml"
    final: str | None = None
    defaults: _DefaultsModel = Field(default_factory=_DefaultsModel)
    profiles: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=_default_profiles)
    stages: dict[str, _StageModel]


def _fail(path: Path, where: str, message: str) -> PipelineError:
    return PipelineError(_one_line(f"{path}: {where}: {message}"))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _one_line(text: str) -> str:
    # A name or key from the file may hold a newline; the message must stay one line (CLI, logs).
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _show(value: Any, limit: int = 80) -> str:
    """A value from the file as it appears in a message: quoted, escaped, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_names(path: Path, raw: Mapping[Any, Any]) -> None:
    """Names that end up in object keys, state.json and log lines: checked before anything quotes them."""
    name = raw.get("name")
    if isinstance(name, str) and not _NAME.fullmatch(name):
        raise _fail(path, "field 'name'", f"{_show(name)} is not a valid pipeline name: {_NAME_RULE}")
    stages = raw.get("stages")
    for stage in stages if isinstance(stages, dict) else ():
        if not (isinstance(stage, str) and _NAME.fullmatch(stage)):
            raise _fail(path, f"stage {_show(stage)}", f"not a valid stage name: {_NAME_RULE}")
    profiles = raw.get("profiles")
    for profile in profiles if isinstance(profiles, dict) else ():
        if not (isinstance(profile, str) and _NAME.fullmatch(profile)):
            raise _fail(path, "field 'profiles'", f"{_show(profile)} is not a valid profile name: {_NAME_RULE}")


def _check_json(path: Path, where: str, value: Any) -> None:
    """``value`` travels to stage functions as JSON: refuse what JSON cannot carry unchanged."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise _fail(path, where, f"key {_show(key)} is not a string (config must be JSON data)")
                todo.append(inner)
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise _fail(path, where, f"{item} is not a JSON number (config must be JSON data)")
        elif not (item is None or isinstance(item, (str, int, float))):
            kind = type(item).__name__
            raise _fail(path, where, f"a {kind} value ({_show(item)}) is not JSON data: quote it to make it a string")


def _retry(path: Path, where: str, model: _RetryModel) -> RetryPolicy:
    try:
        interval = parse_duration(model.interval)
        max_delay = None if model.max_delay is None else parse_duration(model.max_delay)
    except ValueError as exc:
        raise _fail(path, where, str(exc)) from None
    return RetryPolicy(
        max_attempts=model.max_attempts,
        interval_s=interval,
        backoff_rate=model.backoff_rate,
        max_delay_s=max_delay,
        jitter=model.jitter,
        non_retryable=tuple(model.non_retryable) if model.non_retryable is not None else DEFAULT_NON_RETRYABLE,
    )


def _tolerance(path: Path, where: str, value: int | str) -> Tolerance:
    if isinstance(value, int):
        if value < 0:
            raise _fail(path, where, "must be >= 0")
        return Tolerance(count=value)
    text = value.strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return Tolerance(percent=pct)
        return _tolerance(path, where, int(text))
    except ValueError:
        raise _fail(path, where, f"expected a count or a percentage like '10%', got {value!r}") from None


def _pydantic_message(path: Path, exc: PydanticValidationError) -> PipelineError:
    err = exc.errors()[0]
    loc = [_clip(str(p)) for p in err["loc"]]
    if len(loc) >= 2 and loc[0] == "stages":
        where = f"stage '{loc[1]}'" + (f", field '{'.'.join(loc[2:])}'" if len(loc) > 2 else "")
    else:
        where = f"field '{'.'.join(loc)}'" if loc else "top level"
    return _fail(path, where, err["msg"])


def _topological(path: Path, stages: Mapping[str, _StageModel]) -> tuple[str, ...]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*trail[trail.index(name) :], name))
            raise _fail(path, f"stage '{name}', field 'needs'", f"cycle: {cycle}")
        state[name] = 1
        for dep in stages[name].needs:
            visit(dep, (*trail, name))
        state[name] = 2
        order.append(name)

    for name in stages:
        visit(name, ())
    return tuple(order)


def _ancestors(stages: Mapping[str, Stage], needs: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(needs)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(stages[name].needs)
    return seen


def load_pipeline(path: str | Path, *, functions: Sequence[str] | None = None) -> Pipeline:
    """Load and validate ``path``. ``functions``: the function logical ids that exist (default: read the
    pipeline's template.yaml). Raises ``PipelineError`` naming file, stage and field."""
    path = Path(path).resolve()
    try:
        raw = load_file(path)
    except FileNotFoundError:
        raise PipelineError(_one_line(f"{path}: no such pipeline file")) from None
    except YamlInputError as exc:
        raise PipelineError(str(exc)) from None
    if not isinstance(raw, dict):
        raise _fail(path, "top level", "expected a mapping with 'stages'")
    _check_names(path, raw)
    try:
        model = _PipelineModel.model_validate(raw)
    except PydanticValidationError as exc:
        raise _pydantic_message(path, exc) from None
    if not model.stages:
        raise _fail(path, "field 'stages'", "at least one stage is required")

    template_path = (path.parent / model.template).resolve()
    if functions is None:
        from fave.local.template import load_template  # deferred: the template reader is only needed here

        try:
            functions = list(load_template(template_path).functions)
        except FaveError as exc:  # a missing or unrunnable template: still one PipelineError
            raise _fail(path, "field 'template'", str(exc)) from None
    known_functions = set(functions)

    stages_raw = model.stages
    for name, s in stages_raw.items():
        where = f"stage '{name}'"
        if s.function not in known_functions:
            raise _fail(
                path,
                f"{where}, field 'function'",
                f"{_show(s.function)} is not a function in {template_path.name}",
            )
        for dep in s.needs:
            if dep not in stages_raw:
                raise _fail(path, f"{where}, field 'needs'", f"unknown stage {_show(dep)}")
            if dep == name:
                raise _fail(path, f"{where}, field 'needs'", "a stage cannot need itself")
    order = _topological(path, stages_raw)

    default_timeout = model.defaults.timeout
    stages: dict[str, Stage] = {}
    for name in order:
        s = stages_raw[name]
        where = f"stage '{name}'"
        try:
            timeout = parse_duration(s.timeout if s.timeout is not None else default_timeout)
        except ValueError as exc:
            raise _fail(path, f"{where}, field 'timeout'", str(exc)) from None
        if timeout <= 0:
            raise _fail(path, f"{where}, field 'timeout'", "must be greater than zero")
        _check_json(path, f"{where}, field 'config'", s.config)
        retry = _retry(path, f"{where}, field 'retry'", s.retry or model.defaults.retry)
        for_each = None
        if s.for_each is not None:
            source, _, rest = s.for_each.partition(".")
            if source not in stages_raw:
                raise _fail(path, f"{where}, field 'for_each'", f"unknown stage {_show(source)}")
            if source not in _ancestors(stages, s.needs):
                raise _fail(
                    path,
                    f"{where}, field 'for_each'",
                    f"'{source}' must be upstream of this stage (in 'needs', directly or not)",
                )
            if stages[source].fanned_out:
                raise _fail(
                    path,
                    f"{where}, field 'for_each'",
                    f"'{source}' is itself fanned out; fan out over a single-task stage's list",
                )
            if not rest or any(not p for p in rest.split(".")):
                raise _fail(
                    path,
                    f"{where}, field 'for_each'",
                    f"{_show(s.for_each)} names no list: use STAGE.FIELD, e.g. {source}.items",
                )
            for_each = ForEach(source, tuple(rest.split(".")))
        elif s.max_concurrency is not None and s.max_concurrency < 1:
            raise _fail(path, f"{where}, field 'max_concurrency'", "must be >= 1")
        tolerated = _tolerance(path, f"{where}, field 'tolerated_failures'", s.tolerated_failures)
        if for_each is None and (tolerated.count or tolerated.percent):
            raise _fail(path, f"{where}, field 'tolerated_failures'", "only a fanned-out stage can tolerate failures")
        item_needs: list[str] = []
        whole_needs: list[str] = []
        for dep in s.needs:
            dep_stage = stages[dep]
            if dep_stage.fanned_out and for_each is not None:
                if str(dep_stage.for_each) != str(for_each):
                    raise _fail(
                        path,
                        f"{where}, field 'needs'",
                        f"'{dep}' fans out over {dep_stage.for_each}, this stage over {for_each}: "
                        "join them in a single-task stage first",
                    )
                item_needs.append(dep)
            else:
                whole_needs.append(dep)
        stages[name] = Stage(
            name=name,
            function=s.function,
            needs=tuple(s.needs),
            mode=s.mode,
            timeout_s=timeout,
            retry=retry,
            for_each=for_each,
            max_concurrency=s.max_concurrency,
            tolerated=tolerated,
            config=s.config,
            item_needs=tuple(item_needs),
            whole_needs=tuple(whole_needs),
        )

    sinks = [n for n in order if not any(n in s.needs for s in stages.values())]
    final = model.final
    if final is None:
        if len(sinks) != 1:
            raise _fail(path, "field 'final'", f"required when there are several last stages ({sinks})")
        final = sinks[0]
    if final not in stages:
        raise _fail(path, "field 'final'", f"unknown stage {_show(final)}")
    if stages[final].fanned_out:
        raise _fail(path, "field 'final'", f"'{final}' is fanned out; the final stage must be a single task")
    for profile, overrides in model.profiles.items():
        for stage_name, override in overrides.items():
            if stage_name not in stages:
                raise _fail(path, f"field 'profiles.{profile}'", f"unknown stage {_show(stage_name)}")
            _check_json(path, f"field 'profiles.{profile}.{stage_name}'", override)
    profiles = dict(model.profiles)
    profiles.setdefault("default", {})

    downstream = {name: tuple(s.name for s in stages.values() if name in s.item_needs) for name in order}
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Pipeline(
        name=model.name,
        path=path,
        template_path=template_path,
        stages={n: stages[n] for n in order},
        order=order,
        final=final,
        profiles=profiles,
        digest=digest,
        downstream=downstream,
    )
