"""SIGTERM for a command that drives a request in the foreground (``fave run``, ``fave resume``): handled like
Ctrl-C, but only between steps, so the step in progress commits and the request is left RUNNING in a known state
(``fave resume ID`` continues it) rather than cut anywhere, and the command exits 143 (128 + SIGTERM).

The handler only notes the signal; the driver's ``on_step`` (after each step) raises
``Terminated``, a ``KeyboardInterrupt``: whatever cleans up after Ctrl-C (the lease's release, the runtime's
close, the line naming the request to resume) does it for SIGTERM too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TypeVar

_Step = TypeVar("_Step")

__all__ = ["Terminated", "terminate_between_steps"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised after the step in progress committed."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def terminate_between_steps(on_step: Callable[[_Step], None]) -> Iterator[Callable[[_Step], None]]:
    """While the block runs, SIGTERM is noted instead of killing the process; yields the driver's ``on_step``:
    ``on_step``, then ``Terminated`` if SIGTERM came. The previous handler is restored on the way out."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    def check(step: _Step) -> None:
        on_step(step)
        if received:
            raise Terminated()

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield check
        return
    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield check
    finally:
        signal.signal(signal.SIGTERM, previous)
