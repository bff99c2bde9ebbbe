"""Keyframes of a clip as JPEG: keyframe-only decode (``skip_frame=NONKEY``) and FFmpeg's mjpeg encoder.

Split encodes clips with a keyframe every ``gop_s`` (1 s), so keyframe-only decoding yields about one picture
per second while skipping the decode of every other frame. No Pillow: mjpeg on ``yuvj420p`` writes JFIF.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av


@dataclass(frozen=True)
class Keyframe:
    """One picture: clip-relative time, JPEG bytes and size."""

    t_s: float
    jpeg: bytes
    width: int
    height: int


def encode_jpeg(frame: Any, qscale: int) -> bytes:
    """One video frame as JPEG bytes (``qscale`` 2 = best, 31 = worst)."""
    # yuvj420p is full-range; reformat converts the limited-range H.264 picture instead of relabelling it.
    picture = frame.reformat(format="yuvj420p")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = picture.width, picture.height, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    codec.qmin = codec.qmax = qscale  # a fixed quantiser, not a bitrate target
    codec.open()
    picture.pts = 0
    return b"".join(bytes(p) for p in [*codec.encode(picture), *codec.encode(None)])


def _decoded(path: Path, keyframes_only: bool) -> Iterator[Any]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        stream.thread_type = "AUTO"
        yield from container.decode(stream)


def extract_keyframes(path: Path, min_spacing_s: float, max_count: int, qscale: int) -> list[Keyframe]:
    """Keyframes at least ``min_spacing_s`` apart (at most ``max_count``, evenly thinned), at least one.

    A clip whose keyframes cannot be found (none decoded) falls back to its first decodable frame.
    """
    picked: list[Any] = []
    for frame in _decoded(path, keyframes_only=True):
        t = float(frame.time or 0.0)
        if not picked or t - float(picked[-1].time or 0.0) >= min_spacing_s - 1e-6:
            picked.append(frame)
    if not picked:
        picked = [next(_decoded(path, keyframes_only=False), None)]
        if picked[0] is None:
            return []
    if len(picked) > max_count:
        step = len(picked) / max_count
        picked = [picked[int(i * step)] for i in range(max_count)]
    return [
        Keyframe(t_s=float(f.time or 0.0), jpeg=encode_jpeg(f, qscale), width=f.width, height=f.height) for f in picked
    ]
