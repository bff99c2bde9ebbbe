"""Hostile pipeline.yaml: each case is refused with one PipelineError line naming the file (and the stage and
field where there is one), before anything is built from it."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from fave.pipeline import PipelineError, load_pipeline
from fave.yamlsafe import MAX_FILE_BYTES

DEMO_TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "template.yaml"

BILLION_LAUGHS = """
name: bomb
stages:
  x:
    function: F
    config:
      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
      h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
      i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def write(tmp_path: Path, body: str | bytes, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(textwrap.dedent(body))
    return path


def refused(path: Path, functions: list[str] | None = None) -> str:
    """The message of the PipelineError loading ``path`` raises; it must be one line naming the file."""
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path, functions=["F", "G"] if functions is None else functions)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path.resolve()}: "), message
    return message


# -- names that end up in keys, paths and log lines -------------------------------------------------------


@pytest.mark.parametrize(
    "stage",
    ["a.b", "1a", "_a", "-a", "a b", "a/b", "'..'", "x" * 65, "'é'", '"a\\nb"', "'a:b'", "1", "null", "true"],
)
def test_stage_names_outside_the_pattern_are_refused(tmp_path: Path, stage: str) -> None:
    path = write(tmp_path, f"stages:\n  {stage}: {{function: F}}\n")
    message = refused(path)
    assert ": stage " in message and "not a valid stage name" in message, message


def test_stage_name_with_a_newline_stays_one_escaped_line(tmp_path: Path) -> None:
    message = refused(write(tmp_path, 'stages:\n  "evil\\nname": {function: F}\n'))
    assert "stage 'evil\\nname': not a valid stage name" in message


@pytest.mark.parametrize("stage", ["a", "A", "a-b_C9", "x" * 64])
def test_stage_names_inside_the_pattern_load(tmp_path: Path, stage: str) -> None:
    pipeline = load_pipeline(write(tmp_path, f"stages:\n  {stage}: {{function: F}}\n"), functions=["F"])
    assert pipeline.order == (stage,) and pipeline.final == stage


def test_pipeline_and_profile_names_are_restricted_too(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "name: ../../etc\nstages: {a: {function: F}}\n"))
    assert "field 'name': '../../etc' is not a valid pipeline name" in message
    message = refused(write(tmp_path, "profiles: {'fast/../x': {}}\nstages: {a: {function: F}}\n"))
    assert "field 'profiles': 'fast/../x' is not a valid profile name" in message


def test_final_and_needs_must_name_stages_and_are_quoted_safely(tmp_path: Path) -> None:
    message = refused(write(tmp_path, 'final: "no\\nsuch"\nstages: {a: {function: F}}\n'))
    assert "field 'final': unknown stage 'no\\nsuch'" in message
    message = refused(write(tmp_path, "stages: {a: {function: F, needs: ['" + "z" * 500 + "']}}\n"))
    assert "stage 'a', field 'needs': unknown stage 'zzz" in message and len(message) < 300


def test_an_unknown_field_with_a_control_character_stays_one_line(tmp_path: Path) -> None:
    message = refused(write(tmp_path, 'stages:\n  a: {function: F, "bad\\rkey": 1}\n'))
    assert "stage 'a', field 'bad\\rkey': Extra inputs are not permitted" in message


# -- YAML bombs, size, encoding ---------------------------------------------------------------------------


def test_a_billion_laughs_is_refused_while_parsing(tmp_path: Path) -> None:
    started = time.monotonic()
    message = refused(write(tmp_path, BILLION_LAUGHS))
    assert "refused: more than 20000 nodes, with aliases counted at their expanded size" in message
    # Refused at the alias that crossed the limit (line 11: the `e` level, 66,430 nodes), before the rest.
    assert "at line 11," in message, message
    assert time.monotonic() - started < 5


def test_an_alias_to_its_own_container_is_refused(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "stages:\n  a: {function: F, config: &loop {self: *loop}}\n"))
    assert "refused: alias *loop is inside the node it refers to at line 2" in message


def test_a_few_small_aliases_are_still_fine(tmp_path: Path) -> None:
    body = """
        defaults: {retry: &retry {max_attempts: 1, interval: 1s}}
        stages:
          a: {function: F, retry: *retry, config: &cfg {k: [1, 2]}}
          b: {function: F, needs: [a], retry: *retry, config: {<<: *cfg, extra: true}}
    """
    pipeline = load_pipeline(write(tmp_path, body), functions=["F"])
    assert pipeline.stages["b"].retry.max_attempts == 1
    assert dict(pipeline.stages["b"].config) == {"k": [1, 2], "extra": True}


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "stages: {a: {function: F, config: {x: " + "[" * 600 + "]" * 600 + "}}}\n"))
    assert "refused: nested more than 100 levels deep" in message


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    # Valid YAML up to the limit, then garbage: the size is what refuses it, not the parser.
    body = "stages: {a: {function: F}}\n" + "#" * MAX_FILE_BYTES + "\n: : [\n"
    message = refused(write(tmp_path, body))
    assert f"refused: {len(body)} bytes, over the limit of {MAX_FILE_BYTES} bytes" in message


def test_a_file_at_the_size_limit_loads(tmp_path: Path) -> None:
    head = "stages: {a: {function: F}}\n"
    path = write(tmp_path, head + "#" * (MAX_FILE_BYTES - len(head) - 1) + "\n")
    assert os.path.getsize(path) == MAX_FILE_BYTES
    assert load_pipeline(path, functions=["F"]).order == ("a",)


def test_non_utf8_is_one_line_naming_the_file(tmp_path: Path) -> None:
    message = refused(write(tmp_path, b"name: caf\xe9\nstages: {a: {function: F}}\n"))
    assert message.endswith("not UTF-8 text (byte 0xe9 at offset 9)")


def test_a_directory_or_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert refused(tmp_path / "dir.yaml").endswith("cannot read: a directory")
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it for reading would wait for a writer
    assert refused(tmp_path / "fifo.yaml").endswith("cannot read: not a regular file")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    assert refused(tmp_path / "missing.yaml").endswith("no such pipeline file")


# -- duplicate keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "line"),
    [
        ("stages: {a: {function: F}}\nstages: {b: {function: F}}\n", "stages", 2),
        ("stages:\n  a: {function: F}\n  a: {function: G}\n", "a", 3),
        ("stages:\n  a:\n    function: F\n    mode: sync\n    function: G\n", "function", 5),
        ("stages:\n  a: {function: F, config: {deep: {k: 1, k: 2}}}\n", "k", 2),
        ("profiles: {fast: {a: {k: 1}}, fast: {}}\nstages: {a: {function: F}}\n", "fast", 1),
    ],
)
def test_duplicate_keys_anywhere_are_refused_naming_the_key(tmp_path: Path, body: str, key: str, line: int) -> None:
    message = refused(write(tmp_path, body))
    assert f"duplicate key {key!r} at line {line}," in message


# -- scalars PyYAML cannot convert, and config that is not JSON -------------------------------------------


def test_a_huge_number_is_refused_not_a_value_error(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "stages: {a: {function: F, config: {n: " + "1" * 5000 + "}}}\n"))
    assert "refused: a number of 5000 characters (at most 100; quote it for a string)" in message
    sexagesimal = "1" + ":00" * 50_000  # YAML 1.1 base 60: quadratic to convert
    started = time.monotonic()
    assert "a number of 150001 characters" in refused(
        write(tmp_path, "stages: {a: {function: F, config: {n: " + sexagesimal + "}}}\n")
    )
    assert time.monotonic() - started < 5


def test_an_impossible_date_is_a_yaml_error(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "stages: {a: {function: F, config: {day: 2001-13-45}}}\n"))
    assert "not valid YAML: cannot read this value: month must be in 1..12 at line 1" in message


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
def test_config_must_be_json_data(tmp_path: Path, config: str, problem: str) -> None:
    message = refused(write(tmp_path, f"stages: {{a: {{function: F, config: {config}}}}}\n"))
    assert "stage 'a', field 'config': " + problem in message, message


def test_profile_overrides_must_be_json_data(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "profiles: {fast: {a: {when: 2020-01-01}}}\nstages: {a: {function: F}}\n"))
    assert "field 'profiles.fast.a': a date value" in message


@pytest.mark.parametrize("timeout", [".nan", ".inf", "'inf'", "1e999"])
def test_a_non_finite_timeout_is_refused(tmp_path: Path, timeout: str) -> None:
    message = refused(write(tmp_path, f"stages: {{a: {{function: F, timeout: {timeout}}}}}\n"))
    assert "stage 'a', field 'timeout': not a duration" in message


# -- the template named by the pipeline -------------------------------------------------------------------


def test_a_missing_template_is_a_pipeline_error(tmp_path: Path) -> None:
    path = write(tmp_path, "template: nowhere.yaml\nstages: {a: {function: F}}\n")
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)  # functions=None: read from the template
    assert str(caught.value) == f"{path}: field 'template': {tmp_path / 'nowhere.yaml'}: template not found"


def test_a_template_whose_code_folder_is_missing_is_a_pipeline_error(tmp_path: Path) -> None:
    template = DEMO_TEMPLATE.read_text().replace("CodeUri: functions/words", "CodeUri: functions/gone")
    (tmp_path / "template.yaml").write_text(template.replace("../../../", str(DEMO_TEMPLATE.parents[3]) + "/"))
    path = write(tmp_path, "stages: {words: {function: WordsFunction}}\n")
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: field 'template': ") and "\n" not in message
    assert "function WordsFunction: CodeUri: folder 'functions/gone' does not exist" in message
