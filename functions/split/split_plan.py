"""Decide clip boundaries: scene cuts, moved out of speech, then clip lengths kept within [min, max].

Pure functions over numbers (no media), so the rules are unit-testable on their own.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

SCENE_CUT, MAX_LENGTH, END = "scene_cut", "max_length", "end"


@dataclass(frozen=True)
class PlanParams:
    """Clip-length limits in seconds and the frame grid boundaries are snapped to."""

    min_clip_s: float
    max_clip_s: float
    fps: float


@dataclass(frozen=True)
class PlannedClip:
    """One clip; ``reason`` says why it ends where it does."""

    start_s: float
    end_s: float
    reason: str


@dataclass(frozen=True)
class Energy:
    """An RMS envelope in dBFS sampled every ``hop_s`` from t=0 (audio's ``energy.json``)."""

    hop_s: float
    rms_db: Sequence[float]

    def around(self, t: float, half_window_s: float = 0.1) -> float:
        """Mean level over ``t ± half_window_s``; 0 dB (loud) where nothing is known."""
        lo = max(0, int((t - half_window_s) / self.hop_s))
        hi = min(len(self.rms_db), int((t + half_window_s) / self.hop_s) + 1)
        values = self.rms_db[lo:hi]
        return sum(values) / len(values) if len(values) else 0.0


class Speech:
    """Speech segments, overlapping ones merged, with a fast "who contains t" lookup."""

    def __init__(self, segments: Sequence[tuple[float, float]]) -> None:
        merged: list[tuple[float, float]] = []
        for start, end in sorted(segments):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self.segments = merged
        self._starts = [s for s, _ in merged]

    def containing(self, t: float) -> tuple[float, float] | None:
        """The segment strictly containing ``t``, if any (a cut exactly at an edge is outside)."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and self.segments[i][0] < t < self.segments[i][1]:
            return self.segments[i]
        return None


def move_out_of_speech(cut: float, speech: Speech, fps: float) -> float:
    """A cut inside a speech segment moves to the nearer edge of it: the cut lands where nobody talks.

    The edge is rounded outwards to the frame grid (down for a start, up for an end), never into the speech.
    """
    segment = speech.containing(cut)
    if segment is None:
        return _snap(cut, fps)
    start, end = segment
    if cut - start <= end - cut:
        return round(math.floor(start * fps + 1e-6) / fps, 6)
    return round(math.ceil(end * fps - 1e-6) / fps, 6)


def _snap(t: float, fps: float) -> float:
    # Boundaries on the frame grid: each clip holds whole frames, so its duration is exact.
    return round(round(t * fps) / fps, 6)


def _merge_short(bounds: list[float], reasons: list[str], min_clip_s: float) -> None:
    """Drop boundaries until no clip is shorter than ``min_clip_s`` (in place).

    The shortest clip goes first, and it merges into its shorter neighbour so merged clips stay balanced.
    """
    while len(bounds) > 2:
        lengths = [b - a for a, b in itertools.pairwise(bounds)]
        i = min(range(len(lengths)), key=lengths.__getitem__)
        if lengths[i] >= min_clip_s - 1e-6:
            return
        if i == 0:
            drop = 1
        elif i == len(lengths) - 1:
            drop = i
        else:
            drop = i if lengths[i - 1] <= lengths[i + 1] else i + 1
        del bounds[drop]
        del reasons[drop]


def _best_split(
    a: float,
    b: float,
    params: PlanParams,
    speech: Speech,
    energy: Energy | None,
) -> float:
    """Where to split an over-long [a, b]: quiet, outside speech, near an even split, within limits."""
    parts = math.ceil((b - a) / params.max_clip_s - 1e-9)
    ideal = a + (b - a) / parts
    # Any point in [lo, hi] leaves a first part within [min, max] and a rest that still fits `parts - 1`.
    lo = max(a + params.min_clip_s, b - (parts - 1) * params.max_clip_s)
    hi = min(a + params.max_clip_s, b - params.min_clip_s)
    step = 1 / params.fps
    best, best_cost = _snap(min(max(ideal, lo), hi), params.fps), math.inf
    for k in range(math.ceil(lo * params.fps - 1e-6), math.floor(hi * params.fps + 1e-6) + 1):
        t = k * step
        cost = 40.0 * abs(t - ideal) / params.max_clip_s  # balance: ~40 dB for a max_clip_s detour
        cost += 200.0 if speech.containing(t) else 0.0
        cost += energy.around(t) if energy is not None else 0.0
        if cost < best_cost:
            best, best_cost = _snap(t, params.fps), cost
    return best


def plan_clips(
    duration_s: float,
    cuts: Sequence[float],
    speech: Sequence[tuple[float, float]],
    params: PlanParams,
    energy: Energy | None = None,
) -> list[PlannedClip]:
    """Clips covering [0, duration_s] exactly, in order.

    1. Scene cuts inside a speech segment move to its nearer edge.
    2. Clips shorter than ``min_clip_s`` merge into a neighbour (a too-short video stays one clip).
    3. Clips longer than ``max_clip_s`` split at quiet points outside speech (reason ``max_length``).
    """
    talk = Speech(speech)
    end = _snap(duration_s, params.fps)
    moved = sorted({move_out_of_speech(c, talk, params.fps) for c in cuts})
    inner = [c for c in moved if 0 < c < end]
    bounds = [0.0, *inner, end]
    reasons = ["start", *([SCENE_CUT] * len(inner)), END]
    _merge_short(bounds, reasons, params.min_clip_s)

    clips: list[PlannedClip] = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        while b - a > params.max_clip_s + 1e-6:
            x = _best_split(a, b, params, talk, energy)
            clips.append(PlannedClip(a, x, MAX_LENGTH))
            a = x
        clips.append(PlannedClip(a, b, reasons[i + 1]))
    return clips
