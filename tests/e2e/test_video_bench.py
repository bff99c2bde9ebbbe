"""``fave bench video`` end to end on a short generated video (the figures themselves are never asserted).

It runs the pipeline through the local runtime and benchmarks/video/straight.py in its own process; both
must keep calling the stages the way the engine does, so a changed stage contract breaks this test, not
only the next person who runs the benchmark.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.e2e import fave
from support.media_samples import write_video

pytestmark = pytest.mark.e2e

STAGES = ["normalize", "audio", "split", "extract", "transcribe", "detect", "aggregate"]


def test_bench_video_compares_fave_with_the_straight_line_script(tmp_path: Path) -> None:
    video = write_video(tmp_path / "pattern.mp4", duration_s=4.0, width=160, height=120, fps=10)
    store = tmp_path / "bench-store"
    result = fave(
        "bench", "video", "--video", str(video), "--query", "cars", "--profile", "fast", "--store", str(store), "--json"
    )
    assert result.code == 0, result.describe()
    doc = result.json
    assert doc["same_answer"] is True
    assert doc["clips"] >= 1 and doc["repeat"] == 1
    for side in ("wall_s", "straight_wall_s", "cpu_s", "straight_cpu_s"):
        assert doc[side] > 0, side
    assert doc["ratio"] == pytest.approx(doc["wall_s"] / doc["straight_wall_s"], abs=1e-3)
    assert list(doc["stages"]) == STAGES and set(doc["straight_stages"]) == set(STAGES)
    for name, row in doc["stages"].items():
        assert row["status"] == "SUCCEEDED" and row["tasks"] >= 1 and row["span_s"] is not None, name
        assert row["busy_s"] >= row["max_task_s"] > 0, name
    assert doc["straight_stages"]["extract"]["calls"] == doc["stages"]["extract"]["tasks"] == doc["clips"]
    assert set(doc["cold_starts"]) >= {"NormalizeFunction", "AggregateFunction"}
    # The bench request is an ordinary request in the chosen store.
    status = fave("status", doc["request_id"], "--json", "--store", str(store))
    assert status.code == 0 and status.json["status"] == "COMPLETED"


def test_bench_video_rejects_what_it_cannot_run(tmp_path: Path) -> None:
    missing = fave("bench", "video", "--video", str(tmp_path / "none.mp4"))
    assert (missing.code, missing.stderr) == (2, f"fave: error: no such file: {tmp_path / 'none.mp4'}\n")
    moto = fave("bench", "video", "--store", "moto")
    assert moto.code == 2 and moto.stderr.startswith("fave: error: bench video needs a DIR or s3:// store")
    repeat = fave("bench", "video", "--repeat", "0")
    assert (repeat.code, repeat.stderr) == (2, "fave: error: --repeat must be at least 1\n")
