"""Progress bars on a terminal (Rich): one row per stage with its bar, ``done/total``, percent, elapsed time,
ETA and status; retries, timeouts and failures print above the bars as they happen.

Imported only by ``fave.cli.progress.terminal_progress`` when stderr is a terminal: Rich costs tens of
milliseconds to import, which a piped or scripted ``fave run`` never pays. Rich is a CLI-only dependency
(requirements/dev.txt), never part of the Lambda bundle.
"""

from __future__ import annotations

import contextlib
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bars

from fave.cli.progress import Progress
from fave.core.model import RequestState, StageStatus


class RichProgress(Progress):
    """The ``Progress`` interface (``__call__`` per step, ``notify``, ``close``) drawn as live bars."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.console = Console(file=out, highlight=False)
        self.bars = Bars(
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            redirect_stdout=False,  # stdout is the command's answer (--json): never touched
            redirect_stderr=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._running = False
        self._stopped = False

    def __call__(self, state: RequestState) -> None:
        if self._stopped:
            return
        if not self._running:
            self.bars.start()
            self._running = True
        # A stage gets its row when it starts: rows come in the order stages run (the state's map has none).
        for name, st in state.stages.items():
            if st.status is StageStatus.PENDING:
                continue
            total = st.total or 1  # one task, not fanned out
            done = st.done if st.total else int(st.status is not StageStatus.RUNNING)
            task = self._tasks.get(name)
            if task is None:
                task = self._tasks[name] = self.bars.add_task(name, total=total, status=st.status.value)
            self.bars.update(task, total=total, completed=done, status=st.status.value)
            if st.status is not StageStatus.RUNNING and not self.bars.tasks[task].finished:
                self.bars.stop_task(task)  # FAILED or CANCELLED short of its total: its clock stops here

    def close(self) -> None:
        if self._running and not self._stopped:
            self._stopped = True
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                self.bars.stop()

    def _print(self, line: str) -> None:
        if self.out is None:
            return
        if not self._running or self._stopped:
            super()._print(line)
            return
        try:
            self.console.print(line, markup=False)
        except (BrokenPipeError, ValueError, OSError):
            self.out = None
