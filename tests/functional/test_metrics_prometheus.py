"""``fave.metrics.serve_prometheus`` (issue 14 requirement 5): the run history's counters and histograms and the
worker's live numbers in Prometheus's text format, scraped over HTTP and parsed with prometheus_client's own
parser; the Grafana dashboard (examples/grafana/fave.json) asks only for metrics the exporter serves."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fave.core.model import RequestStatus
from fave.history import DURATION_BUCKETS, record
from fave.metrics import LiveMetrics, serve_prometheus
from fave_shared.store import LocalStore
from prometheus_client.parser import text_string_to_metric_families
from test_history import ended, rid

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "fave.json"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_the_exporter_serves_the_historys_counters_histograms_and_the_live_numbers(store: LocalStore) -> None:
    now = time.time()
    for i in range(4):
        record(store, ended(rid(i, now), now - 60 + i), "demo", now=now - 60 + i)
    record(store, ended(rid(9, now), now - 30, status=RequestStatus.FAILED, error_type="budget_exceeded"), "demo")
    record(store, ended(rid(10, now), now - 20), "other")  # another pipeline: not this exporter's
    live = LiveMetrics()
    live.set_in_flight(2)
    live.set_queue_depth(7, oldest_age_s=42.0)
    live.throttled("ShoutFunction", 3)
    stop = serve_prometheus(0, store, "demo", live, addr="127.0.0.1")
    try:
        samples = scrape(stop.port)
        assert value(samples, "fave_requests_total", pipeline="demo", status="completed") == 4
        assert value(samples, "fave_requests_total", pipeline="demo", status="failed") == 1
        assert value(samples, "fave_requests_total", pipeline="demo", status="cancelled") == 0
        assert ("fave_requests_total", (("pipeline", "other"), ("status", "completed"))) not in samples
        assert value(samples, "fave_request_failures_total", pipeline="demo", error_type="budget_exceeded") == 1
        # 5 requests x 3 items, one retried each: 20 attempts, 5 retries, 5 failed attempts
        assert value(samples, "fave_task_attempts_total", pipeline="demo", stage="fan") == 20
        assert value(samples, "fave_task_retries_total", pipeline="demo", stage="fan") == 5
        assert value(samples, "fave_task_failures_total", pipeline="demo", stage="fan") == 5
        # the histogram: every attempt of "fan" took 0.2 or 0.3 s, so none is under 0.1 s and all under 0.5 s
        fan = {"pipeline": "demo", "stage": "fan"}
        assert value(samples, "fave_task_duration_seconds_bucket", le="0.1", **fan) == 0
        assert value(samples, "fave_task_duration_seconds_bucket", le="0.5", **fan) == 20
        assert value(samples, "fave_task_duration_seconds_bucket", le="+Inf", **fan) == 20
        assert value(samples, "fave_task_duration_seconds_count", **fan) == 20
        assert value(samples, "fave_task_duration_seconds_sum", **fan) == pytest.approx(5 * 0.2 + 15 * 0.3)
        les = {dict(labels)["le"] for name, labels in samples if name == "fave_task_duration_seconds_bucket"}
        assert len(les) == len(DURATION_BUCKETS) + 1
        assert value(samples, "fave_request_duration_seconds_count", pipeline="demo") == 4
        assert value(samples, "fave_requests_in_flight") == 2
        assert value(samples, "fave_queue_depth") == 7
        assert value(samples, "fave_queue_oldest_age_seconds") == 42
        assert value(samples, "fave_throttles_total", function="ShoutFunction") == 3

        # Counters only go up: a request that ends later is counted at the next scrape.
        record(store, ended(rid(11, now), time.time()), "demo")
        live.throttled("ShoutFunction", 1)
        again = scrape(stop.port)
        assert value(again, "fave_requests_total", pipeline="demo", status="completed") == 5
        assert value(again, "fave_throttles_total", function="ShoutFunction") == 4
    finally:
        stop()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(stop.port)


def test_without_a_worker_the_live_gauges_are_absent_not_zero(store: LocalStore) -> None:
    stop = serve_prometheus(0, store, "demo", addr="127.0.0.1")
    try:
        samples = scrape(stop.port)
    finally:
        stop()
    names = {name for name, _ in samples}
    assert "fave_requests_in_flight" not in names and "fave_queue_depth" not in names
    assert value(samples, "fave_requests_total", pipeline="demo", status="completed") == 0


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_metric_of_the_grafana_dashboard_is_served(store: LocalStore) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    now = time.time()
    record(store, ended(rid(1, now), now - 5), "demo", now=now)
    record(store, ended(rid(2, now), now - 4, status=RequestStatus.FAILED, error_type="Boom"), "demo", now=now)
    live = LiveMetrics()
    live.set_in_flight(1)
    live.set_queue_depth(1, oldest_age_s=1.0)
    live.throttled("F")
    stop = serve_prometheus(0, store, "demo", live, addr="127.0.0.1")
    try:
        samples = scrape(stop.port)
    finally:
        stop()
    served: dict[str, set[str]] = {}
    for name, labels in samples:
        served.setdefault(name, set()).update(label for label, _ in labels)
    asked = {name for expr in _exprs(dashboard) for name in re.findall(r"\bfave_[a-z_]+", expr)}
    assert len(dashboard["panels"]) >= 8
    assert asked, "the dashboard asks for no fave metric"
    assert asked <= set(served), sorted(asked - set(served))
    # Every label a panel selects on or groups by is one its metric has.
    for expr in _exprs(dashboard):
        for name, selector in re.findall(r"\b(fave_[a-z_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in served[name], (name, label, expr)
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            metrics = re.findall(r"\bfave_[a-z_]+", expr)
            for label in (x.strip() for x in grouping.split(",")):
                assert any(label in served[m] for m in metrics), (label, expr)
