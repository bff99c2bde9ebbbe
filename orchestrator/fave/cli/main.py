"""``fave``: run, watch, resume and cancel requests on one machine (or against S3).

Exit codes: 0 request COMPLETED (or command succeeded), 1 request FAILED or CANCELLED, 2 bad input
(one line on stderr naming the problem).

Start-up is part of every command's time (``fave bench startup``): this module imports only what the
parser needs, and each command imports what it uses (``fave status`` no runtime, ``fave run`` no boto3).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fave_shared.errors import FaveError, ValidationError

from fave.core.model import RequestState, RequestStatus, Start

if TYPE_CHECKING:
    from fave_shared.store import ObjectStore

    from fave.service import Orchestrator

#: ``fave.local.orchestrator.DEFAULT_PIPELINE`` and ``fave.status.UNREADABLE``, spelled here so that building
#: the parser imports neither (tests/functional/test_cli_startup.py checks that they agree).
DEFAULT_PIPELINE = "pipeline.yaml"
UNREADABLE = "UNREADABLE"


class UsageError(FaveError):
    """Bad command-line input."""


def _json_out(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def _print_status(doc: dict[str, Any]) -> None:
    print(f"request {doc['request_id']}: {doc['status']}")
    for name, s in doc["stages"].items():
        counts = f"{s['succeeded']}/{s['total']}" if s["total"] else "-"
        extra = f", {s['failed']} failed" if s["failed"] else ""
        extra += f", {s['skipped']} skipped" if s["skipped"] else ""
        took = f" in {s['duration_s']:.2f}s" if s["duration_s"] is not None else ""
        print(f"  {name:<14} {s['status']:<10} {counts}{extra}{took}")
    if doc["failure"]:
        print(f"failure: {doc['failure']}")
    if doc["cancel_reason"]:
        print(f"cancelled: {doc['cancel_reason']}")
    if doc["final"] is not None:
        from fave.keys import final_key

        print(f"final: {final_key(doc['request_id'])} in {doc['store']}")
        _print_final_summary(doc["final"])


def _print_final_summary(final: Any) -> None:
    if isinstance(final, dict) and isinstance(final.get("scenes"), list):
        print(f"query: {final.get('query')!r} -> {len(final['scenes'])} matching scene(s)")
        for scene in final["scenes"]:
            objects = ", ".join(f"{k} {v:.2f}" for k, v in (scene.get("objects") or {}).items())
            words = scene.get("transcript") or ""
            print(
                f"  {scene.get('start_s', 0):6.2f}-{scene.get('end_s', 0):6.2f}s  score {scene.get('score', 0):.2f}"
                f"  objects: {objects or '-'}  transcript: {words!r}"
            )
    else:
        text = json.dumps(final)
        print(text if len(text) < 400 else text[:400] + "...")


def _exit_code(status: str) -> int:
    return 0 if status == RequestStatus.COMPLETED.value else 1


# ---- commands ---------------------------------------------------------------------------------------


def _request_input(args: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if args.input:
        try:
            extra = json.loads(args.input)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--input is not valid JSON: {exc}") from None
        except RecursionError:
            raise UsageError("--input is nested too deeply") from None
        if not isinstance(extra, dict):
            raise UsageError("--input must be a JSON object")
    source = args.source
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UsageError(f"no such file: {source}")
        source = str(path.resolve())
    value = {**extra, "video_uri": source}
    if args.query is not None:
        value["query"] = args.query
    if args.profile is not None:
        value["profile"] = args.profile
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from fave.cli.progress import Progress
    from fave.local.orchestrator import load_local_pipeline, local_orchestrator, open_any_store, store_uri
    from fave.status import status_document

    store = open_any_store(store_uri(args.store))
    pipeline = load_local_pipeline(args.pipeline)
    request_input = _request_input(args)
    progress = Progress()
    orchestrator = local_orchestrator(pipeline, store, on_notify=progress.notify, faults=args.faults)
    _announce_faults(orchestrator)
    try:
        state = orchestrator.create(request_input, start=False)
        if args.detach:
            _spawn_driver(state.request_id, store.uri, str(pipeline.path), args.faults)
            print(state.request_id, file=sys.stderr)
            if args.json:
                _json_out(status_document(store, state.request_id))
            return 0
        print(f"request {state.request_id}", file=sys.stderr, flush=True)
        with orchestrator.hold(state.request_id):
            orchestrator.apply(state.request_id, [Start()])
            state = orchestrator.drive(state.request_id, on_step=progress)
    finally:
        orchestrator.close()
        _report_faults(orchestrator)
    return _finish(store, state, args.json)


def _announce_faults(orchestrator: Orchestrator) -> None:
    from fave.local.orchestrator import fault_plan

    plan = fault_plan(orchestrator)
    if plan is not None:
        print(f"fave: injecting faults {plan.spec.with_seed(plan.seed)}", file=sys.stderr, flush=True)


def _report_faults(orchestrator: Orchestrator) -> None:
    from fave.local.orchestrator import fault_plan

    plan = fault_plan(orchestrator)
    if plan is not None:
        print(plan.report_line(), file=sys.stderr, flush=True)


def _finish(store: ObjectStore, state: RequestState, as_json: bool) -> int:
    from fave.status import status_document

    doc = status_document(store, state.request_id)
    if as_json:
        _json_out(doc)
    else:
        _print_status(doc)
    return _exit_code(doc["status"])


def _spawn_driver(request_id: str, store: str, pipeline: str, faults: str | None = None) -> None:
    """Detached runs still need a process that drives them locally: start one in the background (with the
    same ``--faults``, if any).

    Its output goes to ``<store>/logs/<id>.log`` for a local store, nowhere for S3."""
    import subprocess

    if "://" in store:
        log = open(os.devnull, "wb")  # noqa: SIM115 - closed below, once the child has its copy
    else:
        log_dir = Path(store) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{request_id}.log", "ab")  # noqa: SIM115
    with log:
        command = [
            sys.executable,
            "-m",
            "fave.cli.main",
            "resume",
            request_id,
            "--store",
            store,
            "--pipeline",
            pipeline,
        ]
        subprocess.Popen(
            [*command, *(["--faults", faults] if faults else [])],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def cmd_status(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import open_any_store, store_uri
    from fave.status import status_document

    store = open_any_store(store_uri(args.store))
    doc = status_document(store, args.request_id)
    if args.json:
        _json_out(doc)
    else:
        _print_status(doc)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from fave.cli.progress import Progress
    from fave.clock import SystemClock
    from fave.lease import Leases
    from fave.local.orchestrator import load_local_pipeline, local_orchestrator, open_any_store, store_uri
    from fave.status import status_document

    store = open_any_store(store_uri(args.store))
    doc = status_document(store, args.request_id)
    pipeline_path = args.pipeline or doc["pipeline"] or DEFAULT_PIPELINE
    if args.detach:
        # The background driver resumes it; refuse here, in one line, if another process drives it now.
        Leases(store, SystemClock(), local_process=True).check_free(args.request_id)
        _spawn_driver(args.request_id, store.uri, str(load_local_pipeline(pipeline_path).path), args.faults)
        print(f"request {args.request_id}", file=sys.stderr, flush=True)
        return 0
    progress = Progress()
    orchestrator = local_orchestrator(pipeline_path, store, on_notify=progress.notify, faults=args.faults)
    _announce_faults(orchestrator)
    try:
        with orchestrator.hold(args.request_id):
            state = orchestrator.load(args.request_id)
            if state.status is RequestStatus.INIT:
                state = orchestrator.apply(args.request_id, [Start()])
            elif state.status is not RequestStatus.COMPLETED:
                state = orchestrator.resume(args.request_id)
            print(f"request {state.request_id}", file=sys.stderr, flush=True)
            state = orchestrator.drive(args.request_id, on_step=progress)
    finally:
        orchestrator.close()
        _report_faults(orchestrator)
    return _finish(store, state, args.json)


def cmd_cancel(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import load_local_pipeline, open_any_store, store_uri
    from fave.service import Orchestrator
    from fave.status import status_document

    store = open_any_store(store_uri(args.store))
    doc = status_document(store, args.request_id)

    orchestrator = Orchestrator(load_local_pipeline(args.pipeline or doc["pipeline"]), store)
    state = orchestrator.cancel(args.request_id, args.reason)
    print(f"request {state.request_id}: {state.status.value}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import open_any_store, store_uri
    from fave.status import list_rows

    store = open_any_store(store_uri(args.store))
    rows = list_rows(store, status=args.status, limit=args.limit)
    if args.json:
        _json_out(rows)
    else:
        for row in rows:
            detail = row.get("error") or f"{row.get('video_uri') or ''}  {row.get('query') or ''}"
            print(f"{row['request_id']}  {row['status']:<10} {detail}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from fave.cli.graph import render_mermaid, render_text
    from fave.local.orchestrator import load_local_pipeline

    pipeline = load_local_pipeline(args.pipeline)
    print(render_mermaid(pipeline) if args.format == "mermaid" else render_text(pipeline))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from fave.cli.chaos import default_store_dir, run_chaos
    from fave.local.faults import ENV_VAR, parse_faults
    from fave.local.orchestrator import load_local_pipeline, open_any_store, store_uri

    spec = parse_faults(args.faults, source="--faults") if args.faults is not None else None
    if spec is None:
        spec = parse_faults(os.environ.get(ENV_VAR), source=ENV_VAR)
    if not spec.active:
        raise UsageError(f"chaos: nothing to inject: give --faults SPEC (or ${ENV_VAR}), e.g. duplicate=0.3,drop=0.05")
    if args.runs < 1:
        raise UsageError("chaos: --runs must be at least 1")
    if args.max_resumes < 0:
        raise UsageError("chaos: --max-resumes must not be negative")
    pipeline = load_local_pipeline(args.pipeline)
    request_input = _json_object(args.input, "--input") if args.input else {}
    ignore = [name.strip() for name in (args.ignore_fields or "").split(",") if name.strip()]
    temporary = args.store is None
    store = open_any_store(str(default_store_dir()) if temporary else store_uri(args.store))
    report = run_chaos(
        pipeline,
        store,
        spec,
        args.runs,
        request_input=request_input,
        ignore_fields=ignore,
        max_resumes=args.max_resumes,
        driver_timeout_s=args.driver_timeout,
        out=None if args.json else sys.stdout,
    )
    if args.json:
        _json_out(report.to_json())
    if report.ok and temporary:
        import shutil

        shutil.rmtree(store.uri, ignore_errors=True)
    return 0 if report.ok else 1


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option} must be a JSON object")
    return value


def cmd_bench(args: argparse.Namespace) -> int:
    from fave.cli.bench import run_bench

    return run_bench(args)


# ---- parser -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "fave" else f"{self.prog.removeprefix('fave ')}: "
        self.exit(2, f"fave: error: {where}{message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fave", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    def store_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="DIR or s3://bucket[/prefix] (default $FAVE_STORE or ./fave-artifacts)")

    def faults_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--faults",
            metavar="SPEC",
            help="inject faults, e.g. duplicate=0.3,drop=0.05,delay=0-2s,crash_after_effect=0.01,throttle=0.1,seed=7 "
            "(default $FAVE_FAULTS; 'none' turns them off)",
        )

    run = sub.add_parser("run", help="start a request and drive it to the end")
    run.add_argument("source", help="a local video path or an s3:// URI (becomes video_uri)")
    run.add_argument("--query", help='what to find, e.g. "find scenes with cars"')
    run.add_argument("--profile", help="a profile of the pipeline (default: default)")
    run.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline file (default pipeline.yaml)")
    run.add_argument("--input", help="JSON object of extra input fields")
    run.add_argument("--detach", action="store_true", help="return at once; a background process drives it")
    run.add_argument("--json", action="store_true", help="print the status document as JSON on stdout")
    faults_opt(run)
    store_opt(run)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="show a request's status")
    status.add_argument("request_id")
    status.add_argument("--json", action="store_true")
    store_opt(status)
    status.set_defaults(func=cmd_status)

    resume = sub.add_parser("resume", help="re-run what did not succeed and drive the request to the end")
    resume.add_argument("request_id")
    resume.add_argument("--pipeline", help="pipeline file (default: the one the request was made with)")
    resume.add_argument("--detach", action="store_true")
    resume.add_argument("--json", action="store_true")
    faults_opt(resume)
    store_opt(resume)
    resume.set_defaults(func=cmd_resume)

    cancel = sub.add_parser("cancel", help="cancel a request")
    cancel.add_argument("request_id")
    cancel.add_argument("--reason", default="cancelled by user")
    cancel.add_argument("--pipeline")
    store_opt(cancel)
    cancel.set_defaults(func=cmd_cancel)

    lst = sub.add_parser("list", help="list requests, newest first")
    statuses = [s.value for s in RequestStatus] + [UNREADABLE]
    lst.add_argument("--status", choices=statuses + [s.lower() for s in statuses])
    lst.add_argument("--limit", type=int, default=0)
    lst.add_argument("--json", action="store_true")
    store_opt(lst)
    lst.set_defaults(func=cmd_list)

    graph = sub.add_parser("graph", help="draw the pipeline's DAG")
    graph.add_argument("--pipeline", default=DEFAULT_PIPELINE)
    graph.add_argument("--format", choices=["text", "mermaid"], default="text")
    graph.set_defaults(func=cmd_graph)

    chaos = sub.add_parser(
        "chaos", help="run a pipeline repeatedly under injected faults and check its invariants (exit 1 if broken)"
    )
    chaos.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline file (default pipeline.yaml)")
    chaos.add_argument("--runs", type=int, default=3, help="runs under faults, after one fault-free reference run")
    chaos.add_argument("--faults", metavar="SPEC", help="the faults of every run (default $FAVE_FAULTS)")
    chaos.add_argument("--input", help="JSON object: the request input of every run")
    chaos.add_argument(
        "--ignore-fields",
        metavar="A,B",
        help="final.json fields (at any depth) that may differ from the reference run, e.g. attempts,pid",
    )
    chaos.add_argument("--max-resumes", type=int, default=50, help="resumes allowed per run (default 50)")
    chaos.add_argument(
        "--driver-timeout", type=float, default=600.0, help="seconds one driver process may take (default 600)"
    )
    chaos.add_argument("--json", action="store_true", help="print the session report as JSON on stdout")
    chaos.add_argument("--store", help="DIR or s3://bucket[/prefix] (default: a temporary DIR, kept if a run fails)")
    chaos.set_defaults(func=cmd_chaos)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    fanout = bench_sub.add_parser("fanout", help="start -> N no-op async tasks -> fan-in")
    fanout.add_argument("--items", type=int, default=1000)
    fanout.add_argument("--store", help="DIR, s3://bucket[/prefix] or 'moto' (in-process moto S3)")
    fanout.add_argument("--json", action="store_true")
    fanout.set_defaults(func=cmd_bench)
    video = bench_sub.add_parser("video", help="the video pipeline vs. its stage bodies in one process")
    video.add_argument("--video", help="a local video file (default: the bundled sample)")
    video.add_argument("--query", default="find scenes with cars")
    video.add_argument("--profile", default="default")
    video.add_argument("--clips", choices=["parallel", "sequential"], default="parallel", help="straight-line clips")
    video.add_argument("--repeat", type=int, default=1, help="runs of each side; figures are the medians")
    video.add_argument("--store", help="DIR or s3://bucket[/prefix] for the fave side (default: a temporary DIR)")
    video.add_argument("--json", action="store_true")
    video.set_defaults(func=cmd_bench)
    api = bench_sub.add_parser("api", help="POST /requests latency through the Lambda entry point (moto S3)")
    api.add_argument("--requests", type=int, default=200, help="POSTs to time (after one cold call)")
    api.add_argument("--json", action="store_true")
    api.set_defaults(func=cmd_bench)
    cost = bench_sub.add_parser(
        "cost", help="$ per 1,000 tasks through the Lambda entry point as deployed (moto S3), beside Step Functions"
    )
    cost.add_argument("--items", type=int, default=1000, help="tasks of the no-op fan-out")
    cost.add_argument("--arrival", choices=["serial", "concurrent"], default="concurrent", help="how completions come")
    cost.add_argument("--invoke-latency-ms", type=float, default=20.0, help="each Lambda Invoke API call")
    cost.add_argument("--batch-size", type=int, default=1000, help="completions per orchestrator invocation at most")
    cost.add_argument("--json", action="store_true")
    cost.set_defaults(func=cmd_bench)
    startup = bench_sub.add_parser("startup", help="fave run of a 3-stage no-op chain and fave --help, exec to exit")
    startup.add_argument("--repeat", type=int, default=11, help="runs of each command; figures are the medians")
    startup.add_argument("--json", action="store_true")
    startup.set_defaults(func=cmd_bench)
    workloads = bench_sub.add_parser("workloads", help="the peer workloads W1-W4R, each against a baseline")
    workloads.add_argument("--only", metavar="W1,W2", help="a comma-separated subset of W1,W2,W3,W4,W4R")
    workloads.add_argument("--scale", type=float, default=1.0, help="item counts times this (default 1; tests: 0.1)")
    workloads.add_argument("--json", action="store_true")
    workloads.set_defaults(func=cmd_bench)
    return parser


GC_THRESHOLDS = (50_000, 20, 20)
"""The cyclic collector's thresholds in a ``fave`` process (CPython's default: 700, 10, 10).

A driver keeps a request's whole state alive for the run: at N = 100,000 tasks, millions of tracked objects
(persistent maps, frozen dataclasses) that reference counting frees and that hold no cycles to speak of. With
the defaults the collector walks them over and over: at N = 30,000 its 771 collections found 42 objects, and at
N = 100,000 they cost a quarter of the process's CPU. Collecting ~70 times less often leaves at most ~50,000
young objects waiting for a collection (the README's measured table: ``fave bench fanout --items 100000``)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, so a closed pipe is handled below rather than reported by the interpreter
        return code
    except (FaveError, ValidationError) as exc:
        from fave.persistence import CorruptStateError

        print(f"fave: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1 if isinstance(exc, CorruptStateError) else 2  # corrupt: the request is broken, not the command line
    except KeyboardInterrupt:
        print("fave: interrupted; `fave resume <request_id>` continues the request", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`fave list | head -1`): nothing left to tell it, and no traceback.
        # /dev/null takes the place of the closed pipe so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    finally:
        gc.set_threshold(*thresholds)  # for a caller that runs main() in its own process (tests)


if __name__ == "__main__":
    sys.exit(main())
