"""A pipeline's stage functions as a faas-cli ``stack.yml`` (``fave export --format openfaas``).

Unlike the other exports this is not another engine's definition of the DAG: fave stays the orchestrator
(``FAVE_INVOKER=openfaas``, ``fave.invoke.openfaas``) and OpenFaaS runs the stage functions. The stack file
declares one function per template function a stage names, each with the ``python3-http`` template, its handler
folder ``./<name>``, the environment from template.yaml plus ``FAVE_LOGICAL_ID`` (how the invoker maps logical
ids to names: ``FAVE_OPENFAAS_STACK=stack.yml``) and ``FAVE_HANDLER`` (the Lambda handler the shim calls), the
watchdog's timeouts from the function's Timeout, ``max_inflight`` from the pipeline's
``functions:`` caps (the watchdog answers 429 above it, which the invoker reports as a throttle), and
``limits.memory`` from MemorySize. Schema: https://docs.openfaas.com/reference/yaml/ (version 1.0: provider
``{name: openfaas, gateway}``, ``functions: {name: {lang, handler, image, environment, labels, limits}}``).

Each handler folder (``write_bundle``) holds ``handler.py`` (``HANDLER_SOURCE``: the python3-http ``handle``
that calls the Lambda handler with the stage event and answers its result with 200, or Lambda's error payload
with 500 when it raises, which the invoker reads as a function error), ``requirements.txt`` (the code folder's,
if any), a copy of the function's code folder and, under ``layers/``, of its layers.

``stack_document`` is pure (Pipeline + each function's template facts -> dict); ``write_bundle`` writes files.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fave.core.dag import Pipeline
from fave.export.mapping import Row
from fave.invoke.openfaas import LOGICAL_ID_ENV, function_name

__all__ = [
    "DEFAULT_GATEWAY",
    "HANDLER_SOURCE",
    "FunctionFacts",
    "OpenFaaSExport",
    "export_openfaas",
    "openfaas_rows",
    "write_bundle",
]

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
#: The python3-http template's handler: ``handle(event, context)`` -> ``{statusCode, body, headers}``.
HANDLER_SOURCE = '''\
"""fave stage shim for the OpenFaaS python3-http template (written by fave export --format openfaas).

Calls the function's Lambda handler (FAVE_HANDLER, module.function, from this folder and layers/*) with the
stage event (the request body) and answers its result (200) or Lambda's error payload (500) if it raises.
"""

import importlib
import json
import os
import sys
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_LAYERS = os.path.join(_HERE, "layers")
for _path in [_HERE] + sorted(
    os.path.join(_LAYERS, n, p) for n in (os.listdir(_LAYERS) if os.path.isdir(_LAYERS) else []) for p in ("", "python")
):
    if os.path.isdir(_path) and _path not in sys.path:
        sys.path.insert(1, _path)
_module, _, _name = os.environ.get("FAVE_HANDLER", "app.handler").rpartition(".")
_handler = None


class _Context:
    function_name = os.environ.get("FAVE_LOGICAL_ID", "")
    aws_request_id = ""

    def get_remaining_time_in_millis(self):
        return int(float(os.environ.get("exec_timeout", "900s").rstrip("s") or 900) * 1000)


def handle(event, context):
    global _handler
    headers = {"Content-Type": "application/json"}
    try:
        if _handler is None:
            _handler = getattr(importlib.import_module(_module), _name)
        body = event.body.decode() if isinstance(event.body, bytes) else event.body
        ctx = _Context()
        ctx.aws_request_id = (getattr(event, "headers", None) or {}).get("X-Call-Id", "")
        result = _handler(json.loads(body or "null"), ctx)
        return {"statusCode": 200, "body": json.dumps(result), "headers": headers}
    except Exception as exc:  # Lambda's error payload: the invoker reads it as the function's error
        error = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
        return {"statusCode": 500, "body": json.dumps(error), "headers": headers}
'''


@dataclass(frozen=True, slots=True)
class FunctionFacts:
    """What the stack file needs of a template function (``fave.local.template.FunctionSpec``'s fields)."""

    handler: str
    code_uri: Path
    timeout_s: int
    memory_mb: int
    environment: Mapping[str, str] = field(default_factory=dict)
    layers: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class OpenFaaSExport:
    stack: dict[str, Any]
    names: Mapping[str, str]
    """logical id -> OpenFaaS function name."""
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()


def _duration(seconds: float) -> str:
    return f"{math.ceil(seconds)}s"


def export_openfaas(
    p: Pipeline, functions: Mapping[str, FunctionFacts], *, gateway: str = DEFAULT_GATEWAY, prefix: str = ""
) -> OpenFaaSExport:
    """The stack.yml document for the functions ``p``'s stages name (``functions``: their template facts).
    ``prefix``: the images' registry prefix (``registry.example.com/team/``)."""
    used = list(dict.fromkeys(p.stages[name].function for name in p.order))
    missing = [f for f in used if f not in functions]
    if missing:
        raise ValueError(f"no template function {', '.join(missing)} (the pipeline's stages name them)")
    names: dict[str, str] = {}
    taken: dict[str, str] = {}
    notes: list[str] = []
    caps = p.operations.function_caps
    stack_functions: dict[str, Any] = {}
    for lid in used:
        name = function_name(lid)
        if name in taken:  # two logical ids that kebab-case alike: keep both, distinctly
            name = f"{name}-{len(taken)}"
        taken[name] = lid
        names[lid] = name
        facts = functions[lid]
        timeout = _duration(max(facts.timeout_s, 1))  # the function's Timeout: what Lambda would kill it at
        environment: dict[str, Any] = {
            **{k: str(v) for k, v in sorted(facts.environment.items())},
            LOGICAL_ID_ENV: lid,
            "FAVE_HANDLER": facts.handler,
            "read_timeout": timeout,
            "write_timeout": timeout,
            "exec_timeout": timeout,
        }
        if lid in caps:
            environment["max_inflight"] = str(caps[lid])
        spec: dict[str, Any] = {
            "lang": "python3-http",
            "handler": f"./{name}",
            "image": f"{prefix}{name}:latest",
            "environment": environment,
            "labels": {"com.openfaas.scale.max": str(caps[lid])} if lid in caps else {},
            "limits": {"memory": f"{facts.memory_mb}Mi"},
        }
        if not spec["labels"]:
            del spec["labels"]
        stack_functions[name] = spec
    stack = {"version": "1.0", "provider": {"name": "openfaas", "gateway": gateway}, "functions": stack_functions}
    return OpenFaaSExport(stack, names, tuple(openfaas_rows(p)), tuple(notes))


def openfaas_rows(p: Pipeline) -> list[Row]:
    stages = list(p.stages.values())
    return [
        Row(
            "sync stage",
            "exact",
            "POST {gateway}/function/{name}, the stage event as body",
            any(s.mode == "sync" for s in stages),
        ),
        Row(
            "async stage",
            "exact",
            "POST {gateway}/async-function/{name} with X-Callback-Url (the orchestrator's "
            "POST /callbacks/{request_id}) and X-Call-Id; the callback enters as a Lambda destination record would",
            any(s.mode == "async" for s in stages),
        ),
        Row(
            "needs, for_each, per-item chaining",
            "exact",
            "fave's own engine orchestrates (FAVE_INVOKER=openfaas)",
            True,
        ),
        Row("retry", "exact", "fave's retry policy (OpenFaaS's queue worker does not retry a function error)", True),
        Row(
            "timeout",
            "exact",
            "the stage's timeout by fave's engine as on Lambda; the function's Timeout (template.yaml) as the "
            "watchdog's read/write/exec_timeout",
            True,
        ),
        Row(
            "max_concurrency",
            "exact",
            "enforced by fave's engine as on Lambda",
            any(s.max_concurrency is not None for s in stages),
        ),
        Row(
            "functions: caps",
            "exact",
            "max_inflight (the watchdog answers 429 above it: a throttle, re-queued without an attempt) and "
            "com.openfaas.scale.max",
            bool(p.operations.function_caps),
        ),
        Row(
            "result cache",
            "none",
            "the gateway does not say what code a function runs: never cached",
            any(s.cache for s in stages),
        ),
        Row("ledger cost", "approximate", "priced as Lambda at its default memory (no OpenFaaS price)", True),
    ]


def write_bundle(
    stack_path: Path, exported: OpenFaaSExport, functions: Mapping[str, FunctionFacts], stack_text: str
) -> list[Path]:
    """Write ``stack_text`` at ``stack_path`` and each function's handler folder beside it; the paths written."""
    folder = stack_path.parent
    written: list[Path] = []
    for lid, name in exported.names.items():
        facts = functions[lid]
        target = folder / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(facts.code_uri, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".aws-sam"))
        for index, layer in enumerate(_layer_folders(facts.layers)):
            shutil.copytree(
                layer,
                target / "layers" / f"{index:02d}-{layer.name}",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "*.egg-info"),
            )
        (target / "handler.py").write_text(HANDLER_SOURCE, encoding="utf-8")
        # The image installs one requirements.txt: the code folder's, then its layers' (pydantic: fave_shared's).
        lines = [] if not (target / "requirements.txt").exists() else [(target / "requirements.txt").read_text()]
        lines += [
            (layer / "requirements.txt").read_text() for layer in facts.layers if (layer / "requirements.txt").is_file()
        ]
        (target / "requirements.txt").write_text(
            "".join(t if t.endswith("\n") else t + "\n" for t in lines) or "pydantic>=2\n"
        )
        written.append(target)
    stack_path.write_text(stack_text, encoding="utf-8")
    written.insert(0, stack_path)
    return written


def _layer_folders(layers: Sequence[Path]) -> list[Path]:
    return [layer for layer in layers if layer.is_dir()]
