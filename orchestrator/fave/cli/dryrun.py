"""``fave run --dry-run``: print the plan of a request (``fave.plan``) without running it or opening a store."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from fave.core.dag import Pipeline
from fave.plan import FunctionFacts, Plan, build_plan
from fave.pricing import prices

__all__ = ["dry_run"]


def dry_run(
    pipeline: Pipeline,
    request_input: Mapping[str, Any],
    *,
    items: int | None,
    stages: Sequence[str],
    as_json: bool,
) -> int:
    """Print the plan (a table, or ``--json``) on stdout; 0."""
    from fave.local.template import load_template_once

    template = load_template_once(pipeline.template_path)
    functions = {
        spec.function: FunctionFacts(memory_mb=fn.memory_mb, timeout_s=float(fn.timeout_s))
        for spec in pipeline.stages.values()
        for fn in (template.function(spec.function),)
    }
    plan = build_plan(pipeline, functions, prices(), request_input=request_input, items=items, stages=stages)
    if as_json:
        json.dump(plan.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(plan))
    return 0


def _usd(value: float | None) -> str:
    """Three significant digits in plain decimals: a 128 MB task costs far less than a millionth of a dollar."""
    if value is None:
        return "?"
    if value <= 0:
        return "$0"
    decimals = max(2, 2 - math.floor(math.log10(value)))
    return f"${value:.{decimals}f}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def render(plan: Plan) -> str:
    """The plan as a plain-text table, the totals and the assumptions."""
    head = ("STAGE", "FUNCTION", "MODE", "NEEDS", "INVOCATIONS", "MEMORY", "TIMEOUT", "RETRIES", "COST LOW", "HIGH")
    rows = [head]
    for s in plan.stages:
        count = "unknown (give --items N)" if s.invocations is None else str(s.invocations)
        if s.fan_out is not None and s.invocations is not None:
            count += f" per {s.fan_out}"
        rows.append(
            (
                s.stage,
                s.function,
                s.mode,
                ",".join(s.needs) or "-",
                count,
                f"{s.memory_mb} MB",
                _seconds(s.timeout_s),
                str(s.max_attempts),
                _usd(s.cost_low),
                _usd(s.cost_high),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"plan of pipeline '{plan.pipeline}' (profile {plan.profile}), nothing run"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    bound = "" if plan.complete else " (a lower bound: a fan-out's size is unknown, give --items N)"
    lines.append(f"estimated cost: {_usd(plan.total_low)} to {_usd(plan.total_high)}{bound}")
    lines += [f"note: {a}" for a in plan.assumptions]
    return "\n".join(lines) + "\n"
