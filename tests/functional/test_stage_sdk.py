"""The stage SDK turns a stage input that fails its model into fave's own terminal ``ValidationError``.

pydantic's ``ValidationError`` happens to share the name, so the orchestrator's default ``non_retryable``
list matched it by accident; these tests pin the deliberate behaviour: our class (a ``TerminalError``), a
one-line message that names the stage and each offending field, and Lambda's error payload saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
from fave_shared.errors import TerminalError, ValidationError
from fave_shared.schemas import StageInput
from fave_shared.stage import MAX_REPORTED_ERRORS, StageContext, stage
from pydantic import BaseModel, ConfigDict, Field
from support.functions import load_handler


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, gt=0, lt=1)
    label: str = "x"


class ToyNeeds(BaseModel):
    upstream: dict[str, int]


class ToyInput(StageInput):
    needs: ToyNeeds  # type: ignore[assignment]
    config: ToyConfig = Field(default_factory=ToyConfig)  # type: ignore[assignment]


class ToyOutput(BaseModel):
    threshold: float
    total: int


@stage(ToyInput)
def toy(inp: ToyInput, ctx: StageContext) -> ToyOutput:
    return ToyOutput(threshold=inp.config.threshold, total=sum(inp.needs.upstream.values()))


def _event(tmp_path: Path, inp: dict[str, Any], *, stage_name: str = "toy", item: int | None = None) -> dict[str, Any]:
    task = {"request_id": "r-sdk", "stage": stage_name, "item": item, "attempt": 1}
    return {"fave": 1, "task": task, "store": str(tmp_path / "store"), "input": inp}


def test_valid_input_runs_the_body(tmp_path: Path) -> None:
    out = toy(_event(tmp_path, {"needs": {"upstream": {"a": 2, "b": 3}}, "config": {"threshold": 0.25}}), None)
    assert out == {"threshold": 0.25, "total": 5}


def test_misspelt_config_key_is_our_terminal_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        toy(_event(tmp_path, {"needs": {"upstream": {}}, "config": {"treshold": 0.3}}), None)
    err = caught.value
    assert isinstance(err, TerminalError) and not isinstance(err, pydantic.ValidationError)
    assert isinstance(err.__cause__, pydantic.ValidationError)  # the detail stays reachable
    message = str(err)
    assert "\n" not in message
    assert message.startswith("input of stage toy is invalid: ")
    assert "config.treshold: Extra inputs are not permitted" in message


def test_message_names_every_bad_field_with_the_value_given(tmp_path: Path) -> None:
    bad = {"needs": {"upstream": {"a": "many"}}, "config": {"threshold": 7, "label": "ok"}}
    with pytest.raises(ValidationError) as caught:
        toy(_event(tmp_path, bad, stage_name="detect", item=3), None)
    message = str(caught.value)
    assert message.startswith("input of stage detect item 3 is invalid: ")
    assert "needs.upstream.a: Input should be a valid integer" in message and "(got 'many')" in message
    assert "config.threshold: Input should be less than 1 (got 7)" in message
    assert "label" not in message


def test_missing_upstream_output_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"needs: Field required$"):
        toy(_event(tmp_path, {}), None)


def test_long_error_lists_are_cut_to_one_readable_line(tmp_path: Path) -> None:
    upstream = {f"k{i}": "x" * 200 for i in range(MAX_REPORTED_ERRORS + 3)}
    with pytest.raises(ValidationError) as caught:
        toy(_event(tmp_path, {"needs": {"upstream": upstream}}), None)
    message = str(caught.value)
    assert message.endswith("; and 3 more")
    assert message.count("Input should be a valid integer") == MAX_REPORTED_ERRORS
    assert len(message) < 200 * MAX_REPORTED_ERRORS  # long values are abbreviated, not copied whole


def test_lambda_error_payload_is_non_retryable_by_our_class_name(tmp_path: Path) -> None:
    # The orchestrator's side of the contract: absent where only the stage functions' packages are installed
    # (.venv-py312, as on Lambda); the rest of this file runs there too.
    worker = pytest.importorskip("fave.local.worker", reason="the orchestrator (fave) is not installed here")
    pipeline = pytest.importorskip("fave.pipeline", reason="the orchestrator (fave) is not installed here")
    try:
        toy(_event(tmp_path, {"needs": {"upstream": {}}, "config": {"nope": 1}}), None)
    except ValidationError as exc:
        payload = worker.exception_payload(exc, "req-1")
    else:
        pytest.fail("no error")
    assert payload["errorType"] == ValidationError.__name__ == "ValidationError"
    assert payload["errorType"] in pipeline.DEFAULT_NON_RETRYABLE
    assert "config.nope" in payload["errorMessage"]


def test_a_real_stage_rejects_a_misspelt_profile_setting(tmp_path: Path) -> None:
    split = load_handler("split")
    inp = {
        "needs": {"normalize": {"video_key": "requests/r-sdk/input/normalized.mp4", "normalized": {"fps": 25}}},
        "config": {"max_clip": 8},
    }
    with pytest.raises(ValidationError, match=r"input of stage split is invalid: config\.max_clip: Extra inputs"):
        split(_event(tmp_path, inp, stage_name="split"), None)
