"""Public AWS prices the cost figures use, in one place (us-east-1, x86, on-demand; checked 2026-11).

Override a region's prices with ``FAVE_PRICES`` (a JSON object of the fields below). The comparisons price the
same DAG on the engines fave competes with: Step Functions Standard (state transitions), a Distributed Map
with Express child executions, and Lambda durable functions (operations).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields, replace

__all__ = ["Prices", "prices"]


@dataclass(frozen=True)
class Prices:
    lambda_request: float = 0.20 / 1e6
    """Per Lambda invocation."""
    lambda_gb_second: float = 0.0000166667
    """Per GB-second of billed duration (1 ms granularity)."""
    s3_put: float = 0.005 / 1000
    """S3 PUT, COPY, POST and LIST (a refused conditional write is billed too)."""
    s3_get: float = 0.0004 / 1000
    """S3 GET, SELECT and every other request (HEAD included)."""
    s3_delete: float = 0.0
    sqs_request: float = 0.40 / 1e6
    """SQS standard queue, per request of up to 64 KB (a batch of 10 is one request)."""
    sfn_transition: float = 0.025 / 1000
    """Step Functions Standard, per state transition."""
    sfn_express_request: float = 1.00 / 1e6
    sfn_express_gb_second: float = 0.00001667
    durable_operation: float = 8.00 / 1e6
    """Lambda durable functions, per operation (a step, a wait, an invoke)."""

    def lambda_cost(self, invocations: int, billed_ms: float, memory_mb: int) -> float:
        return invocations * self.lambda_request + billed_ms / 1000 * memory_mb / 1024 * self.lambda_gb_second

    def step_functions_standard(self, transitions: int) -> float:
        return transitions * self.sfn_transition

    def distributed_map_express(self, items: int, parent_transitions: int, child_ms: float = 100.0) -> float:
        """A Standard parent (a few transitions) whose Distributed Map runs one Express child per item (each
        billed at least 100 ms at 64 MB)."""
        child = self.sfn_express_request + max(child_ms, 100.0) / 1000 * 64 / 1024 * self.sfn_express_gb_second
        return parent_transitions * self.sfn_transition + items * child

    def durable_functions(self, operations: int) -> float:
        return operations * self.durable_operation


def billed_ms(seconds: float) -> int:
    """Lambda bills duration rounded up to the millisecond."""
    return max(1, math.ceil(seconds * 1000))


def prices() -> Prices:
    """The default prices, with ``FAVE_PRICES`` overrides."""
    overrides = os.environ.get("FAVE_PRICES")
    if not overrides:
        return Prices()
    values = json.loads(overrides)
    known = {f.name for f in fields(Prices)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"FAVE_PRICES: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return replace(Prices(), **{k: float(v) for k, v in values.items()})
