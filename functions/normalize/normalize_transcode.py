"""Transcode any decodable video to H.264 (+AAC) MP4 with capped height, constant frame rate and fixed GOP.

Why these choices: a constant frame rate and a keyframe every ``gop_s`` seconds make later stages cheap and
predictable (extract decodes keyframes only and gets one picture per GOP; split can place clip boundaries on
a known frame grid). ``+faststart`` puts the index first so a truncated download of *our* output fails early.

Scene cuts are found in the same pass (FFmpeg's ``scdet`` on the pictures being encoded: no second decode)
and each one starts a new GOP: the frame gets a forced keyframe and the next GOP counts from it. So every
clip split cuts at a scene cut starts on a keyframe, and split can copy it (no re-encode) when it also ends
on one. Keyframes are only ever placed by these two rules: a source's own keyframe types are cleared.
GOPs are closed (x264's default, no ``open-gop``): every keyframe is an IDR frame a copied clip can start at.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.video.frame import PictureType
from normalize_errors import MediaInputError
from normalize_probe import open_input


@dataclass(frozen=True)
class EncodeSettings:
    """Output parameters (from the stage config)."""

    target_height: int = 480
    max_fps: float = 30.0
    gop_s: float = 1.0
    crf: int = 23
    preset: str = "veryfast"
    audio_rate_hz: int = 48000
    audio_bitrate_kbps: int = 128
    scene_threshold: float | None = 10.0
    """scdet score (0-100) of a scene cut (reported, and given a keyframe); None: no scene detection."""


@dataclass(frozen=True)
class Normalized:
    """What was written."""

    width: int
    height: int
    fps: float
    duration_s: float
    has_audio: bool
    gop_frames: int
    size_bytes: int
    scene_cuts: tuple[tuple[float, float], ...] = ()
    """(time in seconds, scdet score) of each scene cut at or above the threshold, each on a keyframe."""

    def as_dict(self) -> dict[str, Any]:
        """The normalized file's facts as the JSON-able dict of the stage output (scene cuts are apart)."""
        facts = asdict(self)
        del facts["scene_cuts"]
        return facts


def output_size(width: int, height: int, sar: Fraction | None, target_height: int) -> tuple[int, int]:
    """Square-pixel size: height capped at ``target_height``, aspect kept, both even (x264 needs it)."""
    display_width = width * float(sar) if sar and sar > 0 else float(width)
    out_h = min(height, target_height)
    out_w = display_width * out_h / height
    return max(2, round(out_w / 2) * 2), max(2, round(out_h / 2) * 2)


def output_fps(source: Fraction | None, max_fps: float) -> Fraction:
    """The source rate if it is known and within ``max_fps``, else ``max_fps`` (25 if nothing is known)."""
    if not source or source <= 0:
        return Fraction(25)
    cap = Fraction(max_fps).limit_denominator(1001)
    return source if source <= cap else cap


def _drain(graph: av.filter.Graph) -> Iterator[Any]:
    while True:
        try:
            yield graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def transcode(
    src: Path,
    dst: Path,
    settings: EncodeSettings,
    *,
    display_name: str,
    declared_duration_s: float,
    max_duration_s: float,
    rotation_deg: int = 0,
) -> Normalized:
    """Decode ``src`` and write the normalized MP4 to ``dst``.

    Raises ``MediaInputError`` if decoding fails, yields no picture, stops well short of the declared
    duration (a truncated file whose index survived), or runs past ``max_duration_s`` (headers can lie).
    ``rotation_deg`` (the probe's display rotation) is applied to the pixels, as FFmpeg's CLI does, so the
    output is upright without relying on players honouring a display matrix.
    """
    with open_input(src) as inp:
        vin = next(s for s in inp.streams.video if not s.disposition & av.stream.Disposition.attached_pic)
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vin.thread_type = "AUTO"
        coded_w, coded_h, sar = vin.codec_context.width, vin.codec_context.height, vin.sample_aspect_ratio
        if rotation_deg in (90, -90):
            coded_w, coded_h, sar = coded_h, coded_w, (1 / sar if sar else sar)
        width, height = output_size(coded_w, coded_h, sar, settings.target_height)
        fps = output_fps(vin.average_rate or vin.guessed_rate, settings.max_fps)
        gop = max(1, round(float(fps) * settings.gop_s))
        # Rebase every stream on the container's start so output time 0 is the first moment of the source.
        start_us = inp.start_time or 0

        with av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            vout = out.add_stream("libx264", rate=fps)
            vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
            vout.codec_context.gop_size = gop
            # One encoder thread: x264's sliced threads (the default here) took ~12% more CPU for the same wall
            # time at these sizes (the decoder, filters and AAC are the bound), CPU a parallel pipeline wants.
            vout.codec_context.thread_count = 1
            vout.codec_context.options = {
                "preset": settings.preset,
                "crf": str(settings.crf),
                # scenecut=0: no keyframe of x264's choosing. GOPs are exactly `gop` frames, each scene's
                # counted from its first frame (forced below).
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            }
            graph = _video_graph(
                vin, width, height, fps, rotation_deg=rotation_deg, scene_threshold=settings.scene_threshold
            )
            track = _AudioTrack(out, ain, settings) if ain is not None else None
            cuts: list[tuple[float, float]] = []
            last_video_s = -1.0
            frames = 0

            def encode(filtered: Any) -> None:
                nonlocal frames, last_video_s
                frames += 1
                last_video_s = max(last_video_s, float(filtered.time))
                cut = filtered.metadata.get("lavfi.scd.time") if settings.scene_threshold is not None else None
                if cut is not None:
                    cuts.append((float(filtered.time), float(filtered.metadata.get("lavfi.scd.score", 0.0))))
                # I forces an IDR frame (closed GOP) and restarts the GOP count; NONE leaves it to the GOP.
                filtered.pict_type = PictureType.I if cut is not None else PictureType.NONE
                out.mux(vout.encode(filtered))

            for stream, frame in _decode(inp, vin, ain, display_name):
                offset = int(start_us * Fraction(1, av.time_base) / frame.time_base) if start_us else 0
                frame.pts = frame.pts - offset if frame.pts is not None else None
                if stream is vin:
                    if frame.time is not None and frame.time > max_duration_s + 1.0:
                        raise MediaInputError(
                            f"duration of {display_name} exceeds the profile limit of {max_duration_s:g} s "
                            "(found while decoding; the header understated it)"
                        )
                    graph.push(frame)
                    for filtered in _drain(graph):
                        encode(filtered)
                elif track is not None:
                    track.push(frame)
            graph.push(None)
            for filtered in _drain(graph):
                encode(filtered)
            out.mux(vout.encode(None))
            if track is not None:
                track.push(None)

    if frames == 0:
        raise MediaInputError(f"corrupt video: no decodable picture in {display_name}")
    decoded_s = last_video_s + 1 / float(fps)
    # A file cut short but with its index intact probes fine and decodes less than it declares.
    if declared_duration_s > 0 and decoded_s < declared_duration_s * 0.9 - 0.5:
        raise MediaInputError(
            f"truncated or corrupt video: {display_name} declares {declared_duration_s:.1f} s "
            f"but only {decoded_s:.1f} s could be decoded"
        )
    return Normalized(
        width=width,
        height=height,
        fps=round(float(fps), 3),
        duration_s=round(decoded_s, 3),
        has_audio=ain is not None,
        gop_frames=gop,
        size_bytes=dst.stat().st_size,
        scene_cuts=tuple(cuts),
    )


class _AudioTrack:
    """AAC output of one source audio stream: resampled, with timestamps the encoder can trust."""

    def __init__(self, out: Any, ain: Any, settings: EncodeSettings) -> None:
        layout = "mono" if ain.codec_context.channels == 1 else "stereo"
        self.rate = settings.audio_rate_hz
        self.out = out
        self.stream = out.add_stream("aac", rate=self.rate, layout=layout)
        # The configured bitrate is for stereo; mono gets half.
        self.stream.bit_rate = settings.audio_bitrate_kbps * 1000 // (2 if layout == "mono" else 1)
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
        self.next_pts: int | None = None

    def push(self, frame: Any) -> None:
        """Encode one decoded frame (None flushes)."""
        if frame is not None and frame.pts is not None and frame.pts < 0:
            return  # audio before the rebased start (priming): nothing to play it against
        if frame is not None and self.next_pts is None:
            self.next_pts = max(0, round(float(frame.time or 0.0) * self.rate))
        for resampled in self.resampler.resample(frame):
            # Count samples from the first frame's time instead of trusting each input pts: AVI/AC-3 and
            # other sources carry packet-numbered pts the AAC encoder's re-framing turns into invalid DTS.
            resampled.pts, resampled.time_base = self.next_pts or 0, Fraction(1, self.rate)
            self.next_pts = (self.next_pts or 0) + resampled.samples
            self.out.mux(self.stream.encode(resampled))
        if frame is None:
            self.out.mux(self.stream.encode(None))


# FFmpeg's CLI autorotation (fftools): frame.rotation is counter-clockwise, so -90 needs a clockwise turn.
_UPRIGHT = {-90: [("transpose", "clock")], 90: [("transpose", "cclock")], 180: [("hflip", ""), ("vflip", "")]}


def _video_graph(
    vin: Any, width: int, height: int, fps: Fraction, *, rotation_deg: int, scene_threshold: float | None
) -> av.filter.Graph:
    graph = av.filter.Graph()
    # scdet last: it scores the pictures exactly as they are encoded (size, rate, pixel format).
    scenes = [graph.add("scdet", f"threshold={scene_threshold}")] if scene_threshold is not None else []
    chain = [
        graph.add_buffer(template=vin),
        *(graph.add(name, args) for name, args in _UPRIGHT.get(rotation_deg, [])),
        graph.add("scale", f"{width}:{height}:flags=bicubic"),
        graph.add("setsar", "1"),
        # fps= makes the output constant-rate (variable-rate phone video in, fixed grid out).
        graph.add("fps", f"fps={fps.numerator}/{fps.denominator}"),
        graph.add("format", "pix_fmts=yuv420p"),
        *scenes,
        graph.add("buffersink"),
    ]
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    graph.configure()
    return graph


def _decode(inp: Any, vin: Any, ain: Any, display_name: str) -> Iterator[tuple[Any, Any]]:
    """Decoded (stream, frame) pairs of the video and the first audio stream, in demux order.

    Like FFmpeg's command line, a packet that fails to decode is skipped (a cut-off last packet, a damaged
    spot); a file where many do is corrupt. A file that simply stops is judged later by how much decoded.
    """
    streams = [vin] if ain is None else [vin, ain]
    packets = errors = 0
    demuxer = inp.demux(streams)
    while True:
        try:
            packet = next(demuxer)
        except StopIteration:
            return
        except av.error.FFmpegError:
            return  # unreadable container data from here on: treat as the end of the file
        packets += 1
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            errors += 1
            if errors > max(10, packets // 20):
                raise MediaInputError(
                    f"corrupt video: {errors} of the first {packets} packets of {display_name} "
                    f"could not be decoded ({_reason(exc)})"
                ) from exc
            continue
        for frame in frames:
            yield packet.stream, frame


def _reason(exc: av.error.FFmpegError) -> str:
    return str(getattr(exc, "strerror", None) or exc)
