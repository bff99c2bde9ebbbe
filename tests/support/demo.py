"""Run the demo pipeline (tests/fixtures/demo) through the real local runtime and a real store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fave.core.model import RequestState
from fave.local.orchestrator import local_orchestrator
from fave.service import Orchestrator
from fave_shared.store import ObjectStore

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "pipeline.yaml"
TEXT = "the quick brown fox jumps over the lazy dog"


def demo_orchestrator(store: ObjectStore, **runtime: Any) -> Orchestrator:
    options = {"async_retry_delays_s": (0.05, 0.05), **runtime}
    return local_orchestrator(DEMO, store, runtime_options=options)


def run_demo(store: ObjectStore, request: dict[str, Any] | None = None, **runtime: Any) -> RequestState:
    orchestrator = demo_orchestrator(store, **runtime)
    try:
        state = orchestrator.create({"text": TEXT, **(request or {})})
        return orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()


def read_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get(key).data)
