"""``fave ui --store DIR|s3://...``: the web view of a store (``fave.web``) on a local HTTP server.

Read-only: there is no HTTP API behind it, so the resume and cancel buttons are disabled and name the commands
that do it (``fave serve`` serves the view with the API). The server is the standard library's ``wsgiref``
with a thread per connection (the request page polls while other tabs load), so nothing is added to fave's
dependencies. ``/`` redirects to ``/ui/``; Ctrl-C stops it (exit 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from fave_shared.errors import ValidationError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["cmd_ui", "serve_ui"]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open keep-alive connection must not hold up Ctrl-C
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per poll of a running request would drown the URL the person needs


def _with_root_redirect(app: WSGIApplication) -> WSGIApplication:
    def root(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in ("", "/"):
            start_response("302 Found", [("Location", "/ui/"), ("Content-Length", "0")])
            return []
        return app(environ, start_response)

    return root


def serve_ui(app: WSGIApplication, host: str, port: int) -> _ThreadingServer:
    """A threaded HTTP server of ``app`` (with ``/`` → ``/ui/``) bound to ``host:port`` (0: a free port)."""
    server = make_server(
        host, port, _with_root_redirect(app), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    assert isinstance(server, _ThreadingServer)
    return server


def cmd_ui(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import open_any_store, store_uri
    from fave.web import make_app

    store = open_any_store(store_uri(args.store))
    try:
        server = serve_ui(make_app(store, api_base=None), args.host, args.port)
    except OSError as exc:
        raise ValidationError(f"--port {args.port}: cannot listen on {args.host}: {exc.strerror}") from None
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    print(f"fave ui: serving {store.uri} on http://{shown}:{port}/ui/ (Ctrl-C stops it)", flush=True)
    # A shell starts a background job with SIGINT ignored; a server someone started wants Ctrl-C (and a test's
    # SIGINT) to stop it whatever its parent did.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("fave ui: stopped", file=sys.stderr, flush=True)
    finally:
        server.server_close()
    return 0
