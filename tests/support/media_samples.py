"""Small media inputs made at test time with PyAV (nothing generated is committed), and a runner for the
media stages on the bundled sample.

Generators (each writes a file and returns its path; all take well under a second):

* ``write_video``       - a moving test pattern, optionally with a sine tone, any size/fps/duration;
* ``write_scenes``      - hard cuts between different sliding pictures at given times, with a tone;
* ``write_audio_only``  - an AAC-in-MP4 file with no video stream (named ``.mp4`` on purpose);
* ``write_truncated``   - the first part of another file's bytes (a cut-off upload);
* ``write_text``        - a text file renamed ``.mp4``;
* ``write_empty``       - a zero-length file.

``invoke`` calls a stage handler the way Lambda would (dict event in, dict out). ``SampleChain`` runs the
media stages on one video once per test session and caches each stage's output, so the normalize → audio →
split → extract chain is not repeated by every test file that needs an upstream output.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from fave_shared import refs
from fave_shared.store import open_store

from support.functions import load_handler

AUDIO_RATE_HZ = 48000


def _pattern(index: int, width: int, height: int, fps: float) -> np.ndarray:
    # A diagonal gradient that scrolls: every frame differs a little (like real video), none is a scene cut.
    y, x = np.mgrid[0:height, 0:width]
    shift = int(index * 4)
    r = ((x + shift) * 255 // max(1, width)) % 256
    g = ((y + shift) * 255 // max(1, height)) % 256
    b = np.full_like(r, int(128 + 100 * np.sin(index / fps)))
    picture = np.stack([r, g, b], axis=-1).astype(np.uint8)
    picture[: height // 4, : width // 4] = (255, 0, 0)  # a red corner at the top left: shows orientation
    return picture


def write_video(
    path: Path,
    *,
    duration_s: float = 2.0,
    width: int = 160,
    height: int = 120,
    fps: int = 10,
    audio: bool = True,
    tone_hz: float = 440.0,
    faststart: bool = False,
    rotation_deg: int = 0,
    container: str = "mp4",
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    metadata: dict[str, str] | None = None,
) -> Path:
    """An H.264 (+ AAC sine tone) MP4, or any other ``container``/codec combination FFmpeg can write.

    ``faststart`` puts the MP4 index first, as web uploads usually have it; ``rotation_deg`` stores a display
    rotation (counter-clockwise; phones write -90 for portrait); ``metadata`` goes into the container's tags.
    """
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        out.metadata.update(metadata or {})
        video: Any = out.add_stream(video_codec, rate=fps)  # a union type for a codec name not known statically
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if video_codec == "libx264":
            video.codec_context.options = {"preset": "ultrafast"}
        if rotation_deg:
            video.set_display_rotation(rotation_deg)
        sound = out.add_stream(audio_codec, rate=AUDIO_RATE_HZ, layout="mono") if audio else None
        frames = round(duration_s * fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_pattern(i, width, height, fps), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _write_tone(out, sound, duration_s, tone_hz)
    return path


def _write_tone(out: Any, stream: Any, duration_s: float, tone_hz: float) -> None:
    total = round(duration_s * AUDIO_RATE_HZ)
    t = np.arange(total) / AUDIO_RATE_HZ
    samples = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    for start in range(0, total, 1024):
        chunk = samples[start : start + 1024].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE_HZ, start, Fraction(1, AUDIO_RATE_HZ)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_scenes(
    path: Path, *, cuts_s: list[float], duration_s: float = 7.0, width: int = 320, height: int = 240, fps: int = 25
) -> Path:
    """Scenes separated by hard cuts at ``cuts_s`` (each a different blocky random picture, sliding a pixel
    per frame, so only the cuts score high in scdet), with a 300 Hz tone. The source's own keyframes are
    every 2.12 s (53 frames at 25 fps), off any whole-second grid and unrelated to the cuts."""
    rng = np.random.default_rng(7)
    scenes = [
        rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        for _ in range(len(cuts_s) + 1)
    ]
    with av.open(str(path), "w", format="mp4") as out:
        video: Any = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast", "x264-params": "keyint=53:min-keyint=53:scenecut=0"}
        sound = out.add_stream("aac", rate=AUDIO_RATE_HZ, layout="mono")
        for i in range(round(duration_s * fps)):
            scene = sum(i >= round(c * fps) for c in cuts_s)
            frame = av.VideoFrame.from_ndarray(np.roll(scenes[scene], i, axis=1), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        _write_tone(out, sound, duration_s, 300.0)
    return path


def write_audio_only(path: Path, *, duration_s: float = 2.0) -> Path:
    """An MP4 holding only an AAC tone: a valid media file, but not a video."""
    with av.open(str(path), "w", format="mp4") as out:
        _write_tone(out, out.add_stream("aac", rate=AUDIO_RATE_HZ, layout="mono"), duration_s, 440.0)
    return path


def write_truncated(source: Path, path: Path, *, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes, as an interrupted upload leaves them."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_text(path: Path) -> Path:
    """A text file with a video's name."""
    path.write_text("this is not a video\n" * 50)
    return path


def write_empty(path: Path) -> Path:
    """A zero-length file."""
    path.write_bytes(b"")
    return path


# -- calling stages ------------------------------------------------------------------------------------


def invoke(
    stage: str,
    store_dir: Path,
    payload: dict[str, Any],
    *,
    request_id: str = "r1",
    item: int | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Call ``functions/<stage>/app.py``'s handler with a Lambda-style event; return its resolved output."""
    event = {
        "fave": 1,
        "task": {"request_id": request_id, "stage": stage, "item": item, "attempt": attempt},
        "store": str(store_dir),
        "input": payload,
    }
    out = load_handler(stage)(event, None)
    resolved: dict[str, Any] = refs.resolve(open_store(str(store_dir)), out)
    return resolved


class SampleChain:
    """The media stages run once on ``video`` (request ``sample``), each stage on first use."""

    request_id = "sample"

    def __init__(self, video: Path, store_dir: Path) -> None:
        self.video = video
        self.store_dir = store_dir

    def run(
        self, stage: str, payload: dict[str, Any], item: int | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Invoke ``stage`` for this chain's request, or for ``request_id`` in the same store.

        Runs with other inputs or config (variants) must pass their own ``request_id``: stages write
        request-level keys (split's clips), which would otherwise replace the cached chain's artifacts.
        """
        rid = request_id or self.request_id
        return invoke(stage, self.store_dir, payload, request_id=rid, item=item)

    @functools.cached_property
    def normalize(self) -> dict[str, Any]:
        """normalize's output."""
        return self.run("normalize", {"request": {"video_uri": str(self.video)}})

    @functools.cached_property
    def audio(self) -> dict[str, Any]:
        """audio's output."""
        return self.run("audio", {"needs": {"normalize": self.normalize}})

    @functools.cached_property
    def split(self) -> dict[str, Any]:
        """split's output."""
        return self.run("split", {"needs": {"normalize": self.normalize, "audio": self.audio}})

    @functools.cached_property
    def extract(self) -> list[dict[str, Any]]:
        """extract's output for every clip, in clip order."""
        return [
            self.run("extract", {"item": clip, "index": i, "needs": {"normalize": self.normalize}}, item=i)
            for i, clip in enumerate(self.split["clips"])
        ]

    def read(self, key: str) -> bytes:
        """An object of this chain's store."""
        return open_store(str(self.store_dir)).get(key).data


@functools.cache
def sample_chain(video: Path, store_dir: Path) -> SampleChain:
    """One ``SampleChain`` per (video, store) for the whole process: pass a session-wide directory."""
    return SampleChain(video, store_dir)
