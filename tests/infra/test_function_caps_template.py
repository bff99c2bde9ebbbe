"""A pipeline's ``functions:`` caps and its template's ReservedConcurrentExecutions agree (``fave.local.caps``):
locally the runtime enforces a cap itself, on AWS only the template's reservation does, so a template that
does not reserve a cap would pass every local test and run unbounded once deployed.

Checked on template.yaml and every example, and shown to catch each way a copy can disagree.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fave.local.caps import cap_problems
from fave.local.orchestrator import load_local_pipeline
from fave.local.template import Template, load_template

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = [ROOT / "pipeline.yaml", *sorted((ROOT / "examples").glob("*/pipeline.yaml"))]
DEMO = ROOT / "tests" / "fixtures" / "demo" / "template.yaml"
CACHED = ROOT / "tests" / "fixtures" / "cache" / "pipeline.yaml"


def with_reserved(template: Template, function: str, n: int | None) -> Template:
    spec = dataclasses.replace(template.functions[function], reserved_concurrency=n)
    return dataclasses.replace(template, functions={**template.functions, function: spec})


@pytest.mark.parametrize("path", PIPELINES, ids=[p.parent.name or "root" for p in PIPELINES])
def test_every_pipelines_caps_are_its_templates_reservations(path: Path) -> None:
    pipeline = load_local_pipeline(path)
    template = load_template(pipeline.template_path)
    assert cap_problems(pipeline.operations.function_caps, template) == []


def test_a_cap_the_template_does_not_reserve_is_reported(tmp_path: Path) -> None:
    pipeline_file = tmp_path / "pipeline.yaml"
    text = CACHED.read_text().replace("template: ../demo/template.yaml", f"template: {DEMO}")
    pipeline_file.write_text(text + "functions:\n  ShoutFunction: {max_concurrency: 3}\n")
    pipeline = load_local_pipeline(pipeline_file)
    caps = pipeline.operations.function_caps
    template = load_template(DEMO)
    assert cap_problems(caps, template) == [
        "functions.ShoutFunction: max_concurrency 3, but template.yaml sets no ReservedConcurrentExecutions on "
        "ShoutFunction: set it to 3, or Lambda runs it unbounded"
    ]
    assert cap_problems(caps, with_reserved(template, "ShoutFunction", 5)) == [
        "functions.ShoutFunction: max_concurrency 3, but template.yaml sets ReservedConcurrentExecutions 5 on "
        "ShoutFunction: make them equal"
    ]
    assert cap_problems(caps, with_reserved(template, "ShoutFunction", 3)) == []
    # A reservation without a cap is the template's own business.
    assert cap_problems({}, with_reserved(template, "ShoutFunction", 3)) == []
    assert cap_problems({"Gone": 1}, template) == ["functions.Gone: no function Gone in template.yaml"]
