"""``fave worker``: admit requests from the admission queue and drive them in this process until stopped.

Runs in the foreground (a systemd service: examples/systemd/fave-worker.service). SIGTERM or Ctrl-C: nothing
more is admitted, the invocations running get ``--grace`` to finish and their steps commit, then the worker lets
go of its requests and exits 0; they stay RUNNING, and the next ``fave worker`` on the store resumes them where
they were. A second signal skips the rest of the grace period.

``--once`` (cron, CI): drain every due entry, then exit: 0 if every request this run drove COMPLETED (or a signal
stopped it, as above), 1 if one ended FAILED or CANCELLED (its entry is retried after the queue's cooldown, or
is FAILED for good: ``fave queue list --status FAILED``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from fave_shared.errors import ValidationError

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["add_worker_parser", "cmd_worker"]


def _seconds(text: str, option: str, *, minimum: float = 0.0) -> float:
    from fave.core.durations import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ValidationError(f"{option}: {exc}") from None
    if value < minimum or (minimum > 0 and value == 0):
        raise ValidationError(f"{option}: must be {'positive' if minimum > 0 else 'at least 0'}, got {text}")
    return value


def _say(message: str) -> None:
    """One line of the worker's log on stderr (what journald keeps), with the time."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} fave worker: {message}", file=sys.stderr, flush=True)


def add_worker_parser(sub: Any, store_opt: Any, func: Any) -> None:
    """The ``worker`` subcommand (``fave.cli.main.build_parser``)."""
    worker = sub.add_parser(
        "worker",
        help="admit requests from the queue and drive them until stopped (SIGTERM: graceful)",
        description="Admit requests from the pipeline's admission queue (fave queue) and drive them in this "
        "process, at most --concurrency at once, with one local runtime. SIGTERM or Ctrl-C stops it gracefully "
        "(exit 0): nothing more is admitted, running invocations get --grace to finish, and the requests left "
        "RUNNING are resumed by the next fave worker on the same store. --once drains the due entries and exits "
        "(1 if a request failed).",
    )
    store_opt(worker)
    worker.add_argument("--pipeline", default="pipeline.yaml", help="pipeline file (default pipeline.yaml)")
    worker.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="requests in flight at most (default: the pipeline's operations.max_requests_in_flight)",
    )
    worker.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on PORT")
    worker.add_argument(
        "--grace", default="60s", metavar="DURATION", help="after SIGTERM: how long running invocations get (60s)"
    )
    worker.add_argument("--poll", default="1s", metavar="DURATION", help="how often to ask the queue (default 1s)")
    worker.add_argument("--once", action="store_true", help="drain the due entries, then exit (1 if one failed)")
    worker.add_argument("--id", dest="worker_id", help="this worker's name in the queue (default HOST:PID)")
    worker.set_defaults(func=func)


def cmd_worker(args: argparse.Namespace) -> int:
    import logging
    import signal
    import socket
    import threading

    from fave.local.orchestrator import load_local_pipeline, local_orchestrator, open_any_store, store_uri
    from fave.queue import AdmissionQueue
    from fave.worker import Worker, WorkerOptions
    from fave.worker_hooks import operations_hooks

    grace = _seconds(args.grace, "--grace")
    poll = _seconds(args.poll, "--poll", minimum=0.001)
    if args.concurrency is not None and args.concurrency < 1:
        raise ValidationError(f"--concurrency: must be at least 1, got {args.concurrency}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ValidationError(f"--metrics-port: must be a port number, got {args.metrics_port}")
    pipeline = load_local_pipeline(args.pipeline)
    store = open_any_store(store_uri(args.store))
    ops = pipeline.operations
    options = WorkerOptions(
        concurrency=args.concurrency or ops.max_requests_in_flight,
        grace_s=grace,
        once=args.once,
        poll_s=poll,
        stale_after_s=ops.stale_after_s,
    )
    logging.basicConfig(level=logging.WARNING, format="fave worker: %(levelname)s %(name)s: %(message)s")
    hooks = operations_hooks(store, pipeline, live_metrics=args.metrics_port is not None)
    stop_metrics = None
    if args.metrics_port is not None:
        stop_metrics = _serve_metrics(args.metrics_port, store, pipeline.name, hooks.live)
    signals: list[int] = []
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)
        (hurry if stop.is_set() else stop).set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    orchestrator = local_orchestrator(pipeline, store)
    try:
        worker = Worker(
            orchestrator,
            AdmissionQueue(store, pipeline.name),
            worker_id=args.worker_id or f"{socket.gethostname()}:{os.getpid()}",
            options=options,
            hooks=hooks,
            say=_say,
        )
        mode = "draining the queue once" if args.once else "until SIGTERM"
        _say(
            f"{pipeline.name} on {store.uri}: at most {options.concurrency} request(s) in flight, {mode} "
            f"(pid {os.getpid()})"
        )
        report = worker.run(stop, hurry=hurry)
    finally:
        orchestrator.close()
        if stop_metrics is not None:
            stop_metrics()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say(
        f"exiting: {len(report.completed)} completed, {len(report.failed)} failed, "
        f"{len(report.left_running)} left running, at most {report.max_in_flight} in flight"
    )
    return 1 if args.once and report.failed and not signals else 0


def _serve_metrics(port: int, store: Any, pipeline: str, live: Any) -> Any:
    try:
        from fave.metrics import serve_prometheus
    except ImportError:
        raise ValidationError("--metrics-port needs fave.metrics (this installation has none)") from None
    try:
        server = serve_prometheus(port, store, pipeline, live)
    except ImportError:
        raise ValidationError("--metrics-port needs prometheus-client: pip install prometheus-client") from None
    except OSError as exc:
        raise ValidationError(f"--metrics-port {port}: cannot listen ({exc.strerror or exc})") from None
    _say(f"metrics on http://127.0.0.1:{getattr(server, 'port', port)}/metrics")
    return server
