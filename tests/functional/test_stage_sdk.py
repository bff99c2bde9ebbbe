"""The stage SDK turns a stage input that fails its model into fave's own terminal ``ValidationError``,
returned as a terminal error result (``fave_shared.outcome``): the orchestrator fails the task without
retrying it because the stage said so, not because of the error's name. These tests pin the deliberate
behaviour: our class, a one-line message that names the stage and each offending field, and the result.
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
from support.stage_results import terminal


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
    err = terminal(toy(_event(tmp_path, {"needs": {"upstream": {}}, "config": {"treshold": 0.3}}), None))
    assert err.error_type == ValidationError.__name__ and issubclass(ValidationError, TerminalError)
    assert not issubclass(ValidationError, pydantic.ValidationError)
    assert err.traceback is not None and "stage.py" in err.traceback  # where it was raised, for fave status
    message = err.message
    assert "\n" not in message
    assert message.startswith("input of stage toy is invalid: ")
    assert "config.treshold: Extra inputs are not permitted" in message


def test_message_names_every_bad_field_with_the_value_given(tmp_path: Path) -> None:
    bad = {"needs": {"upstream": {"a": "many"}}, "config": {"threshold": 7, "label": "ok"}}
    message = terminal(toy(_event(tmp_path, bad, stage_name="detect", item=3), None), "ValidationError").message
    assert message.startswith("input of stage detect item 3 is invalid: ")
    assert "needs.upstream.a: Input should be a valid integer" in message and "(got 'many')" in message
    assert "config.threshold: Input should be less than 1 (got 7)" in message
    assert "label" not in message


def test_missing_upstream_output_names_the_field(tmp_path: Path) -> None:
    terminal(toy(_event(tmp_path, {}), None), "ValidationError", match=r"needs: Field required$")


def test_long_error_lists_are_cut_to_one_readable_line(tmp_path: Path) -> None:
    upstream = {f"k{i}": "x" * 200 for i in range(MAX_REPORTED_ERRORS + 3)}
    message = terminal(toy(_event(tmp_path, {"needs": {"upstream": upstream}}), None), "ValidationError").message
    assert message.endswith("; and 3 more")
    assert message.count("Input should be a valid integer") == MAX_REPORTED_ERRORS
    assert len(message) < 200 * MAX_REPORTED_ERRORS  # long values are abbreviated, not copied whole


def test_the_orchestrator_takes_the_result_for_a_failure_it_must_not_retry(tmp_path: Path) -> None:
    # The orchestrator's side of the contract: absent where only the stage functions' packages are installed
    # (.venv-py312, as on Lambda); the rest of this file runs there too.
    completions = pytest.importorskip("fave.completions", reason="the orchestrator (fave) is not installed here")
    dag = pytest.importorskip("fave.core.dag", reason="the orchestrator (fave) is not installed here")
    result = toy(_event(tmp_path, {"needs": {"upstream": {}}, "config": {"nope": 1}}), None)
    task = completions.Task("r-sdk", "toy", None, 1)
    _, failed = completions.from_result(task, result, None)  # a successful invocation, as Lambda sees it
    assert failed.error_type == "ValidationError" and failed.terminal and "config.nope" in failed.message
    assert "ValidationError" not in dag.DEFAULT_NON_RETRYABLE  # the result said so, not the name


def test_an_ordinary_exception_is_raised_for_lambda_to_report(tmp_path: Path) -> None:
    @stage(ToyInput)
    def broken(inp: ToyInput, ctx: StageContext) -> ToyOutput:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        broken(_event(tmp_path, {"needs": {"upstream": {}}}), None)


def test_a_real_stage_rejects_a_misspelt_profile_setting(tmp_path: Path) -> None:
    split = load_handler("split")
    inp = {
        "needs": {"normalize": {"video_key": "requests/r-sdk/input/normalized.mp4", "normalized": {"fps": 25}}},
        "config": {"max_clip": 8},
    }
    result = split(_event(tmp_path, inp, stage_name="split"), None)
    terminal(result, "ValidationError", match=r"input of stage split is invalid: config\.max_clip: Extra inputs")


@pytest.mark.parametrize("event", [{"not": "a stage event"}, [1, 2], {"fave": 1, "task": {"stage": "toy"}}])
def test_an_event_that_is_no_fave_task_is_raised_not_returned(event: Any) -> None:
    """Nobody would read a fave result for it: Lambda reports the function error (and retries it, async)."""
    with pytest.raises(ValidationError, match="not a fave stage event"):
        toy(event, None)
