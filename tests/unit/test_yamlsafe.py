"""The hardened YAML loader shared by pipeline.yaml and template.yaml (fave.yamlsafe) on YAML text, and the
template reader's CloudFormation loader: short tags keep working, the limits hold while composing. The same
loaders on files (size, encoding, one-line errors naming the file): tests/functional/test_yaml_files.py."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from fave.local.template import load_yaml
from fave.yamlsafe import HardenedLoader, LimitError, load_text


def laughs(levels: int) -> str:
    """A billion-laughs document: each level is a list of nine aliases to the level below."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_short_tags_nested_within_the_limits_still_read_as_long_form() -> None:
    doc = load_yaml("A: !If [Cond, !Sub '${X}-y', !Ref AWS::NoValue]\nB: !GetAtt Fn.Arn\nC: 2010-09-09\n")
    assert doc == {
        "A": {"Fn::If": ["Cond", {"Fn::Sub": "${X}-y"}, {"Ref": "AWS::NoValue"}]},
        "B": {"Fn::GetAtt": ["Fn", "Arn"]},
        "C": "2010-09-09",  # CfnLoader keeps dates as text
    }


def test_the_alias_limit_counts_expanded_nodes_while_composing() -> None:
    assert load_text(laughs(4))["l3"][0][0][0][0] == "lol"  # 8,307 nodes once expanded: fine
    with pytest.raises(LimitError, match="more than 20000 nodes") as caught:
        load_text(laughs(5))  # 66,430
    assert caught.value.problem_mark is not None and caught.value.problem_mark.line == 4  # the fifth level


def test_limits_are_class_attributes() -> None:
    class Tiny(HardenedLoader):
        MAX_NODES = 10
        MAX_DEPTH = 3  # nodes on the way down, the root included

    with pytest.raises(LimitError, match="more than 10 nodes"):
        load_text("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]", Tiny)
    with pytest.raises(LimitError, match="nested more than 3 levels deep"):
        load_text("[[[1]]]", Tiny)
    assert load_text("[[1]]", Tiny) == [[1]]


def test_merge_keys_work_and_explicit_keys_override_them() -> None:
    # The duplicate-key check used to construct the `<<` key itself, which has no constructor: a crash.
    assert load_yaml("a: &a {x: 1, y: 1}\nb: {<<: *a, y: 2}\n") == {"a": {"x": 1, "y": 1}, "b": {"x": 1, "y": 2}}


def test_an_unhashable_key_is_a_yaml_error_not_a_type_error() -> None:
    with pytest.raises(yaml.YAMLError, match="found unhashable key"):
        load_yaml("? [a, b]\n: 1\n")
    with pytest.raises(yaml.YAMLError, match="found unhashable key"):
        load_yaml("!Ref X: 1\n")


def test_keys_equal_once_constructed_are_duplicates() -> None:
    with pytest.raises(yaml.YAMLError, match="duplicate key 1"):
        load_yaml("1: a\n1.0: b\n")


def test_short_tags_become_long_form_intrinsics() -> None:
    doc = load_yaml(
        textwrap.dedent(
            """
            AWSTemplateFormatVersion: 2010-09-09
            Ref: !Ref Bucket
            GetAttDotted: !GetAtt Db.Endpoint.Address
            GetAttList: !GetAtt [Fn, Arn]
            Sub: !Sub "${AWS::Region}-x"
            SubList: !Sub ["${A}", {A: !Ref B}]
            Join: !Join [",", [a, !Ref B]]
            If: !If [IsProd, 1, 2]
            Equals: !Equals [!Ref Env, prod]
            Select: !Select [0, !GetAZs ""]
            FindInMap: !FindInMap [Map, Key, Value]
            ImportValue: !ImportValue Shared
            Split: !Split [",", "a,b"]
            Base64: !Base64 {"Fn::Sub": "${X}"}
            Nested: !Select [0, !Split [",", !Sub "${A},b"]]
            Not: !Not [!Condition IsProd]
            And: !And [!Condition A, !Condition B]
            Or: !Or [!Condition A, !Condition B]
            """
        )
    )
    assert doc == {
        "AWSTemplateFormatVersion": "2010-09-09",  # a string, not a datetime.date
        "Ref": {"Ref": "Bucket"},
        "GetAttDotted": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
        "GetAttList": {"Fn::GetAtt": ["Fn", "Arn"]},
        "Sub": {"Fn::Sub": "${AWS::Region}-x"},
        "SubList": {"Fn::Sub": ["${A}", {"A": {"Ref": "B"}}]},
        "Join": {"Fn::Join": [",", ["a", {"Ref": "B"}]]},
        "If": {"Fn::If": ["IsProd", 1, 2]},
        "Equals": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
        "Select": {"Fn::Select": [0, {"Fn::GetAZs": ""}]},
        "FindInMap": {"Fn::FindInMap": ["Map", "Key", "Value"]},
        "ImportValue": {"Fn::ImportValue": "Shared"},
        "Split": {"Fn::Split": [",", "a,b"]},
        "Base64": {"Fn::Base64": {"Fn::Sub": "${X}"}},
        "Nested": {"Fn::Select": [0, {"Fn::Split": [",", {"Fn::Sub": "${A},b"}]}]},
        "Not": {"Fn::Not": [{"Condition": "IsProd"}]},
        "And": {"Fn::And": [{"Condition": "A"}, {"Condition": "B"}]},
        "Or": {"Fn::Or": [{"Condition": "A"}, {"Condition": "B"}]},
    }
