"""``fave run``'s progress as a person sees it: stderr on a real terminal (a pty) gets live Rich bars, one row
per stage with its bar, ``done/total``, elapsed time and ETA; stdout (a pipe) stays the clean JSON answer.
Without a terminal (a pipe, or ``TERM=dumb``) the line format is unchanged and Rich is not even imported
(start-up time)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from support import e2e
from support.demo import DEMO, TEXT

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ROW = r"{name}\s+[━╸╺]+\s+{done}/{total}\s+\d+%\s+elapsed (\d:\d\d:\d\d) eta (\d:\d\d:\d\d|-:--:--) {status}"


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, bytes, bytes]:
    """``fave ARGS`` with stderr on a 160x40 pty and stdout on a pipe: (exit code, terminal bytes, stdout)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        e2e.fave_command(*args),
        cwd=e2e.ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    terminal, stdout = bytearray(), bytearray()
    open_fds = {master, out_fd}
    deadline = time.monotonic() + timeout
    try:
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], 0.5)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the last holder of the pty's other end has gone
                    chunk = b""
                if not chunk:
                    open_fds.discard(fd)
                else:
                    (terminal if fd == master else stdout).extend(chunk)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        proc.stdout.close()
    return code, bytes(terminal), bytes(stdout)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.txt"
    path.write_text("demo\n")
    return path


def demo_args(source: Path, request: dict[str, Any], *extra: str) -> list[str]:
    return ["run", str(source), "--pipeline", str(DEMO), "--input", json.dumps(request), *extra]


def terminal_env(store: Path, **extra: str) -> dict[str, str]:
    return e2e.child_env({"FAVE_STORE": str(store), "TERM": "xterm-256color", "COLUMNS": "160", **extra})


def test_a_terminal_gets_live_bars_with_counts_elapsed_and_eta_and_stdout_stays_json(
    tmp_path: Path, source: Path
) -> None:
    # measure's items run together; one word sleeps 1.5 s, so its row is seen part-way (8/9) with a real estimate.
    code, terminal, stdout = run_on_terminal(
        demo_args(source, {"text": TEXT, "sleep_s": 1.5, "slow_word": "lazy"}, "--json"),
        terminal_env(tmp_path / "store"),
    )
    assert code == 0, terminal.decode(errors="replace")[-3000:]
    doc = json.loads(stdout)  # nothing but the document on stdout: no escape codes, no bars
    assert doc["status"] == "COMPLETED"
    assert b"\x1b" not in stdout

    raw = terminal.decode()
    assert "\x1b[1A" in raw or "\x1b[2K" in raw  # redrawn in place: a live display, not a scroll of lines
    text = ANSI.sub("", raw)
    assert f"request {doc['request_id']}" in text
    last_frame = text[text.rindex("words") :]
    for name, total in (("words", 1), ("shout", 9), ("measure", 9), ("join", 1)):
        assert re.search(ROW.format(name=name, done=total, total=total, status="SUCCEEDED"), last_frame), last_frame
    # Part-way through measure: fewer than 9 done, still RUNNING, and an estimate of the time left.
    partial = re.findall(ROW.format(name="measure", done=r"[0-8]", total=9, status="RUNNING"), text)
    assert any(eta != "-:--:--" for _, eta in partial), text[-4000:]
    assert "[shout] 9/9 (100.0%)" not in text  # not the line format


def test_a_failure_on_a_terminal_is_said_above_the_bars_and_the_stage_row_says_failed(
    tmp_path: Path, source: Path
) -> None:
    code, terminal, stdout = run_on_terminal(
        demo_args(source, {"text": TEXT, "bad_word": "dog"}), terminal_env(tmp_path / "store")
    )
    assert code == 1
    text = ANSI.sub("", terminal.decode())
    assert "[shout #8] task_failed" in text
    assert re.search(ROW.format(name="shout", done=9, total=9, status="FAILED"), text), text[-3000:]
    assert "FAILED" in stdout.decode() and "TerminalError" in stdout.decode()  # the status block, on stdout


def test_without_a_terminal_the_line_format_is_unchanged_and_rich_is_not_imported(tmp_path: Path, source: Path) -> None:
    env = e2e.child_env({"FAVE_STORE": str(tmp_path / "store")})
    done = subprocess.run(
        [*e2e.fave_command()[:1], "-X", "importtime", *e2e.fave_command()[1:], *demo_args(source, {"text": TEXT})],
        cwd=e2e.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert "[words] 1/1 (100.0%) SUCCEEDED" in lines
    assert "[shout] 9/9 (100.0%) SUCCEEDED" in lines
    assert "[join] 1/1 (100.0%) SUCCEEDED" in lines
    assert "\x1b" not in done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "fave.cli.progress" in imported
    assert not {name for name in imported if name == "rich" or name.startswith("rich.")}


def test_a_dumb_terminal_gets_the_line_format(tmp_path: Path, source: Path) -> None:
    code, terminal, _ = run_on_terminal(
        demo_args(source, {"text": "a b"}), terminal_env(tmp_path / "store", TERM="dumb")
    )
    assert code == 0
    text = terminal.decode().replace("\r\n", "\n")
    assert "[shout] 2/2 (100.0%) SUCCEEDED\n" in text and "━" not in text
