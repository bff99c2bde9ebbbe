"""``fave metrics [--since 24h|7d] [--pipeline P] [--json] [--store S]``: throughput, latency, failures and cost
from the run history (``fave.metrics.report``); the queue's depth when the pipeline is known.

On a terminal the numbers are Rich tables; otherwise (a pipe, a file) plain aligned text; ``--json`` prints the
report's stable keys."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from fave_shared.errors import FaveError

__all__ = ["cmd_metrics", "pipeline_name"]


class MetricsUsageError(FaveError):
    """Bad command-line input (exit 2, one line)."""


def pipeline_name(value: str | None) -> str | None:
    """``--pipeline``: a pipeline file (like every other command's; its ``name:``) or a pipeline's name."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from fave.yamlsafe import YamlInputError, load_file

        try:
            doc = load_file(path)
        except FileNotFoundError:
            raise MetricsUsageError(f"--pipeline {value}: no such file") from None
        except YamlInputError as exc:
            raise MetricsUsageError(str(exc).splitlines()[0]) from None
        name = doc.get("name") if isinstance(doc, dict) else None
        if not isinstance(name, str) or not name:
            raise MetricsUsageError(f"--pipeline {value}: the file names no pipeline (its 'name:')")
        return name
    return value


def _since(text: str) -> float:
    from fave.core.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise MetricsUsageError(f"--since: {exc}") from None
    if seconds <= 0:
        raise MetricsUsageError("--since must be longer than 0s")
    if seconds > 3660 * 86400:
        raise MetricsUsageError("--since covers at most 10 years")
    return seconds


def cmd_metrics(args: argparse.Namespace) -> int:
    from fave.history import ReadStats
    from fave.local.orchestrator import open_any_store, store_uri
    from fave.metrics import queue_stats, report

    since_s = _since(args.since)
    name = pipeline_name(args.pipeline)
    store = open_any_store(store_uri(args.store))
    stats = ReadStats()
    doc = report(store, since_s=since_s, pipeline=name, queue=queue_stats(store, name), stats=stats)
    doc["since_text"] = args.since
    doc["index"] = dataclasses.asdict(stats)  # what reading the history cost: O(days) once days are packed
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif sys.stdout.isatty():
        _print_rich(doc)
    else:
        sys.stdout.write("\n".join(plain_lines(doc)) + "\n")
    return 0


def _num(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}{unit}"
    return f"{value}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value >= 0.01 or value == 0 else f"${value:.3g}"  # a Lambda request: $2e-07


def _headline(doc: dict[str, Any]) -> list[tuple[str, str]]:
    r = doc["requests"]
    t = doc["tasks"]
    c = doc["cost"]
    rows = [
        (
            "requests ended",
            f"{r['ended']} ({r['completed']} completed, {r['failed']} failed, {r['cancelled']} cancelled)",
        ),
        ("failure rate", _pct(r["failure_rate"])),
        ("budget exceeded", str(r["budget_exceeded"])),
        ("throughput", f"{doc['throughput_per_day']:g} completed/day"),
        ("request time p50 / p95", f"{_num(r['duration_s']['p50'], 's')} / {_num(r['duration_s']['p95'], 's')}"),
        ("task retry rate", _pct(t["retry_rate"])),
        ("task failure rate", _pct(t["failure_rate"])),
        ("cost per request", _usd(c["per_request_usd"])),
        ("cost per day", _usd(c["per_day_usd"])),
    ]
    q = doc.get("queue")
    if q is not None:
        oldest = q.get("oldest_age_s")
        rows.append(("queue depth", f"{q.get('depth')} (oldest waited {_num(oldest, 's', 4)})"))
    return rows


def _stage_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [
        [
            name,
            str(s["tasks"]),
            _num(s["p50_s"], "s"),
            _num(s["p95_s"], "s"),
            _pct(s["retry_rate"]),
            _pct(s["failure_rate"]),
            str(s["cached"]),
        ]
        for name, s in doc["stages"].items()
    ]


STAGE_HEADER = ["stage", "tasks", "p50", "p95", "retries", "failures", "cached"]
DAY_HEADER = ["day", "completed", "failed", "cancelled", "cost"]


def _day_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [
        [d["day"], str(d["completed"]), str(d["failed"]), str(d["cancelled"]), _usd(d["cost_usd"])]
        for d in doc["per_day"]
    ]


def _title(doc: dict[str, Any]) -> str:
    of = f" of pipeline {doc['pipeline']}" if doc.get("pipeline") else ""
    return f"fave metrics{of}, last {doc['since_text']}"


def plain_lines(doc: dict[str, Any]) -> list[str]:
    lines = [_title(doc)]
    lines += [f"  {label:<24} {value}" for label, value in _headline(doc)]
    for header, rows in ((STAGE_HEADER, _stage_rows(doc)), (DAY_HEADER, _day_rows(doc))):
        if not rows:
            continue
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        lines.append("")
        for row in (header, *rows):
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _print_rich(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = Table(title=_title(doc), show_header=False, box=None)
    head.add_column(style="bold")
    head.add_column()
    for label, value in _headline(doc):
        head.add_row(label, value)
    console.print(head)
    for title, header, rows in (("per stage", STAGE_HEADER, _stage_rows(doc)), ("per day", DAY_HEADER, _day_rows(doc))):
        if not rows:
            continue
        table = Table(title=title)
        for i, column in enumerate(header):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
