"""pipeline.yaml ``operations:`` and ``functions:`` (issue 14): parsed into ``Pipeline.operations``, every bad
value refused in one line naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from fave.core.operations import DEFAULT_MAX_REQUESTS_IN_FLIGHT, Alerts, Budget
from fave.pipeline import PipelineError, parse_pipeline

BASE: dict[str, Any] = {"stages": {"a": {"function": "F"}}}


def test_defaults_when_absent() -> None:
    ops = parse_pipeline(BASE, ["F"]).operations
    assert ops.max_requests_in_flight == DEFAULT_MAX_REQUESTS_IN_FLIGHT
    assert ops.budget == Budget() and not ops.budget.limited
    assert ops.alerts == Alerts() and not ops.alerts.enabled
    assert ops.stale_after_s is None and dict(ops.function_caps) == {}


def test_every_setting_is_read() -> None:
    raw = {
        **BASE,
        "operations": {
            "max_requests_in_flight": 2,
            "stale_after": "7d",
            "budget": {"max_wall": "1h", "max_invocations": 500, "max_cost_usd": 2.5},
            "alerts": {"webhook": "http://127.0.0.1:9/hook", "command": "cat", "queue_stuck_after": "10m"},
        },
        "functions": {"F": {"max_concurrency": 8}},
    }
    ops = parse_pipeline(raw, ["F"]).operations
    assert ops.max_requests_in_flight == 2
    assert ops.stale_after_s == 7 * 86400
    assert ops.budget == Budget(max_wall_s=3600.0, max_invocations=500, max_cost_usd=2.5)
    assert ops.alerts.webhook == "http://127.0.0.1:9/hook" and ops.alerts.command == "cat"
    assert ops.alerts.queue_stuck_after_s == 600 and ops.alerts.throttle_sustained_s == 300
    assert dict(ops.function_caps) == {"F": 8}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"operations": {"max_requests_in_flight": 0}}, "operations.max_requests_in_flight"),
        ({"operations": {"max_requests_in_flight": "4"}}, "operations.max_requests_in_flight"),
        ({"operations": {"stale_after": "soon"}}, "operations.stale_after"),
        ({"operations": {"budget": {"max_wall": "-1s"}}}, "operations.budget.max_wall"),
        ({"operations": {"budget": {"max_wall": 0}}}, "operations.budget"),
        ({"operations": {"budget": {"max_invocations": 0}}}, "operations.budget.max_invocations"),
        ({"operations": {"budget": {"max_cost_usd": 0}}}, "operations.budget.max_cost_usd"),
        ({"operations": {"budget": {"max_dollars": 1}}}, "operations.budget.max_dollars"),
        ({"operations": {"alerts": {"webhook": "file:///etc/passwd"}}}, "operations.alerts.webhook"),
        ({"functions": {"G": {"max_concurrency": 2}}}, "functions.G"),
        ({"functions": {"F": {"max_concurrency": 0}}}, "functions.F.max_concurrency"),
    ],
)
def test_bad_settings_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline({**BASE, **extra}, ["F"])
    message = str(caught.value)
    assert f"field '{field}" in message and "\n" not in message


def test_budget_override_keeps_what_it_does_not_set() -> None:
    base = Budget(max_wall_s=60, max_invocations=10)
    assert base.merged(Budget(max_invocations=20)) == Budget(max_wall_s=60, max_invocations=20)
    assert Budget.from_dict(base.as_dict()) == base
