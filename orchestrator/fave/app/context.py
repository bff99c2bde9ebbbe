"""The orchestrator function's dependencies: settings, pipeline, store, invoker, clock and an S3 client.

Each is built on first use from the environment (never at import, so importing ``fave.app`` creates no AWS
client) and kept for the life of the execution environment, like any Lambda global. ``configure`` replaces
any of them: tests pass the moto store, the local runtime and a manual clock this way.

A configuration that cannot work (no ``FAVE_STORE``, a pipeline file that does not load, a stage whose function
has no ``FAVE_FUNCTION_<LogicalId>``) raises ``ConfigurationError``: the HTTP API answers 500 naming it,
never a 400 that would blame the caller.
"""

from __future__ import annotations

import contextvars
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fave_shared.errors import TerminalError, ValidationError
from fave_shared.store import ObjectStore, S3Store, open_store

from fave.app.settings import Settings
from fave.clock import Clock, SystemClock
from fave.core.budget import Rates
from fave.core.dag import Pipeline
from fave.invoke.base import Invoker
from fave.pipeline import PipelineError, load_pipeline

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["SELF_FUNCTION", "AppContext", "ConfigurationError", "configure", "current", "reset"]


class ConfigurationError(TerminalError):
    """The function is deployed with a configuration that cannot work: its environment or its pipeline file.
    Not the caller's fault (HTTP 500), and retrying the same event cannot help."""


#: The logical id under which the orchestrator invokes itself (``self_invoker``).
SELF_FUNCTION = "OrchestratorFunction"

lambda_context: contextvars.ContextVar[Any] = contextvars.ContextVar("fave_lambda_context", default=None)
"""The Lambda context of the invocation running on this thread (set by the handlers)."""


class AppContext:
    """Lazily built dependencies of one execution environment. Thread-safe."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: ObjectStore | None = None,
        pipeline: Pipeline | str | Path | None = None,
        invoker: Invoker | None = None,
        clock: Clock | None = None,
        s3_client: S3Client | Any | None = None,
        self_invoker: Invoker | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._self_invoker = self_invoker
        self._store = store
        self._pipeline = pipeline
        self._invoker = invoker
        self._clock = clock
        self._s3_client = s3_client
        self._rates: Rates | None = None
        self._lock = threading.RLock()

    @property
    def store(self) -> ObjectStore:
        """The request store: ``FAVE_STORE`` (an ``S3Store`` whose client is created on first use)."""
        with self._lock:
            if self._store is None:
                if not self.settings.store_uri:
                    raise ConfigurationError(
                        "configuration error: FAVE_STORE is not set: the orchestrator needs s3://bucket[/prefix]"
                    )
                try:
                    self._store = open_store(self.settings.store_uri)
                except ValidationError as exc:
                    raise ConfigurationError(f"configuration error: FAVE_STORE: {exc}") from None
            return self._store

    @property
    def invoker(self) -> Invoker:
        """The stage invoker: ``LambdaInvoker`` over ``FAVE_FUNCTION_<LogicalId>`` names, or with
        ``FAVE_INVOKER=openfaas`` an ``OpenFaaSInvoker`` on ``GATEWAY_URL`` (``fave.invoke.openfaas``)."""
        with self._lock:
            if self._invoker is None:
                kind = os.environ.get("FAVE_INVOKER", "lambda").strip().lower() or "lambda"
                if kind == "openfaas":
                    from fave.invoke.openfaas import OpenFaaSInvoker

                    try:
                        self._invoker = OpenFaaSInvoker.from_env()
                    except ValidationError as exc:
                        raise ConfigurationError(f"configuration error: {exc}") from None
                elif kind == "lambda":
                    from fave.invoke.aws import LambdaInvoker

                    self._invoker = LambdaInvoker.from_env()
                else:
                    raise ConfigurationError(
                        f"configuration error: FAVE_INVOKER: expected lambda or openfaas, got {kind!r}"
                    )
            return self._invoker

    @property
    def rates(self) -> Rates:
        """The ledger's prices and each stage function's MemorySize (``fave.service.default_rates``), once per
        execution environment: on Lambda the sizes come from GetFunctionConfiguration, the calls the result
        cache's code digests make anyway."""
        with self._lock:
            if self._rates is None:
                from fave.service import default_rates

                self._rates = default_rates(self.invoker)
            return self._rates

    @property
    def self_invoker(self) -> Invoker | None:
        """How this function invokes itself asynchronously (``SELF_FUNCTION``): Lambda, with the function's
        own name (``FAVE_SELF_FUNCTION``, else Lambda's ``AWS_LAMBDA_FUNCTION_NAME``); None off Lambda."""
        with self._lock:
            if self._self_invoker is None and self.settings.self_function:
                from fave.invoke.aws import LambdaInvoker

                stages = self.invoker
                client = stages.client if isinstance(stages, LambdaInvoker) else None
                self._self_invoker = LambdaInvoker(client, {SELF_FUNCTION: self.settings.self_function})
            return self._self_invoker

    @property
    def pipeline(self) -> Pipeline:
        """``FAVE_PIPELINE``, loaded and validated once.

        The known functions are the invoker's (on Lambda the ``FAVE_FUNCTION_*`` names: the bundle holds no
        template.yaml).
        """
        with self._lock:
            if not isinstance(self._pipeline, Pipeline):
                path = self._pipeline if self._pipeline is not None else self.settings.pipeline_path
                functions = self.invoker.functions()
                try:
                    self._pipeline = load_pipeline(path, functions=functions)
                except PipelineError as exc:
                    hint = ""
                    if "is not a function in" in str(exc):
                        hint = (
                            "; every function a stage names needs FAVE_FUNCTION_<LogicalId> in this function's "
                            f"environment (set: {', '.join(sorted(functions)) or 'none'})"
                        )
                    raise ConfigurationError(f"configuration error: {exc}{hint}") from None
            return self._pipeline

    @property
    def clock(self) -> Clock:
        with self._lock:
            if self._clock is None:
                self._clock = SystemClock()
            return self._clock

    @property
    def s3_client(self) -> S3Client | Any:
        """A client for reading uploads: the store's own if it is on S3, else one from the environment."""
        with self._lock:
            if self._s3_client is None:
                store = self.store
                if isinstance(store, S3Store):
                    self._s3_client = store.client
                else:
                    from fave_shared.store.s3 import default_s3_client

                    self._s3_client = default_s3_client()
            return self._s3_client


_lock = threading.Lock()
_current: AppContext | None = None


def current() -> AppContext:
    """The context of this execution environment (built from the environment on first use)."""
    global _current  # noqa: PLW0603 - one context per execution environment, like any Lambda global
    with _lock:
        if _current is None:
            _current = AppContext()
        return _current


def configure(
    *,
    settings: Settings | None = None,
    store: ObjectStore | None = None,
    pipeline: Pipeline | str | Path | None = None,
    invoker: Invoker | None = None,
    clock: Clock | None = None,
    s3_client: S3Client | Any | None = None,
    self_invoker: Invoker | None = None,
) -> AppContext:
    """Replace the context: what is not given is built from the environment on first use."""
    global _current  # noqa: PLW0603
    context = AppContext(
        settings,
        store=store,
        pipeline=pipeline,
        invoker=invoker,
        clock=clock,
        s3_client=s3_client,
        self_invoker=self_invoker,
    )
    with _lock:
        _current = context
    return context


def reset() -> None:
    """Forget the context; the next event builds a new one from the environment."""
    global _current  # noqa: PLW0603
    with _lock:
        _current = None
