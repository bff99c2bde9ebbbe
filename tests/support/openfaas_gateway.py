"""A local HTTP server that speaks the OpenFaaS gateway's protocol, running the REAL stage functions.

* ``POST /function/{name}``: runs the function now (``LocalRuntime.invoke_sync`` of the logical id the name maps
  to: its own worker processes, timeout and environment) and answers 200 with its result, or 500 with Lambda's
  error payload when it raised (what the python3-http shim of ``fave export --format openfaas`` answers);
* ``POST /async-function/{name}``: answers 202 with ``X-Call-Id`` (the caller's, else a new one) at once; a
  thread runs the function after ``callback_delay_s`` and POSTs its answer to ``X-Callback-Url`` with
  ``X-Function-Status``, ``X-Call-Id``, ``X-Function-Name`` and ``X-Duration-Seconds`` (as OpenFaaS's queue
  worker does), ``duplicate_callbacks`` times;
* basic auth when ``user`` / ``password`` are set (401 otherwise);
* scripted gateway refusals: ``throttle_first`` (names answered 429 on their first call), ``errors_first``
  (name -> how many first calls answer a plain-text 500, the gateway's or the watchdog's own failure).

``calls`` records every request (path, headers, body); ``callbacks`` every callback sent (url, status, answer).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fave.local.runtime import LocalRuntime


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes


class OpenFaaSGateway:
    def __init__(
        self,
        template: Path,
        names: Mapping[str, str],
        *,
        user: str | None = None,
        password: str | None = None,
        callback_delay_s: float = 0.0,
        duplicate_callbacks: int = 1,
        throttle_first: set[str] | None = None,
        errors_first: Mapping[str, int] | None = None,
        runtime_env: Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self.logical_ids = dict(names)  # OpenFaaS name -> logical id
        self.user, self.password = user, password
        self.callback_delay_s = callback_delay_s
        self.duplicate_callbacks = duplicate_callbacks
        self.throttle_first = set(throttle_first or ())
        self.errors_first = dict(errors_first or {})
        self.runtime_env = dict(runtime_env or {})
        self.calls: list[Call] = []
        self.callbacks: list[tuple[str, int, int]] = []  # (url, X-Function-Status, orchestrator's answer)
        self._runtime: LocalRuntime | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- life ---------------------------------------------------------------------------------------------

    def start(self) -> OpenFaaSGateway:
        threading.Thread(target=self._server.serve_forever, name="openfaas-gateway", daemon=True).start()
        return self

    def set_runtime_env(self, env: Mapping[str, str]) -> None:
        """Environment for the functions (e.g. a store's endpoint), before the first call."""
        self.runtime_env.update(env)

    @property
    def runtime(self) -> LocalRuntime:
        with self._lock:
            if self._runtime is None:
                self._runtime = LocalRuntime(self.template, env_overrides=self.runtime_env)
            return self._runtime

    def wait_callbacks(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.wait_callbacks(10.0)
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()

    # ---- protocol -----------------------------------------------------------------------------------------

    def _refusal(self, name: str, headers: Mapping[str, str]) -> tuple[int, bytes] | None:
        if self.user is not None:
            import base64

            expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if headers.get("authorization") != expected:
                return 401, b"Unauthorized"
        if name not in self.logical_ids:
            return 404, f"function {name} not found".encode()
        with self._lock:
            if name in self.throttle_first:
                self.throttle_first.discard(name)
                return 429, b"Too Many Requests: max_inflight reached"
            if self.errors_first.get(name, 0) > 0:
                self.errors_first[name] -= 1
                return 500, b"upstream connect error"
        return None

    def run(self, name: str, body: bytes) -> tuple[int, bytes]:
        """Run the function as its python3-http shim would answer: 200 + result, or 500 + Lambda's error."""
        result = self.runtime.invoke_sync(self.logical_ids[name], json.loads(body or b"null"))
        return (200 if result.ok else 500), json.dumps(result.payload).encode()

    def _callback(self, name: str, url: str, call_id: str, body: bytes) -> None:
        time.sleep(self.callback_delay_s)
        started = time.monotonic()
        status, answer = self.run(name, body)
        headers = {
            "X-Function-Status": str(status),
            "X-Call-Id": call_id,
            "X-Function-Name": name,
            "X-Duration-Seconds": f"{time.monotonic() - started:.3f}",
            "Content-Type": "application/json",
        }
        for _ in range(self.duplicate_callbacks):
            request = urllib.request.Request(url, data=answer, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    code = response.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError:
                code = 0
            with self._lock:
                self.callbacks.append((url, status, code))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with gateway._lock:
                    gateway.calls.append(Call(self.path, headers, body))
                kind, _, name = self.path.strip("/").partition("/")
                name = name.split("?", 1)[0].strip("/")
                if kind not in ("function", "async-function"):
                    self._answer(404, b"not found")
                    return
                refused = gateway._refusal(name, headers)
                if refused is not None:
                    self._answer(*refused)
                    return
                call_id = headers.get("x-call-id") or str(uuid.uuid4())
                if kind == "function":
                    status, answer = gateway.run(name, body)
                    self._answer(status, answer, {"Content-Type": "application/json", "X-Call-Id": call_id})
                    return
                url = headers.get("x-callback-url")
                if url:
                    thread = threading.Thread(
                        target=gateway._callback, args=(name, url, call_id, body), name="openfaas-queue-worker"
                    )
                    with gateway._lock:
                        gateway._threads.append(thread)
                    thread.start()
                self._answer(202, b"", {"X-Call-Id": call_id})

        return Handler
