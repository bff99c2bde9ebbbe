"""Stage ``audio`` ("stage-librosa" in the design): speech segments, loudness, energy and onsets.

Why no librosa: on Python 3.11 pip resolves librosa 0.11, whose numba JIT costs 21-31 s on every cold start
(and ~400 MB of llvmlite/scipy/numba in the package). The features needed here are small: loudness comes from
FFmpeg's ``ebur128`` filter through PyAV, RMS and spectral-flux onsets are a few lines of numpy, and speech
comes from Silero VAD. Cold start is well under a second instead.
"""

from __future__ import annotations

import json
import logging

from audio_decode import SAMPLE_RATE_HZ, decode_audio
from audio_features import onset_times, rms_db
from audio_vad import VadParams, load_vad, speech_probabilities, speech_segments
from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel, ConfigDict, Field

try:
    # Init phase: the model is ready before the first invocation (~0.1 s; and in a pre-warmed environment).
    # A failure here is left for the first invocation to report, as its own error.
    load_vad(SAMPLE_RATE_HZ)
except Exception:
    logging.getLogger(__name__).warning("model not loaded at init", exc_info=True)


class AudioConfig(BaseModel):
    """Analysis settings; the request profile may override any of them."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must not be silently ignored

    series_step_s: float = Field(0.5, gt=0, description="spacing of the coarse loudness series")
    energy_hop_s: float = Field(0.05, gt=0, description="spacing of the fine energy artifact (split uses it)")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="speech probability that starts a segment")
    min_speech_s: float = Field(0.25, ge=0, description="shorter speech blips are dropped")
    min_silence_s: float = Field(0.3, ge=0, description="shorter pauses do not end a segment")
    speech_pad_s: float = Field(0.03, ge=0, description="padding added to both ends of a segment")
    onset_delta: float = Field(0.07, gt=0, description="peak-picking margin on the normalised flux")


class NormalizeRef(BaseModel):
    """The part of normalize's output this stage reads."""

    video_key: str


class AudioNeeds(BaseModel):
    normalize: NormalizeRef


class AudioInput(StageInput):
    needs: AudioNeeds  # type: ignore[assignment]
    config: AudioConfig = Field(default_factory=AudioConfig)  # type: ignore[assignment]


class Span(BaseModel):
    start_s: float
    end_s: float


class LevelPoint(BaseModel):
    t_s: float = Field(description="start of the window")
    rms_db: float = Field(description="RMS level of the window, dBFS (-100 for digital silence)")


class Loudness(BaseModel):
    integrated_lufs: float | None = None
    loudness_range_lu: float | None = None
    series: list[LevelPoint] = Field(default_factory=list)


class AudioOutput(BaseModel):
    has_audio: bool
    duration_s: float = 0.0
    sample_rate: int = SAMPLE_RATE_HZ
    speech: list[Span] = Field(default_factory=list)
    loudness: Loudness = Field(default_factory=Loudness)
    onsets_s: list[float] = Field(default_factory=list)
    energy_key: str | None = Field(None, description='JSON {"hop_s", "rms_db": [...]} at energy_hop_s')


@stage(AudioInput)
def handler(inp: AudioInput, ctx: StageContext) -> AudioOutput:
    """Analyse the normalized video's audio; a video without audio yields an empty result, not a failure."""
    cfg = inp.config
    decoded = decode_audio(ctx.fetch(inp.needs.normalize.video_key))
    if decoded is None:
        return AudioOutput(has_audio=False)
    samples, rate = decoded.samples, SAMPLE_RATE_HZ

    probs, window_s = speech_probabilities(samples, rate)
    params = VadParams(
        threshold=cfg.vad_threshold,
        neg_threshold=max(0.01, cfg.vad_threshold - 0.15),  # Silero's own hysteresis gap
        min_speech_s=cfg.min_speech_s,
        min_silence_s=cfg.min_silence_s,
        pad_s=cfg.speech_pad_s,
    )
    speech = speech_segments(probs, window_s, decoded.duration_s, params)

    series = rms_db(samples, rate, cfg.series_step_s)
    energy = rms_db(samples, rate, cfg.energy_hop_s)
    energy_key = ctx.put_bytes(
        "energy.json",
        json.dumps({"hop_s": cfg.energy_hop_s, "rms_db": [round(float(v), 1) for v in energy]}).encode(),
        "application/json",
    )
    return AudioOutput(
        has_audio=True,
        duration_s=round(decoded.duration_s, 3),
        speech=[Span(start_s=s, end_s=e) for s, e in speech],
        loudness=Loudness(
            integrated_lufs=decoded.integrated_lufs,
            loudness_range_lu=decoded.loudness_range_lu,
            series=[
                LevelPoint(t_s=round(i * cfg.series_step_s, 3), rms_db=round(float(v), 1)) for i, v in enumerate(series)
            ],
        ),
        onsets_s=onset_times(samples, rate, delta=cfg.onset_delta),
        energy_key=energy_key,
    )
