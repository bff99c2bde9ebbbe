"""Built-in fault injection: the faults Lambda and a dying driver cause, on demand, reproducibly.

A spec (``FAVE_FAULTS`` or ``--faults``) names what to inject, every key optional::

    duplicate=0.3,drop=0.05,delay=0-2s,crash_after_effect=0.01,throttle=0.1,seed=7

* ``duplicate=P``: a destination delivery (an asynchronous completion) arrives twice (Lambda delivers
  asynchronous events at least once).
* ``drop=P``: a destination delivery is lost (only the stage timeout, then a retry, recovers it).
* ``delay=LO-HI``: every destination delivery waits a uniform LO..HI (``0-2s``, ``100ms-1s``; ``2s`` means
  ``0-2s``; a bare low bound takes the high bound's unit), so completions arrive late and out of order.
* ``throttle=P``: an invoke is refused as Lambda refuses it when throttled (429 TooManyRequestsException),
  with the error the ``LambdaInvoker`` raises for it (``ThrottledInvocationError``).
* ``crash_after_effect=P``: after each effect of the driver (a store write or delete: task shard, state.json
  commit, final.json, artifact; an invoke, sync or async) the driver process dies, before its next commit.
* ``seed=N``: the decisions' seed (default: random, so two runs differ).

``FaultPlan`` makes the decisions and counts what it injected. A decision is a hash of (seed, kind, what it
hits: the task attempt of a delivery or invoke, the effect and how many of it came before) rather than a
draw from one shared generator, so it does not depend on how threads interleave: the same seed hits the same
task attempts. The local runtime (``LocalRuntime(faults=...)``) applies the delivery and throttle faults;
``FaultyStore`` and the runtime's invoke hooks apply the crash. Off (no plan), nothing here runs.

A crash must look like a real process death to the rest of the system: ``crash="exit"`` (the CLI's) writes
what it injected and where it died to stderr, then ends the process with ``os._exit(CRASH_EXIT_CODE)``, so no
``finally`` block, lease release or buffered write runs, whatever thread the effect happened on; the request's
lease is left behind naming a dead pid, which the next ``fave resume`` on this host takes over at once.
``crash="raise"`` is the in-process stand-in for tests: it raises ``InjectedCrash`` (a ``BaseException``,
which the orchestrator never catches) and marks the plan dead; a dead plan refuses every further effect of
that orchestrator (the store wrapper and the runtime raise ``InjectedCrash`` before doing anything) and drops
its deliveries, so nothing happens after the crash point. The one exception is the lease: an in-process crash
keeps this pid, which the lease would take for a live holder, so the lease object is released normally
(deliberately).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, NoReturn

from fave_shared.errors import ValidationError
from fave_shared.store import Blob, ObjectStore

from fave.core.durations import parse_duration
from fave.invoke.base import ThrottledInvocationError

__all__ = [
    "CRASH_EXIT_CODE",
    "ENV_VAR",
    "KINDS",
    "REPORT_PREFIX",
    "FaultPlan",
    "FaultSpec",
    "FaultyStore",
    "InjectedCrash",
    "parse_faults",
    "parse_report",
    "plan_from",
]

ENV_VAR = "FAVE_FAULTS"
#: The exit status of a driver process killed by an injected crash (``fave chaos`` tells it from a failure).
CRASH_EXIT_CODE = 86
#: The stderr line that reports what a process injected, followed by a JSON object of counts by kind.
REPORT_PREFIX = "fave: faults injected: "
KINDS = ("duplicate", "drop", "delay", "throttle", "crash_after_effect")
_PROBABILITIES = ("duplicate", "drop", "crash_after_effect", "throttle")
_OFF = ("", "none", "off")
_KEY = re.compile(r"^[a-z_]+$")


class InjectedCrash(BaseException):
    """The in-process stand-in for a driver process dying (``FaultPlan(crash="raise")``)."""


@dataclass(frozen=True)
class FaultSpec:
    """What to inject; all zero (the default) injects nothing."""

    duplicate: float = 0.0
    drop: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    """Seconds (low, high) every delivery waits, drawn uniformly."""
    crash_after_effect: float = 0.0
    throttle: float = 0.0
    seed: int | None = None

    @property
    def active(self) -> bool:
        return any(getattr(self, k) > 0 for k in _PROBABILITIES) or self.delay[1] > 0

    def with_seed(self, seed: int) -> FaultSpec:
        return replace(self, seed=seed)

    def __str__(self) -> str:
        """The canonical spec text (``parse_faults(str(spec)) == spec``)."""
        parts = [f"{k}={getattr(self, k):g}" for k in ("duplicate", "drop") if getattr(self, k)]
        if self.delay[1] > 0:
            parts.append(f"delay={_seconds(self.delay[0])}-{_seconds(self.delay[1])}")
        parts += [f"{k}={getattr(self, k):g}" for k in ("crash_after_effect", "throttle") if getattr(self, k)]
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return ",".join(parts) or "none"


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if 0 < value < 1 else f"{value:g}s"


def parse_faults(text: str | None, *, source: str = "--faults") -> FaultSpec:
    """Parse a spec (see the module docs); ``None``, ``""``, ``none`` and ``off`` are no faults.

    Raises ``ValidationError`` with one line naming ``source`` and the offending key."""
    if text is None or text.strip().lower() in _OFF:
        return FaultSpec()
    known = [f.name for f in fields(FaultSpec)]
    values: dict[str, Any] = {}
    for raw_entry in text.split(","):
        entry = raw_entry.strip()
        if not entry:
            raise ValidationError(f"{source}: empty entry in {text!r} (expected KEY=VALUE,KEY=VALUE)")
        key, sep, raw = (part.strip() for part in entry.partition("="))
        if not sep or not _KEY.match(key):
            raise ValidationError(f"{source}: {entry!r} is not KEY=VALUE (keys: {', '.join(known)})")
        if key not in known:
            raise ValidationError(f"{source}: unknown key '{key}' (keys: {', '.join(known)})")
        if key in values:
            raise ValidationError(f"{source}: key '{key}' given twice")
        values[key] = _parse_value(key, raw, source)
    return FaultSpec(**values)


def _parse_value(key: str, raw: str, source: str) -> Any:
    if key == "seed":
        try:
            seed = int(raw)
        except ValueError:
            raise ValidationError(f"{source}: key 'seed' must be a whole number, got {raw!r}") from None
        if seed < 0:
            raise ValidationError(f"{source}: key 'seed' must not be negative, got {raw!r}")
        return seed
    if key == "delay":
        return _parse_delay(raw, source)
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ValidationError(f"{source}: key '{key}' must be a probability from 0 to 1 (or 0-100%), got {raw!r}")
    return value


def _parse_delay(raw: str, source: str) -> tuple[float, float]:
    low_text, sep, high_text = raw.partition("-")
    if not sep:
        low_text, high_text = "0", raw
    if re.fullmatch(r"\d+(\.\d+)?", low_text.strip()):  # "0-2s", "500-800ms": the low bound takes the unit
        unit = re.search(r"[a-z]+$", high_text.strip())
        low_text += unit.group(0) if unit else ""
    try:
        low, high = parse_duration(low_text), parse_duration(high_text)
    except ValueError as exc:
        raise ValidationError(f"{source}: key 'delay' must be a range like 0-2s or 100ms-1s: {exc}") from None
    if low > high:
        raise ValidationError(f"{source}: key 'delay' has its low bound above its high bound ({raw!r})")
    return (low, high)


def plan_from(faults: FaultSpec | str | None, environ: Mapping[str, str] | None = None) -> FaultPlan | None:
    """The plan a CLI driver uses: from ``faults`` if given (a spec or its text), else ``$FAVE_FAULTS``;
    None when that injects nothing (so the hooks cost nothing)."""
    if faults is None:
        text = (os.environ if environ is None else environ).get(ENV_VAR)
        spec = parse_faults(text, source=ENV_VAR)
    elif isinstance(faults, str):
        spec = parse_faults(faults)
    else:
        spec = faults
    return FaultPlan(spec) if spec.active else None


class FaultPlan:
    """Decides (seeded, see the module docs) and records the faults of one driver process. Thread-safe."""

    def __init__(self, spec: FaultSpec, *, crash: Literal["exit", "raise"] = "exit") -> None:
        self.spec = spec
        self.seed = spec.seed if spec.seed is not None else secrets.randbits(31)
        self.crash_mode = crash
        self.crashed_after: str | None = None
        """The effect after which this plan crashed its process (``crash="raise"``: the process lives on)."""
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(KINDS, 0)
        self._occurrences: dict[str, int] = {}

    # ---- decisions -----------------------------------------------------------------------------------

    def _draw(self, kind: str, key: str) -> float:
        """A number in [0, 1) for the next occurrence of ``key`` (a repeat of the same key draws anew)."""
        name = f"{kind}/{key}"
        with self._lock:
            n = self._occurrences.get(name, 0)
            self._occurrences[name] = n + 1
        digest = hashlib.blake2b(f"{self.seed}/{name}/{n}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def _record(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] += n

    def delivery_delays(self, key: str) -> tuple[float, ...]:
        """How one destination delivery goes: ``()`` lost, else one delay (seconds) per copy delivered."""
        spec = self.spec
        if spec.drop and self._draw("drop", key) < spec.drop:
            self._record("drop")
            return ()
        copies = 1
        if spec.duplicate and self._draw("duplicate", key) < spec.duplicate:
            self._record("duplicate")
            copies = 2
        low, high = spec.delay
        if high <= 0:
            return (0.0,) * copies
        self._record("delay", copies)
        return tuple(low + (high - low) * self._draw("delay", f"{key}#{copy}") for copy in range(copies))

    def throttle(self, function: str, key: str) -> None:
        """Raise what the ``LambdaInvoker`` raises when Lambda answers 429, if this invoke is throttled."""
        if self.spec.throttle and self._draw("throttle", f"{function}/{key}") < self.spec.throttle:
            self._record("throttle")
            raise ThrottledInvocationError(
                f"{function}: TooManyRequestsException (429): Rate Exceeded. (injected by {ENV_VAR} throttle)"
            )

    def after_effect(self, effect: str, request_id: str | None = None, key: str = "") -> None:
        """Called right after an effect of the driver: maybe die here, before the next commit. ``key``: the
        task attempt the effect is for, if any (the decision then does not depend on what came before)."""
        if self.crashed_after is not None:
            raise InjectedCrash(self.crashed_after)
        p = self.spec.crash_after_effect
        if p and self._draw("crash_after_effect", f"{effect}/{key}" if key else effect) < p:
            self._record("crash_after_effect")
            self.crashed_after = effect
            if self.crash_mode == "exit":
                self._exit(effect, request_id)
            raise InjectedCrash(effect)

    def check_alive(self, *_: object) -> None:
        """``InjectedCrash`` if this plan crashed (in-process): whatever the dead driver tries next fails."""
        if self.crashed_after is not None:
            raise InjectedCrash(self.crashed_after)

    @property
    def dead(self) -> bool:
        return self.crashed_after is not None

    def _exit(self, effect: str, request_id: str | None) -> NoReturn:
        resume = f"`fave resume {request_id}`" if request_id else "`fave resume`"
        lines = (
            f"{self.report_line()}\n"
            f"fave: injected crash after {effect} ({ENV_VAR} crash_after_effect): the driver dies here; "
            f"{resume} continues the request\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, lines.encode())
        os._exit(CRASH_EXIT_CODE)

    # ---- what happened -------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Faults injected so far, by kind (``delay`` counts delayed copies)."""
        with self._lock:
            return dict(self._counts)

    def report_line(self) -> str:
        return REPORT_PREFIX + json.dumps(self.counts())


def parse_report(text: str) -> dict[str, int]:
    """The counts of the last ``REPORT_PREFIX`` line in ``text`` (a driver's stderr); zeros if none."""
    counts = dict.fromkeys(KINDS, 0)
    for line in reversed(text.splitlines()):
        if line.startswith(REPORT_PREFIX):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                counts.update({k: int(v) for k, v in json.loads(line[len(REPORT_PREFIX) :]).items() if k in counts})
            break
    return counts


def _effect(key: str, verb: str) -> str | None:
    """What a store write or delete is, for the crash report; None for the lease (never a crash point)."""
    if key.endswith("/metadata/lease.json"):
        return None
    if key.endswith("/metadata/state.json"):
        return "state.json commit" if verb == "write" else "state.json delete"
    if "/metadata/tasks/" in key:
        return f"task shard {verb} ({key.rsplit('/', 2)[-2]})"
    if key.endswith("/metadata/final.json"):
        return f"final.json {verb}"
    parts = key.split("/", 2)
    return f"store {verb} ({parts[2] if len(parts) > 2 and parts[0] == 'requests' else key})"


def _request_id(key: str) -> str | None:
    parts = key.split("/", 2)
    return parts[1] if len(parts) > 2 and parts[0] == "requests" else None


class FaultyStore:
    """An ``ObjectStore`` whose writes and deletes are crash points of a ``FaultPlan`` (reads pass through)."""

    def __init__(self, inner: ObjectStore, plan: FaultPlan) -> None:
        self._inner = inner
        self.plan = plan

    def __repr__(self) -> str:
        return f"FaultyStore({self._inner!r})"

    @property
    def inner(self) -> ObjectStore:
        return self._inner

    @property
    def uri(self) -> str:
        return self._inner.uri

    def get(self, key: str) -> Blob:
        return self._inner.get(key)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        effect = _effect(key, "write")
        if effect is not None:
            self.plan.check_alive()
        etag = self._inner.put(key, data, if_match=if_match, if_none_match=if_none_match, content_type=content_type)
        if effect is not None:
            self.plan.after_effect(effect, _request_id(key))
        return etag

    def head(self, key: str) -> str | None:
        return self._inner.head(key)

    def delete(self, key: str) -> None:
        effect = _effect(key, "delete")
        if effect is not None:
            self.plan.check_alive()
        self._inner.delete(key)
        if effect is not None:
            self.plan.after_effect(effect, _request_id(key))

    def list(self, prefix: str) -> Iterator[str]:
        return self._inner.list(prefix)

    def link(self, key: str) -> str:
        return self._inner.link(key)

    def sweep_temp(self) -> None:
        """The wrapped store's ``sweep_temp`` (a local store's abandoned temporary files), if it has one."""
        sweep = getattr(self._inner, "sweep_temp", None)
        if callable(sweep):
            sweep()
