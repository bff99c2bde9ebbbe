"""`fave bench cost`: the cost of orchestration through the real entry point on moto, and the store work per
completion it measures (O(1): the completion's shard and the request's head, never every shard)."""

from __future__ import annotations

import json
from pathlib import Path

from support import e2e


def bench(*args: str) -> dict[str, object]:
    result = e2e.fave("bench", "cost", *args, "--invoke-latency-ms", "0", "--json", env=None, timeout=300)
    assert result.code == 0, result.describe()
    figures: dict[str, object] = json.loads(result.stdout)
    return figures


def test_each_completion_reads_its_shard_and_the_head_whatever_the_fanout(tmp_path: Path) -> None:
    # One completion per orchestrator invocation (no batching): 8 shards of tasks, yet about 2 GETs each.
    one_by_one = bench("--items", "1000", "--batch-size", "1", "--arrival", "serial")
    assert one_by_one["orchestrator_invocations"] >= 1000
    assert one_by_one["gets_per_completion"] <= 3  # type: ignore[operator]
    # The one step that reads every shard is the fan-in's (reduce gets all 1,000 outputs): 8 shards, once.
    assert one_by_one["max_gets_per_batch"] <= -(-1000 // 128) + 2  # type: ignore[operator]


def test_batched_completions_share_invocations_and_cost_less_than_step_functions(tmp_path: Path) -> None:
    figures = bench("--items", "2000", "--arrival", "concurrent")
    assert figures["orchestrator_invocations"] <= 2000 / 1000 + 3  # type: ignore[operator]
    usd = figures["usd_per_1k_tasks"]
    assert isinstance(usd, dict) and usd["fave"] < usd["step_functions_standard"]
    assert set(usd) >= {"fave", "step_functions_standard", "distributed_map_express", "lambda_durable_functions"}
    assert figures["s3_conflicts"] == 0
