"""Pydantic models of the aggregate stage: its view of split/transcribe/detect outputs, and the result.

Upstream models ignore unknown fields, so upstream stages may add fields freely. For per-clip upstreams
the orchestrator passes a list ordered by clip index with ``None`` where a clip's task failed (within
the tolerated failures).
"""

from __future__ import annotations

from typing import Any

from fave_shared.schemas import StageInput
from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SplitClip(_In):
    index: int
    start_s: float
    end_s: float
    key: str | None = None
    reason: str | None = None


class SplitOutput(_In):
    clips: list[SplitClip] = Field(default_factory=list)
    cuts_s: list[float] = Field(default_factory=list)


class ClipRef(_In):
    index: int
    start_s: float
    end_s: float
    key: str | None = None


class SpokenWord(_In):
    word: str
    start_s: float
    end_s: float
    probability: float | None = None


class TranscribeResult(_In):
    clip: ClipRef | None = None
    text: str = ""
    words: list[SpokenWord] = Field(default_factory=list)
    speech_detected: bool = False
    transcript_key: str | None = None
    attempt: int | None = None


class DetectionIn(_In):
    label: str
    score: float
    box: list[float] = Field(default_factory=list)


class FrameIn(_In):
    t_s: float
    key: str | None = None
    annotated_key: str | None = None
    detections: list[DetectionIn] = Field(default_factory=list)


class DetectResult(_In):
    clip: ClipRef | None = None
    frames: list[FrameIn] = Field(default_factory=list)
    objects: dict[str, float] = Field(default_factory=dict)
    attempt: int | None = None


class AggregateNeeds(_In):
    split: SplitOutput
    transcribe: list[TranscribeResult | None] = Field(default_factory=list)
    detect: list[DetectResult | None] = Field(default_factory=list)


class AggregateConfig(_In):
    max_scenes: int | None = Field(default=None, ge=1)
    """Keep only the best N scenes (all matching scenes when unset)."""


class AggregateInput(StageInput):
    needs: AggregateNeeds  # type: ignore[assignment]  # narrowed from dict[str, Any]
    config: AggregateConfig = AggregateConfig()  # type: ignore[assignment]


class Links(BaseModel):
    clip: str | None = None
    keyframes: list[str] = Field(default_factory=list)
    transcript: str | None = None


class ClipSummary(BaseModel):
    """Everything known about one clip, whether or not it matched the query."""

    index: int
    start_s: float
    end_s: float
    objects: dict[str, float] = Field(default_factory=dict, description="every detected label -> best score")
    transcript: str = ""
    speech_detected: bool = False
    links: Links = Field(default_factory=Links)
    missing: list[str] = Field(default_factory=list, description="upstream stages with no output for it")
    attempts: dict[str, int] = Field(default_factory=dict, description="stage -> attempt that produced it")


class Scene(BaseModel):
    """A clip that matched the query, with why."""

    clip_index: int
    start_s: float
    end_s: float
    score: float
    objects: dict[str, float] = Field(default_factory=dict, description="matched labels -> best score")
    transcript: str = ""
    matched_words: list[str] = Field(default_factory=list)
    links: Links = Field(default_factory=Links)
    evidence: dict[str, Any] = Field(default_factory=dict)


class AggregateOutput(BaseModel):
    """The request's final result (stored verbatim as metadata/final.json)."""

    request_id: str
    query: str | None = None
    parsed_query: dict[str, list[str]]
    scenes: list[Scene] = Field(default_factory=list)
    clips: list[ClipSummary] = Field(default_factory=list)
