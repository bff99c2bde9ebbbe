"""``fave run`` imports what the run needs and nothing more (issue 10: its start-up is most of its wall time).

``fave run`` of the no-op chain, in a fresh interpreter on a real local store, must not import another
command's module (``fave.cli.main`` builds the parser of the command it runs alone), fastjsonschema (only a
pipeline that declares an ``input:`` compiles a schema), subprocess (only a process-isolated function starts
a worker), nor the servers, queues and exporters of other commands. Which modules, not how long: times are
``fave bench startup``'s business. Plus: a command's parser built alone is the one built with all of them,
and the ``fave`` process leaves its objects to the exit (frozen) while a caller of ``main([...])`` keeps its
collector as it was.
"""

from __future__ import annotations

import argparse
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fave.cli import main as cli_main
from support import e2e

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ROOT / "benchmarks" / "chain" / "pipeline.yaml"

# fave's main() in a fresh interpreter; then its exit code, what it printed and every module it imported.
_PROBE = """
import contextlib, io, json, sys
from fave.cli.main import main
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "stdout": printed.getvalue(), "modules": sorted(sys.modules)}, out)
"""

#: Modules (and their submodules) that a run of the chain has no use for.
NOT_ON_THE_RUN_PATH = (
    "fastjsonschema",
    "subprocess",
    "rich",
    "boto3",
    "botocore",
    "http.server",
    "http.client",
    "socketserver",
    "urllib.request",
    "asyncio",
    "multiprocessing",
    "sqlite3",
    "fave.queue",
    "fave.queue_model",
    "fave.worker",
    "fave.worker_hooks",
    "fave.alerts",
    "fave.metrics",
    "fave.rerun",
    "fave.items",
    "fave.plan",
    "fave.eventcodec",
    "fave.export",
    "fave.web",
    "fave.app",
    "fave.invoke.aws",
    "fave.invoke.openfaas",
    "fave.local.serve",
    "fave.local.gateway",
    "fave.local.httpserver",
    "fave.local.s3server",
    "fave.local.lambda_api",
    "fave.local.queues",
    "fave.local.faults",
    "fave.local.zygote",
    "fave_shared.schemas",
    "fave_shared.stage",
)

#: The CLI modules ``fave run`` uses: ``fave.cli.main`` and what ``cmd_run`` imports.
RUN_CLI_MODULES = {"fave.cli", "fave.cli.main", "fave.cli.progress", "fave.cli.runlog", "fave.cli.stopping"}


def run_probe(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "probe.json"
    done = e2e.python_probe(_PROBE, str(out), *args)
    assert out.exists(), done.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def loaded(modules: list[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_run_of_the_chain_imports_no_other_command_and_no_process_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAVE_PARSE_CACHE", "0")  # the first run of a pipeline: validated (test_parse_cache: later)
    store = tmp_path / "store"
    doc = run_probe(tmp_path, "run", str(CHAIN), "--pipeline", str(CHAIN), "--store", str(store), "--json")
    assert doc["code"] == 0
    assert json.loads(doc["stdout"])["status"] == "COMPLETED"
    modules = doc["modules"]
    # It did load, check and run the chain in this process (the probe saw the run's imports).
    assert {"fave.pipeline", "fave.local.runtime", "fave.service", "pydantic", "yaml"} <= set(modules)
    assert loaded(modules, *NOT_ON_THE_RUN_PATH) == []
    assert set(loaded(modules, "fave.cli")) == RUN_CLI_MODULES


def test_a_run_whose_pipeline_declares_an_input_does_compile_its_schema(tmp_path: Path) -> None:
    # The other side of the test above: fastjsonschema is imported where it is needed, not lost.
    pipeline = tmp_path / "pipeline.yaml"
    template = CHAIN.with_name("template.yaml")
    pipeline.write_text(
        f"name: typed-chain\ntemplate: {template}\nfinal: a\ninput: {{fields: {{n: integer}}}}\n"
        "stages:\n  a: {function: NoopFunction, mode: sync}\n"
    )
    store = tmp_path / "store"
    doc = run_probe(tmp_path, "run", "--pipeline", str(pipeline), "--input", '{"n": 3}', "--store", str(store))
    assert doc["code"] == 0
    assert "fastjsonschema" in doc["modules"]
    assert "fave.cli.queue" not in doc["modules"]


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("fave",)) -> Iterator[tuple[str, Any]]:
    """(command path, what the parser shows and does: its help, its defaults) for it and every subparser."""
    defaults = sorted((a.dest, repr(a.default)) for a in parser._actions)
    yield " ".join(path), (parser.format_help(), sorted(parser._defaults.items(), key=str), defaults)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def test_a_commands_parser_built_alone_is_the_one_built_with_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the help's width, the same for both
    everything = dict(parsers(cli_main.build_parser()))
    commands = [p.split()[1] for p in everything if len(p.split()) == 2]
    assert commands == list(cli_main._COMMANDS)  # `fave --help` lists them in the table's order
    for command in commands:
        parser = cli_main.build_parser(command)
        (choices,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        assert list(choices) == [command]  # the cheap part: no other command's parser is built
        alone = dict(parsers(parser))
        del alone["fave"]
        for path, shown in alone.items():
            assert path.split()[1] == command
            assert shown == everything[path], path


# ``main()`` as the process's own command (no argv: the fave script, python -m fave.cli), then the collector's state.
_COMMAND_PROBE = """
import gc, json, sys
from fave.cli.main import main
sys.argv = ["fave", *sys.argv[2:]]  # argv[1] is the "-" placeholder
code = main()
with open(OUT, "w") as out:
    json.dump({"code": code, "frozen": gc.get_freeze_count()}, out)
"""


def test_the_command_leaves_its_objects_to_the_exit_and_a_caller_of_main_keeps_its_collector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The interpreter's shutdown does not collect over what the command leaves alive (frozen first)...
    out = tmp_path / "command.json"
    probe = f"OUT = {str(out)!r}\n" + _COMMAND_PROBE
    done = e2e.python_probe(probe, "-", "graph", "--pipeline", str(CHAIN))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["code"] == 0 and doc["frozen"] > 1000
    # ... but main([...]) in a process that goes on (tests, a caller's script) freezes nothing.
    frozen = gc.get_freeze_count()
    assert cli_main.main(["graph", "--pipeline", str(CHAIN)]) == 0
    assert "a" in capsys.readouterr().out
    assert gc.get_freeze_count() == frozen
