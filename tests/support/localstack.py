"""LocalStack in host mode for the ``localstack`` test tier: started from its own virtualenv, stopped after.

localstack-core needs Python >= 3.12 and pins boto3, so it lives in ``.venv-localstack`` (Python 3.13, built by
``./dev test`` from requirements/localstack.txt), not in the test environment. ``running`` starts its runtime,
``python -m localstack.runtime.main`` (what ``localstack start --host`` runs), as a process group of its own:

* S3 only (``SERVICES=s3``): the tiers use LocalStack as object storage; its Lambda would need Docker;
* on the loopback interface and a free port, nowhere else, and its DNS server off. LocalStack's default
  gateway server (twisted) drops the host of an IPv4 ``GATEWAY_LISTEN`` and listens on every interface, but
  keeps an IPv6 one: so it listens on ``[::1]``. Where the machine has no IPv6 loopback, the gateway is
  hypercorn on 127.0.0.1, which binds where it is told but answers 3-4x slower (~100 S3 requests/s);
* everything under a temporary directory (``FILESYSTEM_ROOT``, ``CONFIG_DIR``, ``HOME``), no persistence, no
  analytics, no certificate download, and nothing from the host's environment (LocalStack reads hundreds of
  variables; ``DEBUG`` or ``PERSISTENCE`` set for something else would change it);
* ``OVERRIDE_IN_DOCKER=0``: inside a container (``/.dockerenv``) LocalStack would take itself for its own
  Docker image and use that image's paths.

``running`` yields once ``/_localstack/health`` reports S3 available. If LocalStack cannot start, it raises
``LocalStackUnavailableError`` whose message ends with the last lines of LocalStack's log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv-localstack" / "bin" / "python"
PYTHON_VAR = "FAVE_LOCALSTACK_PYTHON"
"""Overrides the interpreter of a LocalStack virtualenv (default ``.venv-localstack/bin/python``)."""
UNAVAILABLE_VAR = "FAVE_LOCALSTACK_UNAVAILABLE"
"""Set by ``./dev`` to the reason it could not build the virtualenv (no Python 3.13): the tier skips with it."""
START_TIMEOUT = 60.0  # seconds; ~1.5 s when idle, much more while the main test run loads both cores
# Seconds between SIGTERM and SIGKILL. After some traffic LocalStack takes 4-6 s to exit, for nothing: it keeps
# no state (no persistence) and its files are in the pytest tmp dir.
STOP_GRACE = 2.0
LOG_TAIL = 8  # lines of LocalStack's log in a skip reason (pytest -ra repeats it for every skipped test)


class LocalStackUnavailableError(Exception):
    """LocalStack cannot run here; the message says why."""


@dataclass(frozen=True)
class LocalStack:
    """A running LocalStack: where it answers, and where it logs."""

    endpoint: str
    listen: str
    """``GATEWAY_LISTEN``: ``[::1]:PORT`` or ``127.0.0.1:PORT``."""
    gateway: str
    """``GATEWAY_SERVER``: ``twisted`` or ``hypercorn``."""
    log: Path


def localstack_python() -> Path:
    """The interpreter of the LocalStack virtualenv, or ``LocalStackUnavailableError`` saying why there is none."""
    reason = os.environ.get(UNAVAILABLE_VAR, "").strip()
    if reason:
        raise LocalStackUnavailableError(reason)
    python = Path(os.environ.get(PYTHON_VAR) or VENV_PYTHON)
    if not python.is_file():
        raise LocalStackUnavailableError(
            f"no LocalStack virtualenv at {python} (`./dev test` builds it from requirements/localstack.txt "
            "with Python 3.13)"
        )
    return python


def loopback() -> tuple[str, str, int]:
    """Where LocalStack listens: (host as in a URL, ``GATEWAY_SERVER``, a free port).

    The port is free now; another process could still take it before LocalStack binds it (then it fails to
    start, and the tier skips saying so).
    """
    for family, address, host, server in (
        (socket.AF_INET6, "::1", "[::1]", "twisted"),
        (socket.AF_INET, "127.0.0.1", "127.0.0.1", "hypercorn"),
    ):
        try:
            with socket.socket(family) as sock:
                sock.bind((address, 0))
                port: int = sock.getsockname()[1]
        except OSError:  # no IPv6 loopback here
            continue
        return host, server, port
    raise LocalStackUnavailableError("no loopback interface to listen on (neither ::1 nor 127.0.0.1)")


def runtime_env(root: Path, listen: str, server: str) -> dict[str, str]:
    """LocalStack's whole environment: S3 only, at ``listen`` (a loopback address and port), files in ``root``."""
    (root / "config").mkdir(parents=True, exist_ok=True)
    nowhere = "http://127.0.0.1:9"  # the discard port: anything that would call home fails at once
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "GATEWAY_LISTEN": listen,
        "GATEWAY_SERVER": server,
        "SERVICES": "s3",
        "DNS_ADDRESS": "0",
        "FILESYSTEM_ROOT": str(root / "filesystem"),
        "CONFIG_DIR": str(root / "config"),
        "PERSISTENCE": "0",
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "ANALYTICS_API": nowhere,
        "API_ENDPOINT": nowhere,
    }
    if Path("/.dockerenv").exists():
        env["OVERRIDE_IN_DOCKER"] = "0"
    return env


def log_tail(log: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def s3_status(endpoint: str, timeout: float = 2.0) -> str:
    """The state of S3 that ``/_localstack/health`` reports (``available``, ``running``...), or why none."""
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=timeout) as response:
            health = json.loads(response.read())
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors; bad JSON is a ValueError
        return f"{type(exc).__name__}: {exc}"
    return str(health.get("services", {}).get("s3", "not listed"))


def wait_for_s3(endpoint: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once LocalStack at ``endpoint`` reports S3 available; else ``LocalStackUnavailableError``."""
    deadline = time.monotonic() + timeout
    while True:
        status = s3_status(endpoint)
        if status in ("available", "running"):
            return
        if process is not None and process.poll() is not None:
            raise LocalStackUnavailableError(f"LocalStack exited with status {process.returncode} before S3 was up")
        if time.monotonic() > deadline:
            raise LocalStackUnavailableError(f"S3 not available at {endpoint} after {timeout:.0f} s ({status})")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM LocalStack's process group, then SIGKILL what is left after ``STOP_GRACE``."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def running(workdir: Path) -> Iterator[LocalStack]:
    """Start LocalStack in ``workdir`` (its files and ``localstack.log``), yield it once S3 is up, stop it."""
    python = localstack_python()
    host, server, port = loopback()
    endpoint, listen = f"http://{host}:{port}", f"{host}:{port}"
    log = workdir / "localstack.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(python), "-m", "localstack.runtime.main"],
            cwd=workdir,
            env=runtime_env(workdir / "root", listen, server),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and anything it started
        )
    try:
        wait_for_s3(endpoint, START_TIMEOUT, process)
    except LocalStackUnavailableError as exc:
        stop(process)
        raise LocalStackUnavailableError(f"{exc}; the end of {log}:\n{log_tail(log)}") from None
    except BaseException:  # KeyboardInterrupt while waiting: leave nothing running
        stop(process)
        raise
    try:
        yield LocalStack(endpoint, listen, server, log)
    finally:
        stop(process)
