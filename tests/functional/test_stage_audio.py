"""Stage audio on real media (the sample, a tone, no audio) and its VAD/feature helpers on known signals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.functions import FIXTURES, load_handler
from support.media_samples import SampleChain, invoke, sample_chain, write_video
from support.stage_results import terminal

TRUTH = json.loads((FIXTURES / "scenes20.json").read_text())


@pytest.fixture(scope="session")
def chain(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleChain:
    return sample_chain(sample_video, tmp_path_factory.getbasetemp() / "sample-chain")


def analyse(tmp_path: Path, video: Path, **config: Any) -> dict[str, Any]:
    store = tmp_path / "store"
    norm = invoke("normalize", store, {"request": {"video_uri": str(video)}})
    return invoke("audio", store, {"needs": {"normalize": norm}, "config": config})


# -- the sample ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sample_speech_matches_ground_truth(chain: SampleChain) -> None:
    out = chain.audio
    assert out["has_audio"] is True
    found = [(s["start_s"], s["end_s"]) for s in out["speech"]]
    truth = [(s["start_s"], s["end_s"]) for s in TRUTH["speech"]]
    assert len(found) == len(truth), found
    for (s, e), (ts, te) in zip(found, truth, strict=True):
        assert s == pytest.approx(ts, abs=0.3)
        assert e == pytest.approx(te, abs=0.3)
    assert not [seg for seg in found if seg[1] > 15.0], "the last scene is silent"


@pytest.mark.slow
def test_sample_loudness_series_and_onsets(chain: SampleChain) -> None:
    out = chain.audio
    loud = out["loudness"]
    assert -35.0 < loud["integrated_lufs"] < -10.0
    series = loud["series"]
    assert [p["t_s"] for p in series[:3]] == [0.0, 0.5, 1.0]
    assert len(series) == pytest.approx(20.0 / 0.5, abs=1)
    level = {p["t_s"]: p["rms_db"] for p in series}
    assert level[1.0] > -40.0  # "hello world" is being said
    assert all(level[t] < -60.0 for t in (16.0, 17.5, 19.0))  # the silent coffee-cup scene
    onsets = out["onsets_s"]
    assert len(onsets) >= 10
    # Onsets belong to speech (syllables), never to the silent last scene.
    assert all(t < 15.0 for t in onsets)
    assert all(any(s["start_s"] - 0.2 <= t <= s["end_s"] + 0.2 for s in out["speech"]) for t in onsets)


@pytest.mark.slow
def test_sample_energy_artifact(chain: SampleChain) -> None:
    out = chain.audio
    assert out["energy_key"] == "requests/sample/stages/audio/energy.json"
    doc = json.loads(chain.read(out["energy_key"]))
    assert doc["hop_s"] == 0.05
    assert len(doc["rms_db"]) == pytest.approx(20.0 / 0.05, abs=1)


# -- other inputs --------------------------------------------------------------------------------------


def test_video_without_audio_gives_empty_result(tmp_path: Path) -> None:
    out = analyse(tmp_path, write_video(tmp_path / "mute.mp4", audio=False))
    assert out == {
        "has_audio": False,
        "duration_s": 0.0,
        "sample_rate": 16000,
        "speech": [],
        "loudness": {"integrated_lufs": None, "loudness_range_lu": None, "series": []},
        "onsets_s": [],
        "energy_key": None,
    }


def test_pure_tone_is_sound_but_not_speech(tmp_path: Path) -> None:
    out = analyse(tmp_path, write_video(tmp_path / "tone.mp4", duration_s=3.0, tone_hz=440.0))
    assert out["has_audio"] is True
    assert out["speech"] == []
    # A 0.3-amplitude sine: RMS 0.3/sqrt(2) is -13.5 dBFS.
    assert out["loudness"]["series"][2]["rms_db"] == pytest.approx(-13.5, abs=1.0)
    assert out["loudness"]["integrated_lufs"] is not None


def test_config_rejects_unknown_settings(tmp_path: Path) -> None:
    result = invoke("audio", tmp_path, {"needs": {"normalize": {"video_key": "x"}}, "config": {"min_speach_s": 1}})
    terminal(result, "ValidationError", match=r"config\.min_speach_s: Extra inputs are not permitted")


# -- helpers on known signals --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_modules() -> Any:
    load_handler("audio")  # puts functions/audio on sys.path
    import audio_features
    import audio_vad

    return audio_vad, audio_features


def test_speech_segments_bridge_short_pauses_and_drop_blips(audio_modules: Any) -> None:
    vad, _ = audio_modules
    window = 0.032
    probs = np.zeros(200, dtype=np.float32)
    probs[10:40] = 0.9  # 0.32-1.28 s
    probs[45:70] = 0.9  # after a 0.16 s pause: the same sentence
    probs[100:104] = 0.9  # a 0.13 s blip: dropped
    probs[150:180] = 0.9  # after a long pause: a new segment
    segments = vad.speech_segments(probs, window, 200 * window, vad.VadParams())
    assert segments == [
        (pytest.approx(10 * window - 0.03), pytest.approx(70 * window + 0.03)),
        (pytest.approx(150 * window - 0.03), pytest.approx(180 * window + 0.03)),
    ]


def test_speech_segments_hysteresis(audio_modules: Any) -> None:
    vad, _ = audio_modules
    probs = np.array([0.1, 0.6, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.2, 0.1] + [0.0] * 20)
    params = vad.VadParams(min_speech_s=0.0, pad_s=0.0)
    # Above 0.5 starts; it only ends when the probability falls under 0.35.
    assert vad.speech_segments(probs, 0.1, 3.2, params) == [(0.1, 1.0)]


def test_rms_db_of_known_levels(audio_modules: Any) -> None:
    _, features = audio_modules
    rate = 16000
    t = np.arange(rate) / rate
    signal = np.concatenate([np.sin(2 * np.pi * 1000 * t), np.zeros(rate // 2)]).astype(np.float32)
    levels = features.rms_db(signal, rate, 0.5)
    assert levels[:2] == pytest.approx([-3.01, -3.01], abs=0.05)
    assert levels[2] == features.SILENCE_DB


def test_onsets_of_clicks(audio_modules: Any) -> None:
    _, features = audio_modules
    rate = 16000
    signal = np.zeros(3 * rate, dtype=np.float32)
    burst = np.random.default_rng(0).normal(0, 0.3, 800).astype(np.float32) * np.hanning(800)
    for start_s in (0.5, 1.25, 2.0):
        i = int(start_s * rate)
        signal[i : i + 800] = burst
    onsets = features.onset_times(signal, rate)
    assert len(onsets) == 3
    assert onsets == pytest.approx([0.5, 1.25, 2.0], abs=0.04)
    assert features.onset_times(np.zeros(rate, dtype=np.float32), rate) == []
