"""A local S3 endpoint: moto's S3 over HTTP, with the one guarantee fave needs that moto lacks.

fave commits a request with conditional writes (``If-Match`` / ``If-None-Match``): two writers racing on one
key must see exactly one win and one ``412``. moto checks the condition and then stores the object in two
steps without a lock, so under concurrent requests both writers can win and one update is lost (seen in our
CI). ``S3Server`` serialises every request that changes the store (PUT, POST, DELETE) behind one lock, which
makes check-then-act atomic; reads (GET, HEAD) still run concurrently. A local endpoint does a few hundred
writes a second either way, far more than a machine's Lambda emulator drives.

``S3Server(host, port).start()`` serves until ``stop()``; ``url`` is its endpoint for boto3 and the AWS CLI
(``--endpoint-url``). ``after_write`` (optional) is called with the request's method, path and status after
each successful write, under the lock: ``fave serve`` turns object creations under the upload prefix into
S3 event notifications there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from fave.local.httpserver import BackgroundServer, StartResponse, WsgiApp

__all__ = ["S3Server", "WriteHook"]

#: Called after a successful write: (method, path without the query, query string, status code).
WriteHook = Callable[[str, str, str, int], None]

_WRITES = frozenset({"PUT", "POST", "DELETE"})


class _SerialisedWrites:
    """WSGI middleware: one write at a time (the body is read inside the lock, so the write is whole)."""

    def __init__(self, app: WsgiApp, after_write: WriteHook | None) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._after_write = after_write

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method not in _WRITES:
            return self._app(environ, start_response)
        status: list[int] = []

        def recording_start_response(code: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(code.split(" ", 1)[0]))
            return start_response(code, headers, exc_info) if exc_info else start_response(code, headers)

        with self._lock:
            body = b"".join(self._app(environ, recording_start_response))
            if self._after_write is not None and status and 200 <= status[0] < 300:
                path, query = str(environ.get("PATH_INFO", "")), str(environ.get("QUERY_STRING", ""))
                self._after_write(method, path, query, status[0])
        return [body]


class S3Server(BackgroundServer):
    """moto's S3 over HTTP on ``host:port`` (port 0: a free one), its writes serialised (see the module docs)."""

    thread_name = "fave-s3"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, after_write: WriteHook | None = None) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler

        # moto's handler keeps S3 metadata headers with underscores, which werkzeug's own drops.
        super().__init__(host, port, request_handler=MotoRequestHandler)
        self._after_write = after_write

    def _wsgi_app(self) -> WsgiApp:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        return _SerialisedWrites(DomainDispatcherApplication(create_backend_app), self._after_write)
