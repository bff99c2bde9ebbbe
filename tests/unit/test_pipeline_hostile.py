"""Hostile pipeline documents, parsed in memory by the loader pipeline.yaml goes through (``fave.yamlsafe``)
and then ``parse_pipeline``: each case is refused with one PipelineError line naming the file (and the stage
and field where there is one), before anything is built from it.

What a file adds (size, encoding, YAML bombs, duplicate keys, the template) is
tests/functional/test_pipeline_files.py.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from fave.core.dag import Pipeline
from fave.pipeline import PipelineError, parse_pipeline
from fave.yamlsafe import load_text


def parse(body: str, functions: list[str] | None = None) -> Pipeline:
    raw: Any = load_text(textwrap.dedent(body))
    return parse_pipeline(raw, ["F", "G"] if functions is None else functions)


def refused(body: str, functions: list[str] | None = None) -> str:
    """The message of the PipelineError parsing ``body`` raises; it must be one line naming the file."""
    with pytest.raises(PipelineError) as caught:
        parse(body, functions)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("pipeline.yaml: "), message
    return message


# -- names that end up in keys, paths and log lines -------------------------------------------------------


@pytest.mark.parametrize(
    "stage",
    ["a.b", "1a", "_a", "-a", "a b", "a/b", "'..'", "x" * 65, "'é'", '"a\\nb"', "'a:b'", "1", "null", "true"],
)
def test_stage_names_outside_the_pattern_are_refused(stage: str) -> None:
    message = refused(f"stages:\n  {stage}: {{function: F}}\n")
    assert message.startswith("pipeline.yaml: stage ") and "not a valid stage name" in message, message


def test_stage_name_with_a_newline_stays_one_escaped_line() -> None:
    message = refused('stages:\n  "evil\\nname": {function: F}\n')
    assert message.startswith("pipeline.yaml: stage 'evil\\nname': 'evil\\nname' is not a valid stage name"), message


@pytest.mark.parametrize("stage", ["a", "A", "a-b_C9", "x" * 64])
def test_stage_names_inside_the_pattern_load(stage: str) -> None:
    pipeline = parse(f"stages:\n  {stage}: {{function: F}}\n", functions=["F"])
    assert pipeline.order == (stage,) and pipeline.final == stage


def test_pipeline_and_profile_names_are_restricted_too() -> None:
    message = refused("name: ../../etc\nstages: {a: {function: F}}\n")
    assert "field 'name': '../../etc' is not a valid pipeline name" in message
    message = refused("profiles: {'fast/../x': {}}\nstages: {a: {function: F}}\n")
    assert "field 'profiles': 'fast/../x' is not a valid profile name" in message


def test_final_and_needs_must_name_stages_and_are_quoted_safely() -> None:
    message = refused('final: "no\\nsuch"\nstages: {a: {function: F}}\n')
    assert "field 'final': unknown stage 'no\\nsuch'" in message
    message = refused("stages: {a: {function: F, needs: ['" + "z" * 500 + "']}}\n")
    assert "stage 'a', field 'needs': unknown stage 'zzz" in message
    # That such a name is also shortened: test_pipeline.py::test_a_long_unknown_stage_name_is_shortened_in_the_message


def test_an_unknown_field_with_a_control_character_stays_one_line() -> None:
    message = refused('stages:\n  a: {function: F, "bad\\rkey": 1}\n')
    assert "stage 'a', field 'bad\\rkey': Extra inputs are not permitted" in message


def test_a_few_small_aliases_are_still_fine() -> None:
    body = """
        defaults: {retry: &retry {max_attempts: 1, interval: 1s}}
        stages:
          a: {function: F, retry: *retry, config: &cfg {k: [1, 2]}}
          b: {function: F, needs: [a], retry: *retry, config: {<<: *cfg, extra: true}}
    """
    pipeline = parse(body, functions=["F"])
    assert pipeline.stages["b"].retry.max_attempts == 1
    assert dict(pipeline.stages["b"].config) == {"k": [1, 2], "extra": True}


# -- YAML values that are not JSON data -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("{day: 2001-12-05}", "a date value (datetime.date(2001, 12, 5)) is not JSON data"),
        ("{blob: !!binary aGVsbG8=}", "a bytes value (b'hello') is not JSON data"),
        ("{tags: !!set {a, b}}", "a set value"),
        ("{nested: {1: one}}", "key 1 is not a string"),
        ("{x: .nan}", "nan is not a JSON number"),
    ],
)
def test_config_must_be_json_data(config: str, problem: str) -> None:
    message = refused(f"stages: {{a: {{function: F, config: {config}}}}}\n")
    assert "stage 'a', field 'config': " + problem in message, message


def test_profile_overrides_must_be_json_data() -> None:
    message = refused("profiles: {fast: {a: {when: 2020-01-01}}}\nstages: {a: {function: F}}\n")
    assert "field 'profiles.fast.a': a date value" in message


@pytest.mark.parametrize("timeout", [".nan", ".inf", "'inf'", "1e999"])
def test_a_non_finite_timeout_is_refused(timeout: str) -> None:
    message = refused(f"stages: {{a: {{function: F, timeout: {timeout}}}}}\n")
    assert "stage 'a', field 'timeout': not a duration" in message
