"""Stage normalize on real media: the sample, synthetic odd inputs, and every rejection path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import pytest
from fave_shared.outcome import StageError
from fave_shared.store import open_store
from support.functions import FIXTURES, load_handler
from support.media_samples import (
    SampleChain,
    invoke,
    sample_chain,
    write_audio_only,
    write_empty,
    write_scenes,
    write_text,
    write_truncated,
    write_video,
)
from support.stage_results import terminal

TRUTH = json.loads((FIXTURES / "scenes20.json").read_text())


@pytest.fixture(scope="session")
def chain(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleChain:
    return sample_chain(sample_video, tmp_path_factory.getbasetemp() / "sample-chain")


def normalize(tmp_path: Path, uri: str, **config: Any) -> dict[str, Any]:
    return invoke("normalize", tmp_path / "store", {"request": {"video_uri": uri}, "config": config})


def keyframe_times(data: bytes, tmp_path: Path) -> list[float]:
    path = tmp_path / "check.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        return [round(float(f.time), 3) for f in container.decode(stream)]


# -- the sample ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sample_probe_matches_ground_truth(chain: SampleChain) -> None:
    probe = chain.normalize["probe"]
    assert probe["duration_s"] == pytest.approx(TRUTH["duration_s"], abs=0.05)
    assert (probe["width"], probe["height"]) == (TRUTH["width"], TRUTH["height"])
    assert probe["fps"] == pytest.approx(TRUTH["fps"])
    assert probe["video_codec"] == "h264"
    assert probe["audio_codec"] == "aac"
    assert probe["has_audio"] is True
    assert probe["size_bytes"] == (FIXTURES / "scenes20.mp4").stat().st_size


@pytest.mark.slow
def test_sample_is_stored_and_normalized(chain: SampleChain, tmp_path: Path) -> None:
    out = chain.normalize
    assert out["source_key"] == "requests/sample/input/source.mp4"
    assert out["video_key"] == "requests/sample/input/normalized.mp4"
    assert chain.read(out["source_key"]) == (FIXTURES / "scenes20.mp4").read_bytes()
    norm = out["normalized"]
    # 360 p is under the 480 p cap: the size stays.
    assert (norm["width"], norm["height"], norm["fps"]) == (640, 360, 25.0)
    assert norm["has_audio"] is True
    assert norm["duration_s"] == pytest.approx(20.0, abs=0.05)
    # A keyframe every second (the fixed GOP extract relies on), and no others.
    assert keyframe_times(chain.read(out["video_key"]), tmp_path) == [float(s) for s in range(20)]


@pytest.mark.slow
def test_sample_scene_cuts_are_found_while_encoding(chain: SampleChain) -> None:
    scenes = chain.normalize["scenes"]
    assert scenes["threshold"] == 10.0
    assert scenes["cuts_s"] == pytest.approx(TRUTH["scene_cuts_s"], abs=0.05)
    assert all(score >= 10.0 for score in scenes["cut_scores"]) and len(scenes["cut_scores"]) == 3


# -- scene cuts and keyframes --------------------------------------------------------------------------


def test_each_scene_cut_starts_a_gop_and_source_keyframes_are_dropped(tmp_path: Path) -> None:
    # Cuts off the one-second grid, and a source whose own keyframes (every 2.12 s) match neither.
    src = write_scenes(tmp_path / "cuts.mp4", cuts_s=[2.36, 4.72], duration_s=7.0)
    out = normalize(tmp_path, str(src))
    assert out["scenes"]["cuts_s"] == pytest.approx([2.36, 4.72], abs=1e-6)
    assert all(score >= 10.0 for score in out["scenes"]["cut_scores"])
    keyframes = keyframe_times(open_store(str(tmp_path / "store")).get(out["video_key"]).data, tmp_path)
    # One per second from the start of each scene, and nothing else (no 2.12, 4.24 or 6.36 from the source).
    assert keyframes == pytest.approx([0.0, 1.0, 2.0, 2.36, 3.36, 4.36, 4.72, 5.72, 6.72], abs=1e-3)


def test_scene_threshold_above_every_cut_leaves_the_plain_gop(tmp_path: Path) -> None:
    src = write_scenes(tmp_path / "cuts.mp4", cuts_s=[2.36, 4.72], duration_s=7.0)
    out = normalize(tmp_path, str(src), scene_threshold=90)
    assert out["scenes"] == {"threshold": 90.0, "cuts_s": [], "cut_scores": []}
    keyframes = keyframe_times(open_store(str(tmp_path / "store")).get(out["video_key"]).data, tmp_path)
    assert keyframes == [float(s) for s in range(7)]


# -- accepted odd inputs -------------------------------------------------------------------------------


def test_video_without_audio_is_valid(tmp_path: Path) -> None:
    src = write_video(tmp_path / "silent.mp4", audio=False)
    out = normalize(tmp_path, str(src))
    assert out["probe"]["has_audio"] is False
    assert out["probe"]["audio_codec"] is None
    assert out["normalized"]["has_audio"] is False
    data = open_store(str(tmp_path / "store")).get(out["video_key"]).data
    (tmp_path / "n.mp4").write_bytes(data)
    with av.open(str(tmp_path / "n.mp4")) as container:
        assert not container.streams.audio
        assert container.streams.video[0].codec_context.name == "h264"


def test_height_is_capped_and_aspect_kept(tmp_path: Path) -> None:
    src = write_video(tmp_path / "big.mp4", width=320, height=240, fps=50, duration_s=1.0)
    out = normalize(tmp_path, src.as_uri(), target_height=120, max_fps=25)  # a file:// URI works too
    assert (out["probe"]["width"], out["probe"]["height"], out["probe"]["fps"]) == (320, 240, 50.0)
    assert (out["normalized"]["width"], out["normalized"]["height"]) == (160, 120)
    assert out["normalized"]["fps"] == 25.0
    assert out["normalized"]["has_audio"] is True


def test_phone_rotation_is_applied_to_the_pixels(tmp_path: Path) -> None:
    # Stored 160x120 with "display rotated 90 degrees clockwise" (-90 counter-clockwise), like a portrait
    # phone video: it must come out 120x160 and upright, with no display matrix left for a player to re-apply.
    src = write_video(tmp_path / "phone.mp4", width=160, height=120, rotation_deg=-90, duration_s=1.0)
    out = normalize(tmp_path, str(src))
    assert out["probe"]["rotation_deg"] == -90
    assert (out["probe"]["width"], out["probe"]["height"]) == (120, 160)
    assert (out["normalized"]["width"], out["normalized"]["height"]) == (120, 160)
    (tmp_path / "n.mp4").write_bytes(open_store(str(tmp_path / "store")).get(out["video_key"]).data)
    with av.open(str(tmp_path / "n.mp4")) as container:
        frame = next(container.decode(video=0))
    assert not frame.rotation
    rgb = frame.to_ndarray(format="rgb24").astype(int)
    # A clockwise quarter turn moves the top-left red corner to the top right.
    top_right, top_left = rgb[:20, -20:].mean(axis=(0, 1)), rgb[:20, :20].mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1] < 60 and top_right[2] < 60
    assert not (top_left[0] > 200 and top_left[1] < 60)


@pytest.mark.parametrize(
    ("name", "container", "video_codec", "audio_codec"),
    [
        ("old.avi", "avi", "mpeg4", "ac3"),  # packet-numbered audio timestamps
        ("clip.mkv", "matroska", "mpeg4", "libmp3lame"),
        ("broadcast.ts", "mpegts", "mpeg2video", "mp2"),  # starts at 1.4 s, not 0
    ],
)
def test_other_containers_and_codecs(
    tmp_path: Path, name: str, container: str, video_codec: str, audio_codec: str
) -> None:
    src = write_video(tmp_path / name, container=container, video_codec=video_codec, audio_codec=audio_codec)
    out = normalize(tmp_path, str(src))
    assert out["probe"]["video_codec"] == video_codec
    assert out["normalized"]["duration_s"] == pytest.approx(2.0, abs=0.05)
    (tmp_path / "n.mp4").write_bytes(open_store(str(tmp_path / "store")).get(out["video_key"]).data)
    with av.open(str(tmp_path / "n.mp4")) as result:
        first_video = next(result.decode(video=0))
        assert float(first_video.time) == 0.0  # rebased on the source's start
        audio_s = sum(f.samples for f in result.decode(audio=0)) / 48000
    assert audio_s == pytest.approx(2.0, abs=0.1)


def test_source_keeps_its_extension(tmp_path: Path) -> None:
    src = write_video(tmp_path / "Clip.MOV", duration_s=1.0)
    out = normalize(tmp_path, str(src))
    assert out["source_key"] == "requests/r1/input/source.mov"


def test_metadata_that_is_not_utf8_is_no_obstacle(tmp_path: Path) -> None:
    # Older tools write Latin-1 titles. PyAV 18 (Python 3.11) cannot open such a file unless told to ignore
    # undecodable metadata, and PyAV 19 (Lambda's python3.12) no longer takes that option (normalize_probe).
    marker, latin1 = b"TITLE-MARKER", "Café Noël 99".encode("latin-1")
    src = write_video(tmp_path / "latin1.mp4", duration_s=1.0, metadata={"title": marker.decode()})
    data = src.read_bytes()
    assert data.count(marker) == 1 and len(latin1) == len(marker)  # same length: the MP4 boxes stay valid
    src.write_bytes(data.replace(marker, latin1))
    out = normalize(tmp_path, str(src))
    assert out["probe"]["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert out["normalized"]["height"] == 120


@pytest.mark.slow  # importing moto takes 2-6 s
def test_reads_s3_sources(tmp_path: Path, moto_s3_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    load_handler("normalize")
    import normalize_source  # the function's own module, importable once its folder is on sys.path

    # The function caches its client per warm environment; this test's moto needs a fresh one.
    monkeypatch.setattr(normalize_source, "_s3_client", None)
    src = write_video(tmp_path / "up.mp4", duration_s=1.0)
    moto_s3_client.put_object(Bucket="fave-test", Key="uploads/up.mp4", Body=src.read_bytes())
    out = normalize(tmp_path, "s3://fave-test/uploads/up.mp4")
    assert out["probe"]["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert open_store(str(tmp_path / "store")).get(out["source_key"]).data == src.read_bytes()

    missing = normalize(tmp_path, "s3://fave-test/uploads/missing.mp4")
    terminal(missing, "MediaInputError", match=r"source not found: s3://fave-test/uploads/missing\.mp4")
    terminal(normalize(tmp_path, "s3://no-such-bucket/x.mp4"), "MediaInputError", match=r"s3://no-such-bucket/x\.mp4")


# -- rejected inputs -----------------------------------------------------------------------------------


def rejects(tmp_path: Path, uri: str, pattern: str, **config: Any) -> StageError:
    # The stage SDK returns a terminal error as the handler's result (fave_shared.outcome), not raised.
    error = terminal(normalize(tmp_path, uri, **config), "MediaInputError", match=pattern)
    assert "\n" not in error.message  # one line: it goes into state.json as the reason
    return error


def test_rejects_text_renamed_mp4(tmp_path: Path) -> None:
    src = write_text(tmp_path / "notes.mp4")
    rejects(tmp_path, str(src), r"^not a readable video: source\.mp4 \(Invalid data found")


def test_rejects_truncated_mp4_without_index(tmp_path: Path) -> None:
    # The default MP4 layout writes the index (moov) last: a cut-off upload has none.
    full = write_video(tmp_path / "full.mp4", duration_s=4.0)
    src = write_truncated(full, tmp_path / "cut.mp4", fraction=0.6)
    rejects(
        tmp_path,
        str(src),
        r"^truncated or corrupt video: source\.mp4 is an MP4/MOV file that cannot be opened",
    )


def test_rejects_truncated_faststart_mp4(tmp_path: Path) -> None:
    # With the index first the header survives and declares 4 s; only decoding finds the data missing.
    full = write_video(tmp_path / "full.mp4", duration_s=4.0, faststart=True)
    src = write_truncated(full, tmp_path / "cut.mp4", fraction=0.5)
    rejects(tmp_path, str(src), r"^truncated or corrupt video: source\.mp4 declares 4\.0 s but only")


def test_rejects_audio_only(tmp_path: Path) -> None:
    src = write_audio_only(tmp_path / "voice.mp4")
    rejects(tmp_path, str(src), r"^not a video: no video stream in source\.mp4 \(found: audio aac\)$")


def test_rejects_zero_length(tmp_path: Path) -> None:
    src = write_empty(tmp_path / "empty.mp4")
    rejects(tmp_path, str(src), r"^empty file: empty\.mp4 is 0 bytes$")


def test_rejects_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.mp4"
    rejects(tmp_path, str(missing), rf"^source not found: {missing}$")
    rejects(tmp_path, missing.as_uri(), r"^source not found: file://")


def test_rejects_request_without_video(tmp_path: Path) -> None:
    terminal(
        invoke("normalize", tmp_path / "store", {"request": {}}),
        "MediaInputError",
        match="the request has no video_uri",
    )


def test_rejects_over_duration(tmp_path: Path) -> None:
    src = write_video(tmp_path / "long.mp4", duration_s=3.0, audio=False)
    rejects(tmp_path, str(src), r"^duration 3\.0 s exceeds the profile limit of 2 s$", max_duration_s=2)


def test_rejects_over_resolution(sample_video: Path, tmp_path: Path) -> None:
    rejects(
        tmp_path,
        str(sample_video),
        r"^resolution 640x360 exceeds the profile limit of 320x240$",
        max_width=320,
        max_height=240,
    )


def test_resolution_limit_ignores_orientation(tmp_path: Path) -> None:
    src = write_video(tmp_path / "portrait.mp4", width=120, height=160, duration_s=0.5, audio=False)
    out = normalize(tmp_path, str(src), max_width=160, max_height=120)
    assert (out["normalized"]["width"], out["normalized"]["height"]) == (120, 160)


def test_rejects_over_size(sample_video: Path, tmp_path: Path) -> None:
    rejects(
        tmp_path,
        str(sample_video),
        r"^size 0\.5 MB of scenes20\.mp4 exceeds the profile limit of 0\.1 MB$",
        max_size_mb=0.1,
    )
