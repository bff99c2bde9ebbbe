"""Build pipelines for engine tests without files scattered around: write YAML to tmp and load it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from fave.pipeline import Pipeline, load_pipeline


def make_pipeline(tmp: Path, body: str, functions: list[str] | None = None) -> Pipeline:
    """Load ``body`` (YAML) as pipeline.yaml; every stage's function is accepted unless ``functions``."""
    path = tmp / "pipeline.yaml"
    path.write_text(textwrap.dedent(body))
    if functions is None:
        import yaml

        raw = yaml.safe_load(path.read_text())
        functions = [s["function"] for s in raw.get("stages", {}).values() if isinstance(s, dict)]
    return load_pipeline(path, functions=functions)


CHAIN = """
    name: chain
    final: c
    stages:
      a: {function: A, mode: sync}
      b: {function: B, needs: [a], mode: sync}
      c: {function: C, needs: [b], mode: sync}
"""

FANOUT = """
    name: fanout
    final: reduce
    defaults:
      timeout: 10s
      retry: {max_attempts: 2, interval: 1s, backoff_rate: 2, jitter: none}
    stages:
      plan: {function: Plan, mode: sync}
      work: {function: Work, needs: [plan], for_each: plan.items, mode: async, max_concurrency: 3}
      post: {function: Post, needs: [work], for_each: plan.items, mode: async}
      reduce: {function: Reduce, needs: [post], mode: sync}
"""
