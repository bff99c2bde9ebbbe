"""Real per-clip media from the sample video, shaped like the ``extract`` stage's outputs.

Used by the transcribe/detect/aggregate stage tests so they run on real pictures and speech without
depending on the split/extract stages: the four 5 s scenes of ``scenes20.mp4`` are decoded with PyAV
into JPEG keyframes (mjpeg on yuvj420p) and 16 kHz mono s16 WAVs, written to a store, and described
with the extract output contract.
"""

from __future__ import annotations

import io
import json
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from fave_shared.store import ObjectStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLE = FIXTURES / "scenes20.mp4"
TRUTH = FIXTURES / "scenes20.json"
SAMPLE_RATE = 16000
KEYFRAME_OFFSETS_S = (0.5, 2.0, 3.5)
"""Keyframe times within each clip (extract takes about one per second; three keep the tests quick)."""


def truth() -> dict[str, Any]:
    """The sample's ground truth (scenes, expected objects, spoken sentences)."""
    data: dict[str, Any] = json.loads(TRUTH.read_text())
    return data


def _jpeg(frame: Any) -> bytes:
    picture = frame.reformat(format="yuvj420p")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = picture.width, picture.height, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    picture.pts = 0
    return b"".join(bytes(p) for p in [*codec.encode(picture), *codec.encode(None)])


def decode_keyframes(video: Path, times_s: list[float]) -> list[tuple[float, bytes, int, int]]:
    """(time, JPEG, width, height) of the first frame at or after each time (times ascending)."""
    out: list[tuple[float, bytes, int, int]] = []
    pending = sorted(times_s)
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            if not pending:
                break
            if frame.time is not None and frame.time >= pending[0] - 1e-3:
                out.append((round(float(frame.time), 3), _jpeg(frame), frame.width, frame.height))
                pending.pop(0)
    return out


def decode_pcm(video: Path) -> np.ndarray:
    """The whole audio track as 16 kHz mono int16."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(str(video)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.int16)


def wav_bytes(pcm: np.ndarray) -> bytes:
    """A 16 kHz mono s16 WAV file of ``pcm``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def write_scene_clips(store: ObjectStore, request_id: str, video: Path = SAMPLE) -> dict[str, Any]:
    """Write keyframes and WAVs of every truth scene; return ``{"split": ..., "extract": [...]}``.

    ``split`` is shaped like split's output and ``extract`` like extract's per-clip outputs, in clip order.
    """
    scenes = truth()["scenes"]
    pcm = decode_pcm(video)
    times = [s["start_s"] + off for s in scenes for off in KEYFRAME_OFFSETS_S]
    frames = decode_keyframes(video, times)
    base = f"requests/{request_id}/stages"
    clips, extracts = [], []
    for i, scene in enumerate(scenes):
        start, end = float(scene["start_s"]), float(scene["end_s"])
        clip = {"index": i, "start_s": start, "end_s": end, "key": f"{base}/split/clips/{i:05d}.mp4"}
        clips.append({**clip, "reason": "cut"})
        keyframes = []
        for n, (t, jpeg, width, height) in enumerate(f for f in frames if start <= f[0] < end):
            key = f"{base}/extract/{i:05d}/keyframes/{n:04d}.jpg"
            store.put(key, jpeg, content_type="image/jpeg")
            keyframes.append({"t_s": t, "key": key, "width": width, "height": height})
        wav_key = f"{base}/extract/{i:05d}/audio.wav"
        store.put(
            wav_key,
            wav_bytes(pcm[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]),
            content_type="audio/wav",
        )
        extracts.append(
            {
                "clip": clip,
                "keyframes": keyframes,
                "wav_key": wav_key,
                "has_audio": True,
                "sample_rate": SAMPLE_RATE,
            }
        )
    split = {"clips": clips, "cuts_s": truth()["scene_cuts_s"]}
    return {"split": split, "extract": extracts}


def stage_event(
    store: ObjectStore,
    stage: str,
    inp: dict[str, Any],
    *,
    request_id: str = "r-test",
    item: int | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """A stage invocation payload (``StageEvent``) as the orchestrator sends it."""
    task = {"request_id": request_id, "stage": stage, "item": item, "attempt": attempt}
    return {"fave": 1, "task": task, "store": store.uri, "input": inp}
