"""The transcribe stage on real speech from the sample video (Whisper tiny.en gated by silero VAD)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fave_shared.errors import ValidationError
from fave_shared.store import LocalStore
from support.functions import FUNCTIONS, ROOT, load_handler
from support.scene_media import SAMPLE_RATE, stage_event, truth, wav_bytes, write_scene_clips
from support.wer import wer

handler = load_handler("transcribe")  # also puts functions/transcribe on sys.path for the modules below

import transcribe_audio  # noqa: E402
import transcribe_whisper  # noqa: E402

REQUEST = "r-transcribe"
MAX_WER = 0.15


def test_wer_helper() -> None:
    assert wer("hello world", "Hello, world.") == 0.0
    assert wer("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert wer("a b", "a b c d") == 1.0  # two insertions
    assert wer("", "") == 0.0


@pytest.fixture(scope="module")
def media(module_local_store: LocalStore) -> dict[str, Any]:
    return write_scene_clips(module_local_store, REQUEST)


def _run(store: LocalStore, extract: dict[str, Any], index: int, **config: Any) -> dict[str, Any]:
    inp = {"item": extract["clip"], "index": index, "needs": {"extract": extract}, "config": config}
    out: dict[str, Any] = handler(stage_event(store, "transcribe", inp, request_id=REQUEST, item=index), None)
    return out


@pytest.fixture(scope="module")
def outputs(module_local_store: LocalStore, media: dict[str, Any]) -> list[dict[str, Any]]:
    return [_run(module_local_store, extract, i) for i, extract in enumerate(media["extract"])]


def _speech_in(scene: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in truth()["speech"] if scene["start_s"] <= s["start_s"] < scene["end_s"]), None)


# -- the model on the sample -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scene", range(4))
def test_transcript_matches_the_truth(outputs: list[dict[str, Any]], scene: int) -> None:
    clip, out = truth()["scenes"][scene], outputs[scene]
    speech = _speech_in(clip)
    if speech is None:  # the silent scene: nothing at all, not even Whisper's favourite "You"
        assert out["text"] == "" and out["words"] == [] and out["segments"] == []
        assert out["speech_detected"] is False and out["speech"] == []
        return
    assert out["speech_detected"] is True
    assert wer(speech["text"], out["text"]) <= MAX_WER, (speech["text"], out["text"])
    # Times are absolute: the words sit inside the spoken sentence (give or take the VAD padding).
    assert out["words"], out
    assert speech["start_s"] - 0.5 <= out["words"][0]["start_s"] < out["words"][-1]["end_s"] <= speech["end_s"] + 0.5
    for seg in out["segments"]:
        assert clip["start_s"] <= seg["start_s"] <= seg["end_s"] <= clip["end_s"]
    assert all(0.0 <= w["probability"] <= 1.0 for w in out["words"])
    assert " ".join(w["word"] for w in out["words"]) == out["text"]


@pytest.mark.slow
def test_output_fields_and_transcript_artifact(module_local_store: LocalStore, outputs: list[dict[str, Any]]) -> None:
    for i, out in enumerate(outputs):
        assert out["model"] == "tiny.en" and out["clip"]["index"] == i and out["attempt"] == 1
        assert out["transcript_key"] == f"requests/{REQUEST}/stages/transcribe/{i:05d}/transcript.json"
        artifact = json.loads(module_local_store.get(out["transcript_key"]).data)
        assert artifact == out  # the artifact holds everything the output does


@pytest.mark.slow
def test_models_are_loaded_once(outputs: list[dict[str, Any]]) -> None:
    assert transcribe_whisper.load_model.cache_info().currsize == 1
    assert transcribe_audio.load_vad() is transcribe_audio.load_vad()


@pytest.mark.slow
def test_models_are_loaded_when_the_environment_starts() -> None:
    # Lambda's init phase (and the local runtime's pre-warm) imports app.py: both models are ready then,
    # before any clip, so a warm environment's first clip does not wait for them.
    probe = (
        "import app, transcribe_audio as a, transcribe_whisper as w; "
        "print(w.load_model.cache_info().currsize, a.load_vad.cache_info().currsize)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared")}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=FUNCTIONS / "transcribe",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


# -- silence and edge cases (the VAD only, or no model at all) ----------------------------------------


def _extract_with(store: LocalStore, name: str, pcm: np.ndarray | None) -> dict[str, Any]:
    clip = {"index": 9, "start_s": 40.0, "end_s": 45.0, "key": "clip.mp4"}
    wav_key = None
    if pcm is not None:
        wav_key = f"requests/{REQUEST}/stages/extract/{name}.wav"
        store.put(wav_key, wav_bytes(pcm))
    return {
        "clip": clip,
        "keyframes": [],
        "wav_key": wav_key,
        "has_audio": pcm is not None,
        "sample_rate": SAMPLE_RATE,
    }


@pytest.mark.parametrize(
    "name",
    ["none", "digital-silence", "noise", "tone-440"],
)
def test_no_speech_gives_an_empty_transcript(module_local_store: LocalStore, name: str) -> None:
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    pcm = {
        "none": None,
        "digital-silence": np.zeros(len(t), np.int16),
        "noise": np.random.default_rng(1).normal(0, 300, len(t)).astype(np.int16),
        "tone-440": (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16),
    }[name]
    out = _run(module_local_store, _extract_with(module_local_store, name, pcm), 9)
    assert out["text"] == "" and out["words"] == [] and out["segments"] == [] and out["speech"] == []
    assert out["speech_detected"] is False
    assert json.loads(module_local_store.get(out["transcript_key"]).data)["text"] == ""


def test_regions_from_probabilities() -> None:
    probs = np.array([0, 0.9, 0.9, 0.4, 0.9, 0, 0, 0, 0, 0, 0.8, 0.1, 0, 0, 0, 0.9, 0.9, 0.9], np.float32)
    regions = transcribe_audio.regions_from_probabilities(
        probs, window_s=0.1, duration_s=1.8, threshold=0.5, min_speech_s=0.15, min_silence_s=0.3, pad_s=0.05
    )
    # 0.4 sits above the exit threshold (0.35): one region 0.1-0.5; the lone 0.1 s burst at 1.0 is dropped;
    # the region running to the end is closed at the end, and padding stays inside the audio.
    assert [(round(r.start_s, 3), round(r.end_s, 3)) for r in regions] == [(0.05, 0.55), (1.45, 1.8)]


def test_regions_merge_across_short_pauses() -> None:
    probs = np.array([0.9, 0.9, 0, 0.9, 0.9, 0, 0, 0, 0, 0, 0.9, 0.9], np.float32)
    regions = transcribe_audio.regions_from_probabilities(
        probs, window_s=0.1, duration_s=1.2, min_speech_s=0.1, min_silence_s=0.3, pad_s=0.0
    )
    assert [(round(r.start_s, 3), round(r.end_s, 3)) for r in regions] == [(0.0, 0.5), (1.0, 1.2)]


def _wav(rate: int, channels: int, frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.astype("<i2").tobytes())
    return buf.getvalue()


def test_read_wav_checks_the_contract(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(_wav(16000, 2, np.array([[16384, 0], [-16384, -16384]])))
    assert transcribe_audio.read_wav(stereo).tolist() == [0.25, -0.5]
    wrong_rate = tmp_path / "44k.wav"
    wrong_rate.write_bytes(_wav(44100, 1, np.zeros(10)))
    with pytest.raises(ValidationError, match="16 kHz"):
        transcribe_audio.read_wav(wrong_rate)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....not a wav")
    with pytest.raises(ValidationError):
        transcribe_audio.read_wav(garbage)


def test_model_dir_comes_from_the_installed_package() -> None:
    path = transcribe_whisper.model_dir()
    assert (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()
