"""``fave worker`` tells the pipeline's alerts when a request it drove failed (issue 14, requirement 6): the
alert command of ``operations.alerts`` runs once for it, and not for a request that completed."""

from __future__ import annotations

import json
from pathlib import Path

from fave.local.orchestrator import load_local_pipeline
from fave.persistence import list_request_ids
from fave.queue import AdmissionQueue
from fave.service import Orchestrator
from fave_shared.store import LocalStore
from support import e2e

FIXTURE = e2e.ROOT / "tests" / "fixtures" / "worker" / "alerting.yaml"


def test_a_failed_request_fires_the_alert_command_once(tmp_path: Path) -> None:
    store, book, alerts = tmp_path / "store", tmp_path / "ledger.txt", tmp_path / "alerts.txt"
    for name, fail in (("bad", True), ("good", False)):
        request = {"name": name, "items": 2, "ledger": str(book), "fail": fail}
        added = e2e.fave("queue", "add", "--pipeline", str(FIXTURE), "--store", str(store),
                         "--input", json.dumps(request))  # fmt: skip
        assert added.code == 0, added.describe()
    done = e2e.fave(
        "worker", "--once", "--pipeline", str(FIXTURE), "--store", str(store),
        env=e2e.child_env({"WORKER_ALERTS": str(alerts)}), timeout=300,
    )  # fmt: skip
    assert done.code == 1, done.describe()
    entries = {e.input["name"]: e for e in AdmissionQueue(LocalStore(store), "worker-alerting").list()}
    assert entries["good"].status == "DONE" and entries["bad"].attempts == 1
    reader = Orchestrator(load_local_pipeline(FIXTURE), LocalStore(store))
    by_name = {reader.load(rid).input["name"]: rid for rid in list_request_ids(LocalStore(store))}
    e2e.wait_for(alerts.exists, timeout=30, what="the alert command")
    assert alerts.read_text().splitlines() == [f"request_failed {by_name['bad']}"]
