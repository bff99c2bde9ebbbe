"""Live per-stage progress: lines such as ``[extract] 37/120 (30.8%) RUNNING`` when stderr is a file or a pipe,
a bar per stage (``fave.cli.progress_rich``, Rich) when it is a terminal. ``terminal_progress`` chooses; Rich is
imported only then (start-up time, ``fave bench startup``) and only if installed (a CLI-only dependency)."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from fave.core.model import Notify, RequestState, StageStatus


def stage_line(name: str, done: int, total: int | None, status: str) -> str:
    if total:
        return f"[{name}] {done}/{total} ({100.0 * done / total:.1f}%) {status}"
    return f"[{name}] {status}"


def terminal_progress() -> Progress:
    """Bars on a terminal (not ``TERM=dumb``) when Rich is installed, else the line format."""
    try:
        tty = sys.stderr.isatty()
    except ValueError:  # closed
        tty = False
    if tty and os.environ.get("TERM") != "dumb":
        try:
            from fave.cli.progress_rich import RichProgress
        except ImportError:
            return Progress()
        return RichProgress(sys.stderr)
    return Progress()


class Progress:
    """Prints a stage's line when its count or status changes (at most every ``interval_s`` per stage).

    Progress is for a person watching: once its stream is closed (``fave run ... 2>&1 | head``) it stops
    printing, and the run goes on to its end."""

    def __init__(self, out: TextIO | None = None, interval_s: float = 0.5) -> None:
        self.out: TextIO | None = out or sys.stderr
        self.interval_s = interval_s
        self._last: dict[str, tuple[int, str]] = {}
        self._printed_at: dict[str, float] = {}

    def __call__(self, state: RequestState) -> None:
        now = time.monotonic()
        for name, st in state.stages.items():
            if st.status is StageStatus.PENDING:
                continue
            key = (st.done, st.status.value)
            if self._last.get(name) == key:
                continue
            final = st.status is not StageStatus.RUNNING
            if not final and now - self._printed_at.get(name, 0.0) < self.interval_s:
                continue
            self._last[name] = key
            self._printed_at[name] = now
            self._print(stage_line(name, st.done, st.total, st.status.value))

    def notify(self, request_id: str, note: Notify, state: RequestState) -> None:
        if note.kind.is_trouble:
            where = f"[{note.stage}{'' if note.item is None else f' #{note.item}'}] " if note.stage else ""
            self._print(f"{where}{note.kind}: {note.detail}".rstrip(": "))

    def close(self) -> None:
        """The run is over (nothing to do for lines; a live display stops here)."""

    def _print(self, line: str) -> None:
        if self.out is None:
            return
        try:
            print(line, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):  # the reader went away (ValueError: the stream was closed)
            self.out = None
