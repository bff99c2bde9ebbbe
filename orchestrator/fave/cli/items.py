"""``fave items PIPELINE [--stage S] [--status STATUS] [--json]``: the latest status of each fanned-out item
across the requests of a pipeline (``fave.items``), as a table or as JSON.

PIPELINE is a pipeline's ``name:`` or the path of its pipeline.yaml. A name no request of the store carries is
an error (exit 2, one line), unless it is the name of ./pipeline.yaml: a pipeline not run yet has no items
(an empty list, exit 0), as does a pipeline given by its file.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fave_shared.errors import ValidationError

from fave.cli.main import _cut
from fave.items import item_rows, pipeline_name
from fave.local.orchestrator import open_any_store, store_uri

__all__ = ["cmd_items"]

_KEY_WIDTH = 32
"""Characters of a key in the table at most (a content digest is 16; a longer declared key is cut)."""


def _known_name(text: str) -> tuple[str, bool]:
    """PIPELINE's name, and whether it is known without any request (a file names it)."""
    name = pipeline_name(text)
    if name != text or Path(text).is_file():
        return name, True
    here = Path("pipeline.yaml")
    try:
        return name, here.is_file() and pipeline_name(str(here)) == text
    except ValidationError:  # a broken ./pipeline.yaml says nothing about this name
        return name, False


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cells = [
        (
            row["stage"],
            _cut(row["key"], _KEY_WIDTH),
            row["status"],
            row["request_id"],
            _when(row["finished_at"]),
            "cached" if row["cached"] else "",
            _cut(f"{row['error_type'] or 'Error'}: {row['error']}", 100) if row["error"] is not None else "",
        )
        for row in rows
    ]
    head = ("STAGE", "KEY", "STATUS", "REQUEST", "FINISHED (UTC)", "CACHED", "ERROR")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head) - 1)]
    for line in (head, *cells):
        print(("  ".join(f"{v:<{w}}" for v, w in zip(line, widths, strict=False)) + "  " + line[-1]).rstrip())


def cmd_items(args: argparse.Namespace) -> int:
    name, known = _known_name(args.pipeline)
    store = open_any_store(store_uri(args.store))
    rows = item_rows(store, name, stage=args.stage, status=args.status, known=known)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif rows:
        _table(rows)
    else:  # a person asking "which failed" gets an answer, on stderr (stdout stays empty for scripts)
        wanted = f" with latest status {args.status.upper()}" if args.status else ""
        print(
            f"no items{wanted} in pipeline {name!r}" + (f", stage {args.stage!r}" if args.stage else ""),
            file=sys.stderr,
        )
    return 0
