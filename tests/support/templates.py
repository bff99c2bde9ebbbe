"""template.yaml fixtures, read once per session with ``fave.local.template.load_template``:

* ``template``         - the repository's template.yaml (what ``fave run`` and ``sam build`` read);
* ``runtime_template`` - tests/fixtures/runtime/template.yaml, the local runtime's test functions;
* ``envelopes``        - a queue for what its ``FanIn`` destination receives (``destination_handlers={"FanIn":
  envelopes.put}``).

Both resolve ``AWS::Region`` as ``us-east-1`` (the tests' fake region), not from the environment of whichever
test happens to ask first. A ``Template`` is shared: derive a changed copy with ``dataclasses.replace``, never
change it in place. ``fave`` is imported inside the fixtures: the stage tests also run where it is not
installed (``./dev py312``).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.stores import REGION

if TYPE_CHECKING:
    from fave.local.template import Template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
RUNTIME_TEMPLATE = ROOT / "tests" / "fixtures" / "runtime" / "template.yaml"


@pytest.fixture(scope="session")
def template() -> Template:
    """The repository's template.yaml."""
    from fave.local.template import load_template

    return load_template(TEMPLATE, region=REGION)


@pytest.fixture(scope="session")
def runtime_template() -> Template:
    """tests/fixtures/runtime/template.yaml: Echo, Boom, Sleepy, Crash, Flaky, Counter, Missing, FanIn, EchoThread."""
    from fave.local.template import load_template

    return load_template(RUNTIME_TEMPLATE, region=REGION)


@pytest.fixture
def envelopes() -> queue.Queue[dict[str, Any]]:
    """Where a local runtime's destination handlers (``FanIn``, ``DoneQueue``) put the records they receive."""
    return queue.Queue()
