"""``fave worker --metrics-port`` serves Prometheus text with the worker's live numbers (issue 14, requirement 5):
the requests it drives now, and the queue's depth."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from support import e2e
from test_worker_sigterm import queue_entries, start_worker, stop

pytest.importorskip("prometheus_client")


def test_the_worker_serves_its_live_metrics(tmp_path: Path) -> None:
    store, book, logs = tmp_path / "store", tmp_path / "ledger.txt", tmp_path / "w"
    queue_entries(store, ["slow"], items=1, sleep_ms=4000, book=book)
    queue_entries(store, ["later"], items=1, sleep_ms=0, book=book)
    worker = start_worker(store, logs, "--concurrency", "1", "--metrics-port", "0", "--poll", "0.2s")
    try:
        shown = e2e.wait_for(
            lambda: re.search(r"metrics on (http://\S+/metrics)", (logs / "stderr").read_text()),
            timeout=120,
            what="the metrics URL",
        )
        e2e.wait_for(lambda: "started request" in (logs / "stderr").read_text(), timeout=120, what="a request")

        def scrape() -> str:
            with urllib.request.urlopen(shown.group(1), timeout=10) as response:
                return str(response.read().decode())

        def with_depth() -> str | None:
            text = scrape()
            return text if "fave_queue_depth 1.0" in text else None

        text = e2e.wait_for(with_depth, timeout=60, what="the queue depth")
        assert "fave_requests_in_flight 1.0" in text, text
        assert stop(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
