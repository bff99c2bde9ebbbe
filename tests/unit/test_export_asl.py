"""``fave export --format asl`` as pure functions (fave.export.asl, fave.export.sam): the shapes of the machine
(Task, Map with one ItemProcessor per per-item group, Parallel branches, the topological fallback), the retry
mapping, profiles, substitutions, and the SAM copy. tests/functional/test_export_asl_on_moto.py runs the machines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fave.core.dag import CompletionPolicy, ForEach, Pipeline, RetryPolicy, Stage
from fave.export.asl import AslOptions, export_asl, result_location, retriers
from fave.export.mapping import render
from fave.export.sam import logical_id, with_state_machine
from fave.local.template import load_yaml


def stage(name: str, *needs: str, **kw: Any) -> Stage:
    return Stage(name=name, function=f"{name.title()}Function", needs=needs, mode=kw.pop("mode", "sync"),
                 timeout_s=kw.pop("timeout_s", 30.0), **kw)  # fmt: skip


def build(*stages: Stage, **kw: Any) -> Pipeline:
    return Pipeline.build(name=kw.pop("name", "p"), stages=stages, digest="0" * 64, **kw)


def demo() -> Pipeline:
    """tests/fixtures/demo's shape: words -> shout[k] -> measure[k] -> join."""
    words = ForEach.parse("words.words")
    return build(
        stage("words"),
        stage("shout", "words", for_each=words, mode="async", max_concurrency=2, config={"suffix": "!"}),
        stage("measure", "shout", for_each=words, mode="async"),
        stage("join", "measure", "shout"),
        profiles={"loud": {"shout": {"suffix": "!!"}}},
    )


def diamond() -> Pipeline:
    """examples/sales' shape: load -> (totals, region[each]) -> report."""
    return build(
        stage("load"),
        stage("totals", "load"),
        stage("region", "load", for_each=ForEach.parse("load.regions")),
        stage("report", "totals", "region"),
    )


def walk(states: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(scope, name, state) for every state, in branches and item processors too."""
    for name, state in states.items():
        yield states, name, state
        for branch in state.get("Branches", []):
            yield from walk(branch["States"])
        if "ItemProcessor" in state:
            yield from walk(state["ItemProcessor"]["States"])


def targets(state: dict[str, Any]) -> list[str]:
    out = [state[k] for k in ("Next", "Default") if k in state]
    out += [c["Next"] for c in state.get("Catch", []) + state.get("Choices", [])]
    return out


def check_well_formed(definition: dict[str, Any]) -> None:
    """Every transition names a state of its own scope, every scope's StartAt exists, state names are unique
    across the machine and at most 80 characters, and every non-terminal state goes somewhere."""
    names = [name for _, name, _ in walk(definition["States"])]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert all(len(n) <= 80 for n in names)
    scopes = [definition] + [
        b for _, _, s in walk(definition["States"]) for b in [*s.get("Branches", []), s.get("ItemProcessor")] if b
    ]
    for scope in scopes:
        assert scope["StartAt"] in scope["States"]
        for state in scope["States"].values():
            for target in targets(state):
                assert target in scope["States"], target
            terminal = state["Type"] in ("Fail", "Succeed") or state.get("End")
            assert terminal or targets(state), state


def tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for _, name, s in walk(definition["States"]) if s["Type"] == "Task"}


def test_a_chain_with_a_per_item_group_is_tasks_around_one_map_holding_the_chained_stages() -> None:
    machine = export_asl(demo()).definition
    check_well_formed(machine)
    top = machine["States"]
    maps = [s for s in top.values() if s["Type"] == "Map"]
    assert len(maps) == 1
    (m,) = maps
    assert m["ItemsPath"] == "$.results.words.output.words"
    assert m["MaxConcurrency"] == 2
    assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"}
    inner = m["ItemProcessor"]["States"]
    assert {n for n, s in inner.items() if s["Type"] == "Task"} == {"shout", "measure"}
    assert m["ItemProcessor"]["StartAt"] == "shout"
    # measure gets this item's shout output; join gets both lists, selected out of the items' results.
    assert inner["measure"]["Parameters"]["Payload"]["input"]["needs"] == {"shout.$": "$.results.shout.output"}
    # The items' results become one list per stage: [] / States.Array(the one) / the wildcard, by length
    # (an interpreter may unwrap a wildcard's single match: moto's does).
    assert m["ResultPath"] == "$.raw.shout_items"
    count = top[m["Next"]]
    assert count["Parameters"] == {"n.$": "States.ArrayLength($.raw.shout_items)"}
    choose = top[count["Next"]]
    none, one = (top[c["Next"]] for c in choose["Choices"])
    many = top[choose["Default"]]
    assert none["Result"] == {"shout": [], "measure": []}
    assert one["Parameters"] == {
        "shout.$": "States.Array($.raw.shout_items[0].shout.output)",
        "measure.$": "States.Array($.raw.shout_items[0].measure.output)",
    }
    assert many["Parameters"] == {
        "shout.$": "$.raw.shout_items[*].shout.output",
        "measure.$": "$.raw.shout_items[*].measure.output",
    }
    assert none["ResultPath"] == one["ResultPath"] == many["ResultPath"] == "$.results.shout_items"
    assert none["Next"] == one["Next"] == many["Next"] == "join"
    join = top["join"]["Parameters"]["Payload"]["input"]["needs"]
    assert join == {"measure.$": "$.results.shout_items.measure", "shout.$": "$.results.shout_items.shout"}
    # No Parallel: the DAG is a chain of units.
    assert not [s for s in top.values() if s["Type"] == "Parallel"]


def test_every_stage_is_a_lambda_invoke_task_with_fave_s_stage_event() -> None:
    found = tasks(export_asl(demo()).definition)
    assert set(found) == {"words", "shout", "measure", "join"}
    for name, task in found.items():
        assert task["Resource"] == "arn:aws:states:::lambda:invoke"
        params = task["Parameters"]
        assert params["FunctionName.$"] == f"$.functions.{name.title()}Function"
        payload = params["Payload"]
        assert payload["fave"] == 1 and payload["mode"] == "sync" and payload["store.$"] == "$.store"
        assert payload["task"]["stage"] == name
        assert payload["task"]["attempt.$"] == "States.MathAdd($$.State.RetryCount, 1)"
        assert task["ResultSelector"] == {"output.$": "$.Payload"}
        per_item = name in ("shout", "measure")
        assert ("item.$" in payload["input"]) is per_item and ("index.$" in payload["input"]) is per_item
        assert payload["task"].get("item.$") == ("$.index" if per_item else None)
        assert payload["input"]["config.$"] == f"$.configs.{name}"
    # A per-item task gets its element, not the list it came from (the for_each source is left out).
    assert found["shout"]["Parameters"]["Payload"]["input"]["needs"] == {}


def test_stages_whose_needs_are_met_together_are_parallel_branches_merged_into_results() -> None:
    machine = export_asl(diamond()).definition
    check_well_formed(machine)
    top = machine["States"]
    (par,) = [s for s in top.values() if s["Type"] == "Parallel"]
    starts = sorted(b["StartAt"] for b in par["Branches"])
    assert starts == ["each load.regions (region)", "totals"]
    # What the branches wrote, and what was there before (load), all land in results.
    assert set(par["ResultSelector"]) == {"load.$", "totals.$", "region.$"}
    assert par["ResultPath"] == "$.results"
    assert top["report"]["Parameters"]["Payload"]["input"]["needs"] == {
        "totals.$": "$.results.totals.output",
        "region.$": "$.results.region",
    }
    assert [r.fidelity for r in export_asl(diamond()).rows if r.feature == "needs (series / parallel)"] == ["exact"]


def test_a_dag_that_is_not_series_parallel_runs_in_a_topological_order_and_says_so() -> None:
    # a and b both start; c needs a; d needs a and b: no split into series and parallel parts keeps every
    # stage from waiting for one it does not need.
    p = build(stage("a"), stage("b"), stage("c", "a"), stage("d", "a", "b"), stage("e", "c", "d"))
    exported = export_asl(p)
    check_well_formed(exported.definition)
    assert any("not series-parallel" in n for n in exported.notes)
    (row,) = [r for r in exported.rows if r.feature == "needs (series / parallel)"]
    assert row.fidelity == "approximate" and "a, b, c, d" in row.how
    top = exported.definition["States"]
    order, name = [], top["profile default"]["Next"]
    while name != "final output":
        if top[name]["Type"] == "Task":
            order.append(name)
        state = top[name]
        name = state.get("Next") or state["Default"]
    assert order == ["a", "b", "c", "d", "e"]


def test_independent_per_item_stages_run_as_parallel_branches_inside_the_item() -> None:
    clips = ForEach.parse("split.clips")
    p = build(
        stage("split"),
        stage("extract", "split", for_each=clips, max_concurrency=4),
        stage("transcribe", "extract", for_each=clips, max_concurrency=2),
        stage("detect", "extract", for_each=clips, max_concurrency=2),
        stage("aggregate", "transcribe", "detect"),
    )
    exported = export_asl(p)
    check_well_formed(exported.definition)
    (m,) = [s for s in exported.definition["States"].values() if s["Type"] == "Map"]
    inner = m["ItemProcessor"]["States"]
    (par,) = [s for s in inner.values() if s["Type"] == "Parallel"]
    assert sorted(b["StartAt"] for b in par["Branches"]) == ["detect", "transcribe"]
    assert m["MaxConcurrency"] == 2  # one Map for the group: its smallest cap, and the table says so
    (row,) = [r for r in exported.rows if r.feature == "max_concurrency"]
    assert row.fidelity == "approximate"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            RetryPolicy(max_attempts=3, interval_s=2, backoff_rate=1.5, max_delay_s=30, jitter="full"),
            [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 1.5,
              "JitterStrategy": "FULL", "MaxDelaySeconds": 30}],
        ),
        (
            RetryPolicy(max_attempts=2, interval_s=0.05, jitter="none", non_retryable=("ValueError", "KeyError")),
            [{"ErrorEquals": ["ValueError", "KeyError"], "MaxAttempts": 0},
             {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 2.0,
              "JitterStrategy": "NONE"}],
        ),
        (RetryPolicy(max_attempts=0, non_retryable=("E",)), [{"ErrorEquals": ["E"], "MaxAttempts": 0}]),
        (RetryPolicy(max_attempts=0), []),
        (
            RetryPolicy(max_attempts=1, interval_s=1.2, max_delay_s=0.5),
            [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 1, "BackoffRate": 2.0,
              "JitterStrategy": "FULL", "MaxDelaySeconds": 1}],
        ),
    ],
)  # fmt: skip
def test_retry_maps_to_retriers_non_retryable_first(policy: RetryPolicy, expected: list[dict[str, Any]]) -> None:
    assert retriers(policy) == expected


def test_retry_timeout_and_catch_on_each_task() -> None:
    p = build(stage("a", timeout_s=2.5, retry=RetryPolicy(max_attempts=4, interval_s=3, non_retryable=("X",))))
    exported = export_asl(p)
    task = exported.definition["States"]["a"]
    assert task["TimeoutSeconds"] == 3  # whole seconds, never shorter than fave's
    assert task["Retry"][0] == {"ErrorEquals": ["X"], "MaxAttempts": 0}
    assert task["Retry"][1]["MaxAttempts"] == 4 and task["Retry"][1]["IntervalSeconds"] == 3
    (catch,) = task["Catch"]
    assert catch["ErrorEquals"] == ["States.ALL"]
    fail = exported.definition["States"][catch["Next"]]
    assert fail["Type"] == "Fail" and "stage a failed" in fail["CausePath"]
    # The rounding shows in the table.
    rows = {r.feature: r.fidelity for r in exported.rows}
    assert rows["timeout"] == "approximate"
    assert rows["retry"] == "exact"


def test_a_terminal_error_result_goes_to_a_fail_state_without_retrying() -> None:
    top = export_asl(build(stage("a"))).definition["States"]
    check = top[top["a"]["Next"]]
    assert check["Type"] == "Choice"
    (rule,) = check["Choices"]
    assert rule == {"Variable": "$.results.a.output['$fave_error']", "IsPresent": True, "Next": rule["Next"]}
    fail = top[rule["Next"]]
    assert fail["Type"] == "Fail" and fail["ErrorPath"].endswith("['$fave_error'].errorType")
    assert check["Default"] == "final output"
    assert top["final output"] == {"Type": "Pass", "OutputPath": "$.results.a.output", "End": True}


def test_profiles_are_chosen_by_the_request_with_each_stage_s_merged_config() -> None:
    top = export_asl(demo()).definition["States"]
    assert top["start"]["Next"] == "choose profile"
    choice = top["choose profile"]
    assert choice["Default"] == "unknown profile" and top["unknown profile"]["Type"] == "Fail"
    assert top["profile loud"]["Result"]["shout"] == {"suffix": "!!"}
    assert top["profile default"]["Result"]["shout"] == {"suffix": "!"}
    absent = [c for c in choice["Choices"] if c.get("IsPresent") is False]
    assert absent == [{"Variable": "$.request.profile", "IsPresent": False, "Next": "profile default"}]


def test_distributed_maps_carry_the_tolerated_failures() -> None:
    each = ForEach.parse("a.items")
    p = build(
        stage("a"),
        stage("b", "a", for_each=each, completion=CompletionPolicy(percent=10)),
        stage("c", "a", for_each=ForEach.parse("a.other"), completion=CompletionPolicy(count=2)),
        stage("d", "b", "c"),
    )
    inline = export_asl(p)
    maps = [s for _, _, s in walk(inline.definition["States"]) if s["Type"] == "Map"]
    assert all("ToleratedFailurePercentage" not in m and "ToleratedFailureCount" not in m for m in maps)
    assert {r.feature: r.fidelity for r in inline.rows}["tolerated_failures"] == "none"
    distributed = export_asl(p, AslOptions(distributed=True))
    check_well_formed(distributed.definition)
    maps = {
        n: s
        for _, n, s in walk(distributed.definition["States"])
        if s["Type"] == "Map" and s["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    }
    assert maps["each a.items (b)"]["ToleratedFailurePercentage"] == 10
    assert maps["each a.other (c)"]["ToleratedFailureCount"] == 2
    for m in maps.values():
        assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
        # A child execution has its own name: the request id travels in the items.
        assert m["ItemSelector"]["request_id.$"] == "$.request_id"


def test_substitutions_name_the_functions_and_the_store() -> None:
    exported = export_asl(diamond(), AslOptions(arns="substitutions"))
    text = json.dumps(exported.definition)
    assert "$.functions" not in text
    assert exported.definition["States"]["load"]["Parameters"]["FunctionName"] == "${LoadFunctionArn}"
    assert exported.definition["States"]["start"]["Parameters"]["store"] == "${FaveStore}"
    assert dict(exported.substitutions) == {
        "LoadFunctionArn": "LoadFunction",
        "TotalsFunctionArn": "TotalsFunction",
        "RegionFunctionArn": "RegionFunction",
        "ReportFunctionArn": "ReportFunction",
        "FaveStore": "FaveStore",
    }


def test_stage_names_with_dashes_are_bracketed_in_paths() -> None:
    p = build(stage("a-b"), stage("c", "a-b"))
    top = export_asl(p).definition["States"]
    assert top["a-b"]["ResultPath"] == "$.results['a-b']"
    assert top["c"]["Parameters"]["Payload"]["input"]["needs"] == {"a-b.$": "$.results['a-b'].output"}


def test_the_table_lists_what_the_pipeline_uses_first() -> None:
    text = render(export_asl(demo()).rows)
    lines = text.splitlines()
    assert lines[0].split() == ["feature", "mapping", "how"]
    first_unused = next(i for i, line in enumerate(lines) if "not used by this pipeline" in line)
    assert all("not used" in line for line in lines[first_unused:])
    assert any(line.startswith("per-item chaining") and "exact" in line for line in lines[:first_unused])


TEMPLATE = """AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:   # the functions
    ArtifactsBucket:
        Type: AWS::S3::Bucket
    LoadFunction:
        Type: AWS::Serverless::Function
        Properties: {Handler: app.handler, Runtime: python3.11, CodeUri: functions/load}
Outputs:
    Bucket:
        Value: !Ref ArtifactsBucket
"""


def test_the_sam_copy_adds_a_state_machine_and_keeps_the_rest_as_written() -> None:
    p = build(stage("load"), name="my-sales")
    exported = export_asl(p, AslOptions(arns="substitutions"))
    copy, lid = with_state_machine(
        TEMPLATE,
        pipeline=p.name,
        definition=exported.definition,
        substitutions=exported.substitutions,
        bucket="ArtifactsBucket",
        resources={"ArtifactsBucket", "LoadFunction"},
        distributed=False,
    )
    assert lid == "MySalesStateMachine"
    for line in TEMPLATE.splitlines():
        assert line in copy.splitlines()
    doc = load_yaml(copy)
    machine = doc["Resources"][lid]
    assert machine["Type"] == "AWS::Serverless::StateMachine"
    props = machine["Properties"]
    assert props["Definition"] == exported.definition
    assert props["DefinitionSubstitutions"]["LoadFunctionArn"] == {"Fn::GetAtt": ["LoadFunction", "Arn"]}
    assert props["DefinitionSubstitutions"]["FaveStore"] == {"Fn::Sub": "s3://${ArtifactsBucket}"}
    assert props["Policies"] == [{"LambdaInvokePolicy": {"FunctionName": {"Ref": "LoadFunction"}}}]
    assert set(doc["Resources"]) == {"ArtifactsBucket", "LoadFunction", lid}
    assert logical_id("sales", {"SalesStateMachine"}) == "SalesStateMachine2"
    with pytest.raises(ValueError, match="Resources"):
        with_state_machine("Outputs: {}\n", pipeline="p", definition={}, substitutions={}, bucket="B",
                           resources=(), distributed=False)  # fmt: skip


def test_a_wall_clock_budget_is_the_machine_s_timeout_and_the_others_are_not_mapped() -> None:
    from fave.core.operations import Budget, Operations

    budget = Budget(max_wall_s=3600.5, max_invocations=10)
    exported = export_asl(build(stage("a"), operations=Operations(budget=budget)))
    assert exported.definition["TimeoutSeconds"] == 3601
    rows = {r.feature: (r.fidelity, r.used) for r in exported.rows}
    assert rows["budget max_wall"] == ("approximate", True)
    assert rows["budget max_invocations, max_cost_usd"] == ("none", True)
    assert "TimeoutSeconds" not in export_asl(build(stage("a"))).definition


def test_distributed_above_a_size_puts_both_maps_behind_a_choice_on_the_list_length() -> None:
    exported = export_asl(demo(), AslOptions(distributed_above=100))
    machine = exported.definition
    check_well_formed(machine)  # the second Map's inner states have names of their own
    top = machine["States"]
    assert top["words: terminal check"]["Default"] == "shout_items: count items"
    count = top["shout_items: count items"]
    assert count["Parameters"] == {"n.$": "States.ArrayLength($.results.words.output.words)"}
    choose = top[count["Next"]]
    (rule,) = choose["Choices"]
    assert rule["Variable"] == "$.count.n" and rule["NumericGreaterThan"] == 100
    inline, put = top[choose["Default"]], top[rule["Next"]]
    assert put["Resource"] == "arn:aws:states:::aws-sdk:s3:putObject"  # its items, for its ItemReader
    distributed = top[put["Next"]]
    assert inline["ItemProcessor"]["ProcessorConfig"]["Mode"] == "INLINE"
    assert distributed["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert inline["Next"] == "shout_items: count results"  # then one list per stage
    # The DISTRIBUTED copy's items wrote their outputs to the store: a list marker per stage follows it instead.
    assert distributed["Next"] == "shout_items (distributed): outputs by reference"
    assert distributed["ResultPath"] is None and "ItemsPath" not in distributed
    assert {n for n, s in distributed["ItemProcessor"]["States"].items() if s["Type"] == "Task"} == {
        "shout (distributed)",
        "measure (distributed)",
        "shout_items (distributed): keep shout",
        "shout_items (distributed): keep measure",
    }
    assert len(exported.notes) == 1  # the MaxConcurrency note, once for the two copies


def test_a_single_task_stage_inside_a_chain_splits_it_into_maps_taking_their_item_by_index() -> None:
    each = ForEach.parse("a0.items")
    p = build(
        stage("a0"),
        stage("a", "a0", for_each=each),
        stage("b", "a"),  # every item of a
        stage("c", "a", "b", for_each=each),  # a item by item, and b
        stage("d", "c"),
    )
    exported = export_asl(p)
    check_well_formed(exported.definition)
    top = exported.definition["States"]
    order, name = [], top["profile default"]["Next"]
    while name != "final output":
        if top[name]["Type"] in ("Task", "Map"):
            order.append(name)
        name = top[name].get("Next") or top[name]["Default"]
    assert order == ["a0", "each a0.items (a)", "b", "each a0.items (c)", "d"]
    outer = top["each a0.items (c)"]["ItemSelector"]["outer"]
    assert outer == {"b.$": "$.results.b.output", "a.$": "States.ArrayGetItem($.results.a, $$.Map.Item.Index)"}
    (row,) = [r for r in exported.rows if r.feature == "per-item chaining"]
    assert row.fidelity == "exact" and "Map of its own" in row.how


def _path(top: dict[str, Any], start: str, stop: str) -> list[str]:
    """The names from ``start`` following each state's Next (a Choice's Default) until ``stop``."""
    out, name = [], start
    while name != stop:
        out.append(name)
        name = top[name].get("Next") or top[name]["Default"]
    return out


def test_a_distributed_map_reads_its_items_from_s3_and_passes_its_outputs_by_reference() -> None:
    """The demo's chained group, --distributed: the items go to the store for the Map's ItemReader; each item
    writes its outputs to the store; then the results hold one list marker per stage, ``.../[0:N].json`` with N
    the items' count (the stage SDK resolves it to the list, in item order): nothing per item in the state."""
    exported = export_asl(demo(), AslOptions(distributed=True))
    machine = exported.definition
    check_well_formed(machine)
    top = machine["States"]
    # The store's bucket and prefix, once, before the profiles: one Pass per prefix depth behind a Choice.
    assert top["start"]["Next"] == "store parts"
    split = top["store bucket and prefix"]
    assert [c["And"][1]["NumericEquals"] for c in split["Choices"]] == list(range(2, 9))
    assert top["store prefix of 0 folders"]["Parameters"]["prefix"] == ""
    assert top["store prefix of 2 folders"]["Parameters"]["prefix.$"] == (
        "States.Format('{}/{}/', States.ArrayGetItem($.s3.parts, 2), States.ArrayGetItem($.s3.parts, 3))"
    )
    assert split["Default"] == "store not on S3" and top["store not on S3"]["Type"] == "Fail"
    assert {top[n]["Next"] for n in top if n.startswith("store prefix of")} == {"choose profile"}
    chain = _path(top, "shout_items: items to the store", "join")
    assert chain == [
        "shout_items: items to the store",
        "each words.words (shout, measure)",
        "shout_items: outputs by reference",
    ]
    folder = "requests/{}/export/shout_items"
    put = top["shout_items: items to the store"]
    assert put["Resource"] == "arn:aws:states:::aws-sdk:s3:putObject"
    assert put["Parameters"] == {
        "Bucket.$": "$.s3.bucket",
        "Key.$": f"States.Format('{{}}{folder}/items.json', $.s3.prefix, $.request_id)",
        "Body.$": "States.JsonToString($.results.words.output.words)",
    }
    each = top["each words.words (shout, measure)"]
    assert "ItemsPath" not in each and each["ResultPath"] is None
    assert each["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket.$": "$.s3.bucket", "Key.$": put["Parameters"]["Key.$"]},
    }
    assert each["ItemSelector"]["item.$"] == "$$.Map.Item.Value" and each["ItemSelector"]["s3.$"] == "$.s3"
    inner = each["ItemProcessor"]["States"]
    assert _path(inner, "shout_items: keep shout", "shout_items: item done") == [
        "shout_items: keep shout",
        "shout_items: keep measure",
    ]
    keep = inner["shout_items: keep measure"]["Parameters"]
    assert keep["Key.$"] == f"States.Format('{{}}{folder}/measure/{{}}.json', $.s3.prefix, $.request_id, $.index)"
    assert keep["Body.$"] == "States.JsonToString($.results.measure.output)"
    assert inner["shout_items: item done"] == {"Type": "Pass", "Result": {}, "End": True}
    refs = top["shout_items: outputs by reference"]
    assert refs["ResultPath"] == "$.results.shout_items"
    count = "States.ArrayLength($.results.words.output.words)"
    assert refs["Parameters"]["measure"] == {
        "$ref.$": f"States.Format('{folder}/measure/[0:{{}}].json', $.request_id, {count})"
    }
    # No ResultWriter without --sam: the store's bucket is only known at run time (the table says why).
    assert "ResultWriter" not in each
    (row,) = [r for r in exported.rows if r.feature == "Map run results (ResultWriter)"]
    assert row.fidelity == "none" and row.used and "run time" in row.how
    # join takes the lists where they are: now $ref markers, which the SDK resolves.
    assert top["join"]["Parameters"]["Payload"]["input"]["needs"] == {
        "measure.$": "$.results.shout_items.measure",
        "shout.$": "$.results.shout_items.shout",
    }
    # Without a DISTRIBUTED Map the machine does not touch S3 (nor need the store there).
    assert "s3" not in json.dumps(export_asl(demo()).definition)


def test_a_failed_item_of_a_tolerating_distributed_map_writes_null_for_its_outputs_first() -> None:
    p = build(
        stage("a"),
        stage("b", "a", for_each=ForEach.parse("a.items"), completion=CompletionPolicy(count=1)),
        stage("d", "b"),
    )
    inner = export_asl(p, AslOptions(distributed=True)).definition["States"]["each a.items (b)"]["ItemProcessor"]
    states = inner["States"]
    for fail in ("b failed", "b: terminal error"):  # the names Catches and the terminal check point to
        assert states[fail]["Type"] == "Task" and states[fail]["Parameters"]["Body"] == "null"
        assert states[states[fail]["Next"]]["Type"] == "Fail"
    assert states["b"]["Catch"][0]["Next"] == "b failed"
    # Without tolerated failures a failed item fails at once: nothing to write.
    strict = build(stage("a"), stage("b", "a", for_each=ForEach.parse("a.items")), stage("d", "b"))
    inner = export_asl(strict, AslOptions(distributed=True)).definition["States"]["each a.items (b)"]
    assert inner["ItemProcessor"]["States"]["b failed"]["Type"] == "Fail"


def test_a_distributed_map_whose_list_the_machine_needs_keeps_its_results_in_the_state() -> None:
    """A list the machine itself reads (another Map's items, a per-item need taken by index) must be the list
    itself: the Map still reads its items from S3 but returns its outputs, as INLINE does."""
    each = ForEach.parse("a0.items")
    p = build(
        stage("a0"),
        stage("a", "a0", for_each=each),
        stage("b", "a"),
        stage("c", "a", "b", for_each=each),  # takes its item's a by index: States.ArrayGetItem on the list
        stage("d", "c"),
    )
    top = export_asl(p, AslOptions(distributed=True)).definition["States"]
    a, c = top["each a0.items (a)"], top["each a0.items (c)"]
    assert "ItemReader" in a and a["ResultPath"] == "$.results.a"
    assert "a: outputs by reference" not in top
    assert c["ItemSelector"]["outer"]["a.$"] == "States.ArrayGetItem($.results.a, $$.Map.Item.Index)"
    assert c["ResultPath"] is None and "c: outputs by reference" in top  # nothing in the machine reads c's list


def test_with_sam_a_distributed_map_writes_its_run_results_to_the_store_s_bucket() -> None:
    """``--sam`` knows the store's bucket before the run (a DefinitionSubstitution): the DISTRIBUTED Map gets a
    ResultWriter there, with no path into the state (Step Functions and moto read those from different
    documents); the Map's own result is still dropped and downstream still gets the list markers."""
    exported = export_asl(demo(), AslOptions(arns="substitutions", distributed=True))
    each = exported.definition["States"]["each words.words (shout, measure)"]
    assert each["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {
            "Bucket": "${FaveBucket}",
            "Prefix.$": "States.Format('requests/{}/export/shout_items/results', $$.Execution.Name)",
        },
    }
    assert each["ResultPath"] is None and each["Next"] == "shout_items: outputs by reference"
    assert exported.substitutions["FaveBucket"] == "FaveBucket"
    (row,) = [r for r in exported.rows if r.feature == "Map run results (ResultWriter)"]
    assert row.fidelity == "exact"
    # An INLINE Map has none (nor would a DISTRIBUTED one whose list the machine reads itself).
    inline = export_asl(demo(), AslOptions(arns="substitutions"))
    assert "ResultWriter" not in json.dumps(inline.definition) and "FaveBucket" not in inline.substitutions


def test_result_writer_names_a_bucket_given_at_export_time() -> None:
    """``--result-writer s3://bucket/prefix`` (AslOptions.results): a static bucket, the prefix in front of the
    request's key, on each DISTRIBUTED Map whose outputs go on by reference (not on one whose list the machine
    reads itself)."""
    exported = export_asl(demo(), AslOptions(distributed=True, results=result_location("s3://my-bucket/runs/")))
    each = exported.definition["States"]["each words.words (shout, measure)"]
    assert each["ResultWriter"]["Parameters"] == {
        "Bucket": "my-bucket",
        "Prefix.$": "States.Format('runs/requests/{}/export/shout_items/results', $$.Execution.Name)",
    }
    (row,) = [r for r in exported.rows if r.feature == "Map run results (ResultWriter)"]
    assert (row.fidelity, row.used) == ("exact", True) and "s3://my-bucket" in row.how
    # A list the machine reads (c takes its item's a by index) stays in the state: no ResultWriter on a's Map.
    each_a = ForEach.parse("a0.items")
    p = build(
        stage("a0"),
        stage("a", "a0", for_each=each_a),
        stage("b", "a"),
        stage("c", "a", "b", for_each=each_a),
        stage("d", "c"),
    )
    top = export_asl(p, AslOptions(distributed=True, results=("my-bucket", ""))).definition["States"]
    assert "ResultWriter" not in top["each a0.items (a)"] and "ResultWriter" in top["each a0.items (c)"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bucket", "expected s3://bucket[/prefix]"),
        ("s3://B", "is not an S3 bucket name"),
        ("s3://bucket/a{b}", "may hold only"),
    ],
)
def test_result_location_refuses_what_a_state_machine_cannot_take(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        result_location(uri)
    assert result_location("s3://bucket") == ("bucket", "")
    assert result_location("s3://bucket/a/b/") == ("bucket", "a/b/")
