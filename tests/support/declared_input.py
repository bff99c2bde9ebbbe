"""The demo pipeline with a declared ``input:`` (issue 11, requirement 1), for tests of every door.

``demo_with_input(dir, input, trigger)`` writes a copy of tests/fixtures/demo/pipeline.yaml (its stages,
functions and template: the same real stage code) with an ``input:`` and a ``trigger:`` section. Two inputs:

* ``WORDS_INPUT``: a non-video input (``text`` required, the demo's failure knobs, a defaulted field) whose
  upload field ``document`` is optional, so ``fave run`` needs no SOURCE;
* ``video_input()``: the video pipeline's own ``input:`` and ``trigger:``, read from the repository's
  pipeline.yaml, so the doors are checked against the real video contract.

``serve(lam, tier, path)`` points the orchestrator function of a test (``orchestrator_lambda``) at such a
pipeline, as ``support.app_lambda.configure_app`` points it at the demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from support.app_lambda import DEMO, OrchestratorLambda, configure_app
from support.tiers import Tier

REPO = Path(__file__).resolve().parents[2]
VIDEO_PIPELINE = REPO / "pipeline.yaml"

WORDS_INPUT: dict[str, Any] = {
    "fields": {
        "text": {"type": "string", "required": True, "min_length": 1, "description": "the words to shout"},
        "document": {"type": "string", "description": "an uploaded text (not read by the demo)"},
        "fail": {"type": "object", "description": "word -> attempts of shout that fail"},
        "bad_word": {"type": "string", "description": "a word shout refuses for good"},
        "sleep_s": {"type": "number", "minimum": 0},
        "slow_word": "string",
        "words_sleep_s": {"type": "number", "minimum": 0},
        "lang": {"type": "string", "enum": ["en", "fr"], "default": "en"},
    }
}
WORDS_TRIGGER: dict[str, Any] = {"upload": {"field": "document"}}


def video_input() -> tuple[dict[str, Any], dict[str, Any]]:
    """The video pipeline's ``input:`` and ``trigger:``, as pipeline.yaml declares them."""
    raw = yaml.safe_load(VIDEO_PIPELINE.read_text(encoding="utf-8"))
    return raw["input"], raw["trigger"]


def demo_with_input(
    directory: Path,
    input_section: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    *,
    name: str = "words",
) -> Path:
    """A pipeline file in ``directory``: the demo's stages with ``input_section`` and ``trigger`` (default: the
    words input) and the name ``name``."""
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["name"] = name
    raw["template"] = str(DEMO.parent / raw.get("template", "template.yaml"))
    if input_section is None:
        input_section = WORDS_INPUT
        trigger = WORDS_TRIGGER if trigger is None else trigger
    raw["input"] = input_section
    if trigger is not None:
        raw["trigger"] = trigger
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def serve(lam: OrchestratorLambda, tier: Tier, pipeline: Path) -> None:
    """Configure ``fave.app`` for this test as ``configure_app`` does, with ``pipeline`` instead of the demo."""
    configure_app(lam, tier, pipeline)
