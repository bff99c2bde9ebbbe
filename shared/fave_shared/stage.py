"""The stage SDK: turn ``run(input_model, ctx) -> output_model`` into a Lambda handler.

```python
class SplitInput(StageInput):
    needs: SplitNeeds

@stage(SplitInput)
def handler(inp: SplitInput, ctx: StageContext) -> SplitOutput:
    ...
```

The wrapper parses the invocation payload (``StageEvent``), resolves ``{"$ref"}`` markers, validates the
stage's one input model, opens the request's object store, runs the body, validates/dumps the one output
model, and offloads it by reference if it is large. Exceptions propagate (Lambda reports them as a function
error with ``errorType`` = the class name), except a ``TerminalError`` (or a subclass: raise one for input that
retrying cannot fix), which the handler returns as a terminal error result (``fave_shared.outcome``): the
orchestrator then fails the task without retrying it.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from . import refs
from .errors import TerminalError, ValidationError
from .outcome import terminal_result
from .schemas import StageEvent, StageInput, TaskRef
from .store import ObjectStore, open_store

I = TypeVar("I", bound=StageInput)  # noqa: E741 - conventional type-variable name


class LambdaContextLike(Protocol):
    """The part of Lambda's context object the SDK uses."""

    def get_remaining_time_in_millis(self) -> int: ...


LambdaHandler = Callable[[dict[str, Any], Any], Any]

_stores: dict[str, ObjectStore] = {}


def _store_for(uri: str) -> ObjectStore:
    # One store (and so one boto3 client) per warm environment, created on first use, never at import.
    store = _stores.get(uri)
    if store is None:
        store = _stores[uri] = open_store(uri)
    return store


def artifact_prefix(request_id: str, stage: str, item: int | None) -> str:
    """Where a task's artifacts live: ``requests/{id}/stages/{stage}/`` (+ ``{item:05d}/`` when fanned out)."""
    base = f"requests/{request_id}/stages/{stage}/"
    return base if item is None else f"{base}{item:05d}/"


def task_prefix(task: TaskRef) -> str:
    """``artifact_prefix`` of a task."""
    return artifact_prefix(task.request_id, task.stage, task.item)


class StageContext:
    """What a stage body may use besides its input: the store, its artifact prefix, scratch space, time."""

    def __init__(self, task: TaskRef, store: ObjectStore, lambda_context: Any = None) -> None:
        self.task = task
        self.store = store
        self.prefix = task_prefix(task)
        self._lambda_context = lambda_context
        self._started = time.monotonic()
        self._tmp: Path | None = None
        self._fetched: dict[str, Path] = {}

    @property
    def request_id(self) -> str:
        return self.task.request_id

    @property
    def request_prefix(self) -> str:
        """``requests/{id}/``: the request's root in the store."""
        return f"requests/{self.task.request_id}/"

    @property
    def tmp(self) -> Path:
        """A scratch directory for this invocation (under /tmp, removed when the invocation ends)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="fave-"))
        return self._tmp

    def key(self, name: str) -> str:
        """The store key of an artifact called ``name`` under this task's prefix."""
        return self.prefix + name

    def put_bytes(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write an artifact under this task's prefix; returns its key. Re-running overwrites (idempotent)."""
        key = self.key(name)
        self.store.put(key, data, content_type=content_type)
        return key

    def put_file(self, name: str, path: Path, content_type: str = "application/octet-stream") -> str:
        """Upload a local file as an artifact under this task's prefix; returns its key."""
        return self.put_bytes(name, Path(path).read_bytes(), content_type)

    def read_bytes(self, key: str) -> bytes:
        """Read any object of the store by key."""
        return self.store.get(key).data

    def fetch(self, key: str) -> Path:
        """A local file holding the object at ``key`` (downloaded once per invocation)."""
        path = self._fetched.get(key)
        if path is None:
            path = self.tmp / f"{len(self._fetched):03d}-{Path(key).name}"
            path.write_bytes(self.read_bytes(key))
            self._fetched[key] = path
        return path

    def remaining_ms(self) -> int:
        """Milliseconds left before the function's timeout (a large number outside Lambda)."""
        if self._lambda_context is not None and hasattr(self._lambda_context, "get_remaining_time_in_millis"):
            return int(self._lambda_context.get_remaining_time_in_millis())
        return 15 * 60 * 1000 - int((time.monotonic() - self._started) * 1000)

    def close(self) -> None:
        """Remove scratch files."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._fetched.clear()


def stage(input_model: type[I]) -> Callable[[Callable[[I, StageContext], BaseModel]], LambdaHandler]:
    """Decorate a stage body ``(input, ctx) -> output model`` into a Lambda handler ``(event, context)``."""

    def decorate(body: Callable[[I, StageContext], BaseModel]) -> LambdaHandler:
        @functools.wraps(body)
        def handler(event: dict[str, Any], context: Any = None) -> Any:
            try:
                parsed = StageEvent.model_validate(event)
            except Exception as exc:  # pydantic's error lists every field; keep it on one line
                # Raised, not returned: an event that is no fave task has nobody to read a fave result.
                raise ValidationError(f"not a fave stage event: {exc}".replace("\n", " ")) from exc
            try:
                return run(parsed, event, context)
            except TerminalError as exc:  # said in the result, so nobody retries it (fave_shared.outcome)
                return terminal_result(exc)

        def run(parsed: StageEvent, event: dict[str, Any], context: Any) -> Any:
            store = _store_for(parsed.store)
            ctx = StageContext(parsed.task, store, context)
            try:
                inp = _validate_input(input_model, refs.resolve(store, parsed.input), parsed.task)
                out = body(inp, ctx)
                dumped = out.model_dump(mode="json")
                return respond(store, ctx.key(f"output-{parsed.task.attempt}.json"), dumped, parsed.mode, event)
            finally:
                ctx.close()

        return handler

    return decorate


def respond(store: ObjectStore, key: str, output: Any, mode: str | None, event: Any) -> Any:
    """What a handler returns for ``output``: the value itself, or a marker to a copy written at ``key`` when
    Lambda could not carry it back (docs/stages.md): synchronously, over ``refs.SYNC_RESPONSE_LIMIT`` bytes;
    asynchronously (or ``mode`` None), when ``event`` and ``output`` together would be over
    ``refs.ASYNC_RECORD_LIMIT``, the destination record that holds both. ``FAVE_PAYLOAD_THRESHOLD`` overrides."""
    limit = refs.override()
    if limit is None:
        if mode == "sync":
            limit = refs.SYNC_RESPONSE_LIMIT
        else:
            size = refs.json_size(output)
            if size <= refs.ASYNC_RECORD_LIMIT - refs.ASYNC_EVENT_LIMIT:
                return output  # fits beside any event the orchestrator sends inline: no need to measure it
            limit = refs.ASYNC_RECORD_LIMIT - refs.utf8_size(event)
    return refs.offload(store, key, output, limit=limit)


def resolve_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with every ``{"$ref": ...}`` marker in its input replaced by the value it stands for.

    For a handler written without the ``@stage`` decorator: fave passes ``event["input"]`` by reference when
    the event would be over what Lambda carries (docs/stages.md), and ``event = resolve_event(event)`` reads it
    back from the request's store (``event["store"]``). An event without markers comes back as it is (a copy of
    the top level). Raises ``ValidationError`` if ``event`` is not a fave stage event.
    """
    if not isinstance(event, Mapping) or not isinstance(event.get("store"), str) or "input" not in event:
        raise ValidationError("not a fave stage event: resolve_event needs a mapping with 'store' and 'input'")
    value = event["input"]
    if refs.find_refs(value):
        value = refs.resolve(_store_for(event["store"]), value)
    return {**event, "input": value}


MAX_REPORTED_ERRORS = 5
"""How many field errors an input ``ValidationError`` message lists before "and N more"."""


def _validate_input(input_model: type[I], value: Any, task: TaskRef) -> I:
    """``input_model.model_validate(value)``, raising our terminal ``ValidationError`` instead of pydantic's.

    Input that fails the stage's model (a misspelt config key, a wrong type, a missing upstream field) is a
    definition or wiring error that retrying cannot fix. Our class makes that explicit (``TerminalError``)
    instead of relying on pydantic's class happening to share the name; the message is one line that names
    the stage and every offending field by its dotted path, e.g.
    ``input of stage split is invalid: config.max_clip_s: Input should be greater than 0 (got -1)``.
    """
    try:
        return input_model.model_validate(value)
    except PydanticValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_url=False)]
        shown = "; ".join(problems[:MAX_REPORTED_ERRORS])
        if len(problems) > MAX_REPORTED_ERRORS:
            shown += f"; and {len(problems) - MAX_REPORTED_ERRORS} more"
        where = task.stage if task.item is None else f"{task.stage} item {task.item}"
        raise ValidationError(f"input of stage {where} is invalid: {shown}") from exc


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error.get("loc", ())) or "(input)"
    message = " ".join(str(error.get("msg", "invalid")).split())
    text = f"{field}: {message}"
    if error.get("type") not in ("missing", "extra_forbidden") and "input" in error:
        shown = repr(error["input"])
        text += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return text
