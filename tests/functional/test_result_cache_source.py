"""The result cache keys a request's source by its content, not its name (``fave.source_digest``).

The demo pipeline with its words stage keyed on ``text`` and the source field ``video_uri`` (the upload field of a
pipeline without ``input:``). The same name with other bytes must miss; a source whose content cannot be known is
not cached (the request still completes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fave.local.orchestrator import local_orchestrator
from fave.source_digest import source_identity
from fave_shared.store import LocalStore, ObjectStore, S3Store

CACHED = Path(__file__).resolve().parents[1] / "fixtures" / "cache" / "pipeline.yaml"

WORDS_ON_SOURCE = "cache: {request: [text, words_sleep_s, video_uri]}"


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    text = CACHED.read_text()
    text = text.replace("cache: {request: [text, words_sleep_s]}", WORDS_ON_SOURCE)
    text = text.replace(
        "template: ../demo/template.yaml", f"template: {CACHED.parent.parent / 'demo' / 'template.yaml'}"
    )
    assert WORDS_ON_SOURCE in text
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def words_ran(store: ObjectStore, pipeline: Path, source: str) -> bool:
    """Run a request on ``source``; whether its words task ran (was not taken from the cache)."""
    orchestrator = local_orchestrator(pipeline, store)
    try:
        state = orchestrator.create({"text": "one two", "video_uri": source})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
        state = orchestrator.load(state.request_id, full=True)
    finally:
        orchestrator.close()
    assert state.status.value == "COMPLETED", state.failure
    return not state.tasks["words"][0].cached


def test_a_local_source_is_keyed_by_its_bytes(tmp_path: Path, pipeline: Path) -> None:
    store = LocalStore(tmp_path / "store")
    video = tmp_path / "video.mp4"
    video.write_bytes(b"first take")
    assert words_ran(store, pipeline, str(video))
    assert not words_ran(store, pipeline, str(video))  # same name, same bytes: cached
    video.write_bytes(b"second take")  # same name, other bytes
    assert words_ran(store, pipeline, str(video))
    assert not words_ran(store, pipeline, str(video))


def test_a_source_that_cannot_be_read_is_not_cached(tmp_path: Path, pipeline: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for _ in range(2):
        assert words_ran(store, pipeline, str(tmp_path / "missing.mp4"))
        assert words_ran(store, pipeline, "https://example.com/video.mp4")


def test_an_s3_source_is_keyed_by_its_etag(server_store: S3Store) -> None:
    server_store.put("inputs/a.mp4", b"first take")
    first = source_identity(f"{server_store.uri}/inputs/a.mp4", server_store)
    assert first is not None and first == source_identity(f"{server_store.uri}/inputs/a.mp4", server_store)
    server_store.put("inputs/a.mp4", b"second take")
    assert source_identity(f"{server_store.uri}/inputs/a.mp4", server_store) not in (None, first)
    assert source_identity(f"{server_store.uri}/inputs/missing.mp4", server_store) is None
    assert source_identity("s3://another-bucket/inputs/a.mp4", server_store) is None
    assert source_identity(f"{server_store.uri}/inputs/a.mp4", LocalStore("/tmp/unused")) is None
