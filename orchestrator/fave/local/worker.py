"""What runs inside one local execution environment: load the handler once, then serve invocations.

Used two ways by ``fave.local.runtime``:

* as a script, ``python -P worker.py FD_IN FD_OUT``: one worker process = one warm Lambda execution
  environment. It is started as a plain script (not through ``multiprocessing``) so the environment imports
  nothing of the orchestrator and never re-imports the parent's ``__main__``; hence this module uses the
  standard library only and nothing from ``fave``.
* as a module, for ``thread`` isolation: ``load_handler``, ``run_handler`` and ``LambdaContext`` are the
  same code, so both isolations produce byte-identical error payloads.

Wire protocol (frames are a 4-byte big-endian length + body, over two pipes, strictly one request then one
reply, so a frame never has to be split or buffered):

* parent → worker, once: the init JSON (``handler``, ``sys_path``, context fields).
* worker → parent, once: ``K`` (ready) or ``I`` + error JSON (init failed; the worker then exits).
* per invocation, parent → worker: ``request_id \\0 remaining_ms \\0 payload-json``; worker → parent:
  ``R`` + response JSON or ``E`` + error JSON. JSON never contains a raw NUL, so splitting is safe.
"""

from __future__ import annotations

import decimal
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

Handler = Callable[[Any, Any], Any]

READY = b"K"
INIT_ERROR = b"I"
RESULT = b"R"
ERROR = b"E"

_THIS_FILE = os.path.abspath(__file__)


# ---------------------------------------------------------------------------------------------------------
# Framing


def write_frame(fd: int, body: bytes) -> None:
    """Write one frame; a single ``os.write`` for anything that fits the pipe buffer."""
    view = memoryview(len(body).to_bytes(4, "big") + body)
    while view:
        view = view[os.write(fd, view) :]


#: Bytes asked for by the first read of a frame (a pipe's default capacity on Linux).
CHUNK = 65536
#: Largest single read: os.read allocates the full size asked for, per call.
MAX_READ = 1 << 20


def read_exact(fd: int, size: int) -> bytes:
    """Read exactly ``size`` bytes (blocking). ``EOFError`` if the other side closed first."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, MAX_READ))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def split_frame(first: bytes, read_more: Callable[[int], bytes]) -> bytes:
    """The body of the frame that starts with ``first`` (one read of up to ``CHUNK`` bytes); ``read_more(n)``
    reads exactly n more. One read usually holds a whole small frame, saving a syscall per message."""
    if len(first) < 4:
        first += read_more(4 - len(first))
    size = int.from_bytes(first[:4], "big")
    body = first[4:]
    if len(body) < size:
        body += read_more(size - len(body))
    elif len(body) > size:  # impossible in a strict request/reply exchange
        raise ValueError("protocol error: more than one frame in a read")
    return body


def read_frame(fd: int) -> bytes:
    """Read one frame (blocking). ``EOFError`` if the other side closed."""
    first = os.read(fd, CHUNK)
    if not first:
        raise EOFError
    return split_frame(first, lambda size: read_exact(fd, size))


# ---------------------------------------------------------------------------------------------------------
# The handler's view: context, loading, calling


class LambdaContext:
    """The ``context`` argument, with the attributes of Lambda's Python runtime.

    As in Lambda, ``memory_limit_in_mb`` is a string and ``function_version`` is ``"$LATEST"``.
    """

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(self, aws_request_id: str, deadline: float, info: dict[str, str]) -> None:
        self.aws_request_id = aws_request_id
        self.function_name = info["function_name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = info["invoked_function_arn"]
        self.memory_limit_in_mb = info["memory_limit_in_mb"]
        self.log_group_name = info["log_group_name"]
        self.log_stream_name = info["log_stream_name"]
        self.client_context: Any = None
        self.identity: Any = None
        self._deadline = deadline  # time.monotonic() value

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function times out (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class HandlerLoadError(Exception):
    """The handler could not be loaded; ``payload`` is the error Lambda reports for it."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.payload = make_error(message, error_type, "", stack or [])


def make_error(message: str, error_type: str, request_id: str, stack: list[str]) -> dict[str, Any]:
    """An error payload exactly as Lambda's Python runtime (awslambdaric) builds it."""
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": stack}


def exception_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    """The payload of an exception raised by user code; the runtime's own frames are left out."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != _THIS_FILE]
    return make_error(str(exc), type(exc).__name__, request_id, traceback.format_list(frames))


def load_handler(handler: str, *, code_uri: str | None = None, module_name: str | None = None) -> Handler:
    """Import the handler's module and return the handler (Lambda's init phase).

    In a worker process the module is imported under its own name (the environment is private). For thread
    isolation pass ``code_uri`` and a ``module_name`` unique in the parent: the file is then loaded from
    ``code_uri`` under that name, so two functions' ``app.py`` do not collide in ``sys.modules``.
    Raises ``HandlerLoadError`` with Lambda's error types; other exceptions raised by the module propagate.
    """
    modname, _, fname = handler.rpartition(".")
    if not modname or not fname:
        raise HandlerLoadError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': expected module.function")
    try:
        if module_name is None:
            module = importlib.import_module(modname.replace("/", "."))
        else:
            module = _import_file(modname, Path(code_uri or "."), module_name)
    except ImportError as e:
        raise HandlerLoadError("Runtime.ImportModuleError", f"Unable to import module '{modname}': {e}") from e
    except SyntaxError as e:
        trace = [f'  File "{e.filename}" Line {e.lineno}\n    {e.text}']
        raise HandlerLoadError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {e}", trace) from e
    function = getattr(module, fname, None)
    if not callable(function):
        raise HandlerLoadError("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")
    return function  # type: ignore[no-any-return]


def _import_file(modname: str, code_uri: Path, module_name: str) -> ModuleType:
    cached = sys.modules.get(module_name)
    if cached is not None:
        return cached
    base = code_uri / modname.replace("/", os.sep).replace(".", os.sep)
    if base.with_suffix(".py").is_file():
        spec = importlib.util.spec_from_file_location(module_name, base.with_suffix(".py"))
    elif (base / "__init__.py").is_file():
        spec = importlib.util.spec_from_file_location(
            module_name, base / "__init__.py", submodule_search_locations=[str(base)]
        )
    else:
        raise ModuleNotFoundError(f"No module named '{modname}'")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # a failed init leaves nothing behind, so the next try re-imports
        raise
    return module


def _lambda_default(value: Any) -> Any:
    # Lambda's marshaller serialises Decimal (DynamoDB numbers) as a number.
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Built once: json.dumps(default=...) would build a new encoder per response.
_encoder = json.JSONEncoder(default=_lambda_default)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _encode_response(result: Any) -> str:
    """``_encoder.encode(result)``: the same text. With the C accelerator, its encoder is called directly (a
    fresh one per response, as ``encode`` makes, for its own circular-reference marks), without ``encode``'s
    Python steps, which cost more than encoding a small response."""
    if _c_make_encoder is None:
        return _encoder.encode(result)
    encode = _c_make_encoder(
        {}, _lambda_default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return "".join(encode(result, 0))


_decoder = json.JSONDecoder()
_decode = _decoder.decode
# What raw_decode calls (the C scanner), minus raw_decode's own frame; typeshed does not declare it.
_scan_once: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def decode_json(data: bytes) -> Any:
    """``json.loads`` for the UTF-8 JSON this runtime moves around, minus its encoding sniffing and, for a
    document without surrounding whitespace (what every JSON encoder here writes), its two whitespace scans:
    together most of the cost of decoding a small payload. Anything else gets ``json.loads``'s own answer."""
    text = data.decode()
    try:
        value, end = _scan_once(text, 0)
    except (json.JSONDecodeError, StopIteration):  # StopIteration: no value where one starts
        return _decode(text)  # leading whitespace (decoded) or not JSON (its error)
    if end != len(text):
        return _decode(text)  # trailing whitespace or extra data: the same
    return value


def run_handler(handler: Handler, payload: bytes, context: LambdaContext) -> tuple[bool, bytes]:
    """Decode the event, call the handler, encode the response: ``(True, response)`` or ``(False, error)``.

    Catches ``Exception`` only: ``SystemExit`` ends a worker process like it ends a Lambda runtime.
    """
    try:
        result = handler(decode_json(payload), context)
    except Exception as e:
        return False, json.dumps(exception_payload(e, context.aws_request_id)).encode()
    try:
        return True, _encode_response(result).encode()
    except (TypeError, ValueError) as e:
        error = make_error(f"Unable to marshal response: {e}", "Runtime.MarshalError", context.aws_request_id, [])
        return False, json.dumps(error).encode()


# ---------------------------------------------------------------------------------------------------------
# The worker process


def serve(fd_in: int, fd_out: int) -> int:
    """Init, then answer invocations until the parent closes the request pipe. Returns the exit status.

    The parent going away at any point (EOF on the request pipe, a broken reply pipe) ends the worker
    quietly with status 0, even before the init frame arrived: the runtime closes a pre-warmed environment
    that is still starting without ever sending it one. Nobody is left to report to, and a traceback would
    land on the terminal the worker shares with the ``fave`` command.
    """
    try:
        return _serve(fd_in, fd_out)
    except (EOFError, BrokenPipeError):
        return 0


def _serve(fd_in: int, fd_out: int) -> int:
    init = json.loads(read_frame(fd_in))
    sys.path[:] = init["sys_path"]
    info: dict[str, str] = init["context"]
    try:
        handler = load_handler(init["handler"])
    except HandlerLoadError as e:
        write_frame(fd_out, INIT_ERROR + json.dumps(e.payload).encode())
        return 1
    except Exception as e:  # the module raised while importing: Lambda reports the exception itself
        write_frame(fd_out, INIT_ERROR + json.dumps(exception_payload(e, "")).encode())
        return 1
    write_frame(fd_out, READY)
    while True:
        request_id, remaining_ms, payload = read_frame(fd_in).split(b"\0", 2)
        context = LambdaContext(request_id.decode(), time.monotonic() + int(remaining_ms) / 1000, info)
        ok, body = run_handler(handler, payload, context)
        # Lambda ships a function's log lines when the invocation ends; so do we (pipes are buffered).
        _flush_logs()
        write_frame(fd_out, (RESULT if ok else ERROR) + body)


def _flush_logs() -> None:
    """Flush stdout and stderr. One whose reader is gone (``fave run ... | head``) is pointed at /dev/null:
    its log lines are lost, as they would be, but neither this invocation nor the interpreter's final flush
    fails over it (a BrokenPipeError here is not the runtime going away)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started without that descriptor
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
