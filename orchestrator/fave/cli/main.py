"""``fave``: run, watch, resume and cancel requests on one machine (or against S3).

Exit codes: 0 request COMPLETED (or command succeeded), 1 request FAILED or CANCELLED, 2 bad input
(one line on stderr naming the problem), 124 ``fave wait --timeout`` ran out, 130 interrupted (Ctrl-C: the
line names the request to resume), 143 terminated (SIGTERM to ``fave run``/``resume``: the same, after the step in
progress commits; ``fave worker`` exits 0 on SIGTERM).

Start-up is part of every command's time (``fave bench startup``): this module imports only what the
parser needs, ``main`` builds the parser of the command it runs alone (``build_parser``), each command imports
what it uses (``fave status`` no runtime, ``fave run`` no boto3), and the process leaves its objects to the exit
(``_before_exit``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fave_shared.errors import FaveError, ValidationError

from fave.core.model import RequestState, RequestStatus, Start, TaskStatus

if TYPE_CHECKING:
    from fave_shared.store import ObjectStore

    from fave.core.dag import Pipeline
    from fave.core.operations import Budget
    from fave.service import Orchestrator

#: ``fave.local.orchestrator.DEFAULT_PIPELINE`` and ``fave.status.UNREADABLE``, spelled here so that building
#: the parser imports neither (tests/functional/test_cli_startup.py checks that they agree).
DEFAULT_PIPELINE = "pipeline.yaml"
UNREADABLE = "UNREADABLE"


DESCRIPTION = "fave: run, watch, resume and cancel requests of a pipeline, on one machine or against S3."
EPILOG = (
    "Exit codes: 0 the request COMPLETED (or the command succeeded), 1 it FAILED or was CANCELLED, 2 bad input "
    "(one line naming the problem), 124 fave wait --timeout ran out, 130 interrupted, 143 terminated (SIGTERM). "
    "'fave COMMAND --help' describes a command."
)


class UsageError(FaveError):
    """Bad command-line input."""


def _json_out(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def _tell(message: str) -> None:
    """A line for the person on stderr; nothing when no one reads it any more (``fave run ... 2>&1 | head``)."""
    with contextlib.suppress(BrokenPipeError, ValueError):  # ValueError: stderr closed
        print(message, file=sys.stderr, flush=True)


def _print_status(doc: dict[str, Any]) -> None:
    print(f"request {doc['request_id']}: {doc['status']}")
    for name, s in doc["stages"].items():
        counts = f"{s['succeeded']}/{s['total']}" if s["total"] else "-"
        extra = f", {s['failed']} failed" if s["failed"] else ""
        extra += f", {s['skipped']} skipped" if s["skipped"] else ""
        took = f" in {s['duration_s']:.2f}s" if s["duration_s"] is not None else ""
        if not s.get("in_run", True):  # a subset run (fave run --stage) leaves it alone
            print(f"  {name:<14} -          not selected")
            continue
        print(f"  {name:<14} {s['status']:<10} {counts}{extra}{took}")
    if doc.get("selection"):
        print(f"selected: {', '.join(doc['selection']['stages'])} (runs {', '.join(doc['selection']['runs'])})")
    if doc["failure"]:
        print(f"failure: {doc['failure']}")
    if doc["cancel_reason"]:
        print(f"cancelled: {doc['cancel_reason']}")
    ledger = doc.get("ledger")
    if ledger and doc["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
        print(
            f"spent: {ledger['invocations']} invocation(s), {ledger['gb_s']:.3f} GB-s, "
            f"{ledger['s3_requests']} S3 request(s), about ${ledger['cost_usd']:.6f}"
        )
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


def parse_json(text: str, where: str) -> Any:
    """JSON given for ``where`` (an option, a file), or ``UsageError`` naming it in one line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{where} is nested too deeply") from None


def read_json_file(name: str, where: str) -> Any:
    """The JSON in file ``name`` (``-``: standard input), of any size; ``UsageError`` naming ``where``."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: cannot read it: {exc}") from None
    return parse_json(text, where)


def _json_option(text: str, option: str) -> dict[str, Any]:
    """A JSON object given on the command line, or ``@FILE`` (a file of any size; ``@-``: standard input)."""
    if text.startswith("@"):
        where = f"{option} {text}"
        value = read_json_file(text[1:], where)
    else:
        where = option
        value = parse_json(text, option)
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a JSON object")
    return value


def _local_source(source: str) -> str:
    """A SOURCE without a scheme is a local file: it must exist, and the request gets its absolute path."""
    if "://" in source:
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise UsageError(f"no such file: {source}")
    return str(path.resolve())


def _request_input(args: argparse.Namespace, pipeline: Pipeline) -> dict[str, Any]:
    """The request input of ``fave run``: ``--input``, then SOURCE in the pipeline's upload field, ``--query``
    and ``--profile``; checked against the pipeline's ``input:`` before anything is stored (exit 2 naming the
    field)."""
    from fave.inputs import InputError, check_profile, upload_field, validate_input

    value = _json_option(args.input, "--input") if args.input is not None else {}
    field = upload_field(pipeline)
    if args.source is not None:
        if field is None:
            raise UsageError(
                f"pipeline '{pipeline.name}' takes no SOURCE (it declares no upload trigger): "
                "give its input with --input"
            )
        value[field] = args.source
    if args.query is not None:
        value["query"] = args.query
    if args.profile is not None:
        value["profile"] = args.profile
    if field is not None and isinstance(value.get(field), str):
        value[field] = _local_source(value[field])
    profile = value.get("profile")
    if isinstance(profile, str):
        try:
            check_profile(pipeline, profile)
        except InputError as exc:
            raise UsageError(exc.reason) from None
    try:
        return validate_input(pipeline, value)
    except InputError as exc:
        if exc.field == field and exc.reason == "required":
            raise UsageError(
                f"SOURCE is required: pipeline '{pipeline.name}' needs its input field '{field}' "
                "(fave run SOURCE, or --input)"
            ) from None
        raise UsageError(f"input: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from fave.cli.progress import terminal_progress
    from fave.cli.runlog import StoreLog, Tee
    from fave.cli.stopping import terminate_between_steps
    from fave.local.orchestrator import load_local_pipeline, local_orchestrator, open_any_store, store_uri
    from fave.status import status_document

    pipeline = load_local_pipeline(args.pipeline)
    request_input = _request_input(args, pipeline)
    _check_stages(pipeline, args.stage or ())
    if args.dry_run:  # before any store is opened: a plan writes nothing
        return _dry_run(args, pipeline, request_input)
    if args.items is not None:
        raise UsageError("--items is for --dry-run (a run's fan-out sizes come from its stages' outputs)")
    budget = _budget_args(args)
    store = open_any_store(store_uri(args.store))  # after the input is known good: a refusal stores nothing
    log = StoreLog(store, "fave run")  # the request's log in the store (fave logs)
    progress = Tee(terminal_progress(), log)
    orchestrator = local_orchestrator(pipeline, store, on_notify=progress.notify, faults=args.faults)
    _announce_faults(orchestrator)
    try:
        state = orchestrator.create(
            request_input, start=False, no_cache=args.no_cache, stages=args.stage or (), budget=budget
        )
        args.active_request = state.request_id  # for the Ctrl-C hint
        if args.detach:
            _spawn_driver(state.request_id, store.uri, str(pipeline.path), args.faults)
            if args.json:
                _json_out(status_document(store, state.request_id))
            else:
                print(state.request_id)
            return 0
        _tell(f"request {state.request_id}")
        log.begin(state.request_id)
        with terminate_between_steps(progress) as on_step, orchestrator.hold(state.request_id):
            orchestrator.apply(state.request_id, [Start()])
            state = orchestrator.drive(state.request_id, on_step=on_step)
    finally:
        progress.close()
        orchestrator.close()
        _report_faults(orchestrator)
    return _finish(store, state, args.json)


def _budget_args(args: argparse.Namespace) -> Budget | None:
    """``--max-wall``, ``--max-invocations``, ``--max-cost-usd`` as a budget override (None: none given)."""
    given = {
        name: value
        for name, value in (
            ("max_wall", args.max_wall),
            ("max_invocations", args.max_invocations),
            ("max_cost_usd", args.max_cost_usd),
        )
        if value is not None
    }
    if not given:
        return None
    from fave.pipeline import parse_budget

    try:
        return parse_budget(given, "budget")
    except ValidationError as exc:
        field, _, why = str(exc).removeprefix("budget.").partition(":")
        raise UsageError(f"--{field.replace('_', '-')}:{why}") from None


def _dry_run(args: argparse.Namespace, pipeline: Pipeline, request_input: dict[str, Any]) -> int:
    """``fave run --dry-run``: the plan and its cost range (``fave.cli.dryrun``), nothing run or stored."""
    from fave.cli.dryrun import dry_run
    from fave.core.engine import Engine

    if args.detach:
        raise UsageError("--dry-run runs nothing: it cannot --detach")
    if args.items is not None and args.items < 0:
        raise UsageError(f"--items: must be >= 0, got {args.items}")
    scope = Engine(pipeline).selection_scope(args.stage) if args.stage else ()
    return dry_run(pipeline, request_input, items=args.items, stages=scope, as_json=args.json)


def _check_stages(pipeline: Pipeline, stages: Sequence[str]) -> None:
    """``fave run --stage``: every name is a stage of the pipeline (``UsageError`` naming the first that is not)."""
    if not stages:
        return
    from fave.core.engine import Engine
    from fave.core.model import InvalidEvent

    try:
        Engine(pipeline).selection_scope(stages)
    except InvalidEvent as exc:
        raise UsageError(f"--stage: {exc}") from None


def _announce_faults(orchestrator: Orchestrator) -> None:
    from fave.local.orchestrator import fault_plan

    plan = fault_plan(orchestrator)
    if plan is not None:
        _tell(f"fave: injecting faults {plan.spec.with_seed(plan.seed)}")


def _report_faults(orchestrator: Orchestrator) -> None:
    from fave.local.orchestrator import fault_plan

    plan = fault_plan(orchestrator)
    if plan is not None:
        _tell(plan.report_line())


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

    if args.stage is None:
        given = [
            f"--{n}"
            for n in ("failed", "item", "traceback", "limit", "cursor")
            if getattr(args, n) not in (None, False)
        ]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --stage NAME")
    if args.limit is not None and args.item is not None:
        raise UsageError("--limit: not with --item (one item is one row)")
    store = open_any_store(store_uri(args.store))
    if args.stage is not None:
        return _stage_status(store, args)
    doc = status_document(store, args.request_id)
    if args.json:
        _json_out(doc)
    else:
        _print_status(doc)
    return 0


def _stage_status(store: ObjectStore, args: argparse.Namespace) -> int:
    """``fave status ID --stage NAME``: one page (``--limit``, ``--cursor``, ``--item``) or, by default, every
    item, read a page at a time."""
    from fave.status import stage_page, stage_rows

    if args.limit is not None or args.cursor is not None or args.item is not None:
        page = stage_page(
            store,
            args.request_id,
            args.stage,
            cursor=args.cursor,
            limit=args.limit if args.limit is not None else 100,
            failed=args.failed,
            item=args.item,
            tracebacks=args.traceback,
        )
        if args.json:
            _json_out(page)
        elif args.item is not None:
            _print_item(page, page["items"][0])
        else:
            _print_stage_header(page, args.failed)
            _print_rows(page["items"], args.traceback, keyed=page["fanned_out"])
            if page["next_cursor"] is not None:
                print(f"more: --cursor {page['next_cursor']}")
        return 0
    pages = stage_rows(store, args.request_id, args.stage, failed=args.failed, tracebacks=args.traceback)
    if args.json:
        first: dict[str, Any] | None = None
        items: list[dict[str, Any]] = []
        for page, rows in pages:
            first = first or page
            items.extend(rows)
        assert first is not None
        _json_out({**first, "items": items, "next_cursor": None, "limit": None})
        return 0
    for n, (page, rows) in enumerate(pages):
        if n == 0:
            _print_stage_header(page, args.failed)
        _print_rows(rows, args.traceback, keyed=page["fanned_out"])
    return 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _error_of(row: dict[str, Any], limit: int = 100) -> str:
    if row["error_type"] is None and row["error"] is None:
        return ""
    text = " ".join(f"{row['error_type'] or 'Error'}: {row['error'] or ''}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_stage_header(page: dict[str, Any], failed: bool) -> None:
    total = page["total"]
    counts = ", ".join(
        f"{page[k]} {k}" for k in ("succeeded", "failed", "skipped", "running", "pending", "cancelled") if page[k]
    )
    size = f"{total} item{'s' if total != 1 else ''}" if page["fanned_out"] and total is not None else "one task"
    print(
        f"request {page['request_id']} stage {page['stage']}: {page['status']}, {size}{': ' + counts if counts else ''}"
    )
    error = "error (failed items)" if failed else "error"
    key = f"{'key':<{_KEY_WIDTH}}  " if page["fanned_out"] else ""
    print(f"  {'item':>6}  {key}{'status':<10} {'attempts':>8}  {'duration':>9}  {error}")


_KEY_WIDTH = 16
"""Characters of an item key in a stage's rows (a content digest's 16; a longer declared key is cut)."""


def _cut(text: str, width: int) -> str:
    """``text`` on one line (its white space folded), at most ``width`` characters (cut with ``...``)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _key_text(key: str | None) -> str:
    return "-" if key is None else _cut(key, _KEY_WIDTH)


def _print_rows(rows: list[dict[str, Any]], tracebacks: bool, *, keyed: bool = False) -> None:
    for row in rows:
        item = "-" if row["item"] is None else str(row["item"])
        if keyed:
            item = f"{item:>6}  {_key_text(row.get('key')):<{_KEY_WIDTH}}"
        error = _error_of(row) if row["status"] != "SUCCEEDED" else ""
        if row.get("cached"):
            error = f"cached from {row.get('cached_from') or '?'}"
        print(
            f"  {item:>6}  {row['status']:<10} {row['attempts']:>8}  {_seconds(row['duration_s']):>9}  {error}".rstrip()
        )
        if tracebacks and row["traceback"]:
            for line in row["traceback"].splitlines():
                print(f"          | {line}")


def _print_item(page: dict[str, Any], row: dict[str, Any]) -> None:
    item = "" if row["item"] is None else f" item {row['item']}"
    if row.get("key") is not None:
        item += f" (key {row['key']!r})"
    attempts = row["attempts"]
    print(
        f"request {page['request_id']} stage {page['stage']}{item}: {row['status']} "
        f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    )
    for attempt in row["history"]:
        print(
            f"  attempt {attempt['attempt']}: FAILED in {_seconds(attempt['duration_s'])}  "
            f"{_error_of(attempt, limit=200)}"
        )
    if attempts and (not row["history"] or row["history"][-1]["attempt"] != attempts):
        error = _error_of(row, limit=200) if row["status"] != "SUCCEEDED" else ""
        print(f"  attempt {attempts}: {row['status']} in {_seconds(row['duration_s'])}  {error}".rstrip())
    if row["traceback"]:
        print("  traceback of the last failed attempt:")
        for line in row["traceback"].splitlines():
            print(f"    {line}")


def cmd_resume(args: argparse.Namespace) -> int:
    from fave.cli.progress import terminal_progress
    from fave.cli.runlog import StoreLog, Tee
    from fave.cli.stopping import terminate_between_steps
    from fave.clock import SystemClock
    from fave.lease import Leases
    from fave.local.orchestrator import load_local_pipeline, local_orchestrator, open_any_store, store_uri
    from fave.status import status_document

    budget = _budget_args(args)
    store = open_any_store(store_uri(args.store))
    doc = status_document(store, args.request_id)
    pipeline_path = args.pipeline or doc["pipeline"] or DEFAULT_PIPELINE
    args.active_request = args.request_id  # for the Ctrl-C hint
    if args.detach:
        # The background driver resumes it; refuse here, in one line, if another process drives it now.
        Leases(store, SystemClock(), local_process=True).check_free(args.request_id)
        _spawn_driver(args.request_id, store.uri, str(load_local_pipeline(pipeline_path).path), args.faults)
        if args.json:
            _json_out(status_document(store, args.request_id))
        else:
            print(args.request_id)
        return 0
    log = StoreLog(store, "fave resume")  # the request's log in the store (fave logs)
    progress = Tee(terminal_progress(), log)
    orchestrator = local_orchestrator(pipeline_path, store, on_notify=progress.notify, faults=args.faults)
    _announce_faults(orchestrator)
    try:
        with orchestrator.hold(args.request_id):
            log.begin(args.request_id)
            state = orchestrator.load(args.request_id)
            if state.status is RequestStatus.INIT:
                state = orchestrator.apply(args.request_id, [Start()])
            elif not state.nothing_to_resume:  # a COMPLETED request has, after a reset
                state = orchestrator.resume(args.request_id, budget=budget)
            _tell(f"request {state.request_id}")
            with terminate_between_steps(progress) as on_step:
                state = orchestrator.drive(args.request_id, on_step=on_step)
    finally:
        progress.close()
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


def cmd_reset(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import load_local_pipeline, open_any_store, store_uri
    from fave.service import Orchestrator
    from fave.status import status_document

    store = open_any_store(store_uri(args.store))
    doc = status_document(store, args.request_id)
    orchestrator = Orchestrator(load_local_pipeline(args.pipeline or doc["pipeline"]), store)
    with orchestrator.hold(args.request_id):  # not while a driver (fave run, resume, --detach) has it
        state, counts = orchestrator.reset(args.request_id, args.stage, downstream=args.downstream)
    if args.json:
        _json_out(
            {**status_document(store, args.request_id), "reset": {"stages": counts, "downstream": args.downstream}}
        )
        return 0
    marked = ", ".join(f"{name} ({n} task{'s' if n != 1 else ''})" for name, n in counts.items())
    given = f" --store {shlex.quote(args.store)}" if args.store else ""
    print(f"request {state.request_id}: {state.status.value}; reset {marked}")
    print(f"`fave resume {state.request_id}{given}` re-runs them")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from fave.cli.rerun import cmd_rerun as rerun

    return rerun(args)


def cmd_cache(args: argparse.Namespace) -> int:
    from fave import cache
    from fave.local.orchestrator import open_any_store, store_uri

    store = open_any_store(store_uri(args.store))
    if args.action == "clear":
        removed = cache.clear(store)
        if args.json:
            _json_out({"removed": removed})
        else:
            print(f"removed {removed} cache entr{'y' if removed == 1 else 'ies'}")
        return 0
    stats = cache.stats(store)
    if args.json:
        _json_out(stats)
    else:
        print(f"{stats['entries']} entries, {stats['packs']} packs, {stats['bytes']} bytes")
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
            detail = row.get("error") or row.get("summary") or ""
            print(f"{row['request_id']}  {row['status']:<10} {row.get('pipeline') or '-':<12} {detail}".rstrip())
    return 0


def cmd_items(args: argparse.Namespace) -> int:
    from fave.cli.items import cmd_items as items

    return items(args)


def cmd_wait(args: argparse.Namespace) -> int:
    from fave.cli.follow import TIMED_OUT, wait
    from fave.local.orchestrator import open_any_store, store_uri

    if args.timeout is not None and args.timeout < 0:
        raise UsageError("wait: --timeout must not be negative")
    store = open_any_store(store_uri(args.store))
    doc, timed_out = wait(store, args.request_id, args.timeout)
    if args.json:
        _json_out(doc)
    else:
        _print_status(doc)
    if timed_out:
        _tell(f"fave: timed out after {args.timeout:g}s: request {args.request_id} is {doc['status']}")
        return TIMED_OUT
    return _exit_code(doc["status"])


def cmd_logs(args: argparse.Namespace) -> int:
    from fave.cli.follow import print_logs, tell_no_log
    from fave.local.orchestrator import open_any_store, store_uri

    store = open_any_store(store_uri(args.store))
    if print_logs(store, args.request_id, args.follow) == 0:
        tell_no_log(store.uri, args.request_id)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from fave.cli.ui import cmd_ui as serve_ui

    return serve_ui(args)


def cmd_metrics(args: argparse.Namespace) -> int:
    from fave.cli.metrics import cmd_metrics as metrics

    return metrics(args)


def cmd_graph(args: argparse.Namespace) -> int:
    from fave.cli.graph import render_mermaid, render_text
    from fave.local.orchestrator import load_local_pipeline

    pipeline = load_local_pipeline(args.pipeline)
    print(render_mermaid(pipeline) if args.format == "mermaid" else render_text(pipeline))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fave.cli.export import run_export

    return run_export(args)


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
    request_input = _json_option(args.input, "--input") if args.input else {}
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


def cmd_new(args: argparse.Namespace) -> int:
    from fave.cli.scaffold import new_pipeline, new_stage

    if args.kind == "pipeline":
        root = new_pipeline(args.name, Path(args.dir))
        print(root)
        _tell(f"run it: fave run --pipeline {shlex.quote(str(root / 'pipeline.yaml'))}")
        return 0
    needs = tuple(n.strip() for n in (args.needs or "").split(",") if n.strip())
    app = new_stage(args.name, Path(args.pipeline), needs=needs, for_each=args.for_each, mode=args.mode)
    print(app)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fave.cli.bench import run_bench

    return run_bench(args)


def cmd_invoke(args: argparse.Namespace) -> int:
    from fave.cli.invoke import cmd_invoke as invoke

    return invoke(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from fave.cli.serve import cmd_serve as serve

    return serve(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from fave.cli.worker import cmd_worker as worker

    return worker(args)


def cmd_queue(args: argparse.Namespace) -> int:
    from fave.cli.queue import cmd_queue as queue

    return queue(args)


# ---- parser -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "fave" else f"{self.prog.removeprefix('fave ')}: "
        self.exit(2, f"fave: error: {where}{message} (see: {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked (start-up time)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("fave")
        except PackageNotFoundError:
            number = "(not installed as a package)"
        sys.stdout.write(f"fave {number}\n")
        sys.stdout.flush()
        parser.exit(0)


JSON_HELP = "print the status document as JSON on stdout (README: the contract)"
DETACH_HELP = (
    "return at once, printing the request id on stdout (the JSON document with --json); a background process drives it"
)


def store_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="DIR or s3://bucket[/prefix] (default $FAVE_STORE or ./fave-artifacts)")


def faults_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--faults",
        metavar="SPEC",
        help="inject faults, e.g. duplicate=0.3,drop=0.05,delay=0-2s,crash_after_effect=0.01,throttle=0.1,seed=7 "
        "(default $FAVE_FAULTS; 'none' turns them off)",
    )


def budget_opts(p: argparse.ArgumentParser, resume: bool = False) -> None:
    which = "raise the request's" if resume else "override the pipeline's operations.budget"
    group = p.add_argument_group(f"budget ({which}; the request ends FAILED budget_exceeded past one)")
    group.add_argument("--max-wall", metavar="DURATION", help="e.g. 30m: wall time from the (re)start")
    group.add_argument("--max-invocations", type=int, metavar="N", help="stage invocations in all")
    group.add_argument("--max-cost-usd", type=float, metavar="USD", help="estimated Lambda + S3 cost in all")


def _run_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    run = sub.add_parser(
        "run",
        help="start a request and drive it to the end",
        description="Start a request of a pipeline and drive it to the end, with live per-stage progress on stderr.",
    )
    run.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="a local file or an s3:// URI for the pipeline's upload field (trigger.upload.field; the video "
        "pipeline's video_uri); needed only when that field is required",
    )
    run.add_argument(
        "--input", metavar="JSON|@FILE", help="the request input: a JSON object, or @FILE (@- reads stdin)"
    )
    run.add_argument("--query", help='sets the input\'s query field, e.g. "find scenes with cars"')
    run.add_argument("--profile", help="a profile of the pipeline (default: default)")
    run.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline file (default pipeline.yaml)")
    run.add_argument("--detach", action="store_true", help=DETACH_HELP)
    run.add_argument("--json", action="store_true", help=JSON_HELP)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the input and print the plan (stages, expected invocations, MemorySize, Timeout, an estimated "
        "cost range) without running anything or opening the store",
    )
    run.add_argument(
        "--items",
        type=int,
        metavar="N",
        help="with --dry-run: the size assumed for every fan-out (it comes from an upstream stage's output)",
    )
    run.add_argument(
        "--no-cache",
        action="store_true",
        help="look nothing up in the result cache (cache: true stages all run; their results are still stored)",
    )
    run.add_argument(
        "--stage",
        action="append",
        metavar="NAME",
        help="run only this stage and the stages it needs, directly or not (repeat for several); the request "
        "completes when they have succeeded, and its final.json holds their outputs keyed by stage",
    )
    budget_opts(run)
    faults_opt(run)
    store_opt(run)
    run.set_defaults(func=cmd_run)


def _status_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    status = sub.add_parser(
        "status",
        help="show a request's status, or one stage item by item",
        description="Show a request's status; with --stage, one row per item of that stage (status, attempts, "
        "duration, error).",
    )
    status.add_argument("request_id", help="the request id (fave run prints it)")
    status.add_argument("--json", action="store_true", help=JSON_HELP + "; with --stage, the stage's items")
    status.add_argument("--stage", metavar="NAME", help="show this stage's tasks, one row per item")
    status.add_argument("--failed", action="store_true", help="with --stage: only the items that FAILED")
    status.add_argument(
        "--traceback", action="store_true", help="with --stage: the traceback of each item's last failed attempt"
    )
    status.add_argument(
        "--item",
        metavar="K",
        help="with --stage: item K (its key, or its index) alone, its attempts and its traceback",
    )
    status.add_argument("--limit", type=int, metavar="N", help="with --stage: one page of N rows (default: every item)")
    status.add_argument("--cursor", metavar="C", help="with --stage: the page from C (a page's next_cursor)")
    store_opt(status)
    status.set_defaults(func=cmd_status)


def _resume_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    resume = sub.add_parser(
        "resume",
        help="re-run what did not succeed and drive the request to the end",
        description="Re-run every task of a request that did not succeed, with the code as it is now, and drive it "
        "to the end. An INIT request is started.",
    )
    resume.add_argument("request_id", help="the request id")
    resume.add_argument("--pipeline", help="pipeline file (default: the one the request was made with)")
    resume.add_argument("--detach", action="store_true", help=DETACH_HELP)
    resume.add_argument("--json", action="store_true", help=JSON_HELP)
    budget_opts(resume, resume=True)
    faults_opt(resume)
    store_opt(resume)
    resume.set_defaults(func=cmd_resume)


def _cancel_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    cancel = sub.add_parser("cancel", help="cancel a request", description="Cancel a request that has not ended.")
    cancel.add_argument("request_id", help="the request id")
    cancel.add_argument("--reason", default="cancelled by user", help="why, recorded in its state")
    cancel.add_argument("--pipeline", help="pipeline file (default: the one the request was made with)")
    store_opt(cancel)
    cancel.set_defaults(func=cmd_cancel)


def _reset_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    reset = sub.add_parser(
        "reset",
        help="mark stages PENDING again so that fave resume re-runs them",
        description="Mark every task of a stage PENDING again on a request that has ended (its outputs dropped, "
        "its attempts still counted), so that `fave resume` re-runs it. Stages that do not depend on it keep their "
        "results. Refused while the request runs.",
    )
    reset.add_argument("request_id", help="the request id")
    reset.add_argument(
        "--stage", action="append", required=True, metavar="NAME", help="a stage to reset (repeat for several)"
    )
    reset.add_argument(
        "--downstream", action="store_true", help="also reset every stage that needs them, directly or not"
    )
    reset.add_argument("--pipeline", help="pipeline file (default: the one the request was made with)")
    reset.add_argument("--json", action="store_true", help=JSON_HELP + ", with what was reset")
    store_opt(reset)
    reset.set_defaults(func=cmd_reset)


def _rerun_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    rerun = sub.add_parser(
        "rerun",
        help="re-run only the stages whose code, config or inputs changed since they ran (make-like)",
        description="Compare each stage's fingerprint (its function's code digest, its config with the request's "
        "profile) recorded when it succeeded with today's: re-run the stages that changed and every stage that "
        "needs them (cache: true stages take their unchanged tasks from the cache), and the stages that did not "
        "succeed, then drive the request to the end like fave resume. Nothing changed: nothing runs (exit 0).",
    )
    rerun.add_argument("request_id", help="the request id (one that has ended)")
    rerun.add_argument("--dry-run", action="store_true", help="print what would run and why; change nothing")
    rerun.add_argument(
        "--json", action="store_true", help="print JSON: the plan (--dry-run), or the status document with it"
    )
    rerun.add_argument("--pipeline", help="pipeline file (default: the one the request was made with)")
    faults_opt(rerun)
    store_opt(rerun)
    rerun.set_defaults(func=cmd_rerun)


def _list_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    lst = sub.add_parser(
        "list",
        help="list requests, newest first",
        description="List requests, newest first: id, status, pipeline and a short summary of the input.",
    )
    statuses = [s.value for s in RequestStatus] + [UNREADABLE]
    lst.add_argument(
        "--status",
        type=str.upper,
        choices=statuses,
        metavar="STATUS",
        help=f"only requests with this status, in any case: {', '.join(statuses)}",
    )
    lst.add_argument("--limit", type=int, default=0, help="at most this many requests (default 0: all)")
    lst.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    store_opt(lst)
    lst.set_defaults(func=cmd_list)


def _items_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    items = sub.add_parser(
        "items",
        help="the latest status of each fanned-out item across a pipeline's requests",
        description="For each fanned-out stage and item key, the item's status in the newest request that had "
        "it: its key, status, that request, when it finished, whether it came from the cache, its error's first "
        "line. E.g. fave items weekly --stage synthesize --status failed",
    )
    items.add_argument("pipeline", metavar="PIPELINE", help="the pipeline's name, or its pipeline.yaml")
    items.add_argument("--stage", metavar="NAME", help="only this fanned-out stage")
    task_statuses = [s.value for s in TaskStatus]
    items.add_argument(
        "--status",
        type=str.upper,
        choices=task_statuses,
        metavar="STATUS",
        help=f"only items whose latest status this is, in any case: {', '.join(task_statuses)}",
    )
    items.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    store_opt(items)
    items.set_defaults(func=cmd_items)


def _cache_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    cache_cmd = sub.add_parser(
        "cache",
        help="the result cache: stats (entries, bytes) or clear",
        description="The result cache of cache: true stages (cache/ in the store): 'stats' counts its entries and "
        "their bytes, 'clear' deletes them all.",
    )
    cache_cmd.add_argument("action", choices=["stats", "clear"], help="stats or clear")
    cache_cmd.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    store_opt(cache_cmd)
    cache_cmd.set_defaults(func=cmd_cache)


def _wait_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    wait = sub.add_parser(
        "wait",
        help="block until a request has ended (exit code as fave run; 124 on --timeout)",
        description="Block until a request is COMPLETED, FAILED or CANCELLED, polling its status in the store, then "
        "print its status. Exit 0 COMPLETED, 1 FAILED or CANCELLED, 2 unknown id, 124 if --timeout ran out first.",
    )
    wait.add_argument("request_id", help="the request id (fave run --detach prints it)")
    wait.add_argument(
        "--timeout", type=float, metavar="S", help="give up after S seconds: exit 124, status as it is (default: never)"
    )
    wait.add_argument("--json", action="store_true", help=JSON_HELP)
    store_opt(wait)
    wait.set_defaults(func=cmd_wait)


def _logs_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    logs = sub.add_parser(
        "logs",
        help="print a request's log from its store (-f: follow it to the end)",
        description="Print the log that fave run, fave resume and the --detach driver write into the request's store "
        "(requests/ID/logs/): per-stage progress, retries, failures, one line per driver start and end. "
        "Works for local and S3 stores.",
    )
    logs.add_argument("request_id", help="the request id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the request has ended")
    store_opt(logs)
    logs.set_defaults(func=cmd_logs)


def _ui_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    ui = sub.add_parser(
        "ui",
        help="browse a store's requests in a web browser (read-only)",
        description="Serve the web view of a store's requests on a local HTTP server: the request list, each "
        "request's DAG with live counts, its tasks page by page with their tracebacks, a timeline and the result. "
        "Read-only: resume and cancel with `fave resume`/`fave cancel`, or use `fave serve`. Ctrl-C stops it.",
    )
    ui.add_argument("--port", type=int, default=8080, help="the port to listen on (default 8080; 0: any free port)")
    ui.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    store_opt(ui)
    ui.set_defaults(func=cmd_ui)


def _metrics_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    metrics = sub.add_parser(
        "metrics",
        help="throughput, latency, failures and cost from the run history",
        description="Requests completed and failed, throughput per day, per-stage p50/p95 task duration, retry "
        "and failure rates, queue depth and estimated cost, from the store's run history.",
    )
    metrics.add_argument("--since", default="7d", help="the window, back from now: e.g. 24h, 7d (default 7d)")
    metrics.add_argument("--pipeline", help="only this pipeline: its file (pipeline.yaml) or its name")
    metrics.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout (stable keys)")
    store_opt(metrics)
    metrics.set_defaults(func=cmd_metrics)


def _graph_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    graph = sub.add_parser("graph", help="draw the pipeline's DAG", description="Draw a pipeline's DAG.")
    graph.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline file (default pipeline.yaml)")
    graph.add_argument(
        "--format", choices=["text", "mermaid"], default="text", help="text (default) or a mermaid flowchart"
    )
    graph.set_defaults(func=cmd_graph)


def _export_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    export = sub.add_parser(
        "export",
        help="write the pipeline as a Step Functions state machine (ASL)",
        description="Write a pipeline as another engine's definition, and say what maps exactly, approximately "
        "or not at all (docs/export.md).",
    )
    export.add_argument(
        "--format",
        required=True,
        help="asl: an Amazon States Language state machine (JSON); airflow: an Airflow 3 DAG file (Python); "
        "openfaas: a faas-cli stack.yml (with -o, a python3-http handler folder per function beside it); "
        "prefect: a Prefect 3 flow file (Python); dagster: a Dagster job file (Python)",
    )
    export.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline file (default pipeline.yaml)")
    export.add_argument("-o", "--output", metavar="PATH", help="write the definition here (default: stdout)")
    export.add_argument(
        "--sam",
        nargs="?",
        const="",
        metavar="PATH",
        help="also write a copy of the pipeline's template.yaml with the state machine in it, beside it "
        "(default template.asl.yaml); the ARNs become DefinitionSubstitutions",
    )
    export.add_argument("--distributed", action="store_true", help="fan-outs as DISTRIBUTED Maps (default INLINE)")
    export.add_argument(
        "--distributed-above",
        type=int,
        metavar="N",
        help="a fan-out over more than N items runs as a DISTRIBUTED Map, a shorter one INLINE",
    )
    export.add_argument(
        "--result-writer",
        metavar="s3://BUCKET[/PREFIX]",
        help="give DISTRIBUTED Maps a ResultWriter putting the map run's manifest and results there, under "
        "PREFIX/requests/{id}/export/{group}/results/ (with --sam: the stack's bucket, by default)",
    )
    export.add_argument("--json", action="store_true", help="print the mapping table (and the definition) as JSON")
    export.set_defaults(func=cmd_export)


def _invoke_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    invoke = sub.add_parser(
        "invoke",
        help="run one function of template.yaml with an event, as sam local invoke does (no Docker)",
        description="Run one function of a SAM template once on this machine (fave's local runtime: the template's "
        "timeout, memory size and environment). Its response is printed on stdout as JSON, or Lambda's error "
        "payload if it fails (exit 1); its own output goes to stderr.",
    )
    invoke.add_argument("function", metavar="FUNCTION", help="the function's logical id in the template")
    invoke.add_argument(
        "-e", "--event", metavar="FILE", help="the event: a JSON file, or - for standard input (default: {})"
    )
    invoke.add_argument(
        "--env-vars",
        metavar="FILE",
        help='SAM\'s JSON file of variables: {"Parameters": {VAR: value}, "LogicalId": {VAR: value}}; only '
        "variables the template declares for the function are set",
    )
    invoke.add_argument("--template", default="template.yaml", help="the SAM template (default: template.yaml)")
    invoke.set_defaults(func=cmd_invoke)


def _serve_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the stack of template.yaml locally: HTTP API, S3 endpoint with upload events, tick (no Docker)",
        description="Serve the pipeline's SAM template on this machine: its HTTP API (IAM auth off), a local S3 "
        "endpoint holding the artifacts bucket (objects under the upload prefix start requests), the schedule tick, "
        "the completions queue and the web view (/ui). Ctrl-C or SIGTERM stops it; requests still running resume "
        "on the next fave serve of the same store.",
    )
    serve.add_argument("--port", type=int, default=3000, help="the HTTP API's port (default 3000; 0: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--s3-port", type=int, default=4566, help="the local S3 endpoint's port (default 4566; 0: a free one)"
    )
    serve.add_argument(
        "--store",
        help="DIR: the local bucket is kept in this folder (default $FAVE_STORE or ./fave-artifacts); "
        "s3://bucket[/prefix]: use that store, no local S3 endpoint",
    )
    serve.add_argument(
        "--pipeline", default=DEFAULT_PIPELINE, help="pipeline file; its template: is served (default pipeline.yaml)"
    )
    serve.add_argument(
        "--tick", type=float, metavar="SECONDS", help="tick every SECONDS instead of the template's TickSchedule"
    )
    serve.set_defaults(func=cmd_serve)


def _queue_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from fave.cli.queue import add_parser as add_queue_parser  # its module imports nothing more at this point

    add_queue_parser(sub, store_opt, cmd_queue)


def _worker_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from fave.cli.worker import add_worker_parser  # its module imports nothing more at this point

    add_worker_parser(sub, store_opt, cmd_worker)


def _chaos_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    chaos = sub.add_parser(
        "chaos", help="run a pipeline repeatedly under injected faults and check its invariants (exit 1 if broken)"
    )
    chaos.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline file (default pipeline.yaml)")
    chaos.add_argument("--runs", type=int, default=3, help="runs under faults, after one fault-free reference run")
    chaos.add_argument("--faults", metavar="SPEC", help="the faults of every run (default $FAVE_FAULTS)")
    chaos.add_argument("--input", metavar="JSON|@FILE", help="the request input of every run: a JSON object or @FILE")
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


def _bench_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks (the README's measured figures).")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    bench_json = "print the figures as JSON on stdout"
    fanout = bench_sub.add_parser("fanout", help="start -> N no-op async tasks -> fan-in")
    fanout.add_argument("--items", type=int, default=1000, help="tasks of the fan-out (default 1000)")
    fanout.add_argument("--store", help="DIR, s3://bucket[/prefix] or 'moto' (in-process moto S3)")
    fanout.add_argument(
        "--repeat", type=int, default=1, help="run it K times and report the run of median CPU per task (default 1)"
    )
    fanout.add_argument("--json", action="store_true", help=bench_json)
    fanout.set_defaults(func=cmd_bench)
    incremental = bench_sub.add_parser(
        "incremental", help="a cached N-item fan-out re-run with a few elements changed; the video's second query"
    )
    incremental.add_argument("--items", type=int, default=10_000, help="elements of the list (default 10000)")
    incremental.add_argument(
        "--changed", type=float, default=0.01, help="fraction of elements changed in the second run (default 0.01)"
    )
    incremental.add_argument(
        "--repeat", type=int, default=5, help="pairs of fan-out runs; the median pair is reported (default 5)"
    )
    incremental.add_argument("--video", help="a local video file for part (b) (default: the bundled sample)")
    incremental.add_argument("--no-video", action="store_true", help="skip part (b), the video pipeline")
    incremental.add_argument("--store", help="DIR, s3://bucket[/prefix] or 'moto' (with --no-video)")
    incremental.add_argument("--json", action="store_true", help=bench_json)
    incremental.set_defaults(func=cmd_bench)
    video = bench_sub.add_parser("video", help="the video pipeline vs. its stage bodies in one process")
    video.add_argument("--video", help="a local video file (default: the bundled sample)")
    video.add_argument("--query", default="find scenes with cars", help="the query (default: find scenes with cars)")
    video.add_argument("--profile", default="default", help="a profile of the video pipeline (default: default)")
    video.add_argument("--clips", choices=["parallel", "sequential"], default="parallel", help="straight-line clips")
    video.add_argument("--repeat", type=int, default=1, help="runs of each side; figures are the medians")
    video.add_argument("--store", help="DIR or s3://bucket[/prefix] for the fave side (default: a temporary DIR)")
    video.add_argument("--json", action="store_true", help=bench_json)
    video.set_defaults(func=cmd_bench)
    api = bench_sub.add_parser("api", help="POST /requests latency through the Lambda entry point (moto S3)")
    api.add_argument("--requests", type=int, default=200, help="POSTs to time (after one cold call)")
    api.add_argument("--json", action="store_true", help=bench_json)
    api.set_defaults(func=cmd_bench)
    cost = bench_sub.add_parser(
        "cost", help="$ per 1,000 tasks through the Lambda entry point as deployed (moto S3), beside Step Functions"
    )
    cost.add_argument("--items", type=int, default=1000, help="tasks of the no-op fan-out")
    cost.add_argument("--arrival", choices=["serial", "concurrent"], default="concurrent", help="how completions come")
    cost.add_argument("--invoke-latency-ms", type=float, default=20.0, help="each Lambda Invoke API call")
    cost.add_argument("--batch-size", type=int, default=1000, help="completions per orchestrator invocation at most")
    cost.add_argument("--json", action="store_true", help=bench_json)
    cost.set_defaults(func=cmd_bench)
    startup = bench_sub.add_parser("startup", help="fave run of a 3-stage no-op chain and fave --help, exec to exit")
    startup.add_argument("--repeat", type=int, default=11, help="runs of each command; figures are the medians")
    startup.add_argument("--json", action="store_true", help=bench_json)
    startup.set_defaults(func=cmd_bench)
    workloads = bench_sub.add_parser("workloads", help="the peer workloads W1-W4R, each against a baseline")
    workloads.add_argument("--only", metavar="W1,W2", help="a comma-separated subset of W1,W2,W3,W4,W4R")
    workloads.add_argument("--scale", type=float, default=1.0, help="item counts times this (default 1; tests: 0.1)")
    workloads.add_argument("--json", action="store_true", help=bench_json)
    workloads.set_defaults(func=cmd_bench)


def _new_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    new = sub.add_parser(
        "new",
        help="scaffold a pipeline or a stage",
        description="Scaffold a working pipeline folder, or add a stage to one (fave.cli.scaffold).",
    )
    new_sub = new.add_subparsers(dest="kind", required=True, metavar="KIND")
    new_pipeline = new_sub.add_parser(
        "pipeline",
        help="a pipeline folder that fave run runs at once",
        description="Write NAME/: pipeline.yaml, template.yaml (destinations, one role per function), "
        "functions/hello/app.py (an SDK stage) and its test.",
    )
    new_pipeline.add_argument("name", metavar="NAME", help="the pipeline's name and folder (lower case, _ allowed)")
    new_pipeline.add_argument("--dir", default=".", help="where to create the folder NAME (default: here)")
    new_pipeline.set_defaults(func=cmd_new)
    new_stage = new_sub.add_parser(
        "stage",
        help="add a stage to a pipeline made by fave new pipeline",
        description="Add functions/NAME/app.py and its test, the function to template.yaml and the stage to "
        "pipeline.yaml; nothing is written unless the result loads.",
    )
    new_stage.add_argument("name", metavar="NAME", help="the stage's name (lower case, _ allowed)")
    new_stage.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="the pipeline file (default: pipeline.yaml)")
    new_stage.add_argument(
        "--needs", metavar="A,B", help="the stages whose outputs it needs, comma-separated (default: the final stage)"
    )
    new_stage.add_argument("--for-each", metavar="STAGE.FIELD", help="fan out: one task per element of that list")
    new_stage.add_argument(
        "--mode", choices=["sync", "async"], help="how it is invoked (default: async when fanned out, else sync)"
    )
    new_stage.set_defaults(func=cmd_new)


_COMMANDS: dict[str, Callable[[argparse._SubParsersAction[_Parser]], None]] = {
    "run": _run_parser,
    "status": _status_parser,
    "resume": _resume_parser,
    "cancel": _cancel_parser,
    "reset": _reset_parser,
    "rerun": _rerun_parser,
    "list": _list_parser,
    "items": _items_parser,
    "cache": _cache_parser,
    "wait": _wait_parser,
    "logs": _logs_parser,
    "ui": _ui_parser,
    "metrics": _metrics_parser,
    "graph": _graph_parser,
    "export": _export_parser,
    "invoke": _invoke_parser,
    "serve": _serve_parser,
    "queue": _queue_parser,
    "worker": _worker_parser,
    "chaos": _chaos_parser,
    "bench": _bench_parser,
    "new": _new_parser,
}
"""Each command's parser, in the order ``fave --help`` lists them."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``fave`` parser; with ``command`` (one of ``_COMMANDS``), one with that command's parser alone.

    ``main`` builds only the command it runs: the ~40 parsers of every command cost ~10 ms (argparse looks up
    gettext catalogs and the terminal size for each), a twentieth of ``fave run`` (``fave bench startup``).
    Nothing shows the difference: the top-level parser only hands the arguments to that command's own
    parser, and a name that is not a command builds them all (the error lists the choices)."""
    parser = _Parser(prog="fave", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action=_Version, help="print fave's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in _COMMANDS.items():
        if command is None or name == command:
            add(sub)
    return parser


GC_THRESHOLDS = (50_000, 20, 20)
"""The cyclic collector's thresholds in a ``fave`` process (CPython's default: 700, 10, 10).

A driver keeps a request's whole state alive for the run: at N = 100,000 tasks, millions of tracked objects
(persistent maps, frozen dataclasses) that reference counting frees and that hold no cycles to speak of. With
the defaults the collector walks them over and over: at N = 30,000 its 771 collections found 42 objects, and at
N = 100,000 they cost a quarter of the process's CPU. Collecting ~70 times less often leaves at most ~50,000
young objects waiting for a collection (the README's measured table: ``fave bench fanout --items 100000``)."""


SWITCH_INTERVAL_S = 0.02
"""How long a thread of a ``fave`` process may hold the GIL while others wait (CPython's default: 5 ms).

The driver and the local runtime's slot threads are all busy during a fan-out, and every hand-over of the GIL
costs two context switches and a cold cache. Four times fewer hand-overs: fan-out CPU per task 9-24% lower in
interleaved runs (README, ``fave bench fanout``); nothing here needs to react within 5 ms."""


def _before_exit() -> None:
    """Leave what is alive to the operating system: freeze the cyclic collector's objects.

    The interpreter's shutdown collects over every object still alive (after ``fave run``: ~35,000, every
    module, class and function) as it tears the modules down: ~60 ms of CPU for a 3-stage chain, a fifth of the
    command (``fave bench startup``). Frozen, they are left to the operating system with the process's memory.
    What the interpreter promises at exit still happens: atexit handlers (logging's flush, ``weakref.finalize``)
    run and the standard streams are flushed; only the ``__del__`` of objects in reference cycles is not run,
    which Python never promises at exit. Only when ``main`` is the process's command (no ``argv``): a caller
    that runs ``main([...])`` in its own process (tests) keeps its collector as it was."""
    gc.freeze()


def _interrupted(args: argparse.Namespace | None) -> str:
    """The Ctrl-C line: the request this command was driving, and how to continue it."""
    request_id = getattr(args, "active_request", None)
    if request_id is None:
        return "fave: interrupted" + (
            " before a request was created" if getattr(args, "command", None) == "run" else ""
        )
    given = getattr(args, "store", None)
    store = f" --store {shlex.quote(given)}" if given else ""
    return f"fave: interrupted; `fave resume {request_id}{store}` continues the request"


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words[0] if words and words[0] in _COMMANDS else None)
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)  # in here: --help and --version write to stdout, which may be a closed pipe
        code: int = args.func(args)
        sys.stdout.flush()  # here, so a closed pipe is handled below rather than reported by the interpreter
        return code
    except (FaveError, ValidationError) as exc:
        from fave.persistence import CorruptStateError

        _tell(f"fave: error: {exc}".splitlines()[0])
        return 1 if isinstance(exc, CorruptStateError) else 2  # corrupt: the request is broken, not the command line
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM between two steps (fave.cli.stopping)
        _tell(_interrupted(args))
        return int(getattr(exc, "exit_code", 130))
    except BrokenPipeError:
        # The reader of our output went away (`fave list | head -1`): nothing left to tell it, and no traceback.
        # /dev/null takes the place of the closed pipe so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    finally:
        gc.set_threshold(*thresholds)  # for a caller that runs main() in its own process (tests)
        sys.setswitchinterval(interval)
        if argv is None:  # the process's own command (the fave script, python -m fave.cli): it exits next
            _before_exit()


if __name__ == "__main__":
    sys.exit(main())
