"""The sample events of events/, loaded for tests with only what must vary patched in.

Tests never write event dicts inline: they take the file that ``sam local invoke -e`` would take and change
the request id, bucket, key or task, so the events the suite proves are the ones shipped.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from fave_shared.schemas import TaskRef

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
#: The request id and bucket the samples name (placeholders).
SAMPLE_REQUEST_ID = "01M7Q5CQG08V1KSN1NN13VDKQ9"
SAMPLE_BUCKET = "fave-artifacts-123456789012"


@functools.cache
def _read(name: str) -> str:
    return (EVENTS / name).read_text()


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``events/{name}``."""
    event: dict[str, Any] = json.loads(_read(name))
    return copy.deepcopy(event)


def sample_names() -> list[str]:
    return sorted(p.name for p in EVENTS.glob("*.json"))


def http_event(
    name: str,
    *,
    request_id: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    without_headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An HTTP API 2.0 sample with its path's request id, its body (a dict is JSON-encoded, a str is sent
    as is) and headers (lower-case, as API Gateway sends them) replaced."""
    event = load_event(name)
    if request_id is not None:
        path = event["rawPath"].replace(SAMPLE_REQUEST_ID, request_id)
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["pathParameters"] = {"id": request_id}
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
        event["isBase64Encoded"] = False
        event["headers"]["content-type"] = "application/json"
        event["headers"]["content-length"] = str(len(event["body"].encode()))
    for header in without_headers:
        event["headers"].pop(header.lower(), None)
    event["headers"].update({k.lower(): v for k, v in (headers or {}).items()})
    return event


def s3_upload_event(bucket: str, key: str, *, etag: str | None = None, sequencer: str | None = None) -> dict[str, Any]:
    """The S3 ObjectCreated sample for ``s3://bucket/key`` (the key URL-encoded as S3 sends it)."""
    event = load_event("s3-upload.json")
    s3 = event["Records"][0]["s3"]
    s3["bucket"]["name"] = bucket
    s3["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    s3["object"]["key"] = quote_plus(key, safe="/")
    if etag is not None:
        s3["object"]["eTag"] = etag.strip('"')
    if sequencer is not None:
        s3["object"]["sequencer"] = sequencer
    return event


def destination_event(name: str, task: TaskRef, *, response: Any = None, store: str | None = None) -> dict[str, Any]:
    """A destination sample (success or failure) for ``task``; ``response`` replaces the responsePayload."""
    event = load_event(name)
    event["requestPayload"]["task"] = task.model_dump()
    if store is not None:
        event["requestPayload"]["store"] = store
    if response is not None:
        event["responsePayload"] = response
    return event


def tick_event() -> dict[str, Any]:
    return load_event("schedule-tick.json")
