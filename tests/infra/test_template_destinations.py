"""template.yaml passes the load-time check of docs/stages.md: every asynchronous stage of pipeline.yaml has
both destinations back to the orchestrator (issue 11, requirement 2); the check catches a copy that breaks it.

tests/functional/test_contract_of_stages.py runs the check on generated templates, through ``fave run``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fave.local.orchestrator import load_local_pipeline
from fave.local.template import EventInvokeConfig, Template
from support.templates import TEMPLATE

PIPELINE = TEMPLATE.parent / "pipeline.yaml"


def _async_stages() -> dict[str, str]:
    pipeline = load_local_pipeline(PIPELINE)  # raises if the check fails
    return {name: spec.function for name, spec in pipeline.stages.items() if spec.mode == "async"}


def test_every_async_stage_of_the_pipeline_reports_back(template: Template) -> None:
    stages = _async_stages()
    assert stages, "pipeline.yaml has no asynchronous stage: this test checks nothing"
    assert template.orchestrator_destinations() == {"OrchestratorFunction", "CompletionsQueue"}
    for function in stages.values():
        assert template.completion_problem(function) is None, function
        config = template.function(function).event_invoke_config
        assert (config.on_success, config.on_failure) == ("CompletionsQueue", "CompletionsQueue")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"on_success": None}, "no OnSuccess destination"),
        ({"on_failure": "OrchestratorDeadLetterQueue"}, "its OnFailure destination OrchestratorDeadLetterQueue"),
        ({"on_success": "OrchestratorFunction", "on_failure": "OrchestratorFunction"}, None),  # also back
    ],
)
def test_the_check_catches_a_broken_copy(template: Template, change: dict[str, str | None], problem: str) -> None:
    function = sorted(_async_stages().values())[0]
    spec = template.function(function)
    config: EventInvokeConfig = replace(spec.event_invoke_config, **change)  # type: ignore[arg-type]
    broken = replace(template, functions={**template.functions, function: replace(spec, event_invoke_config=config)})
    found = broken.completion_problem(function)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "point both at CompletionsQueue" in found
