"""The orchestrator function's pure pieces: what it refuses to handle, idempotency keys, request ids, settings.
The sample events of events/ (files): tests/functional/test_sample_events.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fave.app import Settings, kind_of
from fave.app.idempotency import fingerprint, validate_key
from fave.ids import new_request_id, request_id_time
from fave.keys import idempotency_key
from fave_shared.errors import ValidationError


@pytest.mark.parametrize("event", [{}, {"Records": []}, {"detail-type": "Scheduled Event"}, []])
def test_anything_else_is_refused_naming_what_is_expected(event: object) -> None:
    with pytest.raises(ValidationError, match=r"HTTP API 2\.0 request, S3 or SQS event records"):
        kind_of(event)


# ---- small pieces of the function ---------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert idempotency_key("s", "k") != idempotency_key("t", "k") and idempotency_key("s", "k").startswith(
        "idempotency/"
    )


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="Idempotency-Key"):
        validate_key(key)


def test_request_id_time_reads_the_ulid_timestamp() -> None:
    assert request_id_time(new_request_id(1_795_000_000.123)) == pytest.approx(1_795_000_000.123, abs=0.001)


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env({"FAVE_STORE": "s3://b/p", "FAVE_UPLOAD_PREFIX": "in", "FAVE_DEFAULT_QUERY": "q"})
    assert settings.store_uri == "s3://b/p" and settings.upload_prefix == "in/"
    assert settings.default_query == "q" and settings.default_profile == "default"
    assert settings.pipeline_path == Path(__file__).resolve().parents[2] / "orchestrator" / "pipeline.yaml"
    assert Settings.from_env({"FAVE_PIPELINE": "/abs/p.yaml"}).pipeline_path == Path("/abs/p.yaml")
