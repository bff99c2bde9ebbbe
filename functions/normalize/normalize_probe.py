"""Probe a media file with PyAV (~10 ms): duration, streams, codecs, resolution, frame rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
from normalize_errors import MediaInputError


@dataclass(frozen=True)
class Probe:
    """What the source declares in its headers (decoding may still find it truncated or corrupt)."""

    duration_s: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    has_audio: bool
    size_bytes: int
    container: str
    rotation_deg: int = 0
    """Display rotation, counter-clockwise as FFmpeg reports it (-90 for a typical portrait phone video).
    ``width``/``height`` are the displayed size, i.e. already swapped for +-90."""

    def as_dict(self) -> dict[str, Any]:
        """The probe as the JSON-able dict of the stage output."""
        return asdict(self)


# PyAV up to 18 (the last release for Python 3.11, local development) decodes a file's metadata strictly as
# UTF-8 while opening it: one Latin-1 title and av.open raised UnicodeDecodeError, unless told to ignore it.
# PyAV 19 (what Lambda's python3.12 gets) always decodes it with surrogateescape and no longer takes the
# option: passing it is a TypeError there. This stage never reads metadata text; it only must not fail on it.
_OPEN_OPTIONS: dict[str, Any] = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}


def open_input(path: Path) -> av.container.InputContainer:
    """``av.open(path)`` for reading, whatever the encoding of its metadata."""
    container: av.container.InputContainer = av.open(str(path), "r", **_OPEN_OPTIONS)  # Any: **options
    return container


def _is_picture(stream: av.stream.Stream) -> bool:
    # A cover image in an MP3/M4A is a "video" stream with one frame: that file is still audio-only.
    return stream.type == "video" and not stream.disposition & av.stream.Disposition.attached_pic


def _duration_s(container: Any, streams: list[Any]) -> float:
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base
    # Some containers only know per-stream durations.
    spans = [float(s.duration * s.time_base) for s in streams if s.duration and s.time_base]
    return max(spans, default=0.0)


def probe(path: Path, display_name: str) -> Probe:
    """Open ``path`` and describe it; ``display_name`` is how error messages name the file.

    Raises ``MediaInputError`` if it is not a readable media file or has no video stream.
    """
    try:
        container = open_input(path)
    except av.error.FFmpegError as exc:
        if _looks_like_mp4(path):
            # FFmpeg only logs the cause ("moov atom not found"): an MP4 whose index never arrived.
            raise MediaInputError(
                f"truncated or corrupt video: {display_name} is an MP4/MOV file that cannot be opened, "
                f"e.g. an incomplete upload without its index ({_reason(exc)})"
            ) from exc
        raise MediaInputError(f"not a readable video: {display_name} ({_reason(exc)})") from exc
    with container:
        videos = [s for s in container.streams if _is_picture(s)]
        audios = list(container.streams.audio)
        if not videos:
            found = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "no streams"
            raise MediaInputError(f"not a video: no video stream in {display_name} (found: {found})")
        video = videos[0]
        rate = video.average_rate or video.guessed_rate or video.base_rate
        rotation = _rotation(container, video)
        width, height = int(video.codec_context.width), int(video.codec_context.height)  # type: ignore[attr-defined]
        if rotation in (90, -90):
            width, height = height, width
        return Probe(
            duration_s=round(_duration_s(container, [video, *audios]), 3),
            width=width,
            height=height,
            rotation_deg=rotation,
            fps=round(float(rate), 3) if rate else 0.0,
            video_codec=video.codec_context.name,
            audio_codec=audios[0].codec_context.name if audios else None,
            has_audio=bool(audios),
            size_bytes=path.stat().st_size,
            container=container.format.name,
        )


def _rotation(container: Any, video: Any) -> int:
    # Phones record sideways and store a display matrix; PyAV exposes it on decoded frames only, so decode
    # one (a few ms). Odd angles are rounded to the quarter turn a filter can apply.
    try:
        frame = next(container.decode(video), None)
    except av.error.FFmpegError:
        return 0  # transcoding will report the damage with a better message
    angle = round(float(getattr(frame, "rotation", 0) or 0) / 90) * 90 if frame is not None else 0
    return 180 if angle == -180 else angle


def _looks_like_mp4(path: Path) -> bool:
    # ISO base media files (MP4, MOV, M4A, 3GP) start with a box whose type is "ftyp" at byte 4.
    with path.open("rb") as f:
        return f.read(12)[4:8] == b"ftyp"


def _reason(exc: av.error.FFmpegError) -> str:
    # FFmpegError's str() repeats errno and file name; the strerror part is the readable reason.
    return str(getattr(exc, "strerror", None) or exc)
