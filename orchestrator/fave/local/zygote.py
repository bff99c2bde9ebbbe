"""The fork server's process: a Python with the worker's modules imported, forking execution environments.

Run as a script by ``fave.local.forkserver`` (``python -P zygote.py SOCKET_FD``), standard library only and
nothing of ``fave``, like ``worker.py``. Starting an environment from scratch (interpreter, site, the
worker's imports) costs ~40 ms of CPU; a fork of this already-started interpreter costs ~2 ms, which is what
lets an I/O-bound function scale to dozens of environments in a fraction of a second.

Protocol, over a SOCK_SEQPACKET socket (one message per packet):

* parent → zygote: JSON ``{"env": {...}, "cwd": "..."}`` with two file descriptors (``SCM_RIGHTS``): the
  environment's request pipe (read end) and reply pipe (write end). The zygote forks; the child becomes
  exactly what ``python -P worker.py FD_IN FD_OUT`` would be (its own process group, working directory and
  ``os.environ``, then ``worker.serve``); the zygote answers ``{"pid": N}`` (or ``{"error": "..."}``).
* parent → zygote, at most once, after the first fork: JSON ``{"preload": [MODULE, ...], "env": {...}, "path":
  [...]}`` without descriptors or reply: the zygote sets those variables and ``sys.path`` and imports the modules,
  so every later fork has them (``fave.local.preload``); the first environment never waits for them.
* zygote → parent, whenever a child ends: ``{"exit": pid, "status": code}``, ``code`` as ``Popen.returncode``
  reports it (negative: killed by that signal). The parent has no other way to learn it: the environments
  are the zygote's children, not its own.

EOF on the socket (the runtime closed, or its process died) stops the forking; the zygote then waits for its
remaining children (which see EOF on their own pipes and exit) and exits.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")


def _load_worker() -> Any:
    # Under a name no function uses (a handler module may well be called "worker").
    spec = importlib.util.spec_from_file_location("_fave_local_worker", _WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        sock.send(json.dumps(message).encode())


def _child(worker: Any, request: dict[str, Any], fd_in: int, fd_out: int, private: list[int]) -> None:
    """In the forked child: become the environment, serve, exit (never returns)."""
    code = 1
    try:
        for fd in private:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        _reseed()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)  # like Popen(process_group=0): Ctrl-C reaches the parent, which closes environments
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [_WORKER, str(fd_in), str(fd_out)]
        code = worker.serve(fd_in, fd_out)
    except SystemExit as e:  # sys.exit() in a handler ends the environment, as it ends the script
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _preload(request: dict[str, Any]) -> None:
    """Import the modules that the next environments share (``fave.local.preload``), under the variables and
    path they share. A module that fails to import is left to each environment (which reports its error)."""
    os.environ.update(request.get("env") or {})
    sys.path[:] = list(request.get("path") or sys.path)
    for name in request["preload"]:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # Else what an import printed would sit in every fork's buffer, and each would print it again.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _reseed() -> None:
    """A fork starts with the zygote's random state: draw fresh seeds, as a new interpreter does. ``random``
    reseeds itself at fork (``os.register_at_fork``); numpy's global generator, if the zygote imported numpy,
    does not."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        with contextlib.suppress(Exception):
            numpy_random.seed()


def _reap(sock: socket.socket) -> int:
    """Collect every ended child, telling the parent; how many are left."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid == 0:
            return 1
        _send(sock, {"exit": pid, "status": os.waitstatus_to_exitcode(status)})


def main(sock_fd: int) -> int:
    worker = _load_worker()
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a handler, so that the wakeup fd is written
    signal.set_wakeup_fd(wake_w)
    open_socket = True
    children = 0
    while open_socket or children:
        watched = [sock.fileno(), wake_r] if open_socket else [wake_r]
        ready, _, _ = select.select(watched, [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        children = _reap(sock)
        if sock.fileno() not in ready:
            continue
        fds = array.array("i")
        try:
            data, ancdata, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(2 * fds.itemsize))
        except OSError:
            data, ancdata = b"", []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not data:
            open_socket = False
            for fd in fds:
                os.close(fd)
            continue
        try:
            request = json.loads(data)
            if "preload" in request:  # no descriptors, no reply: imports shared by the next forks
                _preload(request)
                continue
            fd_in, fd_out = fds
            pid = os.fork()
        except Exception as e:
            for fd in fds:
                os.close(fd)
            _send(sock, {"error": f"{type(e).__name__}: {e}"})
            continue
        if pid == 0:
            _child(worker, request, fd_in, fd_out, [sock.fileno(), wake_r, wake_w])
        os.close(fd_in)
        os.close(fd_out)
        children = 1
        _send(sock, {"pid": pid})
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
