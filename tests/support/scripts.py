"""Import a script of scripts/ (not a package) as a module, once per test session."""

from __future__ import annotations

import functools
import importlib.util
import sys
from types import ModuleType

from support.functions import ROOT


@functools.cache
def load_script(name: str) -> ModuleType:
    """``scripts/{name}.py`` as module ``name`` (registered in ``sys.modules``: dataclasses resolve their
    annotations through it)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
