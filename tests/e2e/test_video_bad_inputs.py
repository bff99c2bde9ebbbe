"""Bad input through ``fave run``: each ends the documented way, with a reason a person can act on.

The rule (README, "Using it"): the CLI rejects only what it can tell locally before creating a request, a
local path that does not exist, with exit 2 and one line ``fave: error: ...``; nothing is stored. Any
input it must read to judge (content of a file, an S3 key) becomes a request that normalize fails at once
(terminal, never retried): exit 1, status FAILED, and the reason in state.json, ``fave run --json`` and
``fave status``. A video without an audio track is valid input: the run completes and the audio-dependent
stages return empty output. (A missing S3 key is in test_video_pipeline.py, next to the moto server.)

The media are generated with PyAV at test time (tests/support/media_samples.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fave_shared.store import LocalStore
from support.e2e import SAMPLE, StoreView, check_final_contract, fave
from support.media_samples import write_audio_only, write_empty, write_text, write_truncated, write_video

pytestmark = pytest.mark.e2e

Maker = Callable[[Path], Path]

CASES: dict[str, tuple[Maker, str, tuple[str, ...]]] = {
    # name: (how to make the file, fave run options, what the reason must say)
    "text renamed .mp4": (
        lambda d: write_text(d / "notes.mp4"),
        "",
        ("MediaInputError: not a readable video:", "Invalid data found"),
    ),
    "truncated mp4": (
        lambda d: write_truncated(SAMPLE, d / "upload.mp4", fraction=0.4),
        "",
        ("MediaInputError: truncated or corrupt video:", "cannot be opened", "incomplete upload"),
    ),
    "audio only": (
        lambda d: write_audio_only(d / "voice.mp4", duration_s=2.0),
        "",
        ("MediaInputError: not a video: no video stream", "(found: audio aac)"),
    ),
    "zero length": (
        lambda d: write_empty(d / "empty.mp4"),
        "",
        ("MediaInputError: empty file: empty.mp4 is 0 bytes",),
    ),
    "over the profile's duration limit": (
        # 301 s of a tiny picture at 1 fps: quick to write, longer than profile "fast" accepts (300 s).
        lambda d: write_video(d / "long.mp4", duration_s=301, width=32, height=32, fps=1, audio=False),
        "fast",
        ("MediaInputError: duration 301.0 s exceeds the profile limit of 300 s",),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_media_fails_the_request_at_normalize_with_the_reason(case: str, tmp_path: Path) -> None:
    make, profile, reason_parts = CASES[case]
    source = make(tmp_path)
    store_dir = tmp_path / "store"
    args = ["run", str(source), "--query", "cars", "--json", "--store", str(store_dir)]
    result = fave(*args, *(["--profile", profile] if profile else []))
    assert result.code == 1, result.describe()
    doc = result.json
    assert doc["status"] == "FAILED" and doc["final"] is None
    reason = doc["failure"]
    assert reason.startswith("stage 'normalize' failed after 1 attempt: "), reason
    for part in reason_parts:
        assert part in reason, f"{part!r} not in {reason!r}"
    assert "\n" not in reason
    assert doc["stages"]["normalize"]["status"] == "FAILED"
    assert all(s["status"] == "PENDING" for name, s in doc["stages"].items() if name != "normalize")
    assert f"request_failed: {reason}" in result.stderr  # the live progress says why, too

    view = StoreView(LocalStore(store_dir))
    state = view.state(doc["request_id"])
    assert state.status == "FAILED" and state.failure is not None
    assert (state.failure.stage, state.failure.error_type, state.failure.attempts) == (
        "normalize",
        "MediaInputError",
        1,
    )
    assert state.failure.reason == reason
    # An upload that was read is kept untouched for inspection; an empty one is rejected before the copy.
    kept = list(view.store.list(f"requests/{doc['request_id']}/input/"))
    if source.stat().st_size:
        assert kept == [f"requests/{doc['request_id']}/input/source.mp4"]
        assert view.store.get(kept[0]).data == source.read_bytes()
    else:
        assert kept == []
    assert not any(view.store.list(f"requests/{doc['request_id']}/clips/"))

    status = fave("status", doc["request_id"], "--json", "--store", str(store_dir))
    assert status.code == 0, status.describe()
    assert status.json["status"] == "FAILED" and status.json["failure"] == reason
    text = fave("status", doc["request_id"], "--store", str(store_dir))
    assert f"failure: {reason}" in text.stdout


def test_missing_local_file_is_a_usage_error_and_creates_no_request(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    missing = tmp_path / "no-such-video.mp4"
    result = fave("run", str(missing), "--json", "--store", str(store_dir))
    assert result.code == 2, result.describe()
    assert result.stdout == ""
    assert result.stderr == f"fave: error: no such file: {missing}\n"
    assert not any(LocalStore(store_dir).list("requests/"))


def test_video_without_audio_completes_with_empty_transcripts(tmp_path: Path) -> None:
    source = write_video(tmp_path / "silent-film.mp4", duration_s=4.0, width=160, height=120, fps=10, audio=False)
    store_dir = tmp_path / "store"
    result = fave("run", str(source), "--query", "hello", "--profile", "fast", "--json", "--store", str(store_dir))
    assert result.code == 0, result.describe()
    doc = result.json
    rid = doc["request_id"]
    assert doc["status"] == "COMPLETED" and doc["failure"] is None
    assert all(s["status"] == "SUCCEEDED" for s in doc["stages"].values()), doc["stages"]

    view = StoreView(LocalStore(store_dir))
    assert view.output(rid, "normalize")["probe"]["has_audio"] is False
    assert view.output(rid, "audio")["has_audio"] is False and view.output(rid, "audio")["speech"] == []
    clips = view.output(rid, "split")["clips"]
    assert clips and abs(clips[-1]["end_s"] - 4.0) <= 0.3
    for extract in view.outputs(rid, "extract"):
        assert extract["has_audio"] is False and extract["wav_key"] is None and extract["keyframes"]
    for transcript in view.outputs(rid, "transcribe"):
        assert transcript["text"] == "" and transcript["words"] == [] and transcript["speech_detected"] is False

    final = view.final(rid)
    check_final_contract(final, rid, "hello")
    assert final["scenes"] == []  # nothing said, so "hello" matches nothing
    assert [c["transcript"] for c in final["clips"]] == [""] * len(clips)
    assert not any(c["speech_detected"] for c in final["clips"])
