"""Stage ``extract`` (per clip): keyframe JPEGs and a 16 kHz mono WAV of one clip file from split."""

from __future__ import annotations

from extract_keyframes import extract_keyframes
from extract_wav import SAMPLE_RATE_HZ, decode_pcm16, fit_length, wav_bytes
from fave_shared.errors import TerminalError
from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel, ConfigDict, Field


class MediaInputError(TerminalError):
    """The clip file cannot be used (no picture)."""


class ExtractConfig(BaseModel):
    """Keyframe sampling and JPEG quality; the request profile may override any of them."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting must not be silently ignored

    keyframe_spacing_s: float = Field(0.9, ge=0, description="keyframes closer than this are skipped")
    max_keyframes: int = Field(120, ge=1, description="longer clips are thinned evenly to this many")
    jpeg_qscale: int = Field(4, ge=2, le=31, description="mjpeg quantiser: 2 best ... 31 worst")


class ClipItem(BaseModel):
    """One element of split's ``clips`` (the fan-out item)."""

    model_config = ConfigDict(extra="ignore")

    index: int
    start_s: float
    end_s: float
    key: str


class NormalizeRef(BaseModel):
    """The part of normalize's output this stage reads (optional: the clip file itself is the truth)."""

    video_key: str | None = None


class ExtractNeeds(BaseModel):
    normalize: NormalizeRef = Field(default_factory=NormalizeRef)


class ExtractInput(StageInput):
    item: ClipItem
    needs: ExtractNeeds = Field(default_factory=ExtractNeeds)  # type: ignore[assignment]
    config: ExtractConfig = Field(default_factory=ExtractConfig)  # type: ignore[assignment]


class ClipOut(BaseModel):
    index: int
    start_s: float
    end_s: float
    key: str


class KeyframeOut(BaseModel):
    t_s: float = Field(description="absolute time in the source video")
    key: str
    width: int
    height: int


class ExtractOutput(BaseModel):
    clip: ClipOut
    keyframes: list[KeyframeOut]
    wav_key: str | None
    has_audio: bool
    sample_rate: int = SAMPLE_RATE_HZ
    wav_samples: int = 0


@stage(ExtractInput)
def handler(inp: ExtractInput, ctx: StageContext) -> ExtractOutput:
    """Write the clip's keyframes and audio; times in the output are absolute source-video seconds."""
    clip, cfg = inp.item, inp.config
    path = ctx.fetch(clip.key)
    frames = extract_keyframes(path, cfg.keyframe_spacing_s, cfg.max_keyframes, cfg.jpeg_qscale)
    if not frames:
        raise MediaInputError(f"clip {clip.index} ({clip.key}) has no decodable picture")
    keyframes = [
        KeyframeOut(
            t_s=round(clip.start_s + f.t_s, 3),
            key=ctx.put_bytes(f"keyframes/{n:04d}.jpg", f.jpeg, "image/jpeg"),
            width=f.width,
            height=f.height,
        )
        for n, f in enumerate(frames)
    ]

    wav_key, samples = None, 0
    pcm = decode_pcm16(path)
    if pcm is not None:
        pcm = fit_length(pcm, round((clip.end_s - clip.start_s) * SAMPLE_RATE_HZ))
        wav_key, samples = ctx.put_bytes("audio.wav", wav_bytes(pcm), "audio/wav"), len(pcm)
    return ExtractOutput(
        clip=ClipOut(index=clip.index, start_s=clip.start_s, end_s=clip.end_s, key=clip.key),
        keyframes=keyframes,
        wav_key=wav_key,
        has_audio=pcm is not None,
        sample_rate=SAMPLE_RATE_HZ,
        wav_samples=samples,
    )
