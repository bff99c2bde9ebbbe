"""``fave queue``: the admission queue of a pipeline (``fave.queue``), from the command line.

``add``, ``add-batch`` (one entry per row of a CSV or JSON-lines file), ``list``, ``stats``, ``retry``,
``pause``, ``unpause``, ``remove``, ``clear``. Every input is checked against the pipeline's ``input:``
(``fave.inputs``) before anything is stored: a bad one exits 2 naming the field (and, for a batch, the row),
and nothing of the command is added. A CSV's cells are text: each is converted to its field's declared type
(integer, number, boolean; an object or array field's cell is JSON), and an empty cell is left out, so the
field's default applies.

Building the parser (``add_parser``, on every ``fave`` command) imports nothing beyond what ``fave.cli.main``
has: the rest is imported when a queue command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fave.cli.main import UsageError, _json_option, _json_out, _local_source, _tell

if TYPE_CHECKING:
    from fave.core.dag import Pipeline
    from fave.queue import AdmissionQueue, Entry

__all__ = ["add_parser", "cmd_queue"]

#: Rows one add-batch takes: a nightly batch is tens to hundreds; a file of millions is a mistake.
MAX_BATCH_ROWS = 10_000
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
_STATUSES = ("QUEUED", "CLAIMED", "RUNNING", "DONE", "FAILED")


def add_parser(sub: Any, common: Any, func: Any) -> None:
    """The ``queue`` command group (``common(p)`` adds ``--store``; ``func`` runs an action: ``cmd_queue``)."""
    queue = sub.add_parser(
        "queue",
        help="the admission queue: add, add-batch, list, stats, retry, pause, unpause, remove, clear",
        description="A pipeline's admission queue in the store: requests waiting for a worker (fave worker), "
        "in order of priority (1 highest) then age, one open entry per key.",
    )
    actions = queue.add_subparsers(dest="queue_action", required=True, metavar="ACTION")

    def opts(p: argparse.ArgumentParser, *, as_json: bool = True) -> None:
        p.add_argument("--pipeline", default="pipeline.yaml", help="pipeline file (default pipeline.yaml)")
        if as_json:
            p.add_argument("--json", action="store_true", help="print JSON on stdout")
        common(p)
        p.set_defaults(func=func)

    add = actions.add_parser("add", help="queue one request", description="Queue one request of the pipeline.")
    add.add_argument("--input", metavar="JSON|@FILE", help="the request input: a JSON object, or @FILE (@-: stdin)")
    _entry_opts(add)
    add.add_argument("--key", metavar="K", help="the entry's key: an open entry with this key is not added twice")
    opts(add)

    batch = actions.add_parser(
        "add-batch",
        help="queue one request per row of a CSV or JSON-lines file",
        description="Queue one request per row of FILE (.csv: a header row naming input fields; .jsonl: one JSON "
        "object per line). Every row is checked first: a bad row adds nothing.",
    )
    batch.add_argument("file", metavar="FILE", help="a .csv or .jsonl file (- reads CSV from stdin)")
    _entry_opts(batch)
    batch.add_argument("--key-field", metavar="F", help="each row's value of F is its entry's key (dedupe)")
    opts(batch)

    lst = actions.add_parser("list", help="list entries", description="List entries in claim order.")
    lst.add_argument(
        "--status",
        action="append",
        type=str.upper,
        choices=_STATUSES,
        metavar="STATUS",
        help=f"only entries with this status (repeat for several), in any case: {', '.join(_STATUSES)}",
    )
    opts(lst)

    stats = actions.add_parser(
        "stats",
        help="depth by priority, oldest age, estimated time to drain",
        description="Depth by priority, the oldest due entry's age, and the time to drain the queue at the rate "
        "entries completed over the last day.",
    )
    opts(stats)

    for name, what in (
        ("retry", "queue it again now, attempts from zero"),
        ("pause", "keep it from being claimed"),
        ("unpause", "let it be claimed again"),
        ("remove", "delete it (not while it runs)"),
    ):
        p = actions.add_parser(name, help=f"an entry (by key or id): {what}", description=f"An entry: {what}.")
        p.add_argument("entry", metavar="KEY|ID", help="the entry's key or id")
        opts(p)

    clear = actions.add_parser("clear", help="delete every entry with a status", description="Delete entries.")
    clear.add_argument(
        "--status", required=True, type=str.lower, choices=["failed", "done", "queued"], help="failed, done, queued"
    )
    opts(clear)


def _entry_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--priority", type=int, default=3, metavar="1-5", help="1 is the highest (default 3)")
    p.add_argument("--at", metavar="TIME", help="not before TIME: ISO 8601 (2026-12-01T06:00Z) or from now (+10m)")
    p.add_argument("--every", metavar="DURATION", help="run again this long after each success (e.g. 7d)")
    p.add_argument("--max-attempts", type=int, default=3, metavar="N", help="failed runs before FAILED (default 3)")
    p.add_argument(
        "--budget",
        metavar="JSON",
        help='each run\'s budget, overriding the pipeline\'s: e.g. {"max_wall": "1h", "max_cost_usd": 2.5}',
    )


def cmd_queue(args: argparse.Namespace) -> int:
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    from fave.local.orchestrator import load_local_pipeline, open_any_store, store_uri
    from fave.queue import AdmissionQueue, QueueError

    pipeline = load_local_pipeline(args.pipeline)
    action = args.queue_action
    try:
        rows: list[dict[str, Any]] = []
        if action == "add":
            rows = [_entry_spec(args, pipeline, _add_input(args, pipeline), None)]
        elif action == "add-batch":
            rows = _batch_rows(args, pipeline)
        store = open_any_store(store_uri(args.store))  # after every input is known good: a refusal stores nothing
        queue = AdmissionQueue(store, pipeline.name)
        if action in ("add", "add-batch"):
            return _print_added(args, queue.add_batch(rows))
        if action == "list":
            return _print_list(args, queue.list(args.status))
        if action == "stats":
            return _print_stats(args, queue)
        if action == "clear":
            n = queue.clear(args.status)
            _json_out({"cleared": n}) if args.json else print(f"cleared {n} {args.status} entries")
            return 0
        entry = {"retry": queue.retry, "pause": queue.pause, "unpause": queue.unpause, "remove": queue.remove}[action](
            args.entry
        )
    except QueueError as exc:
        raise UsageError(f"queue {action}: {exc}") from None
    if args.json:
        _json_out(_doc(entry))
    else:
        print(f"{entry.id}  {'removed' if action == 'remove' else _state(entry)}")
    return 0


# ---- inputs ---------------------------------------------------------------------------------------------------


def _add_input(args: argparse.Namespace, pipeline: Pipeline) -> dict[str, Any]:
    value = _json_option(args.input, "--input") if args.input is not None else {}
    return _checked(pipeline, value, "input")


def _checked(pipeline: Pipeline, value: dict[str, Any], where: str) -> dict[str, Any]:
    """``value`` validated (defaults filled), or ``UsageError`` naming ``where`` and the field."""
    from fave.inputs import InputError, check_profile, upload_field, validate_input

    field = upload_field(pipeline)
    try:
        if field is not None and isinstance(value.get(field), str):
            value[field] = _local_source(value[field])
    except UsageError as exc:
        raise UsageError(f"{where}: {field}: {exc}") from None
    try:
        profile = value.get("profile")
        if isinstance(profile, str):
            check_profile(pipeline, profile)
        return validate_input(pipeline, value)
    except InputError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _entry_spec(args: argparse.Namespace, pipeline: Pipeline, value: dict[str, Any], key: str | None) -> dict[str, Any]:
    if not 1 <= args.priority <= 5:
        raise UsageError(f"--priority: must be 1 (highest) to 5, got {args.priority}")
    if args.max_attempts < 1:
        raise UsageError(f"--max-attempts: must be at least 1, got {args.max_attempts}")
    return {
        "input": value,
        "budget": _budget(args.budget) if args.budget else None,
        "priority": args.priority,
        "key": key if key is not None else getattr(args, "key", None),
        "at": parse_at(args.at) if args.at else None,
        "every_s": _every(args.every) if args.every else None,
        "max_attempts": args.max_attempts,
    }


def _budget(text: str) -> dict[str, Any]:
    """``--budget``: checked as pipeline.yaml's ``operations.budget`` (the worker parses it so again)."""
    from fave.pipeline import parse_budget

    value = _json_option(text, "--budget")
    parse_budget(value, "--budget")  # ValidationError naming the field: exit 2
    return value


def parse_at(text: str, now: float | None = None) -> float:
    """``--at``: ``+10m`` (from now) or an ISO 8601 time (UTC unless it says otherwise), in epoch seconds."""
    from datetime import UTC, datetime

    from fave.core.durations import parse_duration

    now = time.time() if now is None else now
    if text.startswith("+"):
        try:
            return now + parse_duration(text[1:])
        except ValueError as exc:
            raise UsageError(f"--at: {exc}") from None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at: not a time: {text!r} (ISO 8601, e.g. 2026-12-01T06:00Z, or +10m)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _every(text: str) -> float:
    from fave.core.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--every: {exc}") from None
    if seconds <= 0:
        raise UsageError("--every: must be longer than 0")
    return seconds


def _batch_rows(args: argparse.Namespace, pipeline: Pipeline) -> list[dict[str, Any]]:
    name = args.file
    try:
        text = sys.stdin.read() if name == "-" else Path(name).expanduser().read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"add-batch: {name}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"add-batch: {name}: cannot read it: {exc}") from None
    jsonl = name.lower().endswith((".jsonl", ".ndjson"))
    raw = list(_jsonl_rows(text) if jsonl else _csv_rows(text, pipeline))
    if not raw:
        raise UsageError(f"add-batch: {name}: no rows")
    if len(raw) > MAX_BATCH_ROWS:
        raise UsageError(f"add-batch: {name}: {len(raw)} rows, at most {MAX_BATCH_ROWS} in one command")
    rows = []
    for number, value in raw:
        where = f"row {number}"
        key = None
        if args.key_field:
            found = value.get(args.key_field)
            if found is None or found == "":
                raise UsageError(f"add-batch: {where}: --key-field {args.key_field!r}: the row has no value")
            key = str(found)
            from fave.inputs import accepts

            if not accepts(pipeline, args.key_field):  # a key column that is not an input field
                value.pop(args.key_field)
        rows.append(_entry_spec(args, pipeline, _checked(pipeline, value, f"add-batch: {where}"), key))
    return rows


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"add-batch: line {number}: not valid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise UsageError(f"add-batch: line {number}: must be a JSON object")
        rows.append((number, value))
    return rows


def _csv_rows(text: str, pipeline: Pipeline) -> list[tuple[int, dict[str, Any]]]:
    """Row numbers count data rows from 1 (the header is not one)."""
    import csv

    from fave.inputs import declared_fields

    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise UsageError("add-batch: the CSV has no header row naming the input fields")
    props = pipeline.input_schema.get("properties", {}) if pipeline.input_schema else {}
    known = set(declared_fields(pipeline))
    rows = []
    for number, record in enumerate(reader, 1):
        if None in record:
            raise UsageError(f"add-batch: row {number}: more cells than the header has columns")
        value: dict[str, Any] = {}
        for column, cell in record.items():
            if cell is None or cell == "":
                continue  # an empty cell: the field's default
            spec = props.get(column) if column in known else None
            value[column] = _convert(cell, spec if isinstance(spec, Mapping) else None, f"row {number}", column)
        rows.append((number, value))
    return rows


def _convert(cell: str, spec: Mapping[str, Any] | None, where: str, column: str) -> Any:
    """A CSV cell as its field's declared type (text when the field declares none)."""
    kind = spec.get("type") if spec is not None else None
    kinds = set(kind) if isinstance(kind, list) else {kind}
    text = cell.strip()
    try:
        if "integer" in kinds:
            return int(text)
        if "number" in kinds:
            number = float(text)
            return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
        if "boolean" in kinds:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("not a boolean (true/false, yes/no, 1/0)")
        if kinds & {"object", "array"}:
            return json.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:
        want = "/".join(sorted(k for k in kinds if k))
        raise UsageError(f"add-batch: {where}: {column}: {cell!r} is not {want}: {exc}".split("\n")[0]) from None
    return cell


# ---- output ---------------------------------------------------------------------------------------------------


def _doc(entry: Entry) -> dict[str, Any]:
    return {**entry.to_json(), "duplicate": entry.duplicate}


def _print_added(args: argparse.Namespace, entries: list[Entry]) -> int:
    duplicates = sum(1 for e in entries if e.duplicate)
    if args.json:
        _json_out([_doc(e) for e in entries] if args.queue_action == "add-batch" else _doc(entries[0]))
    else:
        for entry in entries:
            print(entry.id)
    if duplicates:
        _tell(f"fave: {duplicates} with a key already queued or running: its entry's id is given, nothing added")
    if args.queue_action == "add-batch":
        _tell(f"queued {len(entries) - duplicates} entries")
    return 0


def _state(entry: Entry, now: float | None = None) -> str:
    now = time.time() if now is None else now
    text = entry.status + (" paused" if entry.paused else "")
    if entry.status == "QUEUED" and entry.not_before > now:
        text += f" (due in {_age(entry.not_before - now)})"
    return text


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _print_list(args: argparse.Namespace, entries: list[Entry]) -> int:
    if args.json:
        _json_out([_doc(e) for e in entries])
        return 0
    now = time.time()
    for e in entries:
        detail = e.request_id or ""
        if e.error:
            detail = f"{detail} {e.error}".strip()
        tries = f"{e.attempts}/{e.max_attempts}"
        key = e.key if e.key is None or len(e.key) <= 24 else e.key[:21] + "..."
        print(f"{e.id}  p{e.priority} {_state(e, now):<22} {tries:<5} {key or '-':<24} {detail[:100]}".rstrip())
    return 0


def _print_stats(args: argparse.Namespace, queue: AdmissionQueue) -> int:
    stats = queue.stats()
    if args.json:
        _json_out(stats.to_json())
        return 0
    by = "  ".join(f"p{p}: {n}" for p, n in sorted(stats.depth_by_priority.items()))
    print(f"queued     {stats.depth} ({by})")
    print(f"due        {stats.due}, cooling down {stats.cooling_down}, paused {stats.paused}")
    print(f"in flight  {stats.claimed} claimed, {stats.running} running; failed {stats.failed}")
    print(f"oldest     {'-' if stats.oldest_age_s is None else _age(stats.oldest_age_s)}")
    rate = "-" if stats.drain_rate_per_h is None else f"{stats.drain_rate_per_h:.1f}/h"
    drain = "-" if stats.est_drain_s is None else _age(stats.est_drain_s)
    print(f"completed  {stats.completed_24h} in 24h ({rate}); drains in {drain}")
    return 0
