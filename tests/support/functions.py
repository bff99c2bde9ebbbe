"""Load a stage function's handler the way Lambda would, without module-name collisions.

Every function folder has an ``app.py``; Lambda gives each its own environment, so in one pytest process we
load ``functions/<name>/app.py`` under a unique module name with its folder on ``sys.path``. Sibling modules
inside a function folder must therefore have names unique across functions (``split_scenes.py``, not
``utils.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
FIXTURES = ROOT / "tests" / "fixtures"

Handler = Callable[[dict[str, Any], Any], Any]


def load_handler(folder: str | Path, attr: str = "handler") -> Handler:
    """Import ``<folder>/app.py`` (relative to functions/ unless absolute) and return its handler."""
    path = Path(folder) if Path(folder).is_absolute() else FUNCTIONS / folder
    name = f"fave_fn_{path.name}"
    module = sys.modules.get(name)
    if module is None:
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
        spec = importlib.util.spec_from_file_location(name, path / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    handler: Handler = getattr(module, attr)
    return handler


@pytest.fixture(scope="session")
def sample_video() -> Path:
    """The bundled 20 s sample (four 5 s scenes); ground truth in scenes20.json beside it."""
    return FIXTURES / "scenes20.mp4"
