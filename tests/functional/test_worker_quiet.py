"""A local Lambda worker whose parent goes away exits quietly: no traceback reaches the terminal it shares.

Real worker processes (``fave/invoke/worker.py``); their stderr is captured, either through the pytest
process's own descriptor 2 (``capfd``: workers inherit it, as they inherit the ``fave`` command's) or
through a pipe when the test plays the parent itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fave.local import worker
from fave.local.environment import ProcessEnvironment, context_info
from fave.local.runtime import LocalRuntime
from fave.local.template import Template
from support.templates import RUNTIME_TEMPLATE

BASIC = RUNTIME_TEMPLATE.parent / "functions" / "basic"


def test_an_environment_closed_before_its_init_frame_exits_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    # What LocalRuntime.close does to a pre-warmed environment still starting: close it without init.
    environment = ProcessEnvironment(
        handler="echo.handler",
        code_uri=BASIC,
        env=dict(os.environ),
        sys_path=[str(BASIC), *sys.path],
        context=context_info("Echo", 128, "us-east-1", "stream"),
    )
    environment.close()  # EOF on the request pipe; waits for the worker to exit (kills it after 2 s)
    assert environment.process.returncode == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "EOFError" not in err, err


def test_closing_a_runtime_while_a_prewarmed_environment_starts_prints_nothing(
    runtime_template: Template, capfd: pytest.CaptureFixture[str]
) -> None:
    for _ in range(5):
        runtime = LocalRuntime(runtime_template, cores=1, prewarm=["Echo"])
        assert runtime._pools["Echo"].prewarm()
        # Closed at once: the slot thread usually finds the runtime closed just after starting the worker
        # process (the `fave run` case: a request ends while a later stage's environment is pre-warming),
        # and closes it without sending the init frame; otherwise it kills a worker already in its init.
        runtime.close()
        assert runtime.stats()["Echo"].cold_starts == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and "EOFError" not in err, err


class Parent:
    """The test plays the runtime: a worker.py process on two pipes, its stdout and stderr captured."""

    def __init__(self, code: Path, handler: str, *, stdout: int = subprocess.PIPE) -> None:
        child_in, self.to_child = os.pipe()
        self.from_child, child_out = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as for a user
        self.process = subprocess.Popen(
            [sys.executable, "-P", worker.__file__, str(child_in), str(child_out)],
            pass_fds=(child_in, child_out),
            cwd=code,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        os.close(child_in)
        os.close(child_out)
        self.init = {
            "handler": handler,
            "sys_path": [str(code), *sys.path],
            "context": context_info("F", 128, "us-east-1", "stream"),
        }

    def finish(self) -> tuple[int, bytes]:
        """Close our ends, wait for the worker; its exit status and stderr."""
        for fd in (self.to_child, self.from_child):
            with contextlib.suppress(OSError):  # a test may have closed one already
                os.close(fd)
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        return self.process.wait(timeout=30), err


def test_a_stdout_without_reader_does_not_end_the_environment(tmp_path: Path) -> None:
    # `fave run ... | true`: the worker's inherited stdout loses its reader. Its log lines are lost, but the
    # invocation still answers and the worker still serves the next one.
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """
            def handler(event, context):
                print("a log line", event["n"])  # buffered: written by the worker's flush after the call
                return {"n": event["n"]}
            """
        )
    )
    parent = Parent(tmp_path, "app.handler")
    assert parent.process.stdout is not None
    parent.process.stdout.close()  # the reader is gone
    worker.write_frame(parent.to_child, json.dumps(parent.init).encode())
    assert worker.read_frame(parent.from_child) == worker.READY
    for n in (1, 2):
        worker.write_frame(parent.to_child, b'req-%d\x003000\x00{"n": %d}' % (n, n))
        reply = worker.read_frame(parent.from_child)
        assert reply[:1] == worker.RESULT and json.loads(reply[1:]) == {"n": n}, reply
    code, err = parent.finish()
    assert (code, err) == (0, b"")


def test_a_parent_gone_while_the_worker_reports_a_failed_init_exits_quietly(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("raise RuntimeError('broken at import')\n")
    parent = Parent(tmp_path, "app.handler")
    os.close(parent.from_child)  # the runtime exited: nobody reads the init error
    worker.write_frame(parent.to_child, json.dumps(parent.init).encode())
    code, err = parent.finish()
    assert (code, err) == (0, b""), err.decode()


def test_a_parent_gone_halfway_through_the_init_frame_exits_quietly(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return event\n")
    parent = Parent(tmp_path, "app.handler")
    frame = json.dumps(parent.init).encode()
    os.write(parent.to_child, len(frame).to_bytes(4, "big") + frame[:10])  # then the parent dies
    code, err = parent.finish()
    assert (code, err) == (0, b""), err.decode()
