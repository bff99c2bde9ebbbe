"""The package's layers hold (tests/support/layers.py has the rules), and the check catches a wrong import."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.layers import package_sources, problems

FAVE = Path(__file__).resolve().parents[2] / "orchestrator" / "fave"


def test_every_import_of_the_package_keeps_to_its_layer() -> None:
    sources = package_sources(FAVE)
    wings = {"fave.core.engine", "fave.app.handlers", "fave.cli.main", "fave.local.runtime", "fave.web.app"}
    assert wings <= set(sources)
    assert problems(sources) == []


@pytest.mark.parametrize(
    ("module", "line", "says"),
    [
        ("fave.core.engine", "import json", None),
        ("fave.core.engine", "from immutables import Map", None),
        ("fave.core.engine", "import yaml", "the core imports only the standard library and immutables"),
        ("fave.core.engine", "from pydantic import BaseModel", "the core imports only the standard library"),
        ("fave.core.engine", "from fave.persistence import Persistence", "nothing of fave outside fave.core"),
        ("fave.core.engine", "from fave_shared.errors import FaveError", "standard library and immutables"),
        ("fave.app.api", "from fave.cli.main import main", "fave.app and fave.cli never import each other"),
        ("fave.cli.main", "import fave.app", "fave.app and fave.cli never import each other"),
        ("fave.app.context", "from fave.local.template import load_template", "imported only by fave.cli"),
        ("fave.pipeline", "from fave.local.template import template_functions", "imported only by fave.cli"),
        ("fave.service", "from fave.app.context import current", "a lower layer (base) imports a higher one (app)"),
        ("fave.local.runtime", "from fave.cli.main import main", "a lower layer (local) imports a higher one (cli)"),
        ("fave.cli.main", "from fave.local.runtime import LocalRuntime", None),
        ("fave.app.handlers", "def f():\n    from ..cli import main", "never import each other"),
        ("fave.service", "from fave import app", "a lower layer (base) imports a higher one (app)"),
        ("fave.web.views", "from fave.status import stage_page", None),
        ("fave.web.views", "from fave_shared.store import ObjectStore", None),
        ("fave.cli.ui", "from fave.web import make_app", None),
        ("fave.web.app", "from fave.local.orchestrator import open_any_store", "imported only by fave.cli"),
        ("fave.web.app", "from fave.app.api import app", "fave.web and fave.app are side by side"),
        ("fave.web.app", "from fave.cli.main import main", "a lower layer (web) imports a higher one (cli)"),
        ("fave.app.api", "from fave.web import make_app", "fave.web is imported only by fave.cli"),
        ("fave.local.runtime", "def f():\n    import fave.web.app", "fave.web is imported only by fave.cli"),
        ("fave.status", "from fave.web.layout import layout", "fave.web is imported only by fave.cli"),
    ],
)
def test_the_check_names_a_wrong_import(module: str, line: str, says: str | None) -> None:
    found = problems({module: (line + "\n", False)})
    if says is None:
        assert found == []
    else:
        assert len(found) == 1 and says in found[0] and module in found[0], found
