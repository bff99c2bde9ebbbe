"""Pydantic models of the detect stage: what it reads from ``extract`` and what it returns."""

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


class Keyframe(BaseModel):
    """A JPEG keyframe in the store, taken at ``t_s`` (absolute seconds)."""

    model_config = ConfigDict(extra="ignore")

    t_s: float
    key: str
    width: int | None = None
    height: int | None = None


class ExtractOutput(BaseModel):
    """The part of extract's per-clip output that detect needs."""

    model_config = ConfigDict(extra="ignore")

    clip: ClipRef
    keyframes: list[Keyframe] = Field(default_factory=list)


class DetectNeeds(BaseModel):
    model_config = ConfigDict(extra="ignore")

    extract: ExtractOutput


class DetectConfig(BaseModel):
    """Tunables (pipeline.yaml ``config`` merged with the request profile)."""

    model_config = ConfigDict(extra="ignore")

    min_score: float = Field(default=0.4, ge=0.0, le=1.0)
    overlap_iou: float = Field(default=0.8, gt=0.0, le=1.0)
    """Boxes of two labels overlapping this much are one object: only the best label is kept."""
    annotate: bool = True
    """Write an annotated JPEG per keyframe (boxes and labels drawn)."""


class DetectInput(StageInput):
    needs: DetectNeeds  # type: ignore[assignment]  # narrowed from dict[str, Any]
    config: DetectConfig = DetectConfig()  # type: ignore[assignment]


class DetectionOut(BaseModel):
    label: str
    score: float
    box: list[int] = Field(description="[x1, y1, x2, y2] in pixels of the keyframe")


class FrameOut(BaseModel):
    t_s: float
    key: str
    annotated_key: str | None = None
    width: int
    height: int
    detections: list[DetectionOut] = Field(default_factory=list)


class DetectOutput(BaseModel):
    """Objects per keyframe of one clip, and the best score per label over the clip."""

    clip: ClipRef
    frames: list[FrameOut] = Field(default_factory=list)
    objects: dict[str, float] = Field(default_factory=dict)
    model: str
    attempt: int = 1
