"""Stage ``normalize``: fetch, probe, validate and transcode the request's source video.

Writes ``requests/{id}/input/source<ext>`` (the untouched upload) and ``requests/{id}/input/normalized.mp4``
(H.264 + AAC, height capped, constant frame rate, one keyframe per ``gop_s``), which every later stage reads.
The same pass finds the scene cuts (``scenes`` in the output) and starts a GOP at each: split uses them
instead of decoding the video again, and copies the clips that start and end on a keyframe.
"""

from __future__ import annotations

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from normalize_errors import MediaInputError
from normalize_probe import probe
from normalize_source import fetch_source, source_suffix
from normalize_transcode import EncodeSettings, transcode
from pydantic import BaseModel, ConfigDict, Field, model_validator


class NormalizeConfig(BaseModel):
    """Input limits and output settings; the request profile may override any of them."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must not be silently ignored

    max_duration_s: float = Field(600.0, gt=0, description="longest accepted source")
    # 200 MB: the source, its normalized copy and the upload buffer must fit Lambda's default 512 MB /tmp
    # and memory; raise it together with the function's ephemeral storage and memory.
    max_size_mb: float = Field(200.0, gt=0, description="largest accepted source, in MB (10^6 bytes)")
    max_width: int = Field(3840, gt=0, description="widest accepted source, pixels (either orientation)")
    max_height: int = Field(2160, gt=0, description="tallest accepted source, pixels (either orientation)")
    target_height: int = Field(480, ge=16, description="cap on the normalized height, pixels")
    max_fps: float = Field(30.0, gt=0, description="cap on the normalized frame rate")
    gop_s: float = Field(1.0, gt=0, description="keyframe interval of the normalized video, seconds")
    crf: int = Field(23, ge=0, le=51, description="x264 constant rate factor (lower is better quality)")
    preset: str = "veryfast"
    audio_bitrate_kbps: int = Field(128, gt=0, description="AAC bitrate for stereo (mono gets half)")
    # Split's default too: split takes these cuts when its own threshold is at least this one.
    scene_threshold: float = Field(
        10.0, gt=0, le=100, description="scdet score (0-100) of a scene cut, reported and given a keyframe"
    )

    @model_validator(mode="after")
    def _even_height(self) -> NormalizeConfig:
        self.target_height -= self.target_height % 2  # x264 wants even dimensions
        return self


class NormalizeInput(StageInput):
    config: NormalizeConfig = Field(default_factory=NormalizeConfig)  # type: ignore[assignment]


class ProbeOut(BaseModel):
    duration_s: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    has_audio: bool
    size_bytes: int
    container: str
    rotation_deg: int = Field(0, description="display rotation of the source (counter-clockwise, degrees)")


class NormalizedOut(BaseModel):
    width: int
    height: int
    fps: float
    duration_s: float
    has_audio: bool
    gop_frames: int
    size_bytes: int


class ScenesOut(BaseModel):
    """Scene cuts of the normalized video (scdet on its pictures, while encoding them); each is a keyframe."""

    threshold: float = Field(description="scdet score a cut reaches: every frame scoring this or more is listed")
    cuts_s: list[float] = Field(description="time of each cut's first frame, seconds")
    cut_scores: list[float] = Field(description="scdet score of each cut")


class NormalizeOutput(BaseModel):
    video_key: str
    source_key: str
    probe: ProbeOut
    normalized: NormalizedOut
    scenes: ScenesOut


@stage(NormalizeInput)
def handler(inp: NormalizeInput, ctx: StageContext) -> NormalizeOutput:
    """Copy the source into the request, reject unusable input, and write the normalized MP4."""
    cfg = inp.config
    uri = inp.request.video_uri
    if not uri:
        raise MediaInputError("the request has no video_uri")
    source_name = f"source{source_suffix(uri)}"
    local_source = ctx.tmp / source_name
    fetch_source(uri, local_source, max_bytes=int(cfg.max_size_mb * 1_000_000))
    source_key = f"{ctx.request_prefix}input/{source_name}"
    # Keep the untouched original before judging it: a rejected upload can still be inspected.
    ctx.store.put(source_key, local_source.read_bytes(), content_type="application/octet-stream")

    info = probe(local_source, source_name)
    if info.duration_s > cfg.max_duration_s:
        raise MediaInputError(f"duration {info.duration_s:.1f} s exceeds the profile limit of {cfg.max_duration_s:g} s")
    # Orientation-agnostic: a portrait 1080x1920 phone clip passes a 1920x1080 limit.
    long_side, short_side = max(info.width, info.height), min(info.width, info.height)
    if long_side > max(cfg.max_width, cfg.max_height) or short_side > min(cfg.max_width, cfg.max_height):
        raise MediaInputError(
            f"resolution {info.width}x{info.height} exceeds the profile limit of {cfg.max_width}x{cfg.max_height}"
        )

    settings = EncodeSettings(
        target_height=cfg.target_height,
        max_fps=cfg.max_fps,
        gop_s=cfg.gop_s,
        crf=cfg.crf,
        preset=cfg.preset,
        audio_bitrate_kbps=cfg.audio_bitrate_kbps,
        scene_threshold=cfg.scene_threshold,
    )
    local_out = ctx.tmp / "normalized.mp4"
    result = transcode(
        local_source,
        local_out,
        settings,
        display_name=source_name,
        declared_duration_s=info.duration_s,
        max_duration_s=cfg.max_duration_s,
        rotation_deg=info.rotation_deg,
    )
    video_key = f"{ctx.request_prefix}input/normalized.mp4"
    ctx.store.put(video_key, local_out.read_bytes(), content_type="video/mp4")
    return NormalizeOutput(
        video_key=video_key,
        source_key=source_key,
        # Some containers (live-recorded WebM/MKV) declare no duration: report what was decoded instead.
        probe=ProbeOut(**{**info.as_dict(), "duration_s": info.duration_s or result.duration_s}),
        normalized=NormalizedOut(**result.as_dict()),
        scenes=ScenesOut(
            threshold=cfg.scene_threshold,
            cuts_s=[round(t, 6) for t, _ in result.scene_cuts],
            cut_scores=[round(score, 3) for _, score in result.scene_cuts],
        ),
    )
