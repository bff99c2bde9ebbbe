"""The parent's handle on one worker process: one local Lambda execution environment.

The environment is started with ``subprocess`` running ``worker.py`` as a script (fork+exec, i.e. spawn
semantics, safe in a parent that has threads). Not ``multiprocessing``: its spawn/forkserver children
re-import the parent's ``__main__`` (the CLI, a benchmark script, pytest) into every environment, which
Lambda never does, and cannot give the child its own environment variables and working directory from the
first instruction.

An environment is owned by one runtime slot thread and used by it alone; only ``kill`` may be called from
another thread (``LocalRuntime.close``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fave.local import worker
from fave.local.template import ACCOUNT_ID

if TYPE_CHECKING:
    import subprocess

    from fave.local.forkserver import ForkedProcess, ForkServer

_WORKER = str(Path(worker.__file__).resolve())
#: Lambda's init phase limit. A slower init is given up to the function timeout instead (Lambda retries a
#: timed-out init inside the first invocation's timeout).
INIT_TIMEOUT_S = 10.0
_GRACEFUL_EXIT_S = 2.0


@dataclass(slots=True)
class Outcome:
    """How one invocation ended. ``body`` is JSON: the response, or the error payload if ``error``."""

    body: bytes
    error: bool = False
    timed_out: bool = False
    #: The environment is gone (timeout, crash, failed init): the next invocation starts a cold one.
    env_lost: bool = False


def timeout_outcome(request_id: str, timeout_s: float) -> Outcome:
    """Lambda's response when a function outlives its timeout."""
    message = f"RequestId: {request_id} Error: Task timed out after {timeout_s:.2f} seconds"
    body = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": message}).encode()
    return Outcome(body, error=True, timed_out=True, env_lost=True)


def exit_outcome(request_id: str, returncode: int | None) -> Outcome:
    """Lambda's response when the runtime process dies during an invocation."""
    if returncode is None:
        reason = "the local runtime is closing"
    elif returncode < 0:
        try:
            reason = f"signal: {(signal.strsignal(-returncode) or str(-returncode)).lower()}"
        except ValueError:
            reason = f"signal: {-returncode}"
    else:
        reason = f"exit status {returncode}"
    message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
    body = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": message}).encode()
    return Outcome(body, error=True, env_lost=True)


class ProcessEnvironment:
    """A worker process serving one function, one invocation at a time, warm between invocations."""

    def __init__(
        self,
        *,
        handler: str,
        code_uri: Path,
        env: dict[str, str],
        sys_path: list[str],
        context: dict[str, str],
        forks: ForkServer | None = None,
    ) -> None:
        child_in, self._to_child = os.pipe()
        self._from_child, child_out = os.pipe()
        self.process: subprocess.Popen[bytes] | ForkedProcess
        try:
            if forks is not None:  # the same worker, forked from a warm interpreter (fave.local.forkserver)
                self.process = forks.start(env=env, cwd=code_uri, pass_fds=(child_in, child_out))
            else:
                import subprocess  # here: a run whose functions all run in threads never needs it

                self.process = subprocess.Popen(
                    [sys.executable, "-P", _WORKER, str(child_in), str(child_out)],
                    pass_fds=(child_in, child_out),
                    env=env,
                    cwd=code_uri,
                    stdin=subprocess.DEVNULL,
                    # Own process group: Ctrl-C reaches the parent, which then closes its environments.
                    process_group=0,
                )
        except BaseException:
            for fd in (self._to_child, self._from_child):
                os.close(fd)
            raise
        finally:
            # Only the child keeps these ends, so its death shows up as EOF on ours (and ours on its).
            os.close(child_in)
            os.close(child_out)
        self._poll = select.poll()
        self._poll.register(self._from_child, select.POLLIN)
        self._closed = False
        #: It has run an invocation (the pool times first invocations apart: lazy loads, first-call set-up).
        self.served = False
        # ``_busy``/``_stopping`` let ``interrupt`` (another thread) kill only an environment that is in
        # flight, and keep one from starting an invocation after the runtime began to close.
        self._lock = threading.Lock()
        self._busy = False
        self._stopping = False
        #: ``cpu_demand()`` and ``time.monotonic()`` when the runtime last accounted for this environment's CPU
        #: (its pool's business).
        self.cpu_mark: float | None = None
        self.time_mark = 0.0
        self._init = json.dumps({"handler": handler, "sys_path": sys_path, "context": context}).encode()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    def cpu_demand(self) -> float | None:
        """Seconds the worker (and its children) ran or waited to run so far (``process_cpu_demand``); None
        if unknown."""
        return process_cpu_demand(self.process.pid)

    def wait_ready(self, request_id: str, timeout_s: float) -> Outcome | None:
        """Wait for the init phase; None when ready, else the outcome to report (environment lost)."""
        if not self._begin():
            return exit_outcome(request_id, None)
        deadline = time.monotonic() + max(INIT_TIMEOUT_S, timeout_s)
        try:
            worker.write_frame(self._to_child, self._init)
            reply = self._read_frame(deadline)
        except TimeoutError:
            self.kill()
            return timeout_outcome(request_id, timeout_s)
        except (EOFError, BrokenPipeError):
            return exit_outcome(request_id, self._reap())
        finally:
            self._busy = False
        if reply[:1] == worker.READY:
            return None
        error = json.loads(reply[1:])
        error["requestId"] = request_id
        return Outcome(json.dumps(error).encode(), error=True, env_lost=True)

    def invoke(self, request_id: str, payload: bytes, timeout_s: float) -> Outcome:
        """Run one invocation with the function's timeout; kills the process if it runs over."""
        if not self._begin():
            return exit_outcome(request_id, None)
        try:
            deadline = time.monotonic() + timeout_s
            header = b"%s\0%d\0" % (request_id.encode(), int(timeout_s * 1000))
            try:
                worker.write_frame(self._to_child, header + payload)
                reply = self._read_frame(deadline)
            except TimeoutError:
                self.kill()
                return timeout_outcome(request_id, timeout_s)
            except (EOFError, BrokenPipeError):
                return exit_outcome(request_id, self._reap())
            return Outcome(reply[1:], error=reply[:1] != worker.RESULT)
        finally:
            self._busy = False

    def _begin(self) -> bool:
        with self._lock:
            self._busy = not self._stopping
            return self._busy

    def interrupt(self) -> None:
        """The runtime is closing: kill the worker if an invocation (or init) is in flight, refuse new ones.

        An idle environment is left to its slot thread, which closes it gracefully. Safe from any thread.
        """
        with self._lock:
            self._stopping = True
            busy = self._busy
        if busy:
            self.kill()

    def _read_frame(self, deadline: float) -> bytes:
        return worker.split_frame(self._read(worker.CHUNK, deadline), lambda size: self._read_exact(size, deadline))

    def _read(self, size: int, deadline: float) -> bytes:
        """Up to ``size`` bytes once any are ready; ``TimeoutError`` past the deadline, EOFError at EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._poll.poll(remaining * 1000):
            raise TimeoutError
        chunk = os.read(self._from_child, min(size, worker.MAX_READ))
        if not chunk:
            raise EOFError
        return chunk

    def _read_exact(self, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        while size:
            chunk = self._read(size, deadline)
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _reap(self) -> int | None:
        import subprocess

        try:
            return self.process.wait(timeout=_GRACEFUL_EXIT_S)
        except subprocess.TimeoutExpired:  # closed its pipe but still running: not a usable environment
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """Kill the worker now (timeout, runtime close). Safe from any thread."""
        if self.process.returncode is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        """Shut down gracefully: EOF on its request pipe ends the worker's loop; kill it if it lingers."""
        if self._closed:
            return
        self._closed = True
        os.close(self._to_child)
        self._reap()
        os.close(self._from_child)

    def __repr__(self) -> str:
        return f"<ProcessEnvironment pid={self.pid} returncode={self.process.returncode}>"


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_demand(pid: int) -> float | None:
    """Seconds process ``pid`` has used a CPU *or waited, runnable, for one*: every thread's CPU time (ended
    threads included), the CPU time of the children it waited for (a handler that runs ffmpeg), and the same
    for the children still running, down its process tree. None where /proc cannot say (not Linux, the
    process is gone).

    Waiting counts because it is demand too: a CPU-bound worker on a machine busy with other work runs only
    part of the time, and its CPU time alone would make it look half idle. CPU time comes from
    /proc/<pid>/stat (clock ticks, 10 ms: coarser than one short invocation, exact summed over many; and, unlike
    /proc/<pid>/schedstat, it counts every thread: PyAV, torch and BLAS handlers decode and compute on several),
    the waiting from each live thread's /proc/<pid>/task/<tid>/schedstat (nanoseconds)."""
    try:
        return _demand(pid, 0)
    except (OSError, ValueError, IndexError):
        return None


def _demand(pid: int, depth: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        # The fields after the ")" that closes the command name (which may hold spaces): state is the first,
        # utime, stime, cutime and cstime the 12th to 15th.
        fields = f.read().rpartition(b")")[2].split()
    demand = sum(int(v) for v in fields[11:15]) / _CLOCK_TICKS
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return demand
    for tid in threads:
        task = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{task}/schedstat", "rb") as f:
                demand += int(f.read().split()[1]) / 1e9  # time runnable, waiting for a CPU
            if depth < _MAX_DEPTH:
                with open(f"{task}/children", "rb") as f:
                    children = f.read().split()
            else:
                children = []
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile, or no such file here
            continue
        for child in children:
            try:
                demand += _demand(int(child), depth + 1)
            except (OSError, ValueError, IndexError):  # ended meanwhile: its time is in cutime next read
                continue
    return demand


_MAX_DEPTH = 3  # worker -> ffmpeg -> its helpers: deep enough


def context_info(function_name: str, memory_mb: int, region: str, log_stream: str) -> dict[str, Any]:
    """The per-environment fields of ``LambdaContext``."""
    return {
        "function_name": function_name,
        "invoked_function_arn": f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function_name}",
        "memory_limit_in_mb": str(memory_mb),
        "log_group_name": f"/aws/lambda/{function_name}",
        "log_stream_name": log_stream,
    }
