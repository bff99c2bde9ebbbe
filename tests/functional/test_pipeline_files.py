"""pipeline.yaml as a file: whatever is wrong with the file itself (missing, too big, not UTF-8, not a regular
file, YAML bombs, duplicate keys, scalars PyYAML cannot convert) or with the template it names is refused with
one PipelineError line naming the file, before anything is built from it.

What is wrong with the document's content is tests/unit/test_pipeline.py and test_pipeline_hostile.py (in
memory).
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from fave.local.orchestrator import load_local_pipeline
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


def test_a_valid_file_loads_with_its_path_and_template_path(tmp_path: Path) -> None:
    path = write(tmp_path, "template: sam/t.yaml\nstages: {a: {function: F}}\n")
    pipeline = load_pipeline(path, functions=["F"])
    assert pipeline.order == ("a",)
    assert pipeline.path == path.resolve() and pipeline.template_path == (tmp_path / "sam" / "t.yaml").resolve()


def test_functions_may_come_from_the_template_path(tmp_path: Path) -> None:
    seen: list[Path] = []

    def functions(template: Path) -> set[str]:
        seen.append(template)
        return {"F"}

    path = write(tmp_path, "stages: {a: {function: F}}\n")
    assert load_pipeline(path, functions=functions).order == ("a",)
    assert seen == [(tmp_path / "template.yaml").resolve()]


def test_a_document_error_names_the_file(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "stages: {a: {function: F, needs: [zz]}}\n"))
    assert message == f"{tmp_path.resolve() / 'pipeline.yaml'}: stage 'a', field 'needs': unknown stage 'zz'"


# -- YAML bombs, size, encoding, what the path is -------------------------------------------------------------


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


# -- scalars PyYAML cannot convert ------------------------------------------------------------------------


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


# -- the template named by the pipeline -------------------------------------------------------------------


def test_a_missing_template_is_a_pipeline_error(tmp_path: Path) -> None:
    path = write(tmp_path, "template: nowhere.yaml\nstages: {a: {function: F}}\n")
    with pytest.raises(PipelineError) as caught:
        load_local_pipeline(path)  # its functions: those of the template
    assert str(caught.value) == f"{path}: field 'template': {tmp_path / 'nowhere.yaml'}: template not found"


def test_a_template_whose_code_folder_is_missing_is_a_pipeline_error(tmp_path: Path) -> None:
    template = DEMO_TEMPLATE.read_text().replace("CodeUri: functions/words", "CodeUri: functions/gone")
    (tmp_path / "template.yaml").write_text(template.replace("../../../", str(DEMO_TEMPLATE.parents[3]) + "/"))
    path = write(tmp_path, "stages: {words: {function: WordsFunction}}\n")
    with pytest.raises(PipelineError) as caught:
        load_local_pipeline(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: field 'template': ") and "\n" not in message
    assert "function WordsFunction: CodeUri: folder 'functions/gone' does not exist" in message


def test_a_function_the_template_lacks_is_named_with_the_template(tmp_path: Path) -> None:
    path = write(tmp_path, f"template: {DEMO_TEMPLATE}\nstages: {{words: {{function: NoSuchFunction}}}}\n")
    with pytest.raises(PipelineError) as caught:
        load_local_pipeline(path)
    message = str(caught.value)
    assert message == f"{path}: stage 'words', field 'function': 'NoSuchFunction' is not a function in template.yaml"
