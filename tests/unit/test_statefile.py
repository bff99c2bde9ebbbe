"""``fave.statefile``: the request documents read through their own decoder (no pydantic). What it accepts and
refuses, and that every document reads back as what was written."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
from fave.statefile import (
    SCHEMA_VERSION,
    AttemptDoc,
    DocError,
    FailureDoc,
    FingerprintDoc,
    PipelineRefDoc,
    ReadyDoc,
    SegmentDoc,
    ShardDoc,
    StageDoc,
    StateDoc,
    TaskDoc,
    parse_shards,
)

TASK = TaskDoc(
    status="FAILED",
    attempt=2,
    budget_base=1,
    dispatched_at=10.5,
    first_dispatched_at=9.0,
    deadline=40.5,
    retry_at=None,
    finished_at=11.25,
    error_type="ValueError",
    error="boom",
    output={"a": [1, 2, {"b": None}]},
    history=[AttemptDoc(n=1, started_at=None, ended_at=9.5, error_type="Timeout", error="late")],
    traceback="Traceback ...",
    stale_attempts=1,
    cached=True,
    cached_from="01ABC",
    throttled=3,
)


def state(**changes: Any) -> StateDoc:
    stage = StageDoc(
        status="RUNNING",
        fanned_out=True,
        total=300,
        pending=1,
        running=2,
        succeeded=3,
        failed=4,
        skipped=5,
        cancelled=6,
        started_at=1.0,
        finished_at=None,
        duration_s=None,
        shards=3,
        shard_tokens=["000001ab", "", "000002cd@0"],
        task=TASK,
        ready=ReadyDoc(lo=3, hi=9, extra=[20, 31]),
        unsent=ReadyDoc(extra=[7]),
        deadline_floor=33.5,
        retry_blocks={0: 12.0, 7: 13.5},
        fingerprint=FingerprintDoc(function="F", code="c0de", config={"k": [1]}, for_each="a.items"),
        throttled=2,
        throttle_cap=4.5,
        throttle_at=8.0,
    )
    values: dict[str, Any] = {
        "request_id": "01M8EB709SEEB7JCZZ6BBNZP2A",
        "status": "RUNNING",
        "input": {"source": "s3://b/k", "n": 3},
        "profile": "fast",
        "pipeline": PipelineRefDoc(name="p", digest="d" * 16, path="/x/pipeline.yaml", shape={"a": []}),
        "created_at": 1.0,
        "updated_at": 2.0,
        "started_at": 1.5,
        "finished_at": None,
        "failure": FailureDoc(stage="a", item=3, key="k3", error_type="E", message="m", attempts=2, reason="r"),
        "cancel_reason": None,
        "version": 7,
        "resumes": 1,
        "stages": {"a": stage, "b": StageDoc()},
        "fanout": {"a.items": 300},
        "fanout_blocks": {"a.items": 2048},
        "abandoned": 1,
        "abandoned_until": 99.0,
        "no_cache": True,
        "selection": ["b"],
        "scope": ["a", "b"],
        "budget": {"max_invocations": 10},
        "budget_since": 1.0,
        "ledger": {"invocations": 4},
    }
    values.update(changes)
    return StateDoc(**values)


def test_every_field_set_reads_back_equal() -> None:
    doc = state()
    assert {f.name for f in fields(StateDoc)} - {"schema_version"} <= set(doc.to_dict())
    data = json.dumps(doc.to_dict()).encode()
    assert StateDoc.from_json(data) == doc
    assert StateDoc.from_json(data).stages["a"].retry_blocks == {0: 12.0, 7: 13.5}  # integer keys again


def test_a_shard_and_a_segment_read_back() -> None:
    shard = ShardDoc(stage="a", shard=2, version=5, tasks={256: TASK, 257: TaskDoc()})
    assert parse_shards(json.dumps(shard.to_dict()).encode()) == {2: shard}
    segment = SegmentDoc(shards={2: shard, 3: ShardDoc(stage="a", shard=3, version=5, tasks={})})
    assert parse_shards(json.dumps(segment.to_dict(), separators=(",", ":")).encode()) == segment.shards


def test_absent_fields_take_their_defaults_and_unknown_ones_are_ignored() -> None:
    minimal = {
        "request_id": "r",
        "status": "PENDING",
        "input": {},
        "pipeline": {"name": "p", "digest": "d"},
        "created_at": 1,
        "updated_at": 2,
        "stages": {"a": {"later_field": 1}},
        "from_a_newer_fave": {"x": 1},
    }
    doc = StateDoc.from_json(json.dumps(minimal))
    assert doc.schema_version == SCHEMA_VERSION and doc.stages["a"] == StageDoc() and doc.fanout == {}
    assert doc.created_at == 1.0 and type(doc.created_at) is float  # an integral time is still a float
    assert doc.stages["a"].shard_tokens is not StageDoc().shard_tokens  # defaults are not shared


@pytest.mark.parametrize(
    ("change", "where", "why"),
    [
        ({"stages": {"a": {"total": "3"}}}, "stages.a.total", "an integer"),
        ({"stages": {"a": {"total": True}}}, "stages.a.total", "an integer"),
        ({"stages": {"a": {"task": {"history": [{"n": 1}]}}}}, "stages.a.task.history.0.ended_at", "required"),
        ({"stages": {"a": {"retry_blocks": {"x": 1.0}}}}, "stages.a.retry_blocks", "integer keys"),
        ({"stages": {"a": {"started_at": "noon"}}}, "stages.a.started_at", "a number"),
        ({"stages": []}, "stages", "an object"),
        ({"input": None}, "input", "an object"),
        ({"pipeline": {"name": "p"}}, "pipeline.digest", "required"),
        ({"selection": "b"}, "selection", "a list"),
        ({"no_cache": 1}, "no_cache", "a boolean"),
        ({"request_id": 5}, "request_id", "a string"),
    ],
)
def test_a_wrong_field_is_refused_naming_its_path(change: dict[str, Any], where: str, why: str) -> None:
    value = state().to_dict() | change
    with pytest.raises(DocError) as caught:
        StateDoc.from_json(json.dumps(value))
    assert str(caught.value).startswith(f"{where}: ") and why in caught.value.msg


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"state"'])
def test_what_is_not_a_json_object_is_refused(data: bytes) -> None:
    with pytest.raises(DocError, match=r"^document: "):
        StateDoc.from_json(data)


def test_a_missing_required_field_is_named() -> None:
    value = state().to_dict()
    del value["stages"]
    with pytest.raises(DocError, match=r"^stages: field required$"):
        StateDoc.from_json(json.dumps(value))


def test_a_segments_shards_are_decoded_when_asked_for() -> None:
    good = ShardDoc(stage="a", shard=0, version=1, tasks={0: TASK})
    value = {"shards": {"0": good.to_dict(), "1": {"stage": "a", "shard": 1, "version": 1, "tasks": {"128": 5}}}}
    shards = parse_shards(json.dumps(value).encode())
    assert sorted(shards) == [0, 1] and len(shards) == 2
    assert shards[0] == good and shards.get(0) is shards[0]  # decoded once
    with pytest.raises(DocError, match=r"^shards\.1\.tasks\.128: expected an object$"):
        shards.get(1)


@pytest.mark.parametrize("data", [b'{"shards": []}', b'{"shards": {"x": {}}}', b'{"shards": {'])
def test_what_is_not_a_segment_is_refused_whole(data: bytes) -> None:
    with pytest.raises(DocError):
        parse_shards(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"request_id": "r", "status": "S", "input": {}, "pipeline": {"name": "p", "digest": "d"}, '
        b'"created_at": 1' + b"0" * 400 + b', "updated_at": 2, "stages": {}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["a time beyond a float", "nested too deep"],
)
def test_a_corrupt_document_is_a_doc_error_whatever_breaks(data: bytes) -> None:
    with pytest.raises(DocError):
        StateDoc.from_json(data)


def test_writing_a_document_does_not_walk_its_outputs() -> None:
    deep: list[Any] = []
    for _ in range(5000):  # deeper than the interpreter's recursion limit: a walk would fail
        deep = [deep]
    task = TaskDoc(status="SUCCEEDED", output={"deep": deep})
    doc = state(stages={"a": StageDoc(task=task)})
    written = doc.to_dict()
    assert written["stages"]["a"]["task"]["output"] is task.output  # handed over as it is
    assert written["stages"]["a"]["task"]["status"] == "SUCCEEDED" and written["pipeline"]["name"] == "p"
