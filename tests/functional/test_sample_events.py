"""The sample events of events/ (read from their files) are what AWS sends, and the orchestrator function tells
them apart. The pure pieces of the function: tests/unit/test_app_events.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2, EventBridgeEvent, S3Event, SQSEvent
from fave.app import kind_of
from fave.app.models import request_input
from fave.completions import from_envelope
from fave.core.model import TaskFailed, TaskSucceeded
from fave.local.orchestrator import load_local_pipeline
from fave_shared.errors import ValidationError
from fave_shared.schemas import DestinationEnvelope, StageEvent, StageInput
from support.events import EVENTS, SAMPLE_REQUEST_ID, load_event, sample_names

REPO = Path(__file__).resolve().parents[2]

KINDS = {
    "http-start.json": "http",
    "http-status.json": "http",
    "http-resume.json": "http",
    "http-cancel.json": "http",
    "s3-upload.json": "s3",
    "destination-success.json": "destination",
    "destination-failure.json": "destination",
    "schedule-tick.json": "tick",
    "sqs-completions.json": "sqs",
}


def test_every_entry_point_has_a_sample_and_the_readme_lists_them_all() -> None:
    assert set(sample_names()) == {*KINDS, "stage-invocation.json"}
    readme = (EVENTS / "README.md").read_text()
    assert set(re.findall(r"`([\w-]+\.json)`", readme)) >= set(sample_names())


@pytest.mark.parametrize(("name", "kind"), sorted(KINDS.items()))
def test_the_function_tells_each_sample_apart(name: str, kind: str) -> None:
    assert kind_of(load_event(name)) == kind


def test_a_stage_invocation_sent_to_the_orchestrator_is_refused_with_a_pointer() -> None:
    event = load_event("stage-invocation.json")
    StageEvent.model_validate(event)
    StageInput.model_validate(event["input"])
    with pytest.raises(ValidationError, match="stage's function"):
        kind_of(event)


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k == "http"])
def test_http_samples_are_payload_2_0_with_the_sample_id_in_the_path(name: str) -> None:
    event = APIGatewayProxyEventV2(load_event(name))
    assert event.version == "2.0" and event.request_context.stage == "$default"
    assert event.raw_path == event.request_context.http.path
    method, _, route = event.route_key.partition(" ")
    assert method == event.request_context.http.method and route.startswith("/requests")
    if name != "http-start.json":
        assert event.raw_path.startswith(f"/requests/{SAMPLE_REQUEST_ID}")
        assert event.path_parameters == {"id": SAMPLE_REQUEST_ID}  # as template.yaml names it


def test_the_start_sample_is_a_valid_request_with_an_idempotency_key() -> None:
    event = APIGatewayProxyEventV2(load_event("http-start.json"))
    body = json.loads(event.body or "")
    value = request_input(
        body, load_local_pipeline(REPO / "pipeline.yaml"), default_query=None, default_profile="default"
    )
    assert value == body  # the video pipeline's input, nothing added or dropped
    assert value["video_uri"].startswith("s3://") and value["query"] and value["profile"] == "default"
    assert event.headers["idempotency-key"]


def test_the_upload_sample_has_an_url_encoded_key_under_uploads() -> None:
    record = next(iter(S3Event(load_event("s3-upload.json")).records))
    assert record.event_name == "ObjectCreated:Put" and record.event_source == "aws:s3"
    raw = record.s3.get_object.key
    assert "%" in raw and "+" in raw  # as S3 sends it
    assert S3Event(load_event("s3-upload.json")).object_key == "uploads/street scenes(20s).mp4"
    assert record.s3.get_object.sequencer


def test_destination_samples_become_the_completion_of_their_task() -> None:
    request_id, succeeded = from_envelope(load_event("destination-success.json"))
    assert request_id == SAMPLE_REQUEST_ID
    assert isinstance(succeeded, TaskSucceeded) and (succeeded.stage, succeeded.item, succeeded.attempt) == (
        "extract",
        3,
        1,
    )
    assert succeeded.output["clip"]["index"] == 3

    failure_event = load_event("destination-failure.json")
    assert not DestinationEnvelope.model_validate(failure_event).succeeded
    _, failed = from_envelope(failure_event)
    assert isinstance(failed, TaskFailed) and failed.item == 4 and failed.error_type == "RetryableError"


def test_the_tick_sample_is_an_eventbridge_scheduled_event() -> None:
    event = EventBridgeEvent(load_event("schedule-tick.json"))
    assert event.detail_type == "Scheduled Event" and event.source == "aws.events" and event.detail == {}


def test_the_queue_sample_carries_the_destination_samples_as_message_bodies() -> None:
    records = SQSEvent(load_event("sqs-completions.json")).records
    bodies = [record.json_body for record in records]
    assert bodies == [load_event("destination-success.json"), load_event("destination-failure.json")]
    assert all(r.event_source == "aws:sqs" and r.attributes.approximate_receive_count == "1" for r in records)
