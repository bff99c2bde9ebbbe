"""Build pipelines for engine tests from YAML text, in memory: no file is written or read."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from fave.core.dag import Pipeline
from fave.pipeline import parse_pipeline


def make_pipeline(body: str | dict[str, Any], functions: list[str] | None = None) -> Pipeline:
    """Parse ``body`` (YAML text or the document itself); every stage's function is accepted unless
    ``functions`` says which exist."""
    raw = yaml.safe_load(textwrap.dedent(body)) if isinstance(body, str) else body
    if functions is None:
        functions = [s["function"] for s in raw.get("stages", {}).values() if isinstance(s, dict)]
    return parse_pipeline(raw, functions)


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
