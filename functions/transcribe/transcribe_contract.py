"""Pydantic models of the transcribe stage: what it reads from ``extract`` and what it returns.

The extract model is this stage's own view of the extract contract (``extra="ignore"``): only the fields
transcribe uses are required, so extract may add fields without breaking it.
"""

from __future__ import annotations

from fave_shared.schemas import StageInput
from pydantic import BaseModel, ConfigDict, Field


class ClipRef(BaseModel):
    """One clip of the source video; times are absolute seconds in the source."""

    model_config = ConfigDict(extra="ignore")

    index: int
    start_s: float
    end_s: float
    key: str | None = None


class ExtractOutput(BaseModel):
    """The part of extract's per-clip output that transcribe needs."""

    model_config = ConfigDict(extra="ignore")

    clip: ClipRef
    wav_key: str | None = None
    has_audio: bool = False
    sample_rate: int = 16000


class TranscribeNeeds(BaseModel):
    model_config = ConfigDict(extra="ignore")

    extract: ExtractOutput


class TranscribeConfig(BaseModel):
    """Tunables (pipeline.yaml ``config`` merged with the request profile)."""

    model_config = ConfigDict(extra="ignore")

    cpu_threads: int = Field(default=1, ge=1, le=16)
    """CTranslate2 threads per call. One: clips run in parallel as environments (each with its own CPU on
    Lambda); on the sample's speech a second thread took the same wall time for ~20% more CPU."""
    beam_size: int = Field(default=5, ge=1, le=10)
    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    min_speech_s: float = Field(default=0.25, ge=0.0)
    """Shorter bursts of "speech" are ignored (clicks, breaths)."""
    min_silence_s: float = Field(default=0.3, ge=0.0)
    """Speech separated by a shorter pause is one region."""
    pad_s: float = Field(default=0.2, ge=0.0)
    """Context added around each region: Whisper clips word onsets/endings that start exactly at the edge."""


class TranscribeInput(StageInput):
    needs: TranscribeNeeds  # type: ignore[assignment]  # narrowed from dict[str, Any]
    config: TranscribeConfig = TranscribeConfig()  # type: ignore[assignment]


class Word(BaseModel):
    word: str
    start_s: float
    end_s: float
    probability: float


class Segment(BaseModel):
    start_s: float
    end_s: float
    text: str


class SpeechRegion(BaseModel):
    start_s: float
    end_s: float


class TranscribeOutput(BaseModel):
    """The per-clip transcript. Times are absolute seconds in the source video."""

    clip: ClipRef
    text: str = ""
    words: list[Word] = Field(default_factory=list)
    segments: list[Segment] = Field(default_factory=list)
    speech: list[SpeechRegion] = Field(default_factory=list)
    """The voice-activity regions that were transcribed (absolute times)."""
    speech_detected: bool = False
    transcript_key: str
    model: str = "tiny.en"
    attempt: int = 1
