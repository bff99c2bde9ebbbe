"""Scene cuts from the picture: FFmpeg's ``scdet`` filter through a PyAV filter graph."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av


@dataclass(frozen=True)
class SceneScan:
    """Raw cuts (seconds, with scdet's score) and the measured video length."""

    cuts: list[tuple[float, float]]
    duration_s: float
    fps: float


def _drain(graph: av.filter.Graph) -> Iterator[Any]:
    while True:
        try:
            yield graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def detect_cuts(path: Path, threshold: float) -> SceneScan:
    """Decode every frame of ``path`` and return the times where ``scdet`` scores above ``threshold``.

    ``sc_pass=1`` makes the filter emit only the cut frames, so Python sees a handful of frames, not all.
    """
    cuts: list[tuple[float, float]] = []
    last_s = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        graph = av.filter.Graph()
        source = graph.add_buffer(template=stream)
        scdet = graph.add("scdet", f"threshold={threshold}:sc_pass=1")
        sink = graph.add("buffersink")
        source.link_to(scdet)
        scdet.link_to(sink)
        graph.configure()

        def collect() -> None:
            for frame in _drain(graph):
                cuts.append((float(frame.metadata["lavfi.scd.time"]), float(frame.metadata.get("lavfi.scd.score", 0))))

        for frame in container.decode(stream):
            if frame.time is not None:
                last_s = max(last_s, float(frame.time))
            graph.push(frame)
            collect()
        graph.push(None)
        collect()
    return SceneScan(cuts=cuts, duration_s=round(last_s + 1 / fps, 6), fps=fps)
