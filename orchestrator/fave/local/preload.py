"""What the fork server's zygote may import once for several functions' environments (``Preload``).

Every process-isolated environment imports its handler's libraries itself: on the video pipeline, pydantic,
numpy, PyAV and the stage SDK cost ~0.35 s of CPU in each of its seven environments, ~2 s of CPU that the
pre-warming environments take from the first stage on two cores. A module imported by the zygote *after* it
forked the first environment is in every later fork already (copy-on-write), so the first stage starts as soon
as before and the later environments skip those imports.

Which modules: the libraries (not the standard library, not a function's own modules) that the handler modules
of at least two of the functions to pre-warm import at their top level (their own modules' imports included,
read with ``ast``, never executed). Only where it cannot change what a handler sees:

* the functions that share the preload have exactly the same variables (template ``Environment``,
  ``env_overrides``, their ``function_env``): a library may read them at import (``OMP_NUM_THREADS``), so the
  zygote imports with those variables set; any other process-isolated function is started the classic way
  (``python -P worker.py``), never forked from the preloaded zygote (``Preload.accepts``);
* each module resolves to the same file for every one of them (a function or layer with its own copy of a
  library keeps its copy: that module is not preloaded);
* the zygote reseeds ``random`` (it always did) and ``numpy.random``'s global generator in every fork, so two
  environments never draw the same numbers.

A module whose import fails in the zygote is skipped silently: each environment imports it as before and
reports its own error. ``LocalRuntime(preload=False)`` turns all of it off.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fave.local.template import FunctionSpec

__all__ = ["Preload", "handler_imports", "plan_preload"]

_MAX_FILES = 64
"""A function's own modules read per function at most (its handler first): a bound, not a limit anyone meets."""


@dataclass(frozen=True)
class Preload:
    """The zygote's imports (``modules``, in order) under ``env`` (the variables every sharing function has, set
    before importing) and ``path`` (``sys.path`` while importing: the layers they share, then this process's)."""

    modules: tuple[str, ...]
    env: Mapping[str, str]
    path: tuple[str, ...]
    functions: frozenset[str]
    """The logical ids whose environments may be forked from the preloaded zygote."""

    def accepts(self, logical_id: str) -> bool:
        return logical_id in self.functions


def _local(name: str, roots: Sequence[Path]) -> Path | None:
    """The file of top-level module ``name`` in the first of ``roots`` that has it (package, module or
    extension), None if none does."""
    for root in roots:
        package = root / name / "__init__.py"
        if package.is_file():
            return package
        module = root / f"{name}.py"
        if module.is_file():
            return module
        if root.is_dir():
            for ext in root.glob(f"{name}.*.so"):
                return ext
    return None


def handler_imports(spec: FunctionSpec) -> set[str]:
    """The modules outside the function's code folder that its handler module and its own modules import at
    their top level (``import a.b`` and ``from a.b import c`` give ``a.b``; relative imports are its own)."""
    code = spec.code_uri
    handler_module = spec.handler.rpartition(".")[0]
    todo = [handler_module]
    seen: set[str] = set()
    found: set[str] = set()
    while todo and len(seen) < _MAX_FILES:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = code / (name.replace(".", "/") + ".py")
        if not path.is_file():
            path = code / name.replace(".", "/") / "__init__.py"
        try:
            tree = ast.parse(path.read_bytes(), str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:  # the top level only: an import inside a function may never run
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for dotted in names:
                top = dotted.partition(".")[0]
                if _local(top, [code]) is not None:
                    todo.append(dotted)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.add(dotted)
    return found


def _origin(top: str, spec: FunctionSpec) -> str | None:
    """Where the function's environment finds top-level module ``top``: its folders first (code, layers), then
    this process's path (through its finders: an editable install has no folder on the path)."""
    own = _local(top, [p for p in spec.python_path if p.is_dir()])
    if own is not None:
        return str(own.resolve())
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None or found.origin in (None, "built-in", "frozen"):
        return None
    return str(Path(found.origin).resolve())


def plan_preload(
    specs: Iterable[FunctionSpec],
    every: Iterable[FunctionSpec],
    variables: Mapping[str, Mapping[str, str]],
    parent_path: Sequence[str],
) -> Preload | None:
    """The preload for ``specs`` (the functions to pre-warm), or None when fewer than two of them could share one.
    ``every``: all the runtime's functions (those of them with the same variables that find each preloaded module
    where the zygote found it may be forked from it too); ``variables``: each function's own variables (template,
    overrides, ``function_env``) by logical id."""
    process = [s for s in specs if s.local_isolation == "process"]
    # The largest group of functions with the very same variables shares the zygote (usually all of them).
    groups: dict[tuple[tuple[str, str], ...], list[FunctionSpec]] = {}
    for spec in process:
        groups.setdefault(tuple(sorted(variables.get(spec.logical_id, {}).items())), []).append(spec)
    if not groups:
        return None
    env_key, group = max(groups.items(), key=lambda kv: len(kv[1]))
    if len(group) < 2:
        return None
    imports = {spec.logical_id: handler_imports(spec) for spec in group}
    counts = Counter(name for names in imports.values() for name in names)
    modules: list[str] = []
    layers: list[str] = []
    for name, count in sorted(counts.items()):
        if count < 2:
            continue
        top = name.partition(".")[0]
        users = [spec for spec in group if name in imports[spec.logical_id]]
        found = {_origin(top, spec) for spec in users}
        if len(found) != 1 or None in found or any(_local(top, [s.code_uri]) for s in users):
            continue  # resolved differently (or not at all) by one of them: each keeps its own import
        modules.append(name)
        for spec in users:  # the layer it comes from, if any, is on the zygote's path while it imports
            for layer in spec.python_path[1:]:
                if layer.is_dir() and _local(top, [layer]) is not None and str(layer) not in layers:
                    layers.append(str(layer))
    if not modules:
        return None
    origins = {name: _origin(name.partition(".")[0], group[0]) for name in modules}
    env = dict(env_key)
    accepted = frozenset(
        spec.logical_id
        for spec in every
        if spec.local_isolation == "process"
        and dict(variables.get(spec.logical_id, {})) == env
        # else a module it lacks (or has its own copy of) would be in its sys.modules all the same
        and all(_origin(name.partition(".")[0], spec) == origin for name, origin in origins.items())
    )
    path = tuple(dict.fromkeys([*layers, *parent_path]))
    return Preload(tuple(modules), env, path, accepted)
