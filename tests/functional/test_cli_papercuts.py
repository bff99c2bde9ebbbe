"""The ``fave`` command's papercuts found by trying it as a new user would (issue 11, requirement 7), each through
the real process: ``--detach`` prints the id on stdout; a ``--store`` of an unknown scheme exits 2 and creates no
folder; a reader that goes away (``| head``) costs no traceback and no request; ``fave --version``; help text on
every option and no docstring markup in ``--help``; ``list --status`` choices shown once; Ctrl-C names the real
request id; the README's options of ``fave resume`` are the command's own.

Elsewhere: missing AWS credentials fail a task at once (tests/functional/test_invoke_credentials.py); a
misconfigured Lambda answers 500 (tests/functional/aws/test_app_input.py); a stage's duration after a resume
excludes the time the request was down (tests/unit/test_engine.py)."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fave.cli.main import build_parser
from fave.persistence import list_request_ids
from fave.status import status_document
from fave_shared.store import LocalStore
from support import e2e
from support.declared_input import demo_with_input

README = e2e.ROOT / "README.md"


def fave(*args: str, cwd: Path = e2e.ROOT, env: dict[str, str] | None = None, timeout: float = 120) -> e2e.Result:
    done = subprocess.run(
        e2e.fave_command(*args),
        cwd=cwd,
        env=e2e.child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return e2e.Result(done.returncode, done.stdout, done.stderr)


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("fave",)) -> Iterator[tuple[str, ...]]:
    """Every command path of the parser (``("fave",)``, ``("fave", "run")``, ``("fave", "bench", "fanout")`` ...)."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def find(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path[1:]:
        (subs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = subs.choices[name]
    return parser


@pytest.fixture
def words(tmp_path: Path) -> Path:
    return demo_with_input(tmp_path / "pipelines")


def test_detach_prints_the_request_id_on_stdout(tmp_path: Path, words: Path) -> None:
    store = tmp_path / "store"
    detached = fave("run", "--pipeline", str(words), "--input", '{"text": "a b"}', "--detach", "--store", str(store))
    assert detached.code == 0, detached.describe()
    request_id = detached.stdout.strip()
    assert re.fullmatch(r"[0-9A-Z]{26}", request_id), detached.describe()
    assert detached.stdout == request_id + "\n"
    local = LocalStore(store)
    done = e2e.wait_for(
        lambda: status_document(local, request_id)["status"] == "COMPLETED", timeout=60, what="the detached run"
    )
    assert done


@pytest.mark.parametrize("uri", ["gs://bucket/x", "S3://bucket", "s3:/bucket", "s3:bucket", "file:///tmp/x"])
@pytest.mark.parametrize("command", ["run", "list"])
def test_a_store_of_an_unknown_scheme_exits_2_and_creates_nothing(
    tmp_path: Path, words: Path, uri: str, command: str
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["run", "--pipeline", str(words), "--input", '{"text": "a"}'] if command == "run" else ["list"]
    refused = fave(*args, "--store", uri, cwd=cwd)
    assert refused.code == 2, refused.describe()
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"fave: error: --store {uri}: unknown scheme") and "s3://bucket[/prefix]" in line
    assert list(cwd.iterdir()) == []  # no folder named gs:, S3: or s3:
    from_env = fave(*args, cwd=cwd, env={"FAVE_STORE": uri})
    assert from_env.code == 2 and list(cwd.iterdir()) == [], from_env.describe()


def test_a_reader_that_goes_away_costs_no_traceback_and_no_request(tmp_path: Path, words: Path) -> None:
    store = tmp_path / "store"
    run = e2e.fave_command(
        "run", "--pipeline", str(words), "--input", '{"text": "a b c", "words_sleep_s": 1}', "--store", str(store)
    )
    # `fave run ... 2>&1 | head -n 1`: head exits after "request ID"; the progress lines then meet a closed pipe.
    script = " ".join(map(_quote, run)) + ' 2>&1 | head -n 1; exit "${PIPESTATUS[0]}"'
    piped = subprocess.run(
        ["bash", "-c", script],
        cwd=e2e.ROOT,
        env=e2e.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    (first,) = piped.stdout.splitlines()
    request_id = first.removeprefix("request ")
    # The run went on to its end; only its last words (the status, on stdout) had no reader: exit 1, as for any
    # command whose output is cut short.
    assert status_document(LocalStore(store), request_id)["status"] == "COMPLETED"
    assert piped.returncode == 1, (piped.stdout, piped.stderr)
    assert "Traceback" not in piped.stderr and "BrokenPipeError" not in piped.stderr

    # `fave status ID --stage NAME | head -n 1` and `fave --help | head -n 1`: stdout goes away mid-output.
    for args in (["status", request_id, "--stage", "shout", "--store", str(store)], ["--help"], ["run", "--help"]):
        script = " ".join(map(_quote, e2e.fave_command(*args))) + " 2>err.txt | head -n 1"
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=e2e.child_env(), capture_output=True, text=True, check=False
        )
        assert done.stdout.count("\n") == 1 and (tmp_path / "err.txt").read_text() == "", args


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def test_version() -> None:
    shown = fave("--version")
    assert shown.code == 0, shown.describe()
    assert shown.stdout == f"fave {importlib.metadata.version('fave')}\n"


def test_every_option_and_command_has_help_text() -> None:
    missing = []
    for path in parsers(build_parser()):
        parser = find(build_parser(), path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {c.dest}" for c in action._choices_actions if not c.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_has_no_docstring_markup_and_list_status_choices_appear_once() -> None:
    for path in parsers(build_parser()):
        shown = fave(*path[1:], "--help")
        assert shown.code == 0, shown.describe()
        assert "``" not in shown.stdout and ":func:" not in shown.stdout, (path, shown.stdout)
    top = fave("--help").stdout
    assert top.startswith("usage: fave [-h] [--version] COMMAND ...")
    listing = fave("list", "--help").stdout
    for status in ("INIT", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "UNREADABLE"):
        assert listing.count(status) == 1, listing
        assert status.lower() not in listing


def test_list_status_takes_any_case(tmp_path: Path) -> None:
    assert fave("list", "--status", "failed", "--store", str(tmp_path)).code == 0
    assert fave("list", "--status", "Failed", "--store", str(tmp_path)).code == 0


def test_ctrl_c_names_the_request_to_resume(tmp_path: Path, words: Path) -> None:
    store = tmp_path / "store"
    running = subprocess.Popen(
        e2e.fave_command(
            "run", "--pipeline", str(words), "--input", '{"text": "a b", "words_sleep_s": 3}', "--store", str(store)
        ),
        cwd=e2e.ROOT,
        env=e2e.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        local = LocalStore(store)
        e2e.wait_for(lambda: list_request_ids(local), timeout=60, what="the request")
        time.sleep(0.5)  # into the drive loop
        running.send_signal(signal.SIGINT)
        out, err = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 130, err
    (request_id,) = list_request_ids(local)
    last = err.strip().splitlines()[-1]
    assert last == f"fave: interrupted; `fave resume {request_id} --store {store}` continues the request", err
    assert "<request_id>" not in err and "Traceback" not in err
    assert out == ""
    resumed = fave("resume", request_id, "--store", str(store), "--json", timeout=120)
    assert resumed.code == 0 and resumed.json["status"] == "COMPLETED", resumed.describe()


def test_the_readme_gives_fave_resume_its_own_options() -> None:
    resume = find(build_parser(), ("fave", "resume"))
    options = {o for a in resume._actions for o in a.option_strings}
    lines = [line for line in README.read_text(encoding="utf-8").splitlines() if "fave resume" in line]
    assert lines
    for line in lines:
        claimed = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
        assert claimed <= options, (line, claimed - options)
