"""Start execution environments by forking a warm interpreter (``zygote.py``) instead of exec'ing a new one.

A new Python (interpreter, site, the worker's imports) costs ~40 ms of CPU per environment; on two cores,
that caps how fast an I/O-bound function can scale to its 32 environments. A fork of a zygote that has done
all that costs ~2 ms. The child is then exactly what ``python -P worker.py`` would have been: its own process
group, working directory and ``os.environ``, ``sys.path`` from the init frame, and the handler imported fresh
in every environment (the zygote never imports one). What it shares with the zygote: the interpreter's
start-up settings, read from this process's environment when the zygote started (``PYTHON*`` variables set
only in a function's ``Environment`` do not apply).

``ForkServer.start`` returns a ``ForkedProcess``: the part of ``subprocess.Popen``'s interface a
``ProcessEnvironment`` uses (pid, returncode, kill, wait). Signals go through a pidfd, so a kill never hits
another process that reused the pid; exit statuses come from the zygote, whose children the environments are.
Linux only (``available()``); elsewhere environments start the classic way.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

    from fave.local.preload import Preload

__all__ = ["ForkServer", "ForkedProcess", "available"]

_ZYGOTE = str(Path(__file__).with_name("zygote.py"))
_START_S = 30.0
"""How long a fork may take to be answered: the zygote may be importing a preload (~0.5 s) first."""


def available() -> bool:
    """Forking environments needs Linux's pidfds and SOCK_SEQPACKET."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


class ForkedProcess:
    """An environment's process, a child of the zygote: ``Popen``'s pid / returncode / kill / wait."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.pid = pid
        self._server = server
        # Opened at once: the child waits for its init frame, so it cannot have ended (and its pid been reused).
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # it did end (a failed start): its status is on its way
            self._pidfd = None
        self._pidfd_lock = threading.Lock()
        self._killed = False
        self._code: int | None = None  # known without the zygote (it died before reporting)

    @property
    def returncode(self) -> int | None:
        code = self._server.status(self.pid)
        return code if code is not None else self._code

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        with self._pidfd_lock:
            if self._pidfd is None or self.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                self._killed = True

    def wait(self, timeout: float | None = None) -> int:
        """The exit status once the zygote reported it; ``subprocess.TimeoutExpired`` after ``timeout``."""
        import subprocess  # in the functions that use it: a runtime whose functions run in threads never does

        code = self._server.wait(self.pid, timeout)
        if code is None and self._server.lost:
            code = self._wait_alone(timeout)
        if code is None:
            raise subprocess.TimeoutExpired([_ZYGOTE], timeout or 0.0)
        with self._pidfd_lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return code

    def _wait_alone(self, timeout: float | None) -> int | None:
        """The zygote is gone (killed): no status will come. Wait for the exit on the pidfd; its status is
        unknown, so say -SIGKILL if we killed it, else 1."""
        with self._pidfd_lock:
            pidfd = self._pidfd
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else timeout * 1000):
                return None
        self._code = -signal.SIGKILL if self._killed else 1
        return self._code


class ForkServer:
    """One zygote per runtime, started on first use; thread-safe. Close it after every environment ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one start request in flight at a time
        self._cond = threading.Condition()  # guards _exits, _sock, _closed
        self._exits: dict[int, int] = {}
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._sock: socket.socket | None = None
        self._zygote: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self._preload: Preload | None = None

    def start(self, *, env: dict[str, str], cwd: Path, pass_fds: tuple[int, int]) -> ForkedProcess:
        """Fork an environment whose request and reply pipes are ``pass_fds`` (ours to close after)."""
        message = json.dumps({"env": env, "cwd": str(cwd)}).encode()
        with self._lock:
            sock = self._started()
            try:
                sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", pass_fds).tobytes())])
                reply = self._replies.get(timeout=_START_S)
                if self._preload is not None and "pid" in reply:  # after the first fork: it did not wait for them
                    preload, self._preload = self._preload, None
                    plan = {"preload": preload.modules, "env": preload.env, "path": preload.path}
                    sock.send(json.dumps(plan).encode())
            except (OSError, queue.Empty) as e:
                raise OSError(f"the local fork server did not start an environment: {e!r}") from e
        if "pid" not in reply:
            raise OSError(f"the local fork server could not fork: {reply.get('error')}")
        return ForkedProcess(self, int(reply["pid"]))

    def preload(self, plan: Preload) -> None:
        """Have the zygote import ``plan``'s modules right after it forks its next environment (``fave.local.preload``):
        later environments are forked with them imported. Only the functions ``plan`` accepts may be forked after
        that (the runtime starts the others the classic way)."""
        with self._lock:
            self._preload = plan

    def prestart(self) -> None:
        """Start the zygote now (it imports in the background), so the first environment does not wait for it."""
        with self._lock:
            self._started()

    def status(self, pid: int) -> int | None:
        with self._cond:
            return self._exits.get(pid)

    @property
    def lost(self) -> bool:
        """The zygote ended while the runtime was open (killed): no exit status will come any more."""
        with self._cond:
            return self._sock is not None and self._reader is None

    def wait(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while pid not in self._exits:
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._reader is None:
                    return None
                self._cond.wait(remaining)
            return self._exits[pid]

    def close(self) -> None:
        """EOF to the zygote: it stops forking, waits for its children and exits. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            sock, zygote = self._sock, self._zygote
        if sock is not None:
            sock.shutdown(socket.SHUT_WR)
        if zygote is not None:
            import subprocess

            try:
                zygote.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                zygote.kill()
                zygote.wait()
        if self._reader is not None:
            self._reader.join(5.0)
        if sock is not None:
            sock.close()

    # -- internals ----------------------------------------------------------------------------------------

    def _started(self) -> socket.socket:
        with self._cond:
            if self._closed:
                raise OSError("the local fork server is closed")
            if self._sock is not None and self._reader is not None:
                return self._sock
            if self._sock is not None:  # the zygote died: start another (its orphans are init's to reap)
                self._sock.close()
                self._sock = None
                self._replies = queue.Queue()  # without the dead reader's last word
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._zygote = subprocess.Popen(
                [sys.executable, "-P", _ZYGOTE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                process_group=0,  # like the environments: Ctrl-C reaches this process, which closes them
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._reader = threading.Thread(target=self._read, args=(ours,), name="fave-local-forkserver", daemon=True)
        with self._cond:
            self._sock = ours
        self._reader.start()
        return ours

    def _read(self, sock: socket.socket) -> None:
        try:
            while data := sock.recv(1 << 16):
                message = json.loads(data)
                if "exit" in message:
                    with self._cond:
                        self._exits[int(message["exit"])] = int(message["status"])
                        self._cond.notify_all()
                else:
                    self._replies.put(message)
        except OSError:
            pass
        finally:
            self._replies.put({"error": "the fork server exited"})
            with self._cond:
                self._reader = None  # waiters give up: no status will come any more
                self._cond.notify_all()
