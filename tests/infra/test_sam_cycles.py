"""No circular dependencies in the deployed template (linters do not report them; a deploy fails on them).

The template is translated by SAM first: the cycles that matter are between the resources SAM generates
(roles, permissions, bucket notifications, event source mappings), e.g. bucket -> permission -> orchestrator
-> role -> bucket.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fave.local.template import load_yaml
from support.cfn import dependencies, find_cycle
from support.sam import TEMPLATE, translate_many, translated_template


def test_the_translated_template_has_no_cycle() -> None:
    translated = translated_template()
    graph = dependencies(translated)
    assert find_cycle(graph) is None
    # The edges the design relies on are really there (so "no cycle" is not "no edges").
    assert "CompletionsQueue" in graph["ExtractFunctionRole"]  # destination policy: SendMessage on the queue
    assert "OrchestratorFunction" not in graph["ExtractFunctionRole"]  # ... not InvokeFunction on the orchestrator
    assert {"CompletionsQueue", "OrchestratorFunction"} <= graph["OrchestratorFunctionCompletions"]  # the mapping
    assert "OrchestratorDeadLetterQueue" in graph["CompletionsQueue"]  # its redrive policy
    assert "OrchestratorDeadLetterQueue" in graph["OrchestratorFunctionRole"]  # its own OnFailure destination
    assert "OrchestratorFunctionUploadPermission" in graph["ArtifactsBucket"]  # the upload trigger
    assert "ArtifactsBucket" in graph["ExtractFunctionRole"]  # stage policies may !GetAtt the bucket
    assert "ArtifactsBucket" not in graph["OrchestratorFunctionRole"]  # ... the orchestrator's may not


def _orchestrator(doc: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = doc["Resources"]["OrchestratorFunction"]["Properties"]
    return props


def _queue(doc: dict[str, Any], lid: str) -> dict[str, Any]:
    props: dict[str, Any] = doc["Resources"][lid]["Properties"]
    return props


def test_the_cycles_the_template_avoids_are_found() -> None:
    # 1. The orchestrator names a stage function with !Ref. Since issue 10 the stages' destination is
    #    CompletionsQueue, not the orchestrator, but this is still a cycle, through the bucket the stages' policies
    #    name and whose upload trigger is the orchestrator:
    #    orchestrator -> extract -> extract's role -> bucket -> upload permission -> orchestrator.
    by_ref = load_yaml(TEMPLATE.read_text())
    _orchestrator(by_ref)["Environment"]["Variables"]["FAVE_FUNCTION_ExtractFunction"] = {"Ref": "ExtractFunction"}
    # 2. The dead-letter queue (the orchestrator's OnFailure and the completions' redrive) named after the
    #    orchestrator: queue -> orchestrator -> role (SAM's SendMessage for OnFailure) -> queue.
    dlq_named = load_yaml(TEMPLATE.read_text())
    _queue(dlq_named, "OrchestratorDeadLetterQueue")["QueueName"] = {"Fn::Sub": "${OrchestratorFunction}-dead-letters"}
    # 3. The orchestrator's policy names the bucket that triggers it with !GetAtt:
    #    bucket -> upload permission -> orchestrator -> role -> bucket.
    by_getatt = load_yaml(TEMPLATE.read_text())
    statements = _orchestrator(by_getatt)["Policies"][0]["Statement"]
    statements.append(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "${ArtifactsBucket.Arn}/requests/*"}}
    )
    first, second, third = translate_many([by_ref, dlq_named, by_getatt])

    cycle = find_cycle(dependencies(first))
    assert cycle is not None and {"OrchestratorFunction", "ExtractFunction", "ArtifactsBucket"} <= set(cycle)
    assert "CompletionsQueue" not in cycle
    cycle = find_cycle(dependencies(second))
    assert cycle is not None and {"OrchestratorDeadLetterQueue", "OrchestratorFunctionRole"} <= set(cycle)
    cycle = find_cycle(dependencies(third))
    assert cycle is not None and {"ArtifactsBucket", "OrchestratorFunctionRole"} <= set(cycle)


@pytest.mark.parametrize(
    ("graph", "cyclic"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),  # a diamond is not a cycle
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"x": set(), "a": {"b"}, "b": {"a"}}, True),
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cyclic: bool) -> None:
    cycle = find_cycle(graph)
    assert (cycle is not None) is cyclic
    if cycle:
        assert cycle[0] == cycle[-1]
        assert all(b in graph[a] for a, b in itertools.pairwise(cycle))


def test_dependencies_follow_ref_getatt_sub_and_depends_on() -> None:
    template = {
        "Parameters": {"P": {"Type": "String"}},
        "Resources": {
            "A": {"Type": "T", "Properties": {"X": {"Ref": "B"}, "Y": {"Ref": "P"}, "Z": {"Ref": "AWS::Region"}}},
            "B": {"Type": "T", "Properties": {"X": {"Fn::GetAtt": ["C", "Arn"]}}},
            "C": {"Type": "T", "Properties": {"X": {"Fn::Sub": ["${D.Arn}/${V}", {"V": {"Ref": "E"}}]}}},
            "D": {"Type": "T", "DependsOn": "E", "Properties": {"X": {"Fn::Sub": "${!Literal}-${AWS::StackName}"}}},
            "E": {"Type": "T", "DependsOn": ["A"]},
        },
    }
    assert dependencies(template) == {"A": {"B"}, "B": {"C"}, "C": {"D", "E"}, "D": {"E"}, "E": {"A"}}
    assert find_cycle(dependencies(template)) is not None
