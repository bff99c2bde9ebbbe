"""Cheap audio features in numpy: an RMS energy envelope and spectral-flux onsets.

These replace librosa's ``feature.rms`` and ``onset.onset_detect`` (see the README note in app.py): the same
ideas (log-power spectral flux, then adaptive peak picking) in ~60 lines, without numba's JIT cold start.
"""

from __future__ import annotations

import numpy as np

SILENCE_DB = -100.0  # floor for digital silence, dBFS


def rms_db(samples: np.ndarray, sample_rate: int, hop_s: float) -> np.ndarray:
    """RMS level in dBFS of consecutive ``hop_s`` windows (the last partial window included)."""
    hop = max(1, round(hop_s * sample_rate))
    count = -(-len(samples) // hop)
    padded = np.zeros(count * hop, dtype=np.float64)
    padded[: len(samples)] = samples
    counts = np.full(count, hop, dtype=np.float64)
    if count:
        counts[-1] = len(samples) - (count - 1) * hop
    power = (padded.reshape(count, hop) ** 2).sum(axis=1) / counts
    with np.errstate(divide="ignore"):
        level = 10.0 * np.log10(power)
    return np.asarray(np.maximum(level, SILENCE_DB))


def onset_times(
    samples: np.ndarray,
    sample_rate: int,
    *,
    n_fft: int = 512,
    hop: int = 160,
    delta: float = 0.07,
    min_level_db: float = -50.0,
) -> list[float]:
    """Onset times in seconds: peaks of the positive log-spectral flux.

    Peak picking follows librosa's defaults (local max over 30 ms, above the 100 ms local mean by ``delta``
    of the normalised envelope, at least 30 ms apart). Onsets in frames quieter than ``min_level_db`` are
    dropped: the normalised flux of codec noise in a silent passage can otherwise peak.
    """
    if len(samples) < n_fft:
        return []
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    log_power = 10.0 * np.log10(np.maximum(spectrum, 1e-10))
    log_power = np.maximum(log_power, log_power.max() - 80.0)  # top_db=80 as in librosa
    flux = np.maximum(np.diff(log_power, axis=0), 0.0).mean(axis=1)
    envelope = np.concatenate([[0.0], flux])
    span = envelope.max() - envelope.min()
    if span <= 0:
        return []
    envelope = (envelope - envelope.min()) / span

    frame_s = hop / sample_rate
    pre_max = max(1, round(0.03 / frame_s))
    avg = max(1, round(0.10 / frame_s))
    wait = max(1, round(0.03 / frame_s))
    level = 10.0 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-10))

    onsets: list[float] = []
    last = -wait - 1
    for i in range(1, len(envelope)):
        lo_max, lo_avg = max(0, i - pre_max), max(0, i - avg)
        if envelope[i] < envelope[lo_max : i + 2].max():
            continue
        if envelope[i] < envelope[lo_avg : i + avg + 1].mean() + delta:
            continue
        if i - last <= wait or level[min(i, len(level) - 1)] < min_level_db:
            continue
        onsets.append(round(i * frame_s + n_fft / 2 / sample_rate, 3))
        last = i
    return onsets
