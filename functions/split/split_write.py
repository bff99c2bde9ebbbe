"""Cut the normalized video into clip files in one pass, frame-exact.

A clip that starts on a keyframe and ends on one (or at the end of the video) gets the normalized video's own
packets (stream copy: no decode, no encode). Normalize starts a GOP at every scene cut, so this is every
clip bounded by unmoved scene cuts. Stream copy cannot cut anywhere else: a boundary moved out of speech or
a split of an over-long scene falls between keyframes, so those clips are decoded and re-encoded (H.264 +
AAC, same fixed GOP as normalize so extract's keyframe-only decode still gets about one picture per GOP).
Either way a clip's GOPs start at its first frame. Audio is always re-encoded, split at the exact sample of
each boundary (an AAC packet is 21 ms: copying it could not be exact).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


@dataclass(frozen=True)
class ClipEncoding:
    """Encoder settings for clip files."""

    crf: int = 21
    preset: str = "veryfast"
    gop_s: float = 1.0
    audio_bitrate_kbps: int = 128


def copyable(
    bounds: Sequence[tuple[float, float]], keyframes_s: Sequence[float], end_s: float, fps: float
) -> list[bool]:
    """For each clip, whether it starts on a keyframe and ends on one or at ``end_s`` (within half a frame)."""
    half = 0.5 / fps
    keys = sorted(keyframes_s)

    def on_keyframe(t: float) -> bool:
        i = bisect.bisect_left(keys, t - half)
        return i < len(keys) and keys[i] <= t + half

    return [on_keyframe(a) and (on_keyframe(b) or b >= end_s - half) for a, b in bounds]


class _ClipWriter:
    """One open clip file: video (copied packets, or an encoder) and, if the source has audio, an AAC encoder."""

    def __init__(self, path: Path, video: Any, audio: Any, enc: ClipEncoding, *, copy: bool) -> None:
        self.path = path
        self.out = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        rate = video.average_rate or Fraction(25)  # normalize wrote constant-rate video: always known
        self.frame_time = Fraction(1) / rate
        self.copy = copy
        self.first_pts: int | None = None  # copy: the clip's first packet (a keyframe) is its time 0
        if copy:
            self.vout = self.out.add_stream_from_template(video)
        else:
            gop = max(1, round(float(rate) * enc.gop_s))
            self.vout = self.out.add_stream("libx264", rate=rate)
            self.vout.width = video.codec_context.width
            self.vout.height = video.codec_context.height
            self.vout.pix_fmt = "yuv420p"
            self.vout.codec_context.gop_size = gop
            self.vout.codec_context.thread_count = 1  # as normalize: more threads cost CPU, not time
            self.vout.codec_context.options = {
                "preset": enc.preset,
                "crf": str(enc.crf),
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            }
        self.frames = 0
        self.aout = None
        self.samples = 0
        if audio is not None:
            layout = audio.codec_context.layout.name
            self.aout = self.out.add_stream("aac", rate=audio.codec_context.sample_rate, layout=layout)
            channels = audio.codec_context.channels
            self.aout.bit_rate = enc.audio_bitrate_kbps * 1000 * min(channels, 2) // 2

    def copy_packet(self, packet: Any) -> None:
        """Mux one packet of the normalized video as it is, rebased so the clip starts at 0."""
        if self.first_pts is None:
            self.first_pts = packet.pts
        packet.pts -= self.first_pts
        if packet.dts is not None:
            packet.dts -= self.first_pts  # may go below 0 for the first packets (B-frames): the muxer allows it
        packet.stream = self.vout
        self.frames += 1
        self.out.mux(packet)

    def write_video(self, frame: Any) -> None:
        # Clip-relative timestamps: each clip file starts at 0 like any standalone video.
        frame.pts = self.frames
        frame.time_base = self.frame_time
        frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder place keyframes on its GOP
        self.frames += 1
        self.out.mux(self.vout.encode(frame))

    def write_audio(self, planes: np.ndarray, template: Any) -> None:
        assert self.aout is not None
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(planes), format=template.format.name, layout=template.layout.name
        )
        frame.sample_rate = template.sample_rate
        frame.pts = self.samples
        frame.time_base = Fraction(1, template.sample_rate)
        self.samples += planes.shape[-1]
        self.out.mux(self.aout.encode(frame))

    def close(self) -> None:
        if not self.copy:
            self.out.mux(self.vout.encode(None))
        if self.aout is not None:
            self.out.mux(self.aout.encode(None))
        self.out.close()


class _Router:
    """Sends each video packet or decoded frame (or the part of an audio frame) to the clip it belongs to."""

    def __init__(
        self,
        video: Any,
        audio: Any,
        bounds: Sequence[tuple[float, float]],
        copy: Sequence[bool],
        *,
        out_dir: Path,
        enc: ClipEncoding,
        on_done: Callable[[int, Path], None],
    ) -> None:
        self.video, self.audio, self.bounds, self.out_dir, self.enc = video, audio, bounds, out_dir, enc
        self.copy = copy
        self.decode_video = not all(copy)  # frames are needed only for the clips that are re-encoded
        self.on_done = on_done
        self.starts = [a for a, _ in bounds]
        self.writers: dict[int, _ClipWriter] = {}
        self.finished: set[int] = set()
        self.half_frame = 0.5 / float(video.average_rate)
        self.progress = {"video": 0.0, "audio": 0.0 if audio is not None else float("inf")}
        self.gop_clip = -1  # the clip of the last keyframe packet: its GOP's packets follow it

    def writer(self, i: int) -> _ClipWriter:
        if i not in self.writers:
            path = self.out_dir / f"{i:05d}.mp4"
            self.writers[i] = _ClipWriter(path, self.video, self.audio, self.enc, copy=self.copy[i])
        return self.writers[i]

    def clip_at(self, t: float) -> int:
        """The clip holding the frame at ``t`` (-1 before the first, len(bounds) after the last)."""
        i = bisect.bisect_right(self.starts, t + self.half_frame) - 1
        return i if i < 0 or t < self.bounds[i][1] - self.half_frame else len(self.bounds)

    def video_packet(self, packet: Any) -> None:
        """Copy the packet to its clip if that clip is copied; decode it if any clip is re-encoded."""
        if self.decode_video:
            for frame in packet.decode():  # before the mux below, which takes the packet's data
                self.video_frame(frame)
        if packet.pts is None:
            return  # the demuxer's closing empty packet
        if packet.is_keyframe:
            # Closed GOPs, in decode order: every packet up to the next keyframe belongs with this one.
            self.gop_clip = self.clip_at(float(packet.pts * packet.time_base))
        i = self.gop_clip
        if 0 <= i < len(self.bounds) and self.copy[i] and i not in self.finished:
            self.writer(i).copy_packet(packet)
        if not self.decode_video and packet.dts is not None:
            self.progress["video"] = max(self.progress["video"], float(packet.dts * packet.time_base))

    def video_frame(self, frame: Any) -> None:
        t = float(frame.time)
        self.progress["video"] = t
        i = self.clip_at(t)
        if 0 <= i < len(self.bounds) and not self.copy[i] and i not in self.finished:
            self.writer(i).write_video(frame)

    def audio_frame(self, frame: Any) -> None:
        """Give each clip the samples of ``frame`` that fall inside it (sample-exact at boundaries)."""
        t = float(frame.time)
        self.progress["audio"] = t
        rate = frame.sample_rate
        planes = frame.to_ndarray()
        if not frame.format.is_planar:  # packed audio is (1, samples*channels): make it (channels, samples)
            planes = planes.reshape(-1, len(frame.layout.channels)).T
        n = planes.shape[-1]
        first = round(t * rate)
        i = max(0, bisect.bisect_right(self.starts, t) - 1)
        while i < len(self.bounds):
            lo = max(first, round(self.bounds[i][0] * rate))
            hi = min(first + n, round(self.bounds[i][1] * rate))
            if hi > lo and i not in self.finished:
                chunk = planes[:, lo - first : hi - first]
                if not frame.format.is_planar:
                    chunk = chunk.T.reshape(1, -1)
                self.writer(i).write_audio(chunk, frame)
            if first + n <= round(self.bounds[i][1] * rate):
                break
            i += 1

    def retire(self, final: bool = False) -> None:
        """Close and hand over every clip both streams have passed (all of them when ``final``)."""
        # Interleaving means audio may lag video by a packet or two; wait until both are well past the end.
        horizon = float("inf") if final else min(self.progress.values()) - 1.0
        for i in sorted(self.writers):
            if self.bounds[i][1] <= horizon:
                self.writers.pop(i).close()
                self.finished.add(i)
                self.on_done(i, self.out_dir / f"{i:05d}.mp4")


def write_clips(
    src: Path,
    bounds: Sequence[tuple[float, float]],
    out_dir: Path,
    enc: ClipEncoding,
    on_done: Callable[[int, Path], None],
    *,
    copy: Sequence[bool] | None = None,
) -> None:
    """Write clip ``i`` covering ``bounds[i]`` (seconds) to ``out_dir/{i:05d}.mp4``.

    ``copy[i]`` (see ``copyable``; default: none) says clip ``i`` starts and ends on keyframes of ``src``, so
    its video packets are copied; the other clips are re-encoded. ``on_done(i, path)`` is called as soon as a
    clip is complete (both streams past its end), so the caller can upload and delete it while later clips
    are still being written: /tmp holds a few clips, not all.
    """
    copy = list(copy) if copy is not None else [False] * len(bounds)
    with av.open(str(src)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        audio = container.streams.audio[0] if container.streams.audio else None
        router = _Router(video, audio, bounds, copy, out_dir=out_dir, enc=enc, on_done=on_done)
        streams = [video] if audio is None else [video, audio]
        for packet in container.demux(streams):
            if packet.stream is video:
                router.video_packet(packet)
            else:
                for frame in packet.decode():
                    router.audio_frame(frame)
            router.retire()
        # A clip that received no frame (cannot happen with frame-grid boundaries) still gets a file.
        for i in range(len(bounds)):
            if i not in router.finished:
                router.writer(i)
        router.retire(final=True)
