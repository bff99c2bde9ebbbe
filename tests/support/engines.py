"""The export engines' virtualenvs (.venv-prefect, .venv-dagster, .venv-airflow), built by ``./dev setup`` from
requirements/<engine>.txt. The engines never run in the main .venv: a test runs the exported file with the
engine's python in a subprocess (``run_exported``). A missing engine skips the test with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAVE = ROOT / ".venv" / "bin" / "fave"

DEMO = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
SALES = ROOT / "examples" / "sales"
KEYED = ROOT / "tests" / "fixtures" / "keyed" / "pipeline.yaml"  # work: tolerated_failures 1, no retry

ENGINES: Mapping[str, str] = {
    # engine -> the module whose import says it is installed
    "prefect": "prefect",
    "dagster": "dagster",
    "airflow": "airflow.sdk",
}


def engine_venv(name: str) -> Path:
    return ROOT / f".venv-{name}"


@functools.cache
def _missing(name: str) -> str | None:
    """Why the engine cannot run here, or None."""
    python = engine_venv(name) / "bin" / "python"
    req = ROOT / "requirements" / f"{name}.txt"
    if not python.exists():
        return f"{engine_venv(name).name} is missing: `./dev setup` (or `./dev engines`) builds it from {req.name}"
    check = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({ENGINES[name].split('.')[0]!r}) is None)"
    if subprocess.run([str(python), "-c", check], check=False, capture_output=True, timeout=60).returncode != 0:
        return f"{engine_venv(name).name} has no {ENGINES[name]}: `./dev engines` rebuilds it from {req.name}"
    return None


def engine_python(name: str) -> Path:
    """The engine venv's python, or skip the test saying why it is missing."""
    why = _missing(name)
    if why is not None:
        pytest.skip(why)
    return engine_venv(name) / "bin" / "python"


@dataclass(frozen=True)
class Ran:
    code: int
    output: Any  # the exported file's JSON answer (the final stage's output), None when it failed
    stderr: str


def run_exported(
    name: str,
    source: Path,
    request: Mapping[str, Any],
    store: Path,
    *,
    template: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    timeout: float = 240,
) -> Ran:
    """Run an exported flow/job file (``python FILE --input JSON --store DIR``) with the engine's python, its
    stages through fave's local runtime (FAVE_EXPORT_CALL=local: ``fave invoke`` of the main .venv)."""
    python = engine_python(name)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},  # unset: Prefect's ephemeral mode
        "FAVE_EXPORT_CALL": "local",
        "FAVE_BIN": str(FAVE),
        # keep the engines' homes out of ~ (and apart from other runs)
        "PREFECT_HOME": str(store.parent / "prefect-home"),
        "DAGSTER_HOME": str(store.parent / "dagster-home"),
        **(extra_env or {}),
    }
    if template is not None:
        env["FAVE_TEMPLATE"] = str(template)
    (store.parent / "dagster-home").mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(python), str(source), "--input", json.dumps(request), "--store", str(store), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=store.parent,
    )
    output = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
    return Ran(done.returncode, output, done.stderr)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prefect_server(home: Path, timeout: float = 90) -> Iterator[str]:
    """A temporary local Prefect server (``prefect server start``) for a test module; its API URL. One server
    for several flow runs: without PREFECT_API_URL every run would start (and stop) one of its own (~20 s)."""
    python = engine_python("prefect")
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("wb")
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    prefect = python.with_name("prefect")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def fave_run(pipeline: Path, request: Mapping[str, Any], store: Path, profile: str = "default") -> tuple[dict, Any]:
    """``fave run`` to its end: its state.json (``input`` is the request as fave passed it to the stages) and its
    final.json (None when the request failed)."""
    from support import e2e

    e2e.fave("run", "--pipeline", str(pipeline), "--input", json.dumps(request), "--profile", profile,
             "--store", str(store), "--json")  # fmt: skip
    (state_file,) = store.glob("requests/*/metadata/state.json")
    state: dict[str, Any] = json.loads(state_file.read_text())
    final = state_file.with_name("final.json")
    return state, json.loads(final.read_text()) if final.exists() else None


def export_file(fmt: str, pipeline: Path, out: Path) -> dict[str, Any]:
    """``fave export --format FMT --pipeline P -o OUT --json`` through the CLI; its JSON report."""
    from support import e2e

    done = e2e.fave("export", "--format", fmt, "--pipeline", str(pipeline), "-o", str(out), "--json")
    assert done.code == 0, done.describe()
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["written"] == {"definition": str(out)}
    return report


def assert_gives_fave_run_s_output(ran: Ran, final: Any, pipeline: Path, request: Mapping[str, Any]) -> None:
    """The exported file ran to the end with ``fave run``'s final output; with the demo's ``fail`` the retry
    happened (the stage saw attempt 2), and the keyed pipeline's tolerated failure left its two other items."""
    assert ran.code == 0, ran.stderr[-3000:]
    assert ran.output == final
    if "fail" in request:
        assert final["attempts"] == [1, 2, 1]
    if pipeline == KEYED:
        assert final == {"done": ["a", "c"]}


@contextlib.contextmanager
def local_lambda_api(pipeline: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """fave's local Lambda API over ``pipeline``'s template, running: the environment an exported file calls it
    with through boto3's Invoke (``FAVE_EXPORT_CALL=lambda``, ``AWS_ENDPOINT_URL_LAMBDA``), and an ARN per
    function of the pipeline."""
    from fave.local.lambda_api import LambdaApi
    from fave.local.orchestrator import load_local_pipeline
    from fave.local.runtime import LocalRuntime

    loaded = load_local_pipeline(pipeline)
    functions = {f: f"arn:aws:lambda:us-east-1:123456789012:function:{f}" for f in loaded.functions}
    with LocalRuntime(loaded.template_path) as runtime, LambdaApi(runtime) as api:
        env = {
            "FAVE_EXPORT_CALL": "lambda",
            "FAVE_BIN": "/nonexistent/fave",  # not the local caller
            "AWS_ENDPOINT_URL_LAMBDA": api.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        yield env, functions
