"""Stage extract on the sample's clips and on a clip without audio: keyframe JPEGs and a 16 kHz WAV."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from support.functions import load_handler
from support.media_samples import SampleChain, invoke, sample_chain, write_video


@pytest.fixture(scope="session")
def chain(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleChain:
    return sample_chain(sample_video, tmp_path_factory.getbasetemp() / "sample-chain")


def decode_jpeg(data: bytes) -> Any:
    """The picture in a JPEG file (PyAV's mjpeg decoder: the same thing a browser would show)."""
    with av.open(io.BytesIO(data), mode="r", format="mjpeg") as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def read_wav(data: bytes) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getparams(), np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


@pytest.mark.slow
def test_sample_keyframes_are_one_per_second_in_source_time(chain: SampleChain) -> None:
    for clip, out in zip(chain.split["clips"], chain.extract, strict=True):
        assert out["clip"] == {k: clip[k] for k in ("index", "start_s", "end_s", "key")}
        times = [k["t_s"] for k in out["keyframes"]]
        # Absolute source times, about one per second, inside the clip.
        assert times == pytest.approx([clip["start_s"] + s for s in range(5)], abs=0.05)
        for kf in out["keyframes"]:
            assert (kf["width"], kf["height"]) == (640, 360)
            assert kf["key"].startswith(f"requests/sample/stages/extract/{clip['index']:05d}/keyframes/")
            picture = decode_jpeg(chain.read(kf["key"]))
            assert picture.shape == (360, 640, 3)
            assert picture.std() > 10  # a photo, not a flat frame


@pytest.mark.slow
def test_sample_keyframes_show_their_scene(chain: SampleChain) -> None:
    # Scenes are different photos: the first keyframes of two clips differ far more than two keyframes of one.
    pics = [[decode_jpeg(chain.read(k["key"])).astype(float) for k in out["keyframes"][:2]] for out in chain.extract]
    within = np.mean([np.abs(a - b).mean() for a, b in pics])
    across = np.mean([np.abs(pics[i][0] - pics[i + 1][0]).mean() for i in range(len(pics) - 1)])
    assert across > 2 * within


@pytest.mark.slow
def test_sample_wav_has_the_clip_length_and_speech(chain: SampleChain) -> None:
    for clip, out in zip(chain.split["clips"], chain.extract, strict=True):
        assert out["has_audio"] is True
        assert out["sample_rate"] == 16000
        params, samples = read_wav(chain.read(out["wav_key"]))
        assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 16000)
        assert params.nframes == round((clip["end_s"] - clip["start_s"]) * 16000) == out["wav_samples"]
        rms = float(np.sqrt(np.mean((samples / 32768.0) ** 2)))
        if clip["start_s"] >= 15.0:
            assert rms < 1e-3  # the silent last scene
        else:
            assert rms > 0.01  # someone speaks in every other scene


def test_clip_without_audio_has_no_wav(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = write_video(tmp_path / "mute.mp4", duration_s=2.5, audio=False)
    norm = invoke("normalize", store, {"request": {"video_uri": str(src)}})
    # The normalized video is itself a valid clip file: one clip covering everything.
    clip = {"index": 0, "start_s": 0.0, "end_s": 2.5, "key": norm["video_key"], "reason": "end"}
    out = invoke("extract", store, {"item": clip, "index": 0, "needs": {"normalize": norm}}, item=0)
    assert out["has_audio"] is False
    assert out["wav_key"] is None
    assert [k["t_s"] for k in out["keyframes"]] == [0.0, 1.0, 2.0]


def test_long_clip_keyframes_are_thinned(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = write_video(tmp_path / "v.mp4", duration_s=6.0)
    norm = invoke("normalize", store, {"request": {"video_uri": str(src)}})
    clip = {"index": 3, "start_s": 30.0, "end_s": 36.0, "key": norm["video_key"]}
    out = invoke("extract", store, {"item": clip, "config": {"max_keyframes": 3}}, item=3)
    assert [k["t_s"] for k in out["keyframes"]] == [30.0, 32.0, 34.0]
    assert out["wav_samples"] == 6 * 16000


def test_wav_length_is_exact(tmp_path: Path) -> None:
    load_handler("extract")
    import extract_wav

    assert len(extract_wav.fit_length(np.ones(100, dtype=np.int16), 80)) == 80
    padded = extract_wav.fit_length(np.ones(100, dtype=np.int16), 120)
    assert len(padded) == 120 and padded[100:].sum() == 0
    params, samples = read_wav(extract_wav.wav_bytes(np.arange(5, dtype=np.int16)))
    assert (params.nchannels, params.framerate, list(samples)) == (1, 16000, [0, 1, 2, 3, 4])
