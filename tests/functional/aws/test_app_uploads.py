"""The upload trigger: an object created under uploads/ starts a request (sidecar, metadata, defaults)."""

from __future__ import annotations

import json
from pathlib import Path

from fave.keys import state_key
from fave.persistence import list_request_ids
from support.app_lambda import OrchestratorLambda
from support.declared_input import demo_with_input, serve, video_input
from support.events import s3_upload_event
from support.tiers import Tier


def upload(tier: Tier, name: str, *, sidecar: dict[str, object] | None = None, **metadata: str) -> dict[str, object]:
    """Put a video (after its sidecar, as the README asks) and return the S3 event for it."""
    key = tier.upload_prefix + name
    if sidecar is not None:
        tier.client.put_object(Bucket=tier.bucket, Key=key + ".json", Body=json.dumps(sidecar).encode())
    put = tier.client.put_object(Bucket=tier.bucket, Key=key, Body=b"\x00\x00\x00\x18ftypmp42", Metadata=metadata)
    return s3_upload_event(tier.bucket, key, etag=put["ETag"], sequencer=f"00{abs(hash(key)):016X}")


def request_doc(lam: OrchestratorLambda, request_id: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(lam.store.get(state_key(request_id)).data)
    return doc


def test_an_upload_with_a_sidecar_starts_a_request_once(orchestrator_lambda: OrchestratorLambda, tier: Tier) -> None:
    lam = orchestrator_lambda
    event = upload(
        tier,
        "street scenes (20s).mp4",  # URL-encoded in the event: spaces and brackets must come back intact
        sidecar={"query": "cars", "profile": "loud", "extra": {"text": "go fast"}},
        **{"fave-query": "ignored: the sidecar wins"},
    )
    result = lam.invoke(event)
    assert [s["object"] for s in result["started"]] == [
        f"s3://{tier.bucket}/{tier.upload_prefix}street scenes (20s).mp4"
    ]
    request_id = result["started"][0]["request_id"]
    again = lam.invoke(event)  # S3 delivers at least once
    assert again["started"][0]["request_id"] == request_id
    assert list_request_ids(lam.store) == [request_id]

    doc = request_doc(lam, request_id)
    assert doc["input"] == {
        "text": "go fast",
        "video_uri": f"s3://{tier.bucket}/{tier.upload_prefix}street scenes (20s).mp4",
        "query": "cars",
        "profile": "loud",
    }
    final = lam.wait(request_id)
    assert final["status"] == "COMPLETED" and final["final"]["text"] == "GO!! FAST!!"


def test_metadata_then_defaults_fill_what_no_sidecar_sets(orchestrator_lambda: OrchestratorLambda, tier: Tier) -> None:
    lam = orchestrator_lambda
    lam.hold()
    with_metadata = lam.invoke(upload(tier, "a.mp4", **{"fave-query": "dogs", "fave-profile": "loud"}))
    bare = lam.invoke(upload(tier, "b.mp4"))
    first = request_doc(lam, with_metadata["started"][0]["request_id"])["input"]
    second = request_doc(lam, bare["started"][0]["request_id"])["input"]
    assert first == {"video_uri": f"s3://{tier.bucket}/{tier.upload_prefix}a.mp4", "query": "dogs", "profile": "loud"}
    assert second == {
        "video_uri": f"s3://{tier.bucket}/{tier.upload_prefix}b.mp4",
        "query": "find the words",  # FAVE_DEFAULT_QUERY
        "profile": "default",  # FAVE_DEFAULT_PROFILE
    }


def test_sidecars_other_prefixes_and_bad_options_start_nothing(
    orchestrator_lambda: OrchestratorLambda, tier: Tier, tmp_path: Path
) -> None:
    lam = orchestrator_lambda
    # The video pipeline's declared input: a field it does not list (a misspelt one) is refused.
    serve(lam, tier, demo_with_input(tmp_path, *video_input()))
    sidecar_event = s3_upload_event(tier.bucket, tier.upload_prefix + "x.mp4.json")
    outside = s3_upload_event(tier.bucket, tier.prefix + "elsewhere/x.mp4")
    bad_sidecar = upload(tier, "bad.mp4", sidecar={"query": "x", "profle": "loud"})
    bad_profile = upload(tier, "worse.mp4", **{"fave-profile": "nope"})

    reasons = [lam.invoke(e)["skipped"][0]["reason"] for e in (sidecar_event, outside, bad_sidecar, bad_profile)]
    assert reasons[0] == "a sidecar, not a video"
    assert reasons[1].startswith("outside the upload prefix")
    assert "profle" in reasons[2] and "bad.mp4.json" in reasons[2]
    assert "profile" in reasons[3] and "nope" in reasons[3]
    assert list_request_ids(lam.store) == []
