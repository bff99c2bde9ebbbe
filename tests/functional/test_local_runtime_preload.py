"""The fork server's preload (``fave.local.preload``): the libraries that the functions to pre-warm share are
imported once, by the zygote, after it forked the first environment; later environments of the functions that
may share them (same variables, same files) are forked with them, the others start the classic way and import
their own. On real handlers (tests/fixtures/preload): a layer library that records which process imported it
and the variable it saw, numpy's global generator drawn in each environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fave.local import forkserver
from fave.local.preload import handler_imports, plan_preload
from fave.local.runtime import LocalRuntime
from fave.local.template import Template, load_template

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="forking environments needs Linux pidfds")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "preload"
PREWARM = ["First", "Second", "Third", "OtherSetting"]


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(FIXTURE / "template.yaml")


def seen(template: Template, **options: Any) -> dict[str, dict[str, Any]]:
    with LocalRuntime(template, prewarm=PREWARM, max_environments=1, **options) as runtime:
        # First is invoked first: its environment is forked before the zygote imports anything.
        return {name: runtime.invoke_sync(name, {}).payload for name in [*PREWARM, "OwnCopy"]}


def test_later_environments_share_the_zygotes_imports_and_the_rest_import_their_own(template: Template) -> None:
    out = seen(template)
    first, second, third, other, own = (out[name] for name in [*PREWARM, "OwnCopy"])
    assert first["imported_by"] == first["pid"]  # started before the preload: not kept waiting for it
    zygote = second["imported_by"]
    assert zygote not in {second["pid"], third["pid"], first["pid"]}
    assert third["imported_by"] == zygote  # imported once, in the zygote, for both
    assert second["setting_at_import"] == third["setting_at_import"] == "globals"  # their variables, at import
    # Other variables: started the classic way, imports its own (under its own SETTING).
    assert other["imported_by"] == other["pid"] and other["setting_at_import"] == "its-own"
    # Its own copy of the library shadows the layer's: never forked from the preloaded zygote.
    assert own["imported_by"] == own["pid"]
    assert Path(own["lib_file"]).parent == FIXTURE / "functions" / "own"
    assert Path(second["lib_file"]).parent == FIXTURE / "layer"
    # numpy's global generator is reseeded in each fork, as in a fresh interpreter.
    assert len({second["draw"], third["draw"], first["draw"]}) == 3


def test_what_an_import_printed_in_the_zygote_is_printed_once(
    template: Template, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preloaded library that prints at import prints once, in the zygote: the forks do not inherit its
    unflushed buffer (stdout to a file or pipe is block-buffered) and print it again."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # buffered, as when fave's output goes to a pipe
    seen(template)
    # The zygote, First (started before the preload) and OtherSetting (started the classic way); OwnCopy's copy
    # prints nothing; Second and Third imported nothing themselves.
    assert capfd.readouterr().out.count("preload_lib imported") == 3


def test_without_the_preload_every_environment_imports_its_own(template: Template) -> None:
    out = seen(template, preload=False)
    assert all(o["imported_by"] == o["pid"] for o in out.values())
    assert {o["setting_at_import"] for o in out.values()} == {"globals", "its-own"}


def test_the_preload_is_what_two_functions_import_outside_their_code(template: Template) -> None:
    spec = template.functions["First"]
    # numpy (imported by its own module helper, which is followed) and the layer's library; json and os are the
    # standard library.
    assert handler_imports(spec) == {"numpy", "preload_lib"}
    variables = {lid: dict(s.environment) for lid, s in template.functions.items()}
    every = list(template.functions.values())
    plan = plan_preload([template.functions[n] for n in PREWARM], every, variables, ["/nowhere"])
    assert plan is not None
    assert plan.modules == ("numpy", "preload_lib")
    assert plan.env == {"SETTING": "globals"}
    assert plan.path[0] == str(FIXTURE / "layer") and plan.path[-1] == "/nowhere"
    assert plan.functions == {"First", "Second", "Third"}  # not OtherSetting (variables), not OwnCopy (its copy)
    # One function alone has nobody to share with.
    assert plan_preload([template.functions["First"]], every, variables, []) is None


def test_a_module_that_fails_in_the_zygote_is_left_to_each_environment(template: Template, tmp_path: Path) -> None:
    """A library whose import fails in the zygote: the environments import it themselves and report the
    error as before (here: the import fails only in a process that is not an environment of the function)."""
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "preload_lib.py").write_text(
        "import os\n"
        "if not os.environ.get('AWS_LAMBDA_FUNCTION_NAME'):\n"
        "    raise ImportError('only in an environment')\n"
        "IMPORTED_BY = os.getpid()\nSETTING_AT_IMPORT = os.environ.get('SETTING')\n"
    )
    text = (FIXTURE / "template.yaml").read_text().replace("ContentUri: layer", f"ContentUri: {layer}")
    text = text.replace("CodeUri: functions/", f"CodeUri: {FIXTURE}/functions/")
    (tmp_path / "template.yaml").write_text(text)
    with LocalRuntime(load_template(tmp_path / "template.yaml"), prewarm=PREWARM, max_environments=1) as runtime:
        payloads = [runtime.invoke_sync(name, {}).payload for name in ("First", "Second", "Third")]
    assert all(p["imported_by"] == p["pid"] for p in payloads)
    assert os.getpid() not in {p["pid"] for p in payloads}
