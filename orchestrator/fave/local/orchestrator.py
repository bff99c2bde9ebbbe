"""Assemble an orchestrator for the local runtime: pipeline + store + LocalRuntime reading template.yaml."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fave_shared.errors import ValidationError
from fave_shared.store import ObjectStore, open_store

from fave.core.dag import Pipeline
from fave.core.model import Notify, RequestState
from fave.local.parsed import parsed
from fave.local.template import load_template_once, template_functions
from fave.service import Orchestrator

if TYPE_CHECKING:
    from fave.local.faults import FaultPlan, FaultSpec

DEFAULT_STORE = "fave-artifacts"
DEFAULT_PIPELINE = "pipeline.yaml"


def store_uri(cli_value: str | None) -> str:
    """``--store`` beats ``$FAVE_STORE`` beats ``./fave-artifacts``."""
    return cli_value or os.environ.get("FAVE_STORE") or DEFAULT_STORE


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(/|$)")


def check_store_uri(uri: str) -> None:
    """``ValidationError`` for a ``--store`` that is neither a directory nor ``s3://bucket[/prefix]``: a URI of
    another scheme (``gs://b``), ``S3://b`` or ``s3:/b`` would otherwise become a local folder of that name."""
    if uri.startswith("s3://"):
        return
    scheme = _SCHEME.match(uri)
    if scheme is None and not uri.lower().startswith("s3:"):
        return
    name = scheme.group(1) if scheme is not None else "s3"
    hint = " (did you mean s3://...?)" if name.lower() == "s3" else ""
    raise ValidationError(f"--store {uri}: unknown scheme '{name}:'{hint}; use a directory or s3://bucket[/prefix]")


def open_any_store(uri: str) -> ObjectStore:
    """A store for a directory or an ``s3://bucket[/prefix]`` URI (``check_store_uri`` first)."""
    check_store_uri(uri)
    if uri.startswith("s3://"):
        return open_store(uri)
    path = Path(uri).expanduser()
    if path.exists() and not path.is_dir():
        raise ValidationError(f"--store {uri}: exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return open_store(str(path.resolve()))


def load_local_pipeline(path: str | Path) -> Pipeline:
    """A pipeline file whose functions are those of its template.yaml (as the local runtime runs them).

    Also refuses (``PipelineError``, one line naming the stage and the function) an asynchronous stage whose
    function's OnSuccess and OnFailure destinations do not both lead back to the orchestrator: its results
    would never arrive, and the stage would wait for its timeout on every attempt.

    An unchanged file (and template) is not validated again: ``fave.local.parsed`` keeps the result."""
    resolved = Path(path).resolve()
    pipeline = parsed("pipeline", resolved, lambda: _validated(resolved))
    template = load_template_once(pipeline.template_path)
    for name in pipeline.order:
        spec = pipeline.stages[name]
        problem = template.completion_problem(spec.function) if spec.mode == "async" else None
        if problem is not None:
            from fave.pipeline import PipelineError

            raise PipelineError(
                f"{pipeline.path}: stage '{name}', field 'mode': async, but function {spec.function} in "
                f"{template.path.name} has {problem}"
            )
    return pipeline


def _validated(path: Path) -> tuple[Pipeline, list[tuple[Path, bytes]]]:
    """The pipeline at ``path`` validated (pydantic: imported only here), and its template: by the path its
    ``template:`` names (a symbolic link may be repointed later), with the bytes it had when its functions were
    read, before validating."""
    from fave.pipeline import load_pipeline

    read: list[tuple[Path, bytes]] = []

    def functions(template: Path) -> frozenset[str]:
        try:
            read.append((template, template.read_bytes()))
        except OSError:  # template_functions says why; should it not, the entry is never used
            read.append((template, b"\0unread"))
        return template_functions(template)

    return load_pipeline(path, functions=functions), read


def local_orchestrator(
    pipeline: Pipeline | str | Path,
    store: ObjectStore,
    *,
    on_notify: Callable[[str, Notify, RequestState], None] | None = None,
    runtime_options: dict[str, Any] | None = None,
    faults: FaultPlan | FaultSpec | str | None = None,
) -> Orchestrator:
    """An orchestrator whose invoker is the local runtime of the pipeline's template.yaml.

    Every destination that a function's EventInvokeConfig names is delivered straight to this
    orchestrator's inbox: locally, *this process* is the orchestrator function. Once the first stage is
    invoked, the runtime pre-warms the functions of the later stages in DAG order while cores are free
    (``LocalRuntime(prewarm=...)``; ``runtime_options`` may override it).

    Limits (``runtime_options`` may override them): the pipeline's ``functions:`` caps are the runtime's
    ``function_caps`` (across every request this orchestrator drives; a synchronous invoke beyond one is
    throttled, as Lambda throttles at ReservedConcurrentExecutions), and a function without one may scale
    to as many environments as its stages' largest ``max_concurrency`` asks for (``environment_limits``;
    ``UNCAPPED_ENVIRONMENTS`` for a stage without one), while the machine has the CPU for them.

    ``faults`` (``fave.local.faults``): a plan, a spec or its text; None reads ``$FAVE_FAULTS``. When it injects
    anything, the runtime applies it to deliveries and invokes and the store is wrapped so that its writes are
    crash points (``fault_plan(orchestrator)`` returns the plan); otherwise nothing is wrapped.
    """
    from fave.local.runtime import LocalRuntime
    from fave.local.template import load_template_once

    if not isinstance(pipeline, Pipeline):
        pipeline = load_local_pipeline(pipeline)
    template = load_template_once(pipeline.template_path)
    plan = _plan(faults)
    if plan is not None and plan.spec.crash_after_effect > 0:
        from fave.local.faults import FaultyStore

        store = FaultyStore(store, plan)
    orchestrator = Orchestrator(pipeline, store, on_notify=on_notify)
    destinations: set[str] = set()
    for spec in template.functions.values():
        cfg = spec.event_invoke_config
        destinations.update(d for d in (cfg.on_success, cfg.on_failure) if d)
    options = dict(runtime_options or {})
    # The first environment of each function is started ahead, in DAG order, while cores are free.
    options.setdefault("prewarm", list(dict.fromkeys(pipeline.stages[name].function for name in pipeline.order)))
    options.setdefault("function_caps", dict(pipeline.operations.function_caps))
    if "max_environments" not in options:  # an explicit one is a choice of concurrency for every function
        options.setdefault("environment_limits", environment_limits(pipeline))
    env = {"FAVE_STORE": store.uri, **options.pop("env_overrides", {})}
    orchestrator.invoker = LocalRuntime(
        template,
        env_overrides=env,
        destination_handlers=dict.fromkeys(destinations, orchestrator.deliver),
        faults=plan,
        **options,
    )
    return orchestrator


UNCAPPED_ENVIRONMENTS = 32
"""Environments a function may scale to locally for a stage without ``max_concurrency`` (Lambda would go to
the account's limit, 1,000 by default; here each is a process with its interpreter and imports)."""


def environment_limits(pipeline: Pipeline) -> dict[str, int]:
    """Per function of the pipeline's stages, the most invocations one request may have in flight at once:
    its stages' largest ``max_concurrency`` (``UNCAPPED_ENVIRONMENTS`` for a stage without one)."""
    limits: dict[str, int] = {}
    for name in pipeline.order:
        stage = pipeline.stages[name]
        want = stage.max_concurrency if stage.max_concurrency is not None else UNCAPPED_ENVIRONMENTS
        limits[stage.function] = max(limits.get(stage.function, 1), want)
    return limits


def _plan(faults: FaultPlan | FaultSpec | str | None) -> FaultPlan | None:
    if faults is None and _FAULTS_VAR not in os.environ:
        return None  # the usual case: fave.local.faults is not even imported
    from fave.local.faults import FaultPlan, plan_from

    return faults if isinstance(faults, FaultPlan) else plan_from(faults)


#: ``fave.local.faults.ENV_VAR``, spelled here so that a run without faults need not import that module.
_FAULTS_VAR = "FAVE_FAULTS"


def fault_plan(orchestrator: Orchestrator) -> FaultPlan | None:
    """The fault plan a ``local_orchestrator`` applies (None when no fault is injected)."""
    plan = getattr(orchestrator.invoker, "faults", None)
    if plan is None:
        return None
    from fave.local.faults import FaultPlan

    return plan if isinstance(plan, FaultPlan) else None
