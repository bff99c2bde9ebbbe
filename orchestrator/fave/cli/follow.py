"""``fave wait ID`` (block until the request has ended) and ``fave logs ID [-f]`` (its log from the store,
``fave.cli.runlog``), for any store: a local directory or S3. Both only read the store."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any

from fave.cli.runlog import ENDED, log_keys, read_lines
from fave.core.model import RequestStatus
from fave.status import status_document

if TYPE_CHECKING:
    from fave_shared.store import ObjectStore

TIMED_OUT = 124
"""``fave wait --timeout S``: the exit code when the request has not ended in time (as coreutils ``timeout``)."""

FIRST_POLL_S = 0.1
MAX_POLL_S = 1.0
"""Polls start quick (a short request ends in well under a second) and slow down to one a second."""

END_GRACE_S = 3.0
"""``fave logs -f``: how long after the request's end to wait for its driver's last lines (a driver that was
killed writes none)."""


def _terminal(doc: dict[str, Any]) -> bool:
    return RequestStatus(doc["status"]).terminal


def wait(store: ObjectStore, request_id: str, timeout_s: float | None) -> tuple[dict[str, Any], bool]:
    """Poll the request's status until it is terminal: (its status document, whether ``timeout_s`` ran out
    first). ``NotFoundError`` for an unknown request."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pause = FIRST_POLL_S
    while True:
        doc = status_document(store, request_id)
        if _terminal(doc):
            return doc, False
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return doc, True
        time.sleep(pause if deadline is None else min(pause, deadline - now))
        pause = min(pause * 2, MAX_POLL_S)


def print_logs(store: ObjectStore, request_id: str, follow: bool) -> int:
    """Print the request's log lines in order; with ``follow``, keep printing new ones until the request has
    ended and its driver has written its last line (or ``END_GRACE_S`` has passed). Returns how many lines."""
    doc = status_document(store, request_id)  # NotFoundError for an unknown request, before anything else
    seen: set[str] = set()
    printed = 0
    last = ""
    ended_at: float | None = None
    pause = FIRST_POLL_S
    while True:
        new = [key for key in log_keys(store, request_id) if key not in seen]
        for line in read_lines(store, new):
            print(line, flush=follow)
            printed += 1
            last = line
        seen.update(new)
        if not follow:
            return printed
        if _terminal(doc):
            if ENDED in last:
                return printed
            now = time.monotonic()
            ended_at = ended_at or now
            if now - ended_at >= END_GRACE_S:
                return printed
        time.sleep(pause)
        pause = min(pause * 2, MAX_POLL_S)
        doc = status_document(store, request_id)


def tell_no_log(store_uri: str, request_id: str) -> None:
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(
            f"fave: no log lines for request {request_id} in {store_uri}: only a request driven by fave run or "
            "fave resume (or their --detach driver) has them; the Lambda deployment logs to CloudWatch",
            file=sys.stderr,
            flush=True,
        )
