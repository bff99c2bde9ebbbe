"""A request's log in its own store, ``requests/{id}/logs/`` (``fave.keys.log_key``): written by the process that
drives the request on this machine (``fave run``, ``fave resume`` and the background driver of ``--detach``),
read by ``fave logs ID [-f]`` from any machine that sees the store (a local directory or S3).

The lines are those of the terminal's line format (``fave.cli.progress``): a stage's count when it changes (at
most every ``interval_s`` per stage), every stage start and finish, retry, timeout and failure, and one line when
a driver starts and ends; each begins with its UTC time. They are batched: at most one object per driver step
that has new lines (a step applies every completion that arrived since the last one), never one per task, so
a fan-out of 10,000 tasks writes a few dozen objects. Requests driven by the Lambda deployment write none (their
log is CloudWatch's); ``fave logs`` says so.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fave_shared.errors import FaveError

from fave.cli.progress import Progress
from fave.core.model import Notify, NotifyKind, RequestState
from fave.ids import new_request_id
from fave.keys import log_key, logs_prefix

if TYPE_CHECKING:
    from fave_shared.store import ObjectStore

ENDED = "driver ended: request "
"""The start of a driver's last line (``fave logs -f`` knows from it that no line of that driver is to come)."""

_REQUEST_END = frozenset({NotifyKind.REQUEST_COMPLETED, NotifyKind.REQUEST_FAILED, NotifyKind.REQUEST_CANCELLED})


def _stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class StoreLog(Progress):
    """Progress lines into the request's store, one object per ``flush`` (each driver step with new lines)."""

    def __init__(self, store: ObjectStore, command: str, interval_s: float = 1.0) -> None:
        super().__init__(out=None, interval_s=interval_s)
        self.store = store
        self.command = command
        self.session = new_request_id()  # sorts by the time this driver started
        self.request_id: str | None = None
        self.status: str | None = None
        self._lines: list[str] = []
        self._seq = 0
        self._broken = False
        self._begun = False

    def begin(self, request_id: str) -> None:
        self.request_id = request_id
        self._begun = True
        self._print(f"driver started: {self.command} (pid {os.getpid()})")

    def __call__(self, state: RequestState) -> None:
        self.request_id = state.request_id
        self.status = state.status.value
        super().__call__(state)
        self.flush()

    def notify(self, request_id: str, note: Notify, state: RequestState) -> None:
        self.request_id = request_id
        if note.kind in _REQUEST_END:
            self._print(f"request {note.kind.value.removeprefix('request_')}{': ' if note.detail else ''}{note.detail}")
            return
        where = f"[{note.stage}{'' if note.item is None else f' #{note.item}'}] " if note.stage else ""
        self._print(f"{where}{note.kind}{': ' if note.detail else ''}{note.detail}")

    def close(self) -> None:
        """The driver's last line (its request's status as it leaves it), written at once."""
        if self._begun:
            self._print(f"{ENDED}{self.status or 'unknown'}")
        self.flush()

    def _print(self, line: str) -> None:
        self._lines.append(f"{_stamp(time.time())} {line}")

    def flush(self) -> None:
        if not self._lines or self.request_id is None:
            return
        data = ("\n".join(self._lines) + "\n").encode()
        self._lines.clear()
        if self._broken:
            return
        try:
            self.store.put(log_key(self.request_id, self.session, self._seq), data, content_type="text/plain")
        except (FaveError, OSError) as exc:
            # The log is for people; the request goes on without it. Said once, on stderr.
            self._broken = True
            with contextlib.suppress(BrokenPipeError, ValueError):
                print(f"fave: the request's log is not written any more: {exc}", file=sys.stderr, flush=True)
        self._seq += 1


class Tee(Progress):
    """Several progress consumers as one ``on_step`` / ``on_notify`` pair."""

    def __init__(self, *watchers: Progress) -> None:
        super().__init__(out=None)
        self.watchers = watchers

    def __call__(self, state: RequestState) -> None:
        for watcher in self.watchers:
            watcher(state)

    def notify(self, request_id: str, note: Notify, state: RequestState) -> None:
        for watcher in self.watchers:
            watcher.notify(request_id, note, state)

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.close()


def log_keys(store: ObjectStore, request_id: str) -> list[str]:
    return list(store.list(logs_prefix(request_id)))


def read_lines(store: ObjectStore, keys: list[str]) -> Iterator[str]:
    for key in keys:
        yield from store.get(key).data.decode("utf-8", "replace").splitlines()
