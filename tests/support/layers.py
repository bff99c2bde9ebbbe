"""The import rules of the ``fave`` package (ARCHITECTURE.md), checked on its source with ``ast``.

Layers, lowest first: ``core`` (pure) → the base (every module directly in ``fave/``, and ``invoke/``, the
invoker seam) → ``local``, ``web`` and ``app`` (side by side) → ``cli``. A module may import its own layer and
those below it, never one above. On top of that:

* ``fave.core`` imports only the standard library, ``immutables`` and ``fave.core`` itself;
* ``fave.app`` and ``fave.cli`` never import each other;
* ``fave.local`` (the local Lambda emulator) is imported only by ``fave.cli`` (and tests);
* ``fave.web`` (the web view) is imported only by ``fave.cli`` (and tests);
* ``fave.local``, ``fave.web`` and ``fave.app`` never import each other;
* nothing imports ``fave.cli``.

Every import counts, also those inside functions (a lazy import still ties the layers together) and those under
``if TYPE_CHECKING`` (they still say which layer depends on which).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "fave"
LAYERS = {"core": 0, "base": 1, "local": 2, "web": 2, "app": 2, "cli": 3}
WINGS = 2
"""The layer of ``local``, ``web`` and ``app``: side by side, none imports another."""
CORE_THIRD_PARTY = frozenset({"immutables"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "fave.app.api"
    target: str  # what it imports, e.g. "fave.cli.main"
    line: int

    def describe(self, why: str) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}: {why}"


def wing(module: str) -> str:
    """``core``, ``local``, ``web``, ``app``, ``cli`` or ``base`` for a ``fave...`` module."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "base"


def imports(module: str, source: str, *, is_package: bool = False) -> Iterator[Import]:
    """Every import in ``source`` (module ``module``), relative ones made absolute."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == PACKAGE or (node.level and not node.module):
                # `from fave import completions`: each name is a module of its own
                for alias in node.names:
                    yield Import(module, f"{target}.{alias.name}", node.lineno)
            else:
                yield Import(module, target, node.lineno)


def problems(sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    """Broken rules in ``sources``: module name → (source, is_package). Empty when every rule holds."""
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        mine = wing(module)
        for imp in imports(module, source, is_package=is_package):
            top = imp.target.split(".")[0]
            if top != PACKAGE:
                if mine == "core" and top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
                    found.append(imp.describe("the core imports only the standard library and immutables"))
                continue
            theirs = wing(imp.target)
            if mine == "core" and theirs != "core":
                found.append(imp.describe("the core imports nothing of fave outside fave.core"))
            elif {mine, theirs} == {"app", "cli"}:
                found.append(imp.describe("fave.app and fave.cli never import each other"))
            elif theirs == "local" and mine not in ("local", "cli"):
                found.append(imp.describe("fave.local is imported only by fave.cli"))
            elif theirs == "web" and mine not in ("web", "cli"):
                found.append(imp.describe("fave.web is imported only by fave.cli"))
            elif mine != theirs and LAYERS[mine] == LAYERS[theirs] == WINGS:
                found.append(imp.describe(f"fave.{mine} and fave.{theirs} are side by side: neither imports the other"))
            elif LAYERS[theirs] > LAYERS[mine]:
                found.append(imp.describe(f"a lower layer ({mine}) imports a higher one ({theirs})"))
    return found


def package_sources(root: Path) -> dict[str, tuple[str, bool]]:
    """Every module of the package at ``root`` (``orchestrator/fave``): name → (source, is_package)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        sources[name] = (path.read_text(), is_package)
    return sources
