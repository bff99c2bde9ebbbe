"""The straight-line baseline of ``fave bench video``: the video pipeline's stage bodies, in ONE process.

    python benchmarks/video/straight.py tests/fixtures/scenes20.mp4 --query "find scenes with cars" --json

Every stage's handler (``functions/<stage>/app.py``, found through pipeline.yaml and template.yaml) is
imported into this process and called directly with the same input the engine builds (request, item,
needs, the profile's config), against a local store: no orchestrator, no worker processes, no state
writes, no polling. Every module is imported once and every model loaded once (the orchestrated run pays
for both per execution environment).

Clips (``--clips``):

* ``parallel`` (default): per-clip chaining with the pipeline's concurrency, like the orchestrated run:
  clip k's transcribe and detect start as soon as clip k's extract is done, each stage at most
  ``min(max_concurrency, cpu_count)`` at a time (the local runtime's environment limit is the cpu count),
  on threads. This is the fair baseline for the "orchestration overhead" ratio: the same schedule with
  zero orchestration cost. The stage libraries (PyAV, CTranslate2, OpenCV DNN, ONNX Runtime) do their work
  outside the GIL, and the one OpenCV network is shared under its own lock, as in one warm environment.
* ``sequential``: one clip after the other, one stage at a time: the simplest possible script.

Output: wall seconds (measured from before the first stage import to the final result), per-stage busy
seconds (sum over the stage's calls) and the stage's span (first start to last end), and the final result.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any stage (or fave) import: the baseline pays for its imports too

import argparse  # noqa: E402 - deliberately after the clock starts
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import Future, ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PER_CLIP = ("extract", "transcribe", "detect")

Handler = Callable[[dict[str, Any], Any], Any]


class Timings:
    """Per stage: calls, busy seconds (sum) and the span from the first start to the last end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, dict[str, float]] = {}

    def record(self, stage: str, started: float, ended: float) -> None:
        with self._lock:
            row = self.stages.setdefault(stage, {"calls": 0, "busy_s": 0.0, "first": started, "last": ended})
            row["calls"] += 1
            row["busy_s"] += ended - started
            row["first"] = min(row["first"], started)
            row["last"] = max(row["last"], ended)

    def report(self, origin: float) -> dict[str, dict[str, float]]:
        return {
            name: {
                "calls": int(row["calls"]),
                "busy_s": round(row["busy_s"], 3),
                "start_s": round(row["first"] - origin, 3),
                "span_s": round(row["last"] - row["first"], 3),
            }
            for name, row in self.stages.items()
        }


def load_handlers(pipeline: Any, template: Any) -> dict[str, Handler]:
    """Import each stage's ``app.py`` under a unique module name, its code folder and layers on sys.path.

    Sibling modules of a function folder have names unique across functions, so all of them can share
    this process's ``sys.modules``."""
    handlers: dict[str, Handler] = {}
    for name in pipeline.order:
        spec = template.function(pipeline.stages[name].function)
        for key, value in spec.environment.items():
            os.environ.setdefault(key, value)  # e.g. HF_HUB_OFFLINE=1
        for path in spec.python_path:
            if path.is_dir() and str(path) not in sys.path:
                sys.path.insert(0, str(path))
        module_name, _, attr = spec.handler.rpartition(".")
        unique = f"fave_straight_{name}"
        file = spec.code_uri / (module_name.replace(".", "/") + ".py")
        loader_spec = importlib.util.spec_from_file_location(unique, file)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[unique] = module
        loader_spec.loader.exec_module(module)
        handlers[name] = getattr(module, attr)
    return handlers


class Straight:
    """Calls the handlers in dependency order with the inputs the engine would build."""

    def __init__(
        self, pipeline: Any, handlers: dict[str, Handler], store_uri: str, request: dict[str, Any], request_id: str
    ) -> None:
        from fave_shared import refs
        from fave_shared.store import open_store

        self.pipeline = pipeline
        self.handlers = handlers
        self.store_uri = store_uri
        self.store = open_store(store_uri)
        self.request = request
        self.request_id = request_id
        self.timings = Timings()
        self._resolve = refs.resolve

    def call(self, stage: str, needs: dict[str, Any], item: Any = None, index: int | None = None) -> Any:
        inp: dict[str, Any] = {
            "request": self.request,
            "needs": needs,
            "config": self.pipeline.stage_config(stage, self.request.get("profile", "default")),
        }
        if index is not None:
            inp["item"], inp["index"] = item, index
        event = {
            "fave": 1,
            "task": {"request_id": self.request_id, "stage": stage, "item": index, "attempt": 1},
            "store": self.store_uri,
            "input": inp,
        }
        started = time.perf_counter()
        out = self._resolve(self.store, self.handlers[stage](event, None))
        self.timings.record(stage, started, time.perf_counter())
        return out

    def run(self, clips_mode: str) -> dict[str, Any]:
        normalize = self.call("normalize", {})
        audio = self.call("audio", {"normalize": normalize})
        split = self.call("split", {"normalize": normalize, "audio": audio})
        clips = split["clips"]
        if clips_mode == "sequential":
            extract, transcribe, detect = [], [], []
            for k, clip in enumerate(clips):
                extract.append(self.call("extract", {"normalize": normalize}, clip, k))
                transcribe.append(self.call("transcribe", {"extract": extract[k]}, clip, k))
                detect.append(self.call("detect", {"extract": extract[k]}, clip, k))
        else:
            extract, transcribe, detect = self._parallel_clips(clips, normalize)
        return self.call("aggregate", {"split": split, "transcribe": transcribe, "detect": detect})  # type: ignore[no-any-return]

    def _parallel_clips(self, clips: list[Any], normalize: Any) -> tuple[list[Any], list[Any], list[Any]]:
        cpus = os.cpu_count() or 1
        pools = {
            name: ThreadPoolExecutor(
                min(self.pipeline.stages[name].max_concurrency or cpus, cpus), thread_name_prefix=name
            )
            for name in PER_CLIP
        }
        try:
            extracts = [
                pools["extract"].submit(self.call, "extract", {"normalize": normalize}, c, k)
                for k, c in enumerate(clips)
            ]

            def then(stage: str, k: int) -> Future[Any]:
                def run() -> Any:
                    upstream = extracts[k].result()
                    return self.call(stage, {"extract": upstream}, clips[k], k)

                return pools[stage].submit(run)

            # Submitted in clip order, each pool's worker waits for its own clip's extract: clip k's
            # transcribe/detect start as soon as extract k ends (extract never waits on them: no deadlock).
            transcribes = [then("transcribe", k) for k in range(len(clips))]
            detects = [then("detect", k) for k in range(len(clips))]
            return (
                [f.result() for f in extracts],
                [f.result() for f in transcribes],
                [f.result() for f in detects],
            )
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("video", help="a local video file")
    parser.add_argument("--query", default="find scenes with cars")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--pipeline", default=str(ROOT / "pipeline.yaml"))
    parser.add_argument("--clips", choices=["parallel", "sequential"], default="parallel")
    parser.add_argument("--store", help="a directory for the artifacts (default: a temporary one, removed)")
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON on stdout")
    args = parser.parse_args(argv)

    from fave.local.orchestrator import (
        load_local_pipeline,  # only to read the DAG's configs; none of it runs the stages
    )
    from fave.local.template import load_template

    pipeline = load_local_pipeline(args.pipeline)
    handlers = load_handlers(pipeline, load_template(pipeline.template_path))
    imported = time.perf_counter()
    request = {"video_uri": str(Path(args.video).resolve()), "query": args.query, "profile": args.profile}
    with tempfile.TemporaryDirectory(prefix="fave-straight-") as tmp:
        store_dir = str(Path(args.store).resolve()) if args.store else tmp
        runner = Straight(pipeline, handlers, store_dir, request, f"straight-{os.getpid()}")
        final = runner.run(args.clips)
    wall = time.perf_counter() - STARTED
    result = {
        "mode": args.clips,
        "wall_s": round(wall, 3),
        "import_s": round(imported - STARTED, 3),
        "stages": runner.timings.report(STARTED),
        "final": final,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"straight-line ({args.clips} clips): {wall:.2f} s wall, {imported - STARTED:.2f} s of imports")
        for name, row in result["stages"].items():
            print(f"  {name:<11} {row['calls']:>2} call(s)  busy {row['busy_s']:6.2f} s  span {row['span_s']:6.2f} s")
        scenes = final.get("scenes") or []
        print(f"query {args.query!r}: " + ", ".join(f"{s['start_s']:g}-{s['end_s']:g} s" for s in scenes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
