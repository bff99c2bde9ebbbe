"""Stage ``split``: scene cuts from the picture, adjusted to the speech, written as clip files.

Reads normalize's video and scene cuts and audio's speech segments and energy envelope; writes
``requests/{id}/clips/{index:05d}.mp4`` and returns the clip list the per-clip stages fan out over.

The cuts come from normalize, which found them while encoding and put a keyframe on each: no decode here,
and every clip between two unmoved cuts is copied, not re-encoded. Only when normalize has no cuts for this
threshold (a lower ``scene_threshold`` than normalize's) does split run scdet over the video itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from fave_shared.errors import ValidationError
from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel, ConfigDict, Field, model_validator
from split_index import index_video
from split_plan import Energy, PlanParams, plan_clips
from split_scenes import detect_cuts
from split_write import ClipEncoding, copyable, write_clips


class SplitConfig(BaseModel):
    """Scene detection and clip-length rules; the request profile may override any of them."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must not be silently ignored

    scene_threshold: float = Field(10.0, gt=0, le=100, description="scdet score (0-100) that counts as a cut")
    min_clip_s: float = Field(2.0, ge=0, description="shorter clips merge into a neighbour")
    max_clip_s: float = Field(30.0, gt=0, description="longer clips split at a quiet point")
    # Clips that start and end on keyframes of the normalized video are copied from it (its quality, which
    # re-encoding could only lower); crf and preset apply to the others.
    crf: int = Field(21, ge=0, le=51, description="x264 quality of re-encoded clip files")
    preset: str = "veryfast"
    gop_s: float = Field(1.0, gt=0, description="keyframe interval of the clip files, seconds")

    @model_validator(mode="after")
    def _feasible(self) -> SplitConfig:
        # With max < 2*min some long scenes have no split into legal parts.
        if self.max_clip_s < 2 * self.min_clip_s:
            raise ValueError(f"max_clip_s ({self.max_clip_s}) must be at least 2 x min_clip_s ({self.min_clip_s})")
        return self


class NormalizedInfo(BaseModel):
    fps: float
    gop_frames: int | None = None


class ScenesRef(BaseModel):
    """Normalize's scene cuts: every frame scoring ``threshold`` or more, each on a keyframe."""

    threshold: float
    cuts_s: list[float]
    cut_scores: list[float]


class NormalizeRef(BaseModel):
    """The part of normalize's output this stage reads."""

    video_key: str
    normalized: NormalizedInfo
    scenes: ScenesRef | None = None


class SpeechSpan(BaseModel):
    start_s: float
    end_s: float


class AudioRef(BaseModel):
    """The part of audio's output this stage reads."""

    has_audio: bool = False
    speech: list[SpeechSpan] = Field(default_factory=list)
    energy_key: str | None = None


class SplitNeeds(BaseModel):
    normalize: NormalizeRef
    audio: AudioRef = Field(default_factory=AudioRef)


class SplitInput(StageInput):
    needs: SplitNeeds  # type: ignore[assignment]
    config: SplitConfig = Field(default_factory=SplitConfig)  # type: ignore[assignment]


class Clip(BaseModel):
    index: int
    start_s: float
    end_s: float
    duration_s: float
    key: str
    reason: str = Field(description='why the clip ends here: "scene_cut", "max_length" or "end"')


class SplitOutput(BaseModel):
    clips: list[Clip]
    cuts_s: list[float] = Field(description="raw scdet cut times, before any adjustment")
    cut_scores: list[float] = Field(default_factory=list, description="scdet score of each raw cut")
    duration_s: float


@stage(SplitInput)
def handler(inp: SplitInput, ctx: StageContext) -> SplitOutput:
    """Take the scene cuts, plan clip boundaries around speech and length limits, write the clip files."""
    cfg = inp.config
    video = ctx.fetch(inp.needs.normalize.video_key)
    index = index_video(video)
    if index.frames == 0:
        raise ValidationError(f"normalized video {inp.needs.normalize.video_key} has no frames")
    scenes = inp.needs.normalize.scenes
    if scenes is not None and scenes.threshold <= cfg.scene_threshold:
        cuts = [(t, s) for t, s in zip(scenes.cuts_s, scenes.cut_scores, strict=True) if s >= cfg.scene_threshold]
    else:
        cuts = detect_cuts(video, cfg.scene_threshold).cuts  # normalize did not look for cuts this weak

    audio = inp.needs.audio
    energy = None
    if audio.energy_key:
        doc = json.loads(ctx.read_bytes(audio.energy_key))
        energy = Energy(hop_s=float(doc["hop_s"]), rms_db=doc["rms_db"])
    planned = plan_clips(
        index.duration_s,
        [t for t, _ in cuts],
        [(s.start_s, s.end_s) for s in audio.speech],
        PlanParams(min_clip_s=cfg.min_clip_s, max_clip_s=cfg.max_clip_s, fps=index.fps),
        energy,
    )

    keys = [f"{ctx.request_prefix}clips/{i:05d}.mp4" for i in range(len(planned))]
    out_dir = ctx.tmp / "clips"
    out_dir.mkdir()

    def upload(i: int, local: Path) -> None:
        ctx.store.put(keys[i], local.read_bytes(), content_type="video/mp4")
        local.unlink()  # /tmp only ever holds the clips still being encoded

    bounds = [(c.start_s, c.end_s) for c in planned]
    # A copied clip keeps normalize's GOP: copy only when that is the interval asked of the clip files.
    same_gop = inp.needs.normalize.normalized.gop_frames == max(1, round(index.fps * cfg.gop_s))
    write_clips(
        video,
        bounds,
        out_dir,
        ClipEncoding(crf=cfg.crf, preset=cfg.preset, gop_s=cfg.gop_s),
        upload,
        copy=copyable(bounds, index.keyframes_s, index.duration_s, index.fps) if same_gop else None,
    )
    # A retry (or a re-run with other settings) may have written more clips before: drop the leftovers so
    # the clips/ prefix holds exactly this output's clips.
    for stale in set(ctx.store.list(f"{ctx.request_prefix}clips/")) - set(keys):
        ctx.store.delete(stale)
    return SplitOutput(
        clips=[
            Clip(
                index=i,
                start_s=c.start_s,
                end_s=c.end_s,
                duration_s=round(c.end_s - c.start_s, 6),
                key=keys[i],
                reason=c.reason,
            )
            for i, c in enumerate(planned)
        ],
        cuts_s=[round(t, 3) for t, _ in cuts],
        cut_scores=[round(s, 3) for _, s in cuts],
        duration_s=index.duration_s,
    )
