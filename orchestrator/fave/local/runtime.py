"""``LocalRuntime``: run template.yaml's functions on this machine the way Lambda runs them, without Docker.

What behaves like Lambda:

* Execution environments: per function, warm worker processes (``process`` isolation, the default), each
  serving one invocation at a time and reused across invocations, so a handler module (and the models it
  loads at import) is imported once per environment. Concurrency per function is the smaller of its
  ``ReservedConcurrentExecutions`` and its ``function_caps`` entry (a pipeline's ``functions:`` caps, across
  every request this runtime serves) when either is set, else its ``environment_limits`` entry (what the
  pipeline's stages may ask of it at once), else ``max_environments``, else ``os.cpu_count()``.
* Throttling: at an explicit limit (reserved concurrency or a cap) a synchronous invoke is refused as Lambda
  refuses it, with ``ThrottledInvocationError`` (429 TooManyRequestsException), counting the invocations
  queued and running; an asynchronous one queues (Lambda queues events and retries throttles itself). A
  function without an explicit limit never throttles: its invocations queue.
* Unlike Lambda's, these environments share one machine's cores. Unless ``max_environments`` is given, a
  function starts an environment beyond its first only while the machine has a core for it: fewer
  environments than ``cores`` (default ``os.cpu_count()``) are starting or busy, across all functions, or
  the CPU the busy ones are measured to use leaves room for a cold start (``pool.CoreGate``). So an
  I/O-bound function scales up to its limit and a CPU-bound one stays near the core count; otherwise its
  invocations wait for a warm environment instead of paying a cold start on a saturated machine.
* ``prewarm`` (with the gate only): functions in the order they will be needed. When one of them is first
  invoked, the runtime starts the first environment of each function after it in that list, one at a time
  and only while a core is free, so their interpreter start and imports overlap the running stages instead
  of delaying each stage in turn (Lambda's provisioned concurrency, for the first environment).
* Each environment gets ``os.environ`` + the function's ``Environment`` + ``env_overrides`` + its own entry of
  ``function_env`` (by logical id: e.g. each function's credentials, as each Lambda function has its own
  execution role) + Lambda's own variables, ``cwd`` = the code folder, and ``sys.path`` = code folder,
  layers, then the parent's path (so packages installed in the virtualenv import as they would from a layer).
* Timeouts kill the environment (the next invocation starts cold) and report ``Sandbox.Timedout``; a
  crashing runtime reports ``Runtime.ExitError``; handler exceptions, import errors and unserialisable
  responses report Lambda's payloads. Events and responses always go through JSON.
* ``invoke_async``: Lambda's asynchronous invocation: retries (``MaximumRetryAttempts``, delays from
  ``async_retry_delays_s``: Lambda waits about 1 then 2 minutes, the default here is 1 s then 2 s),
  ``MaximumEventAgeInSeconds``, then a ``DestinationEnvelope`` to OnSuccess / OnFailure.

``thread`` isolation (``Metadata: {FaveLocal: {Isolation: thread}}``) runs the handler on a thread of this
process instead: microseconds per invocation, for trivial handlers (benchmarks, tests against in-process
moto). Its limits: the module is imported once per function (not per environment) under a unique name;
``os.environ``, the working directory and ``sys.modules`` are this process's (the function's
``Environment`` and ``function_env`` are *not* applied; the code folder and layers are prepended to
``sys.path``); and a timed-out handler cannot be killed: the caller gets the same timeout error, the slot is
replaced, and the thread runs on until the handler returns.

``faults`` (a ``fave.faults.FaultPlan``, off by default) injects what Lambda does under stress: destination
deliveries duplicated, lost or delayed (so out of order), invokes refused as throttled (429), and a crash of
the caller right after an invoke.

Destinations: if ``destination_handlers`` has the destination's logical id, that callable receives the
envelope dict (how an in-process orchestrator driver receives fan-in events); otherwise the destination
function is invoked asynchronously with the envelope as its event. Callables are called from runtime
threads, concurrently, and must be thread-safe and quick (e.g. put the envelope on a ``queue.Queue``). An SQS
destination (template.yaml's ``CompletionsQueue``) is a ``fave.local.queues.LocalQueue``'s ``send_record``:
the record's JSON becomes a message, which the queue's event source mapping hands on in batches.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from fave_shared.errors import FaveError, NotFoundError

from fave import cache
from fave.completions import LocalEnvelope
from fave.invoke.base import (
    MAX_ASYNC_PAYLOAD_BYTES,
    MAX_SYNC_PAYLOAD_BYTES,
    FunctionNotFoundError,
    InvokeResult,
    RetryableInvocationError,
    TerminalInvocationError,
    ThrottledInvocationError,
    encode_payload,
)
from fave.local.environment import Outcome, ProcessEnvironment, context_info
from fave.local.forkserver import ForkServer
from fave.local.forkserver import available as forkserver_available
from fave.local.pool import CoreGate, FunctionPool, FunctionStats, Invocation
from fave.local.template import FunctionSpec, Template, load_template
from fave.local.timer import Timer
from fave.local.worker import decode_json

if TYPE_CHECKING:
    from fave.local.faults import FaultPlan
    from fave.local.preload import Preload

__all__ = ["DestinationHandler", "FunctionStats", "LocalRuntime"]

log = logging.getLogger("fave.local.runtime")

DestinationHandler = Callable[[dict[str, Any]], None]
Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CLOSE_S = 5.0


class LocalRuntime:
    """An ``Invoker`` that runs a SAM template's functions locally, like Lambda (see the module docs).

    Thread-safe. Close it (or use it as a context manager) to stop its environments and threads.
    """

    def __init__(
        self,
        template: Template | str | os.PathLike[str],
        *,
        env_overrides: Mapping[str, str] = _EMPTY,
        function_env: Mapping[str, Mapping[str, str]] = _EMPTY,
        destination_handlers: Mapping[str, DestinationHandler] = _EMPTY,
        async_retry_delays_s: Sequence[float] = (1.0, 2.0),
        max_environments: int | None = None,
        cores: int | None = None,
        prewarm: Sequence[str] = (),
        faults: FaultPlan | None = None,
        function_caps: Mapping[str, int] = _EMPTY,
        environment_limits: Mapping[str, int] = _EMPTY,
        fork_environments: bool = True,
        preload: bool = True,
    ) -> None:
        if max_environments is not None and max_environments < 1:
            raise ValueError(f"max_environments must be at least 1, got {max_environments}")
        self.template = template if isinstance(template, Template) else load_template(template)
        for option, limits in (("function_caps", function_caps), ("environment_limits", environment_limits)):
            unknown = [name for name in limits if name not in self.template.functions]
            if unknown:
                raise ValueError(f"{option}: no function {', '.join(unknown)} in {self.template.path}")
            low = {name: n for name, n in limits.items() if n < 1}
            if low:
                raise ValueError(f"{option}: must be at least 1, got {low}")
        self._env_overrides = dict(env_overrides)
        self._function_env = {lid: dict(env) for lid, env in function_env.items()}
        self._destinations = dict(destination_handlers)
        self._retry_delays = tuple(float(d) for d in async_retry_delays_s)
        # Fault injection (fave.local.faults): duplicate / drop / delay deliveries, throttle invokes, crash after an
        # invoke. None (the default) costs one attribute test per invoke and per delivery.
        self._faults = faults
        self._region = _region({**os.environ, **self._env_overrides})
        # Environments forked from a warm interpreter (~2 ms) rather than started from scratch (~40 ms of CPU).
        self._forks = ForkServer() if fork_environments and forkserver_available() else None
        self._timer = Timer("fave-local-timer")
        self._request_id = _RequestIds()
        self._lock = threading.Lock()
        self._code_digests: dict[str, str] = {}
        self._closed = False
        default_limit = max_environments or os.cpu_count() or 1
        # An explicit max_environments is a choice of concurrency: no core gate then (unless cores is given).
        gate_cores = cores if cores is not None else (None if max_environments else os.cpu_count() or 1)
        self.gate = CoreGate(gate_cores, self._timer) if gate_cores is not None else None
        self._pools: dict[str, FunctionPool] = {}
        self._arns: dict[str, str] = {}
        for lid, spec in self.template.functions.items():
            context = context_info(lid, spec.memory_mb, self._region, _log_stream())
            self._arns[lid] = f"{context['invoked_function_arn']}:$LATEST"
            explicit = [n for n in (spec.reserved_concurrency, function_caps.get(lid)) if n is not None]
            self._pools[lid] = FunctionPool(
                spec,
                min(explicit) if explicit else environment_limits.get(lid, default_limit),
                timer=self._timer,
                start_process=functools.partial(self._start_process, spec),
                thread_context=context,
                gate=self.gate,
                explicit=bool(explicit),
            )
            own = self._function_env.get(lid, {})
            missing = [
                name
                for name in spec.unresolved_environment
                if name not in self._env_overrides and name not in own and name not in os.environ
            ]
            if missing:
                log.warning(
                    "%s: environment variables %s need a deployed stack: pass them in env_overrides",
                    lid,
                    ", ".join(missing),
                )
        for option, names in (("function_env", list(self._function_env)), ("prewarm", list(prewarm))):
            unknown = [name for name in names if name not in self._pools]
            if unknown:
                raise ValueError(f"{option}: no function {', '.join(unknown)} in {self.template.path}")
        threaded = [lid for lid in self._function_env if self.template.functions[lid].local_isolation == "thread"]
        if threaded:  # its variables would silently not apply: a thread shares this process's environment
            raise ValueError(
                f"function_env: {', '.join(threaded)} run in thread isolation, which has no own environment"
            )
        self._prewarm = _Prewarmer(self.gate, [self._pools[name] for name in prewarm]) if self.gate else None
        processes = any(self.template.functions[name].local_isolation == "process" for name in prewarm)
        self._preload: Preload | None = None
        if self._forks is not None and processes:  # functions to start ahead: the zygote first, meanwhile
            self._forks.prestart()
            # and the libraries they share, imported once (fave.local.preload; FAVE_LOCAL_PRELOAD=0 turns it off)
            if preload and os.environ.get("FAVE_LOCAL_PRELOAD", "1") != "0":
                self._preload = self._plan_preload([self._pools[name].spec for name in prewarm])
                if self._preload is not None:
                    self._forks.preload(self._preload)

    # -- Invoker ------------------------------------------------------------------------------------------

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        """Run ``function`` with ``payload`` and wait for its response (Lambda ``RequestResponse``)."""
        pool = self._pool(function)
        faults = self._faults
        if faults is not None:
            faults.check_alive()
            faults.throttle(function, _fault_key(payload))
        invocation = _SyncInvocation(self._request_id(), encode_payload(payload, MAX_SYNC_PAYLOAD_BYTES))
        admitted = pool.admit(invocation)
        if admitted is None:
            raise ThrottledInvocationError(
                f"{function}: Rate Exceeded (TooManyRequestsException): {pool.limit} invocations in flight, its "
                "concurrency limit"
            )
        if not admitted:
            raise TerminalInvocationError("the local runtime is closed")
        if self._prewarm is not None and not self._prewarm.started:
            self._prewarm.start_after(pool)  # after submit: this function's own environment comes first
        outcome = invocation.wait()
        if outcome is None:
            raise TerminalInvocationError(
                f"the local runtime closed while {function} request {invocation.request_id} was in flight"
            )
        if faults is not None:  # the function ran; the caller may die before it commits the result
            faults.after_effect(f"invoke {function}", _fault_key(payload, "request_id"), _fault_key(payload))
        body = outcome.body
        if len(body) > MAX_SYNC_PAYLOAD_BYTES:
            # What Lambda answers instead of a response over its synchronous payload limit.
            error = {
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload "
                f"size ({MAX_SYNC_PAYLOAD_BYTES} bytes).",
            }
            return InvokeResult(error, "Unhandled", invocation.request_id)
        return InvokeResult(decode_json(body), "Unhandled" if outcome.error else None, invocation.request_id)

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        """Queue ``function`` with ``payload`` (Lambda ``Event``); returns the request id at once."""
        faults = self._faults
        if faults is None:
            return self._invoke_async(function, payload)
        self._pool(function)  # an unknown function is refused before it can be throttled
        faults.check_alive()
        faults.throttle(function, _fault_key(payload))
        request_id = self._invoke_async(function, payload)
        faults.after_effect(f"invoke {function}", _fault_key(payload, "request_id"), _fault_key(payload))
        return request_id

    def _invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        pool = self._pool(function)
        request_id = self._request_id()
        invocation = _AsyncInvocation(self, pool, request_id, encode_payload(payload, MAX_ASYNC_PAYLOAD_BYTES))
        if not pool.submit(invocation):
            raise TerminalInvocationError("the local runtime is closed")
        if self._prewarm is not None and not self._prewarm.started:
            self._prewarm.start_after(pool)
        return request_id

    def functions(self) -> frozenset[str]:
        """The logical ids of the template's functions."""
        return frozenset(self.template.functions)

    def memory_sizes(self) -> dict[str, int]:
        """Each function's MemorySize (the template's): what a request's ledger prices its GB-seconds at."""
        return {lid: spec.memory_mb for lid, spec in self.template.functions.items()}

    def code_digest(self, function: str) -> str | None:
        """sha256 over the function's handler, its CodeUri tree and the trees of the layers it uses (in order;
        ``__pycache__`` and compiled files skipped), computed once per function: the result cache's view of
        "the code as deployed" (edit the code, restart the runtime). None for an unknown function."""
        with self._lock:
            known = self._code_digests.get(function)
        if known is not None:
            return known
        spec = self.template.functions.get(function)
        if spec is None:
            return None
        digest = cache.tree_digest((spec.code_uri, *spec.layers))
        digest = hashlib.sha256(f"{spec.handler}\0{digest}".encode()).hexdigest()
        with self._lock:
            self._code_digests[function] = digest
        return digest

    def close(self) -> None:
        """Stop every environment and thread: queued and running invocations are dropped (a waiting
        ``invoke_sync`` raises ``TerminalInvocationError``), busy worker processes are killed, idle ones
        exit. Idempotent. Handlers stuck in thread isolation cannot be stopped and are left running.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._timer.close()  # pending retries are dropped
        for pool in self._pools.values():
            pool.close()
        deadline = time.monotonic() + _CLOSE_S
        for pool in self._pools.values():
            pool.join(deadline)
        if self._forks is not None:  # last: it reports how the environments ended
            self._forks.close()

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- diagnostics --------------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultPlan | None:
        """The fault plan this runtime applies, if any."""
        return self._faults

    def stats(self) -> dict[str, FunctionStats]:
        """Per function: invocations (attempts), cold_starts, timeouts, errors, async_retries."""
        return {lid: pool.stats() for lid, pool in self._pools.items()}

    def timer_stats(self) -> dict[str, int]:
        """The runtime's timer (async retries, thread-isolation watchdogs): ``scheduled`` callbacks since it
        started and entries ``held`` now. A busy thread slot schedules one watchdog per timeout period,
        however many invocations it runs."""
        return {"scheduled": self._timer.scheduled, "held": self._timer.size()}

    def limits(self) -> dict[str, int]:
        """Per function, how many of its invocations run at once (see the module docs)."""
        return {lid: pool.limit for lid, pool in self._pools.items()}

    def environment_pids(self) -> dict[str, list[int]]:
        """Per function, the process ids of its live worker processes."""
        return {lid: pool.environment_pids() for lid, pool in self._pools.items()}

    # -- internals ----------------------------------------------------------------------------------------

    def _pool(self, function: str) -> FunctionPool:
        if self._closed:
            raise TerminalInvocationError("the local runtime is closed")
        try:
            pool = self._pools[function]
        except KeyError:
            try:
                self.template.function(function)
            except NotFoundError as e:
                raise FunctionNotFoundError(str(e)) from None
            raise
        if pool.limit == 0:
            raise RetryableInvocationError(f"{function}: throttled (ReservedConcurrentExecutions is 0)")
        return pool

    def _variables(self, spec: FunctionSpec) -> dict[str, str]:
        """The variables a function's environments get beyond this process's own and Lambda's."""
        return {**spec.environment, **self._env_overrides, **self._function_env.get(spec.logical_id, {})}

    def _plan_preload(self, specs: list[FunctionSpec]) -> Preload | None:
        from fave.local.preload import plan_preload  # here: it reads the handlers with ast, only when forking

        every = list(self.template.functions.values())
        variables = {spec.logical_id: self._variables(spec) for spec in every}
        try:
            return plan_preload(specs, every, variables, _parent_sys_path())
        except Exception:  # reading the handlers' imports is an optimisation: never a reason not to run
            log.warning("local runtime: no shared imports for the environments", exc_info=True)
            return None

    def _start_process(self, spec: FunctionSpec) -> ProcessEnvironment:
        log_stream = _log_stream()
        env = {**os.environ, **self._variables(spec)}
        env["AWS_REGION"] = region = _region(env)
        env.setdefault("AWS_DEFAULT_REGION", region)
        env.update(
            AWS_LAMBDA_FUNCTION_NAME=spec.logical_id,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(spec.memory_mb),
            AWS_LAMBDA_FUNCTION_TIMEOUT=str(spec.timeout_s),
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{spec.logical_id}",
            AWS_LAMBDA_LOG_STREAM_NAME=log_stream,
            LAMBDA_TASK_ROOT=str(spec.code_uri),
            _HANDLER=spec.handler,
        )
        return ProcessEnvironment(
            handler=spec.handler,
            code_uri=spec.code_uri,
            env=env,
            sys_path=_child_sys_path(spec),
            context=context_info(spec.logical_id, spec.memory_mb, region, log_stream),
            # A function that may not share the preloaded zygote's imports starts the classic way.
            forks=self._forks if self._preload is None or self._preload.accepts(spec.logical_id) else None,
        )

    def _async_finished(self, invocation: _AsyncInvocation, outcome: Outcome) -> None:
        config = invocation.pool.spec.event_invoke_config
        if not outcome.error:
            self._deliver(invocation, "Success", outcome)
        elif invocation.attempts > config.max_retry_attempts:
            self._deliver(invocation, "RetriesExhausted", outcome)
        else:
            delays = self._retry_delays
            delay = delays[min(invocation.attempts, len(delays)) - 1] if delays else 0.0
            when = time.monotonic() + delay
            if when - invocation.queued_at > config.max_event_age_s:
                self._deliver(invocation, "EventAgeExceeded", outcome)
                return
            invocation.pool.count_retry()
            self._timer.call_at(when, lambda: self._resubmit(invocation))

    def _resubmit(self, invocation: _AsyncInvocation) -> None:
        if not invocation.pool.submit(invocation):
            log.debug("%s: retry of %s dropped, runtime closed", invocation.function, invocation.request_id)

    def _deliver(self, invocation: _AsyncInvocation, condition: Condition, outcome: Outcome | None) -> None:
        config = invocation.pool.spec.event_invoke_config
        target = config.on_success if condition == "Success" else config.on_failure
        if target is None:
            if condition != "Success":
                log.warning(
                    "%s: async event %s dropped (%s) and no OnFailure destination is configured",
                    invocation.function,
                    invocation.request_id,
                    condition,
                )
            return
        envelope = self._envelope(invocation, condition, outcome)
        faults = self._faults
        if faults is None:
            self._send(invocation, target, envelope)
            return
        if faults.dead:  # the driver crashed (in-process): nothing reaches it any more
            return
        key = f"{invocation.function}/{condition}/{_fault_key(envelope['requestPayload'])}"
        for delay in faults.delivery_delays(key):  # () = lost; two entries = delivered twice
            send = functools.partial(self._send, invocation, target, envelope)
            if delay > 0:
                self._timer.call_at(time.monotonic() + delay, send)
            else:
                send()

    def _send(self, invocation: _AsyncInvocation, target: str, envelope: dict[str, Any]) -> None:
        if self._faults is not None and self._faults.dead:  # a delayed delivery to a driver that died meanwhile
            return
        handler = self._destinations.get(target)
        try:
            if handler is not None:
                handler(envelope)
            elif target in self._pools:
                self._invoke_async(target, envelope)  # Lambda's own delivery: not throttled
            else:
                log.warning("%s: destination %r is neither a handler nor a function", invocation.function, target)
        except FaveError as e:  # e.g. the runtime is closing, or the envelope is over the async limit
            log.log(
                logging.DEBUG if self._closed else logging.WARNING,
                "%s: delivery to %s failed: %s",
                invocation.function,
                target,
                e,
            )
        except Exception:
            log.exception("%s: destination handler %s raised", invocation.function, target)

    def _envelope(self, invocation: _AsyncInvocation, condition: Condition, outcome: Outcome | None) -> dict[str, Any]:
        """``DestinationEnvelope(...).model_dump(mode="json")``, built as a plain dict.

        Validating through pydantic costs more than the rest of a thread-isolated invocation together;
        tests/functional/test_local_runtime.py checks this dict round-trips through the model unchanged. A
        ``LocalEnvelope``: its payloads come from JSON here, so an orchestrator reading it checks only its event.
        """
        return LocalEnvelope(
            {
                "version": "1.0",
                "timestamp": _timestamp(),
                "requestContext": {
                    "requestId": invocation.request_id,
                    "functionArn": self._arns[invocation.function],
                    "condition": condition,
                    "approximateInvokeCount": invocation.attempts,
                },
                "requestPayload": decode_json(invocation.payload),
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled" if outcome is not None and outcome.error else None,
                },
                "responsePayload": decode_json(outcome.body) if outcome is not None else None,
            }
        )


class _Prewarmer:
    """Warms the first environment of each function after the first one invoked, while cores are free."""

    def __init__(self, gate: CoreGate, pools: list[FunctionPool]) -> None:
        self.gate = gate
        self.pools = pools
        self.started = False
        self._pending: list[FunctionPool] = []
        self._lock = threading.Lock()

    def start_after(self, first: FunctionPool) -> None:
        with self._lock:
            if self.started:
                return
            self.started = True
            if first in self.pools:
                self._pending = self.pools[self.pools.index(first) + 1 :]
        self.scale_up()

    def scale_up(self) -> None:
        """Warm the next functions while the gate has room; otherwise wait for a core (called back)."""
        with self._lock:
            while self._pending:
                if not self._pending[0].prewarm():
                    self.gate.refuse(self)
                    return
                self._pending.pop(0)


class _SyncInvocation(Invocation):
    """A ``RequestResponse`` call: the caller blocks on a lock the runtime releases."""

    __slots__ = ("_done", "outcome")

    def __init__(self, request_id: str, payload: bytes) -> None:
        super().__init__(request_id, payload)
        self.outcome: Outcome | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._done.release()

    def abort(self) -> None:
        self._done.release()

    def wait(self) -> Outcome | None:
        """Block until finished; None if the runtime closed first."""
        self._done.acquire()
        return self.outcome


class _AsyncInvocation(Invocation):
    """An ``Event`` call: retried, aged and delivered to destinations by the runtime."""

    __slots__ = ("attempts", "last", "pool", "queued_at", "runtime")

    def __init__(self, runtime: LocalRuntime, pool: FunctionPool, request_id: str, payload: bytes) -> None:
        super().__init__(request_id, payload)
        self.runtime = runtime
        self.pool = pool
        self.queued_at = time.monotonic()
        self.attempts = 0
        self.last: Outcome | None = None

    @property
    def function(self) -> str:
        return self.pool.spec.logical_id

    def stale(self) -> bool:
        return time.monotonic() - self.queued_at > self.pool.spec.event_invoke_config.max_event_age_s

    def finish(self, outcome: Outcome) -> None:
        self.attempts += 1
        self.last = outcome
        self.runtime._async_finished(self, outcome)

    def expire(self) -> None:
        self.runtime._deliver(self, "EventAgeExceeded", self.last)

    def abort(self) -> None:
        log.debug("%s: async event %s dropped, runtime closed", self.function, self.request_id)


class _RequestIds:
    """UUID-shaped request ids: a random v4 prefix per runtime and a counter (uuid4() per call is slow)."""

    def __init__(self) -> None:
        self._prefix = _uuid4()[:24]
        self._counter = itertools.count(int.from_bytes(os.urandom(5), "big"))  # next() is atomic in CPython

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) % (1 << 48):012x}"


_last_second: tuple[int, str] = (0, "")


def _timestamp() -> str:
    """Now, as Lambda writes it in destination records: ``2026-01-31T12:34:56.789Z``."""
    global _last_second  # noqa: PLW0603 - a one-entry cache; a stale read only costs a strftime
    now = time.time()
    second = int(now)
    cached_second, text = _last_second
    if cached_second != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = (second, text)
    return f"{text}.{int((now - second) * 1000):03d}Z"


def _fault_key(payload: Any, field: str = "") -> str:
    """What a fault decision hits: the fave task attempt a payload carries (``field``: one of its fields)."""
    task = payload.get("task") if isinstance(payload, dict) else None
    if not isinstance(task, dict):
        return ""
    if field:
        return str(task.get(field) or "")
    return f"{task.get('stage')}/{task.get('item')}/{task.get('attempt')}"


def _region(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def _log_stream() -> str:
    return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{_uuid4().replace('-', '')}"


def _uuid4() -> str:
    """``str(uuid.uuid4())`` without importing uuid (which imports platform): ~5 ms of every ``fave run``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _child_sys_path(spec: FunctionSpec) -> list[str]:
    """The function's folders first, then this process's path (absolute: the child has another cwd)."""
    paths = [str(p) for p in spec.python_path if p.is_dir()]
    return paths + [entry for entry in _parent_sys_path() if entry not in paths]


def _parent_sys_path() -> list[str]:
    """This process's ``sys.path``, absolute (a child has another working directory)."""
    cwd = os.getcwd()
    return list(dict.fromkeys(str(Path(cwd, entry)) if entry else cwd for entry in sys.path))
