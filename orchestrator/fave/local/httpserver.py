"""The life of a local HTTP endpoint (``fave serve``'s API gateway, Lambda API and S3): one werkzeug server on
a thread, and a count of the calls still in flight so that a clean stop can wait for them.

A subclass gives ``_wsgi_app()``; ``start()`` binds ``host:port`` (port 0: a free one; ``OSError`` if it is
taken), ``url`` is ``http://HOST:PORT``, ``stop()`` stops taking requests (those being answered finish on
their own threads). ``in_flight()`` (or ``call_started``/``call_ended`` across threads) marks a call that
``wait_idle`` waits for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

__all__ = ["BackgroundServer", "StartResponse", "WsgiApp"]


class BackgroundServer:
    """A threaded werkzeug server for ``_wsgi_app()`` on ``host:port``, run on a daemon thread."""

    #: The name of the serving thread (and of what "is not started" errors name).
    thread_name = "fave-http"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, request_handler: Any = None) -> None:
        self._host = host
        self._port = port
        self._request_handler = request_handler
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._idle = threading.Condition()

    def _wsgi_app(self) -> WsgiApp:
        raise NotImplementedError

    # -- life -------------------------------------------------------------------------------------------------

    def start(self) -> Self:
        from werkzeug.serving import make_server

        options = {"request_handler": self._request_handler} if self._request_handler is not None else {}
        self._server = make_server(self._host, self._port, self._wsgi_app(), threaded=True, **options)
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.thread_name}: not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The endpoint URL, ``http://HOST:PORT``."""
        return f"http://{self._host}:{self.port}"

    # -- calls in flight --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a call as in flight while the block runs (``wait_idle`` waits for it)."""
        self.call_started()
        try:
            yield
        finally:
            self.call_ended()

    def call_started(self) -> None:
        """A call began that may end on another thread (pair it with ``call_ended``)."""
        with self._idle:
            self._busy += 1

    def call_ended(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is in flight (at most ``timeout`` s); whether none is."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True
