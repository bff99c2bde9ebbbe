"""``fave serve``: the deployed stack of template.yaml on this machine, with no Docker and no AWS account.

One process tree (``fave.local.serve.LocalServices``): the HTTP API on ``--host:--port`` (each request the API
Gateway 2.0 event ``fave.app.handler`` gets on AWS; IAM auth off), a local S3 endpoint on ``--s3-port`` holding
the artifacts bucket (kept in the ``--store`` folder; objects put under the upload prefix start requests, as
S3's event notification does on AWS), the schedule tick (``--tick`` overrides the template's rate), the
completions queue, and Lambda's Invoke API for the functions' own calls. The web view (``fave.web``) is
mounted under ``/ui``, and ``/`` redirects there.

``--store s3://bucket[/prefix]`` uses that store instead (with your AWS credentials) and starts no local S3
endpoint. Ctrl-C or SIGTERM stops it (exit 0): requests still running resume on the next ``fave serve`` of the
same store.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fave.cli.main import UsageError

if TYPE_CHECKING:
    from fave_shared.store import ObjectStore

    from fave.local.serve import LocalServices

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

UI_PREFIX = "/ui"


def cmd_serve(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import check_store_uri, load_local_pipeline, store_uri
    from fave.local.serve import LocalServices
    from fave.local.template import load_template

    for option, port in (("--port", args.port), ("--s3-port", args.s3_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{option} {port}: not a port (0-65535; 0 picks a free one)")
    if args.tick is not None and not args.tick > 0:
        raise UsageError(f"--tick {args.tick:g}: must be more than 0 seconds")
    store = store_uri(args.store)
    check_store_uri(store)
    if not store.startswith("s3://") and Path(store).exists() and not Path(store).is_dir():
        raise UsageError(f"--store {store}: exists and is not a directory")
    pipeline_path = Path(args.pipeline).resolve()
    if not pipeline_path.is_file():
        raise UsageError(f"--pipeline {args.pipeline}: no such file")
    needed = ("werkzeug",) if store.startswith("s3://") else ("werkzeug", "moto")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"fave serve needs {', '.join(missing)}: pip install 'fave[serve]' (or requirements/dev.txt)")
    pipeline = load_local_pipeline(pipeline_path)  # PipelineError: one line, exit 2
    template = load_template(pipeline.template_path)
    logging.basicConfig(level=logging.WARNING, format="fave serve: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fave.local.serve").setLevel(logging.INFO)  # uploads noticed, requests resumed
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request (it would set INFO itself)
    services = LocalServices(
        template,
        pipeline_path,
        store=store,
        host=args.host,
        port=args.port,
        s3_port=args.s3_port,
        tick_s=args.tick,
        fallback=_web_view,
    )
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            services.start()
        except BaseException:
            services.stop()
            raise
        _banner(services, pipeline_path)
        # Not Event.wait(): the kernel may deliver SIGTERM to any of our threads, and Python runs the handler only
        # when the main thread next runs bytecode; blocked in a lock without a timeout, it never would (seen).
        while not signals:
            time.sleep(0.2)
        _say("fave serve: stopping (requests still running resume on the next fave serve of this store)")
        services.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _banner(services: LocalServices, pipeline_path: Path) -> None:
    assert services.gateway is not None
    api = services.gateway.url
    lines = [
        f"fave serve: {pipeline_path.name} on {services.template.path.name} (function {services.orchestrator})",
        f"  API: {api}   (POST {api}/requests, GET {api}/requests/ID ...; {api}/docs)",
        "  IAM auth: off (local); the API takes unsigned requests",
    ]
    if services.s3 is not None:
        source = f"S3 event {services.upload_event}" if services.upload_event else "the template's FAVE_UPLOAD_PREFIX"
        lines += [
            f"  S3: {services.s3.url}   bucket {services.bucket}   (--endpoint-url {services.s3.url})",
            f"  uploads: s3://{services.bucket}/{services.upload_prefix} starts a request "
            f"({source}; sidecar KEY.json first)",
            f"  store: {services.folder}   (fave status ID --store {services.folder}; "
            f"{services.s3.loaded} object(s) loaded)",
        ]
    else:
        lines += [f"  store: {services.store_uri}   (no local S3 endpoint: your AWS credentials)"]
    web = f"{api}{UI_PREFIX}/" if _make_web_app() is not None else "(not installed: fave.web)"
    lines += [f"  web view: {web}", f"  tick: {services.tick_source}"]
    if services.resumed:
        shown = ", ".join(services.resumed[:10]) + (", ..." if len(services.resumed) > 10 else "")
        lines.append(f"  resumed: {len(services.resumed)} interrupted request(s): {shown}")
    lines += [f"  warning: {warning}" for warning in services.warnings]
    for function, names in sorted(services.unresolved.items()):
        lines.append(f"  warning: {function}: {', '.join(names)} have no local value (the template's need a stack)")
    lines.append("Ctrl-C stops it.")
    with contextlib.suppress(BrokenPipeError, ValueError):
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _say(message: str) -> None:
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(message, file=sys.stderr, flush=True)


def _make_web_app() -> Callable[..., WsgiApp] | None:
    """``fave.web.make_app`` when the web view is installed (it is optional for the API), else None."""
    try:
        from fave.web import make_app
    except ImportError:
        return None
    return make_app


def _web_view(store: ObjectStore) -> WsgiApp:
    """What the gateway answers outside the API's routes: the web view under ``/ui``, ``/`` redirected there,
    API Gateway's 404 for anything else."""
    make_app = _make_web_app()
    ui = make_app(store, api_base="", banner="fave serve (local): IAM auth off") if make_app else None

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path == "/" and ui is not None:
            start_response("302 Found", [("Location", f"{UI_PREFIX}/"), ("Content-Length", "0")])
            return [b""]
        if ui is not None and (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")):
            return ui(environ, start_response)
        body = b'{"message":"Not Found"}'
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app
