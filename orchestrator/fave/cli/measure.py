"""What ``fave bench fanout`` measures besides wall time: CPU per task, peak memory, a bare-pool baseline and
the store traffic by kind of object.

* ``Meter``: wall, CPU of the whole process (every thread: the driver, the local runtime's slot threads, the
  timer, the lease keeper) and of the calling thread alone (the driver), and the process's peak RSS.
* ``bare_pool``: the same-run baseline. The same no-op handler called ``items`` times on a plain
  ``ThreadPoolExecutor`` with as many threads as the local runtime gives the function: what the tasks cost
  with no orchestration at all, on this machine, now.
* ``KeyKinds``: a pass-through store that tallies requests and bytes by kind of key (state.json, task
  shards, lease, ...), to tell which objects the traffic per task comes from.
"""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from fave_shared.store import CountingStore, ObjectStore

from fave.local.worker import load_handler

__all__ = ["KeyKinds", "Meter", "bare_pool", "cpu_count", "key_kind", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """``with Meter() as m: ...`` then ``m.wall_s``, ``m.cpu_s`` (every thread of this process), ``m.thread_cpu_s``
    (the thread that entered the block) and ``m.peak_rss_mb`` (the process's peak so far, at exit)."""

    def __init__(self) -> None:
        self.wall_s = self.cpu_s = self.thread_cpu_s = self.peak_rss_mb = 0.0

    def __enter__(self) -> Meter:
        self._wall, self._cpu, self._thread = time.perf_counter(), _process_cpu_s(), time.thread_time()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = _process_cpu_s() - self._cpu
        self.thread_cpu_s = time.thread_time() - self._thread
        self.peak_rss_mb = peak_rss_mb()


def bare_pool(items: int, code_uri: Path, handler: str, workers: int, *, window: int = 10_000) -> Meter:
    """Call ``handler`` (loaded from ``code_uri`` like thread isolation does) ``items`` times on a plain thread
    pool of ``workers``, one submitted call per item, and wait for every result. At most ``window`` calls are
    in flight at once, so the baseline never holds more memory than the run it is compared with."""
    module = handler.rpartition(".")[0]
    function = load_handler(handler, code_uri=str(code_uri), module_name=f"fave_bench_baseline_{module}")
    with Meter() as meter, ThreadPoolExecutor(workers, thread_name_prefix="fave-bench-baseline") as pool:
        for start in range(0, items, window):
            events = [
                {"fave": 1, "task": {"item": i}, "input": {"index": i}}
                for i in range(start, min(items, start + window))
            ]
            futures = [pool.submit(function, event, None) for event in events]
            for future in futures:
                future.result()
    return meter


# ---- store traffic by kind of key -------------------------------------------------------------------

_KINDS: tuple[tuple[str, str], ...] = (
    ("/metadata/state.json", "state"),
    ("/metadata/tasks/", "task_shards"),
    ("/metadata/final.json", "final"),
    ("/metadata/lease.json", "lease"),
    ("/metadata/input.json", "input"),
    ("/metadata/items/", "fanout_items"),
    ("/inbox/", "inbox"),
    ("/stages/", "stage_artifacts"),
)


def key_kind(key: str) -> str:
    """Which of a request's objects ``key`` is (``fave.keys``'s layout): state, task_shards, final, lease,
    input, fanout_items, inbox, stage_artifacts, index, or other."""
    if key.startswith("index/"):
        return "index"
    for marker, kind in _KINDS:
        if marker in key:
            return kind
    return "other"


class KeyKinds(CountingStore):
    """A ``CountingStore`` that also tallies requests and bytes by ``key_kind``; thread-safe.

    Counts as ``CountingStore`` does (``stats``), and by kind the same way except that a listing counts one
    request whatever its length."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self._counts: dict[str, dict[str, int]] = {}

    def by_kind(self) -> dict[str, dict[str, int]]:
        """``{kind: {"requests", "bytes_read", "bytes_written"}}``, kinds in order of requests, most first."""
        with self._lock:
            rows = {kind: dict(counts) for kind, counts in self._counts.items()}
        return dict(sorted(rows.items(), key=lambda item: -item[1]["requests"]))

    def _count(self, key: str | None, requests: int = 1, read: int = 0, written: int = 0) -> None:
        super()._count(key, requests, read, written)
        if key is None:  # a listing's further pages
            return
        kind = key_kind(key)
        with self._lock:
            counts = self._counts.get(kind)
            if counts is None:
                counts = self._counts[kind] = {"requests": 0, "bytes_read": 0, "bytes_written": 0}
            counts["requests"] += requests
            counts["bytes_read"] += read
            counts["bytes_written"] += written


def cpu_count() -> int:
    """Cores, as the local runtime counts them (its default concurrency per function)."""
    return os.cpu_count() or 1
