"""Decode a video's audio once: 16 kHz mono PCM for analysis plus EBU R128 loudness at the native rate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

SAMPLE_RATE_HZ = 16000
_SILENT_LUFS = -70.0  # ebur128 reports its absolute gate when no block passed it: there is no loudness


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at ``SAMPLE_RATE_HZ`` and the whole-file loudness."""

    samples: np.ndarray
    integrated_lufs: float | None
    loudness_range_lu: float | None

    @property
    def duration_s(self) -> float:
        """Length of ``samples`` in seconds."""
        return len(self.samples) / SAMPLE_RATE_HZ


def has_audio_stream(path: Path) -> bool:
    """True if the file has at least one audio stream."""
    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def decode_audio(path: Path) -> DecodedAudio | None:
    """Decode the first audio stream of ``path``; None if there is none.

    Loudness is measured on the native-rate signal (the K-weighting filter reaches above the 8 kHz that a
    16 kHz resample keeps); analysis uses 16 kHz mono, which is what the VAD model expects.
    """
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        meter = _LoudnessMeter(stream)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_HZ)
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            meter.push(frame)
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        meter.push(None)
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return DecodedAudio(
        samples=pcm.astype(np.float32) / 32768.0,
        integrated_lufs=meter.integrated_lufs,
        loudness_range_lu=meter.loudness_range_lu,
    )


class _LoudnessMeter:
    """FFmpeg's ``ebur128`` filter: integrated loudness without scipy or a hand-rolled K-weighting."""

    def __init__(self, stream: Any) -> None:
        self._graph = av.filter.Graph()
        source = self._graph.add_abuffer(template=stream)
        meter = self._graph.add("ebur128", "metadata=1")
        sink = self._graph.add("abuffersink")
        source.link_to(meter)
        meter.link_to(sink)
        self._graph.configure()
        self._last: dict[str, str] = {}

    def push(self, frame: Any) -> None:
        self._graph.push(frame)
        for out in self._pull():
            if "lavfi.r128.I" in out.metadata:
                # Each frame carries the running integrated value; the last one covers the whole file.
                self._last = dict(out.metadata)

    def _pull(self) -> Iterator[Any]:
        while True:
            try:
                yield self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    @property
    def integrated_lufs(self) -> float | None:
        value = float(self._last.get("lavfi.r128.I", _SILENT_LUFS))
        return None if value <= _SILENT_LUFS else round(value, 2)

    @property
    def loudness_range_lu(self) -> float | None:
        return None if self.integrated_lufs is None else round(float(self._last["lavfi.r128.LRA"]), 2)
