"""What split needs to know about the normalized video without decoding it: frame rate, length, keyframes.

One demux pass over the video packets (no decoding: a few milliseconds for minutes of video). The keyframe
times say which clips can be copied instead of re-encoded (split_write).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av


@dataclass(frozen=True)
class VideoIndex:
    """Frame rate, frame count, length (last frame's time + one frame, as a decode would measure it) and
    keyframe times."""

    fps: float
    frames: int
    duration_s: float
    keyframes_s: tuple[float, ...]


def index_video(path: Path) -> VideoIndex:
    """Read the packet headers of the first video stream of ``path``."""
    keyframes: list[float] = []
    last_s = 0.0
    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for packet in container.demux(stream):
            if packet.pts is None:
                continue  # the demuxer's closing empty packet
            t = float(packet.pts * packet.time_base)
            frames += 1
            last_s = max(last_s, t)
            if packet.is_keyframe:
                keyframes.append(t)
    return VideoIndex(
        fps=fps, frames=frames, duration_s=round(last_s + 1 / fps, 6), keyframes_s=tuple(sorted(keyframes))
    )
