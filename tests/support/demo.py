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
MEASURE_2S = "mode: async, timeout: 2s}"
"""The end of measure's line: its 2 s timeout (an edit for ``demo_variant``)."""
RETRY = "retry: {max_attempts: 2, interval: 50ms, backoff_rate: 2, jitter: full}"
"""The demo's default retry (an edit for ``demo_variant``)."""


def demo_variant(folder: Path, *edits: tuple[str, str]) -> Path:
    """The demo pipeline with each ``(old, new)`` text replaced (each must be there), written as
    ``folder/pipeline.yaml`` with its template named by absolute path (same functions, same template)."""
    text = DEMO.read_text().replace("template: template.yaml", f"template: {DEMO.with_name('template.yaml')}")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(text)
    return pipeline


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
