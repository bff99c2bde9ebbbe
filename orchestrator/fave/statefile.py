"""The JSON documents that persist a request: frozen dataclasses, read through a small typed decoder.

``requests/{id}/metadata/state.json`` (``StateDoc``): input, pipeline digest, request status, per-stage
status, counts and timings, the tasks of single-task stages, the failure reason.
``requests/{id}/metadata/tasks/{stage}/{shard}.{token}.json`` (``ShardDoc``): the tasks of a fanned-out
stage, ``persistence.SHARD_SIZE`` items per object, so a completion rewrites a bounded object, never one that
grows with N. Each write is a new object; state.json names the committed one (``StageDoc.shard_tokens``).
``requests/{id}/metadata/items/{for_each}/{block}.json``: a fan-out list in blocks of ``StateDoc.fanout_blocks``
items (``persistence.LIST_BLOCK``; 128 before schema 3), written once when the list is made, read a block at a
time; a list of one block whose source output is parked is read from that output instead (schema 5,
``StateDoc.fanout_sources``).

Schema 3 (this version) lets one object hold several shards of a stage that one commit changed (a *segment*,
``SegmentDoc``; its shards' entries in ``shard_tokens`` read ``TOKEN@HOME``, ``keys.shard_object_key``): a
commit that changes 79 shards writes 5 objects, not 79. Schema 2 persists what a decision needs to run on a
head alone: each fanned-out stage's ready set, deadline floor and retry blocks, and the fan-out lists' lengths.
A schema-1 file is read whole and its indexes rebuilt.

Why not pydantic, as at the other boundaries: these are fave's own documents, written and read only by fave, and
every command that shows a request reads them. Importing pydantic and building these models was ~100 ms of the
~0.3 s a ``fave run`` took from exec to exit (issue 10's target: 0.25 s). The decoder checks what pydantic checked
here (each field's JSON type, required fields; ints accepted for floats, digit strings for integer keys; unknown
fields ignored) and names the first bad field's path (``DocError``), so a corrupt file is still refused whole.
"""

import json
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar, Union, cast, get_args, get_origin

SCHEMA_VERSION = 5
"""5: a fan-out list may have no item blocks, only its source output (``StateDoc.fanout_sources``), which a reader
of 4 would look for in vain. 4: a task shard may hold a ``cached`` section (``CachedDoc``), which a reader of 3
would take for PENDING tasks. 3: segments (several shards in one object). Files of earlier versions are read."""

_D = TypeVar("_D", bound="Doc")


class DocError(ValueError):
    """A document that is not JSON or not this schema: ``loc`` the path of the first bad field, ``msg`` why."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(f"{'.'.join(str(p) for p in loc) or 'document'}: {msg}")
        self.loc = loc
        self.msg = msg


class _WrongTypeError(Exception):
    """A value of the wrong JSON type; the decoder adds where it was."""


class Doc:
    """The decoding and encoding every document shares (fields in declaration order, like the JSON)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def from_json(cls: type[_D], data: bytes | str) -> _D:
        """The document in ``data``; ``DocError`` if it is not JSON or not this schema."""
        return cls.from_dict(_loads(data))

    @classmethod
    def from_dict(cls: type[_D], value: Any) -> _D:
        """The document a parsed JSON value describes; ``DocError`` naming the first bad field."""
        return cast(_D, _decoder(cls)(value))

    def to_dict(self) -> dict[str, Any]:
        """The JSON value of the document: every field, nested documents as objects. Values of other types are
        used as they are (an output is not walked: it may be large or deep)."""
        return {name: convert(getattr(self, name)) for name, convert in _encoder(type(self))}


def _loads(data: bytes | str) -> Any:
    """``json.loads``; ``DocError`` if ``data`` is not JSON (nor UTF-8, nor shallow enough to parse)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise DocError((), f"invalid JSON ({exc})") from None


def _same(value: Any) -> Any:
    return value


def _converter(annotation: Any) -> Callable[[Any], Any]:
    """How a field's value becomes JSON: documents (and lists, maps of them) as objects, the rest as it is."""
    if isinstance(annotation, type) and issubclass(annotation, Doc):
        return lambda value: None if value is None else value.to_dict()
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _converter(inner[0]) if len(inner) == 1 else _same
    if origin is list and args and _converter(args[0]) is not _same:
        item = _converter(args[0])
        return lambda value: [item(v) for v in value]
    if origin is dict and len(args) == 2 and _converter(args[1]) is not _same:
        member = _converter(args[1])
        return lambda value: {k: member(v) for k, v in value.items()}
    return _same


_ENCODERS: dict[type, tuple[tuple[str, Callable[[Any], Any]], ...]] = {}


def _encoder(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    known = _ENCODERS.get(cls)
    if known is None:
        known = _ENCODERS[cls] = tuple((f.name, _converter(f.type)) for f in fields(cls))
    return known


# ---- the decoder: one checker per annotation, built on first use ------------------------------------------


def _scalar(kind: type, what: str) -> Any:
    def check(value: Any) -> Any:
        if type(value) is kind:
            return value
        raise _WrongTypeError(what)

    return check


def _str(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):  # a StrEnum (a task's status, from persistence): its value
        return str.__str__(value)
    raise _WrongTypeError("a string")


def _float(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            raise _WrongTypeError("a number within a float's range") from None
    raise _WrongTypeError("a number")


def _any(value: Any) -> Any:
    return value


def _int_key(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise _WrongTypeError(f"integer keys, found {key[:32]!r}") from None


def _checker(annotation: Any) -> Any:
    """A function of a JSON value returning the field's value or raising ``_WrongTypeError`` / ``DocError`` (nested)."""
    if annotation is Any:
        return _any
    if annotation is float:
        return _float
    if annotation is str:
        return _str
    if annotation in (int, bool):
        return _scalar(annotation, "an integer" if annotation is int else "a boolean")
    if isinstance(annotation, type) and issubclass(annotation, Doc):
        return _decoder(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _checker(next(a for a in args if a is not type(None)))
        return lambda value: None if value is None else inner(value)
    if origin is list:
        item = _checker(args[0])

        def check_list(value: Any) -> list[Any]:
            if type(value) is not list:
                raise _WrongTypeError("a list")
            if item is _any:
                return value
            try:
                return [item(v) for v in value]
            except (_WrongTypeError, DocError):  # again, one at a time, to say which
                return [_located(item, v, i) for i, v in enumerate(value)]

        return check_list
    if origin is dict and args[0] in (str, int):
        number_keys, member = args[0] is int, _checker(args[1])

        def check_dict(value: Any) -> dict[Any, Any]:
            if type(value) is not dict:
                raise _WrongTypeError("an object")
            if member is _any and not number_keys:
                return value
            try:  # the common case without a handler per member; what went wrong is found below
                if number_keys:
                    return {int(k): member(v) for k, v in value.items()}
                return {k: member(v) for k, v in value.items()}
            except (ValueError, _WrongTypeError, DocError):  # DocError is a ValueError
                return {(_int_key(k) if number_keys else k): _located(member, v, k) for k, v in value.items()}

        return check_dict
    raise TypeError(f"statefile: no decoder for {annotation!r}")


def _located(check: Any, value: Any, where: str | int) -> Any:
    try:
        return check(value)
    except _WrongTypeError as exc:
        raise DocError((where,), f"expected {exc}") from None
    except DocError as exc:
        raise DocError((where, *exc.loc), exc.msg) from None


_DECODERS: dict[type, Callable[[Any], Any]] = {}


def _decoder(cls: type) -> Callable[[Any], Any]:
    """``cls``'s decoder (built once): each known field checked, absent ones defaulted, required ones refused.

    The document is made without its ``__init__``: its ``__dict__`` filled from the defaults and the checked
    values (a frozen dataclass refuses attribute assignment, not this). A shard's 128 tasks decode in about
    half the time that calling ``TaskDoc(**fields)`` took (on Lambda each completion batch reads one)."""
    known = _DECODERS.get(cls)
    if known is not None:
        return known
    checks: dict[str, Callable[[Any], Any]] = {}
    required: list[str] = []
    defaults: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for f in fields(cls):
        checks[f.name] = _checker(f.type)
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            factories.append((f.name, f.default_factory))
        else:
            required.append(f.name)
    make = object.__new__

    def decode(value: Any) -> Any:
        if type(value) is not dict:
            raise DocError((), "expected an object")
        given = {}
        for name, raw in value.items():
            check = checks.get(name)
            if check is None:
                continue  # a field this fave does not know (a newer one wrote it): ignored
            try:
                given[name] = check(raw)
            except _WrongTypeError as exc:
                raise DocError((name,), f"expected {exc}") from None
            except DocError as exc:
                raise DocError((name, *exc.loc), exc.msg) from None
        for name in required:
            if name not in given:
                raise DocError((name,), "field required")
        doc: Any = make(cls)
        state = doc.__dict__
        state.update(defaults)
        for name, factory in factories:
            if name not in given:
                state[name] = factory()
        state.update(given)
        return doc

    _DECODERS[cls] = decode
    return decode


# ---- the documents -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AttemptDoc(Doc):
    """``core.model.Attempt``: a failed attempt (``n`` its number)."""

    n: int
    started_at: float | None = None
    ended_at: float
    error_type: str
    error: str


@dataclass(frozen=True, kw_only=True)
class TaskDoc(Doc):
    """``core.model.Task`` as persisted (``persistence.task_to_json`` leaves fields at their default out)."""

    status: str = "PENDING"
    attempt: int = 0
    budget_base: int = 0
    dispatched_at: float | None = None
    first_dispatched_at: float | None = None
    deadline: float | None = None
    retry_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    error: str | None = None
    output: Any = None
    history: list[AttemptDoc] = field(default_factory=list)
    """The attempts that failed, oldest first (absent when none did)."""
    traceback: str | None = None
    stale_attempts: int = 0
    """Attempts up to this number ran before a reset: their late reports are ignored."""
    cached: bool = False
    """The output came from the result cache (the function was not invoked)."""
    cached_from: str | None = None
    """The request whose invocation wrote that cache entry."""
    throttled: int = 0
    """Invocations refused as throttled (they spent no attempt)."""


@dataclass(frozen=True, kw_only=True)
class ReadyDoc(Doc):
    """``core.model.ReadySet``: the run ``lo..hi-1`` and the sparse items."""

    lo: int = 0
    hi: int = 0
    extra: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class FingerprintDoc(Doc):
    """``core.model.Fingerprint``: what the stage's output was made with (``fave rerun`` compares it)."""

    function: str
    code: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    for_each: str | None = None


@dataclass(frozen=True, kw_only=True)
class StageDoc(Doc):
    """One stage of ``StateDoc.stages``: its status, counts, times, and where its task shards are."""

    status: str = "PENDING"
    fanned_out: bool = False
    total: int | None = None
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    shards: int = 0
    shard_tokens: list[str] = field(default_factory=list)
    """Which version of each task shard is committed (see persistence.shard_key); "" = never written."""
    task: TaskDoc | None = None
    ready: ReadyDoc | None = None
    unsent: ReadyDoc | None = None
    """The outbox: items dispatched whose invocation is not yet recorded as sent."""
    deadline_floor: float | None = None
    retry_blocks: dict[int, float] = field(default_factory=dict)
    fingerprint: FingerprintDoc | None = None
    """Recorded when the stage succeeded (absent: it has not, or it ran before fingerprints were recorded)."""
    throttled: int = 0
    """Invocations of its tasks refused as throttled."""
    throttle_cap: float | None = None
    """The in-flight cap throttling taught (``StageState.throttle_cap``)."""
    throttle_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class FailureDoc(Doc):
    stage: str
    item: int | None = None
    key: str | None = None
    """The item's key (``core.model.Failure.key``)."""
    error_type: str
    message: str
    attempts: int = 0
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class PipelineRefDoc(Doc):
    name: str
    digest: str
    path: str = ""
    shape: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StateDoc(Doc):
    """``metadata/state.json``: the commit point of a request."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    status: str
    input: dict[str, Any]
    """The request input, or ``{"$ref": key}`` when it is stored once beside the state (large inputs)."""
    profile: str | None = None
    pipeline: PipelineRefDoc
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    failure: FailureDoc | None = None
    cancel_reason: str | None = None
    version: int = 0
    resumes: int = 0
    stages: dict[str, StageDoc]
    fanout: dict[str, int] = field(default_factory=dict)
    """Length of each fan-out list (``for_each``) made so far; its items are in ``metadata/items/``."""
    fanout_blocks: dict[str, int] = field(default_factory=dict)
    """Items per block object of each fan-out list (``FanoutList.block``); a list not named here (a schema-2
    file) has blocks of 128 (``persistence.SHARD_SIZE``)."""
    fanout_sources: dict[str, str] = field(default_factory=dict)
    """Fan-out lists of one block that have no item block object: each is the field ``for_each`` names of the
    source output parked at this key (``FanoutList.source``; ``persistence.read_list_block``)."""
    abandoned: int = 0
    """Attempts still running when the request ended, not reported yet (``RequestState.abandoned``)."""
    abandoned_until: float | None = None
    no_cache: bool = False
    """``fave run --no-cache``: no result-cache lookups for this request."""
    selection: list[str] = field(default_factory=list)
    """``fave run --stage``: the stages named (empty: the whole pipeline)."""
    scope: list[str] = field(default_factory=list)
    """A subset run's stages: the selection and what it needs (empty: every stage)."""
    budget: dict[str, Any] = field(default_factory=dict)
    """The request's limits (``max_wall_s``, ``max_invocations``, ``max_cost_usd``; absent: none)."""
    budget_since: float | None = None
    ledger: dict[str, Any] = field(default_factory=dict)
    """What the request spent: invocations, billed_ms per function, gb_s, s3 requests, cost_usd (estimated)."""


@dataclass(frozen=True, kw_only=True)
class CachedDoc(Doc):
    """Tasks of a shard taken from the result cache in bulk (``core.model.CachedItems``), as arrays: item
    ``items[n]`` SUCCEEDED at ``at``, cached, its output ``outputs[n]``, computed by ``sources[source_of[n]]``.
    Readers see them as tasks (``ShardDoc.tasks``); a task row for the same item wins."""

    at: float
    sources: list[str]
    items: list[int]
    outputs: list[Any]
    source_of: list[int]

    def tasks(self) -> dict[int, TaskDoc]:
        items, outputs, source_of, sources = self.items, self.outputs, self.source_of, self.sources
        if not len(items) == len(outputs) == len(source_of):
            raise DocError(("cached",), "items, outputs and source_of differ in length")
        if not all(0 <= n < len(sources) for n in source_of):
            raise DocError(("cached", "source_of"), "names no source")
        return {
            item: TaskDoc(status="SUCCEEDED", finished_at=self.at, output=output, cached=True, cached_from=sources[n])
            for item, output, n in zip(items, outputs, source_of, strict=True)
        }


@dataclass(frozen=True, kw_only=True)
class ShardDoc(Doc):
    """One task shard: ``persistence.SHARD_SIZE`` tasks of a fanned-out stage, by item (with those of its
    ``cached`` section: ``with_cached``)."""

    stage: str
    shard: int
    version: int
    tasks: dict[int, TaskDoc]
    cached: CachedDoc | None = None

    def with_cached(self) -> "ShardDoc":
        """The shard with its cached section's tasks among its ``tasks`` (how every reader sees it)."""
        if self.cached is None:
            return self
        return replace(self, tasks={**self.cached.tasks(), **self.tasks}, cached=None)


@dataclass(frozen=True, kw_only=True)
class SegmentDoc(Doc):
    """Task shards of one stage that one commit wrote together, in one object (``persistence.SEGMENT_SHARDS``):
    ``{"shards": {shard: ShardDoc}}``, at the key of its first shard."""

    shards: dict[int, ShardDoc]


SEGMENT_HEAD = b'{"shards":'
"""How a segment's bytes begin (a single shard's begin with its ``stage``): persistence writes both."""


def parse_shards(data: bytes) -> Mapping[int, ShardDoc]:
    """The shards a task-shard object holds, by shard: a single shard's own, or a segment's, each of whose
    shards is decoded when first asked for (a reader wants one shard of up to ``persistence.SEGMENT_SHARDS``: a
    completion on Lambda, a page of the web view). Raises ``DocError`` if the bytes are not one of the two; a
    segment's bad shard raises it when asked for."""
    if not data.startswith(SEGMENT_HEAD):
        doc = ShardDoc.from_json(data).with_cached()
        return {doc.shard: doc}
    value = _loads(data)
    shards = value.get("shards") if type(value) is dict else None
    if type(shards) is not dict:
        raise DocError(("shards",), "expected an object")
    try:
        return _Segment({_int_key(k): v for k, v in shards.items()})
    except _WrongTypeError as exc:
        raise DocError(("shards",), f"expected {exc}") from None


class _Segment(Mapping[int, ShardDoc]):
    """A segment's shards by number, each decoded (and kept) when first asked for."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: dict[int, Any]) -> None:
        self._raw = raw
        self._decoded: dict[int, ShardDoc] = {}

    def __getitem__(self, shard: int) -> ShardDoc:
        doc = self._decoded.get(shard)
        if doc is None:
            value = self._raw[shard]
            try:
                doc = self._decoded[shard] = ShardDoc.from_dict(value).with_cached()
            except DocError as exc:
                raise DocError(("shards", shard, *exc.loc), exc.msg) from None
        return doc

    def __iter__(self) -> Iterator[int]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)
