"""A clip's audio as 16 kHz mono 16-bit PCM WAV (what speech models expect), written with stdlib ``wave``."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE_HZ = 16000


def decode_pcm16(path: Path) -> np.ndarray | None:
    """The first audio stream as int16 mono samples at 16 kHz; None if the file has no audio."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_HZ)
        chunks: list[np.ndarray] = []
        for frame in container.decode(container.streams.audio[0]):
            if frame.pts is not None and frame.time is not None and frame.time < 0:
                continue  # encoder priming that the container did not trim
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, dtype=np.int16)


def fit_length(samples: np.ndarray, count: int) -> np.ndarray:
    """Trim or zero-pad to exactly ``count`` samples.

    AAC adds up to a frame of padding at the end; an exact length makes sample k mean clip time k/16000,
    so downstream timestamps (transcripts) need no correction.
    """
    if len(samples) >= count:
        return samples[:count]
    return np.concatenate([samples, np.zeros(count - len(samples), dtype=np.int16)])


def wav_bytes(samples: np.ndarray) -> bytes:
    """A mono 16-bit PCM WAV file of ``samples`` at ``SAMPLE_RATE_HZ``."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE_HZ)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()
