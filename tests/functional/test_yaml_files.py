"""The hardened YAML loader (fave.yamlsafe) on files, seen through the template reader: hostile template files
are one-line ValidationErrors naming the file; size, encoding and the kind of file are checked before parsing.
The loaders on YAML text: tests/unit/test_yamlsafe.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fave.local.template import load_template
from fave.yamlsafe import MAX_FILE_BYTES, HardenedLoader, YamlInputError, load_file
from fave_shared.errors import NotFoundError, ValidationError

FUNCTION = "  Fn:\n    Type: AWS::Serverless::Function\n    Properties: {Handler: app.handler, CodeUri: src}\n"


def template(tmp_path: Path, body: str | bytes) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "template.yaml"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    return path


def refused(path: Path) -> str:
    with pytest.raises(ValidationError) as caught:
        load_template(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def laughs(levels: int) -> str:
    """A billion-laughs document: each level is a list of nine aliases to the level below."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_in_a_template_is_refused(tmp_path: Path) -> None:
    message = refused(
        template(tmp_path, "Resources:\n" + FUNCTION + "Metadata:\n" + "  " + laughs(9).replace("\n", "\n  "))
    )
    assert "refused: more than 20000 nodes, with aliases counted at their expanded size" in message


def test_duplicate_keys_are_refused_at_any_depth(tmp_path: Path) -> None:
    body = "Resources:\n" + FUNCTION + "    Metadata: {Deep: {K: 1, K: 2}}\n"
    assert "not valid YAML: duplicate key 'K' at line 5," in refused(template(tmp_path, body))


def test_deep_nesting_and_long_numbers_are_refused(tmp_path: Path) -> None:
    deep = "Resources:\n" + FUNCTION + "Metadata: " + "[" * 5000 + "]" * 5000 + "\n"
    assert "refused: nested more than 100 levels deep" in refused(template(tmp_path, deep))
    long_number = "Resources:\n" + FUNCTION + "Metadata: {N: " + "9" * 5000 + "}\n"
    assert "refused: a number of 5000 characters" in refused(template(tmp_path, long_number))


def test_size_encoding_and_file_kind_are_checked_before_parsing(tmp_path: Path) -> None:
    big = "Resources:\n" + FUNCTION + "#" * MAX_FILE_BYTES + "\n"
    assert f"over the limit of {MAX_FILE_BYTES} bytes" in refused(template(tmp_path, big))
    latin1 = ("Resources:\n" + FUNCTION + "Description: caf\xe9\n").encode("latin-1")
    assert refused(template(tmp_path, latin1)).endswith(f"not UTF-8 text (byte 0xe9 at offset {latin1.index(0xE9)})")
    (tmp_path / "dir").mkdir()
    assert refused(tmp_path / "dir").endswith("cannot read: a directory")
    with pytest.raises(NotFoundError, match="template not found"):
        load_template(tmp_path / "missing.yaml")


def test_a_file_that_grows_past_the_limit_while_read_is_refused(tmp_path: Path) -> None:
    # /dev/zero says it is empty (not a regular file, refused first); a regular file is read to one byte past
    # the limit at most, whatever fstat said.
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\n")
    assert load_file(path) == {"a": 1}
    with pytest.raises(YamlInputError, match="over the limit of 4 bytes"):
        load_file(path, max_bytes=4)
    with pytest.raises(YamlInputError, match="not a regular file"):
        load_file(os.devnull)


def test_the_repository_files_are_well_within_the_limits() -> None:
    root = Path(__file__).resolve().parents[2]
    for name, loader in (("template.yaml", "cfn"), ("pipeline.yaml", "plain")):
        text = (root / name).read_text()
        assert len(text.encode()) * 10 < MAX_FILE_BYTES
        instance = HardenedLoader(text) if loader == "plain" else _cfn(text)
        instance.get_single_data()
        assert instance._nodes * 10 < HardenedLoader.MAX_NODES


def _cfn(text: str) -> HardenedLoader:
    from fave.local.template import CfnLoader

    return CfnLoader(text)
