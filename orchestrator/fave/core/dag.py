"""The DAG and its policies, validated in the dataclasses themselves. Pure: standard library only.

* ``RetryPolicy``: Step Functions' Retrier. ``decide(attempt, error_type, jitter)`` → ``RetryDecision``
  (retry or not, the delay, and why): ``max_attempts`` retries after the first attempt (0 = never retry),
  delay before retry n = min(interval * backoff_rate^(n-1), max_delay), ``jitter: full`` draws it uniformly
  from [0, delay]; an error the stage declared terminal, or whose type is in ``non_retryable``, fails at once.
* ``CompletionPolicy``: how many items of a fanned-out stage may fail (a count, or a percentage) before the
  stage, and so the request, fails. ``decide(failed, total)`` → ``CompletionDecision``.
* ``ForEach``: fan out over the list at a dotted path of a single-task stage's output; each element has a key
  (a declared field, or its content digest) that names it in messages, views and across requests.
* ``Stage`` and ``Pipeline``: ``Pipeline.build`` checks the whole graph (unknown needs, cycles, fan-outs over
  something upstream, per-item joins, the final stage) and derives the topological order, per-item needs and
  downstream joins. Every problem is a ``DagError`` naming where (``stage 'x', field 'needs'``) and why; the
  file loader (``fave.pipeline``) adds the file's name.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from fave.core.operations import Operations

__all__ = [
    "DEFAULT_NON_RETRYABLE",
    "KEY_DIGEST_CHARS",
    "NAME_PATTERN",
    "CompletionDecision",
    "CompletionPolicy",
    "DagError",
    "ForEach",
    "Pipeline",
    "RetryDecision",
    "RetryPolicy",
    "Stage",
    "content_key",
]

DEFAULT_NON_RETRYABLE: tuple[str, ...] = ()
"""No error is taken for terminal by its name unless the pipeline says so (``retry.non_retryable``): a stage
declares a terminal error in its result (the stage SDK does it for ``TerminalError`` and its subclasses)."""

NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
"""Stage, profile and pipeline names: a letter, then up to 63 letters, digits, ``_`` or ``-`` (they end up in
object keys, state.json and log lines)."""
NAME_RULE = "use a letter, then letters, digits, '_' or '-' (64 characters at most)"
_NAME = re.compile(NAME_PATTERN)


class DagError(ValueError):
    """An invalid pipeline: ``where`` (``"stage 'x', field 'needs'"``) and the reason."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def show(value: object, limit: int = 80) -> str:
    """A value as a message quotes it: ``repr``, shortened (a name from a file may be any length)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def check_name(kind: str, name: object, where: str) -> None:
    """``DagError`` unless ``name`` is a valid stage / profile / pipeline name."""
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise DagError(where, f"{show(name)} is not a valid {kind} name: {NAME_RULE}")


# ---- retries ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after an attempt failed: retry after ``delay_s`` seconds, or fail the task; and why."""

    retry: bool
    delay_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Step Functions-style retrier (see the module docs)."""

    max_attempts: int = 2
    interval_s: float = 1.0
    backoff_rate: float = 2.0
    max_delay_s: float | None = None
    jitter: Literal["full", "none"] = "full"
    non_retryable: tuple[str, ...] = DEFAULT_NON_RETRYABLE

    def __post_init__(self) -> None:
        if not 0 <= self.max_attempts <= 100:
            raise DagError("field 'retry.max_attempts'", f"must be from 0 to 100, got {self.max_attempts}")
        if not (math.isfinite(self.interval_s) and self.interval_s >= 0):
            raise DagError("field 'retry.interval'", f"must be a duration >= 0, got {self.interval_s}")
        if not (math.isfinite(self.backoff_rate) and 1.0 <= self.backoff_rate <= 100.0):
            raise DagError("field 'retry.backoff_rate'", f"must be from 1 to 100, got {self.backoff_rate}")
        if self.max_delay_s is not None and not (math.isfinite(self.max_delay_s) and self.max_delay_s >= 0):
            raise DagError("field 'retry.max_delay'", f"must be a duration >= 0, got {self.max_delay_s}")
        if self.jitter not in ("full", "none"):
            raise DagError("field 'retry.jitter'", f"must be full or none, got {self.jitter!r}")

    def delay(self, retry_number: int, unit_random: float) -> float:
        """Delay before retry ``retry_number`` (1-based); ``unit_random`` in [0, 1) drives full jitter."""
        base = self.interval_s * self.backoff_rate ** (retry_number - 1)
        if self.max_delay_s is not None:
            base = min(base, self.max_delay_s)
        return base * unit_random if self.jitter == "full" else base

    def decide(self, attempt: int, error_type: str, unit_random: float, *, terminal: bool = False) -> RetryDecision:
        """After attempt ``attempt`` (1-based, counted since the last resume) failed with ``error_type``;
        ``terminal``: the stage itself declared the error one that retrying cannot fix."""
        if terminal:
            return RetryDecision(False, 0.0, f"{error_type} was declared terminal by the stage")
        if error_type in self.non_retryable:
            return RetryDecision(False, 0.0, f"{error_type} is not retryable")
        if attempt > self.max_attempts:
            tries = f"{self.max_attempts} retr{'y' if self.max_attempts == 1 else 'ies'}"
            return RetryDecision(False, 0.0, f"no retry left ({tries} after the first attempt)")
        delay = self.delay(attempt, unit_random)
        return RetryDecision(True, delay, f"retry {attempt} of {self.max_attempts} in {delay:.2f}s")


# ---- completion of a fanned-out stage -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletionDecision:
    """Whether a fanned-out stage with this many failed items may still succeed, and why."""

    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CompletionPolicy:
    """How many items of a fanned-out stage may fail: a count, or a percentage of the items."""

    count: int = 0
    percent: float | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise DagError("field 'tolerated_failures'", "must be >= 0")
        if self.percent is not None and not (math.isfinite(self.percent) and 0 <= self.percent <= 100):
            raise DagError("field 'tolerated_failures'", f"a percentage must be from 0 to 100, got {self.percent}")

    @property
    def tolerates_any(self) -> bool:
        return bool(self.count or self.percent)

    def decide(self, failed: int, total: int) -> CompletionDecision:
        if self.percent is not None:
            ok = failed * 100.0 <= self.percent * total
            return CompletionDecision(ok, f"{failed} of {total} items failed; {self.percent:g}% tolerated")
        ok = failed <= self.count
        return CompletionDecision(ok, f"{failed} item{'s' if failed != 1 else ''} failed; {self.count} tolerated")


# ---- fan-out, stages, the pipeline --------------------------------------------------------------------


KEY_DIGEST_CHARS = 16
"""Hex characters of an element's content digest, its key when the fan-out declares none (64 bits: a
collision among a few million elements is about one in a million)."""


def content_key(element: Any) -> str:
    """The key of an element when the fan-out declares none: sha256 of its canonical JSON (sorted keys,
    compact separators, UTF-8), the first ``KEY_DIGEST_CHARS`` hex characters. Equal elements share it."""
    text = json.dumps(element, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_DIGEST_CHARS]


@dataclass(frozen=True, slots=True)
class ForEach:
    """Fan out over the list at ``path`` (dotted) inside ``source`` stage's output. ``key`` (dotted, optional):
    the field of each element that names it across requests (a string or an integer, unique in the list);
    without it an element's key is its ``content_key``."""

    source: str
    path: tuple[str, ...]
    key: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.path or any(not part for part in self.path):
            raise DagError(
                "field 'for_each'", f"{show(str(self))} names no list: use STAGE.FIELD, e.g. {self.source}.items"
            )
        if self.key is not None and (not self.key or any(not part for part in self.key)):
            raise DagError("field 'for_each.key'", f"{show(self.key_field)} names no field: use FIELD, e.g. id")

    @classmethod
    def parse(cls, text: str, key: str | None = None) -> ForEach:
        """``STAGE.FIELD[.FIELD...]`` and an optional key ``FIELD[.FIELD...]``; ``DagError`` quoting them as
        written when they name no list or no field."""
        source, _, rest = text.partition(".")
        path = tuple(rest.split(".")) if rest else ()
        if not path or any(not part for part in path):
            raise DagError("field 'for_each'", f"{show(text)} names no list: use STAGE.FIELD, e.g. {source}.items")
        if key is not None and (not key or any(not part for part in key.split("."))):
            raise DagError("field 'for_each.key'", f"{show(key)} names no field: use FIELD, e.g. id")
        return cls(source, path, tuple(key.split(".")) if key is not None else None)

    def __str__(self) -> str:
        # The list's identity (state.json's fan-out lists, their item blocks): the key does not change it.
        return ".".join((self.source, *self.path))

    @property
    def key_field(self) -> str | None:
        return ".".join(self.key) if self.key is not None else None

    def extract(self, output: Any) -> list[Any]:
        """The list this fan-out iterates over; ``ValueError`` if the output has no list there, or (with a
        declared ``key``) an element has no usable key or two elements share one."""
        value = output
        for part in self.path:
            if not isinstance(value, Mapping) or part not in value:
                raise ValueError(f"output of stage '{self.source}' has no field '{'.'.join(self.path)}'")
            value = value[part]
        if not isinstance(value, list):
            raise ValueError(f"'{self}' is a {type(value).__name__}, not a list")
        if self.key is not None:
            seen: dict[str, int] = {}
            for index, element in enumerate(value):
                key = self.key_of(element, index)
                first = seen.setdefault(key, index)
                if first != index:
                    raise ValueError(
                        f"'{self}' elements {first} and {index} have the same key {show(key)} "
                        f"(field '{self.key_field}'): keys must be unique"
                    )
        return value

    def key_of(self, element: Any, index: int) -> str:
        """Element ``index``'s key: its ``key`` field as text, or its ``content_key``; ``ValueError`` naming
        the list, the index and the field when the field is missing or not a string or an integer."""
        if self.key is None:
            return content_key(element)
        value = element
        for part in self.key:
            if not isinstance(value, Mapping) or part not in value:
                raise ValueError(f"'{self}' element {index} has no key field '{self.key_field}'")
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(
                f"'{self}' element {index}: key field '{self.key_field}' is {show(value, 40)} "
                f"({type(value).__name__}), not a string or an integer"
            )
        if value == "":
            raise ValueError(f"'{self}' element {index}: key field '{self.key_field}' is empty")
        return str(value)


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage. ``item_needs`` / ``whole_needs`` are derived by ``Pipeline.build``."""

    name: str
    function: str
    needs: tuple[str, ...]
    mode: Literal["sync", "async"]
    timeout_s: float
    retry: RetryPolicy = RetryPolicy()
    for_each: ForEach | None = None
    max_concurrency: int | None = None
    completion: CompletionPolicy = CompletionPolicy()
    config: Mapping[str, Any] = field(default_factory=dict)
    item_needs: tuple[str, ...] = ()
    """Needs that are per-item stages of the same group (joined item by item, no barrier)."""
    whole_needs: tuple[str, ...] = ()
    """Needs that must be complete before this stage starts."""
    cache: bool = False
    """``cache: true`` in pipeline.yaml: a task whose key (the function's code, its config, its input) has a
    stored result reuses it instead of invoking (``fave.cache``). Off by default: stages with side effects."""
    cache_request: tuple[str, ...] | None = None
    """``cache: {request: [...]}``: only these request fields enter the key (None: the whole request). The
    stage must not read any other field: two requests differing only there share its results."""

    def __post_init__(self) -> None:
        where = f"stage '{self.name}'"
        check_name("stage", self.name, f"stage {self.name!r}")
        if not self.function:
            raise DagError(f"{where}, field 'function'", "required")
        if self.mode not in ("sync", "async"):
            raise DagError(f"{where}, field 'mode'", f"must be sync or async, got {self.mode!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise DagError(f"{where}, field 'timeout'", "must be greater than zero")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise DagError(f"{where}, field 'max_concurrency'", "must be >= 1")
        if self.name in self.needs:
            raise DagError(f"{where}, field 'needs'", "a stage cannot need itself")
        if self.for_each is None and self.completion.tolerates_any:
            raise DagError(f"{where}, field 'tolerated_failures'", "only a fanned-out stage can tolerate failures")
        _check_json(f"{where}, field 'config'", self.config)

    @property
    def fanned_out(self) -> bool:
        return self.for_each is not None


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A validated DAG (make one with ``Pipeline.build``). ``order`` is a topological order; ``digest``
    identifies the definition."""

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
    input_schema: Mapping[str, Any] | None = None
    """The JSON Schema (an object schema, as plain data) a request's input must match (pipeline.yaml
    ``input:``); None: any JSON object. Checked and applied by ``fave.inputs``: the core imports no validator."""
    upload_field: str | None = None
    """The input field an uploaded object's URI fills (pipeline.yaml ``trigger: {upload: {field: ...}}``)."""
    operations: Operations = field(default_factory=Operations)
    """Caps across requests, the default budget, staleness and alerts (pipeline.yaml ``operations:``,
    ``functions:``)."""

    @classmethod
    def build(
        cls,
        *,
        name: str,
        stages: Sequence[Stage],
        final: str | None = None,
        profiles: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        digest: str,
        path: Path = Path("pipeline.yaml"),
        template_path: Path = Path("template.yaml"),
        input_schema: Mapping[str, Any] | None = None,
        upload_field: str | None = None,
        operations: Operations | None = None,
    ) -> Pipeline:
        """Check the whole graph and derive what the engine needs; ``DagError`` naming where otherwise."""
        check_name("pipeline", name, "field 'name'")
        if not stages:
            raise DagError("field 'stages'", "at least one stage is required")
        given = _keyed({s.name: s for s in stages})
        for stage in stages:
            for dep in stage.needs:
                if dep not in given:
                    raise DagError(f"stage '{stage.name}', field 'needs'", f"unknown stage {show(dep)}")
        order = _topological(given)
        built: dict[str, Stage] = {}
        for stage_name in order:
            built[stage_name] = _joined(given[stage_name], built, given)
        final = final if final is not None else _only_sink(order, built)
        if final not in built:
            raise DagError("field 'final'", f"unknown stage {show(final)}")
        if built[final].fanned_out:
            raise DagError("field 'final'", f"'{final}' is fanned out; the final stage must be a single task")
        _check_all_lead_to(final, built)
        all_profiles: dict[str, Mapping[str, Mapping[str, Any]]] = {"default": {}, **(profiles or {})}
        for profile, overrides in all_profiles.items():
            check_name("profile", profile, "field 'profiles'")
            for stage_name, override in overrides.items():
                if stage_name not in built:
                    raise DagError(f"field 'profiles.{profile}'", f"unknown stage {show(stage_name)}")
                _check_json(f"field 'profiles.{profile}.{stage_name}'", override)
        downstream = {n: tuple(s.name for s in built.values() if n in s.item_needs) for n in order}
        return cls(
            name=name,
            path=path,
            template_path=template_path,
            stages={n: built[n] for n in order},
            order=order,
            final=final,
            profiles=all_profiles,
            digest=digest,
            downstream=downstream,
            input_schema=input_schema,
            upload_field=upload_field,
            operations=operations if operations is not None else Operations(),
        )

    def stage_config(self, stage: str, profile: str) -> dict[str, Any]:
        """The stage's config with the profile's overrides applied (shallow merge)."""
        merged = dict(self.stages[stage].config)
        merged.update(self.profiles.get(profile, {}).get(stage, {}))
        return merged

    def shape(self) -> dict[str, Any]:
        """What resume compatibility depends on: names, edges and fan-outs (not timeouts or code)."""
        shape: dict[str, Any] = {}
        for name, s in self.stages.items():
            shape[name] = {"needs": sorted(s.needs), "for_each": str(s.for_each) if s.for_each else None}
            # Only when declared: a state file from before keys (or without one) keeps the same shape.
            if s.for_each is not None and s.for_each.key is not None:
                shape[name]["key"] = s.for_each.key_field
        return shape

    @property
    def functions(self) -> frozenset[str]:
        """The logical ids of the functions its stages call."""
        return frozenset(s.function for s in self.stages.values())


def _keyed(stages: dict[str, Stage]) -> dict[str, Stage]:
    """The key names the elements of a list, not a stage's view of them: declared on one stage over a list,
    it holds for every stage over that list (so a per-item group shows one key); two different keys for one
    list are refused."""
    declared: dict[str, ForEach] = {}
    for stage in stages.values():
        fe = stage.for_each
        if fe is None or fe.key is None:
            continue
        other = declared.setdefault(str(fe), fe)
        if other.key != fe.key:
            raise DagError(
                f"stage '{stage.name}', field 'for_each.key'",
                f"'{fe}' is keyed by '{other.key_field}' in another stage, by '{fe.key_field}' here: "
                "one list has one key",
            )
    return {
        name: replace(s, for_each=declared[str(s.for_each)])
        if s.for_each is not None and s.for_each.key is None and str(s.for_each) in declared
        else s
        for name, s in stages.items()
    }


def _topological(stages: Mapping[str, Stage]) -> tuple[str, ...]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*trail[trail.index(name) :], name))
            raise DagError(f"stage '{name}', field 'needs'", f"cycle: {cycle}")
        state[name] = 1
        for dep in stages[name].needs:
            visit(dep, (*trail, name))
        state[name] = 2
        order.append(name)

    for name in stages:
        visit(name, ())
    return tuple(order)


def ancestors(stages: Mapping[str, Stage], needs: Iterable[str]) -> set[str]:
    """``needs`` and every stage they need, directly or not."""
    seen: set[str] = set()
    todo = list(needs)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(stages[name].needs)
    return seen


def _joined(stage: Stage, upstream: Mapping[str, Stage], every: Mapping[str, Stage]) -> Stage:
    """``stage`` with its fan-out checked against what is upstream and its needs split into per-item and
    whole needs (``upstream``: every stage before it in topological order; ``every``: all of them)."""
    where = f"stage '{stage.name}'"
    for_each = stage.for_each
    if for_each is not None:
        source = for_each.source
        if source not in every:
            raise DagError(f"{where}, field 'for_each'", f"unknown stage {show(source)}")
        if source not in ancestors(upstream, stage.needs):
            raise DagError(
                f"{where}, field 'for_each'", f"'{source}' must be upstream of this stage (in 'needs', directly or not)"
            )
        if upstream[source].fanned_out:
            raise DagError(
                f"{where}, field 'for_each'",
                f"'{source}' is itself fanned out; fan out over a single-task stage's list",
            )
    item_needs: list[str] = []
    whole_needs: list[str] = []
    for dep in stage.needs:
        dep_stage = upstream[dep]
        if dep_stage.fanned_out and for_each is not None:
            if str(dep_stage.for_each) != str(for_each):
                raise DagError(
                    f"{where}, field 'needs'",
                    f"'{dep}' fans out over {dep_stage.for_each}, this stage over {for_each}: "
                    "join them in a single-task stage first",
                )
            item_needs.append(dep)
        else:
            whole_needs.append(dep)
    return Stage(
        name=stage.name,
        function=stage.function,
        needs=stage.needs,
        mode=stage.mode,
        timeout_s=stage.timeout_s,
        retry=stage.retry,
        for_each=stage.for_each,
        max_concurrency=stage.max_concurrency,
        completion=stage.completion,
        config=stage.config,
        item_needs=tuple(item_needs),
        whole_needs=tuple(whole_needs),
        cache=stage.cache,
        cache_request=stage.cache_request,
    )


def _check_all_lead_to(final: str, stages: Mapping[str, Stage]) -> None:
    """Every stage must be the final stage or upstream of it: the request completes when the final stage
    succeeds, so a stage off that path would be cut off mid-run (or never started) with the request COMPLETED."""
    leading = ancestors(stages, (final,))
    cut_off = [n for n in stages if n not in leading]
    if cut_off:
        raise DagError(
            "field 'final'",
            f"stage{'s' if len(cut_off) > 1 else ''} {', '.join(cut_off)} "
            f"{'do' if len(cut_off) > 1 else 'does'} not lead to the final stage '{final}': the request "
            f"completes when '{final}' succeeds; make '{final}' need {'them' if len(cut_off) > 1 else 'it'}, "
            "or name another final stage",
        )


def _only_sink(order: Sequence[str], stages: Mapping[str, Stage]) -> str:
    sinks = [n for n in order if not any(n in s.needs for s in stages.values())]
    if len(sinks) != 1:
        raise DagError("field 'final'", f"required when there are several last stages ({sinks})")
    return sinks[0]


def _check_json(where: str, value: Any) -> None:
    """``value`` travels to stage functions as JSON: refuse what JSON cannot carry unchanged."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise DagError(where, f"key {show(key)} is not a string (config must be JSON data)")
                todo.append(inner)
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise DagError(where, f"{item} is not a JSON number (config must be JSON data)")
        elif not (item is None or isinstance(item, (str, int, float))):
            raise DagError(
                where, f"a {type(item).__name__} value ({show(item)}) is not JSON data: quote it to make it a string"
            )
