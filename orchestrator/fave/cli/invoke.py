"""``fave invoke FUNCTION``: run one function of template.yaml once, as ``sam local invoke`` does, without Docker.

The function runs in ``fave.local.runtime.LocalRuntime`` (a worker process with the template's timeout, memory
size, environment, code folder and layers). Like ``sam local invoke``:

* the event is ``-e FILE``, ``-e -`` (standard input), or ``{}`` when none is given (sam's ``--no-event``);
  any JSON value is accepted, as Lambda accepts it;
* stdout gets the function's response as one line of JSON, or Lambda's error payload
  (``{"errorMessage", "errorType", "requestId", "stackTrace"}``) when the function fails; a function error exits
  1 (a value the function returns is no error, even one that says so, such as a stage's terminal result);
* stderr gets everything else: the function's own output (its prints and logs, stdout and stderr alike; a
  worker's descriptor 1 is this command's stderr while it runs) and a closing ``REPORT`` line;
* ``--env-vars FILE`` is SAM's file: ``{"Parameters": {VAR: value}, "LogicalId": {VAR: value}}``; the function's
  own entry wins over ``Parameters``, and, as in sam, only variables the template declares for the function are
  set (the others are named in a warning on stderr and ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fave.cli.main import UsageError, read_json_file

if TYPE_CHECKING:
    from fave.local.template import FunctionSpec

DEFAULT_TEMPLATE = "template.yaml"
PARAMETERS = "Parameters"


def cmd_invoke(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fave.local.runtime import LocalRuntime
    from fave.local.template import load_template

    template = load_template(args.template)  # NotFoundError / ValidationError: exit 2, naming the file
    if args.function not in template.functions:
        known = ", ".join(sorted(template.functions)) or "none"
        raise UsageError(f"no function {args.function!r} in {template.path} (its functions: {known})")
    spec = template.functions[args.function]
    event = read_event(args.event)
    overrides = env_vars(args.env_vars, spec) if args.env_vars is not None else {}
    missing = [name for name in spec.unresolved_environment if name not in overrides and name not in os.environ]
    if missing:
        names = ", ".join(missing)
        _warn(f"{spec.logical_id}: {names}: no local value (the template's needs a stack): give it with --env-vars")
    # Only this function: no environments, and no warnings, for the template's others.
    alone = replace(template, functions={spec.logical_id: spec})
    with _quiet_runtime_warnings():
        try:
            runtime = LocalRuntime(
                alone, function_env={spec.logical_id: overrides} if overrides else {}, max_environments=1
            )
        except ValueError as exc:  # e.g. variables for a function in thread isolation, which has no environment
            raise UsageError(f"--env-vars: {exc}") from None
    with _stdout_to_stderr(), runtime:
        started = time.monotonic()
        result = runtime.invoke_sync(spec.logical_id, event)
        took_ms = (time.monotonic() - started) * 1000
    _warn(
        f"REPORT RequestId: {result.request_id}\tDuration: {took_ms:.2f} ms (with the cold start)\t"
        f"Memory Size: {spec.memory_mb} MB\tTimeout: {spec.timeout_s} s",
        prefix="",
    )
    sys.stdout.write(json.dumps(result.payload) + "\n")
    return 1 if result.function_error else 0


def read_event(where: str | None) -> Any:
    """The event of ``-e``: a file's JSON, standard input's (``-``), or ``{}`` when none is given."""
    if where is None:
        return {}
    return read_json_file(where, f"-e {where}")


def env_vars(path: str, spec: FunctionSpec) -> dict[str, str]:
    """The variables SAM's ``--env-vars`` file sets for ``spec``: ``Parameters`` for every function, then the
    function's own entry (by logical id), each limited to the variables the template declares for it."""
    doc = read_json_file(path, f"--env-vars {path}")
    if not isinstance(doc, dict):
        raise UsageError(f'--env-vars {path} must be a JSON object: {{"{PARAMETERS}": {{...}}, "LogicalId": {{...}}}}')
    values: dict[str, str] = {}
    for key in (PARAMETERS, spec.logical_id):
        values.update(_variables(doc.get(key, {}), f"--env-vars {path}: {key!r}"))
    declared = {*spec.environment, *spec.unresolved_environment}
    ignored = sorted(name for name in values if name not in declared)
    if ignored:
        _warn(
            f"--env-vars: {', '.join(ignored)} not declared in {spec.logical_id}'s Environment: ignored (as sam does)"
        )
    return {name: value for name, value in values.items() if name in declared}


def _variables(entry: Any, where: str) -> dict[str, str]:
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where} must be an object of variable names to values")
    out: dict[str, str] = {}
    for name, value in entry.items():
        if isinstance(value, bool):  # before int: a bool is an int
            out[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[name] = str(value)
        elif value is None:
            out[name] = ""
        else:
            raise UsageError(f"{where}: {name} must be a string, number or boolean")
    return out


def _warn(message: str, prefix: str = "fave: ") -> None:
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(prefix + message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_runtime_warnings() -> Iterator[None]:
    """The runtime's own warning on unresolved variables names its Python API: this command said it better."""
    logger = logging.getLogger("fave.local.runtime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point descriptor 1 at stderr while the function runs: worker processes inherit it, so what a function
    prints is a log line on stderr, and stdout holds its response alone (``fave invoke F | jq`` works)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to keep clean
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(BrokenPipeError, ValueError):
            sys.stdout.flush()  # a thread-isolated handler's prints, to stderr still
        os.dup2(saved, 1)
        os.close(saved)
