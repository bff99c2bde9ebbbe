"""One background thread that runs callbacks at given times (async retry delays, thread-isolation timeouts).

Built for many short-lived timers that are mostly cancelled (one per thread-isolated invocation): scheduling
is a heap push under a lock, cancelling just clears the entry, and cancelled entries are dropped lazily.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# [when (monotonic), sequence, callback or None once cancelled]; a list so cancel() can clear it in place,
# and lists compare element-wise (when, then the unique sequence) without a Python-level __lt__.
TimerEntry = list[Any]


class Timer:
    """Runs ``callback()`` on its own daemon thread at ``when`` (``time.monotonic()`` clock)."""

    def __init__(self, name: str = "fave-timer") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[TimerEntry] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self._sleeping_until = math.inf
        self._closed = False
        self._scheduled = 0

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerEntry:
        """Schedule ``callback``; keep the returned entry to ``cancel`` it. Ignored once closed."""
        entry: TimerEntry = [when, next(self._sequence), callback]
        with self._lock:
            if self._closed:
                return entry
            self._scheduled += 1
            heap = self._heap
            while heap and heap[0][2] is None:  # drop cancelled entries as we go, keeping the heap small
                heapq.heappop(heap)
            heapq.heappush(heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif when < self._sleeping_until:
                self._cond.notify()
        return entry

    def size(self) -> int:
        """Entries held, cancelled ones included until they are dropped: what the timer costs in memory."""
        with self._lock:
            return len(self._heap)

    @property
    def scheduled(self) -> int:
        """Callbacks scheduled since the timer was made (diagnostics: what its users cost it)."""
        return self._scheduled

    @staticmethod
    def cancel(entry: TimerEntry) -> None:
        """Best effort: the callback may already be running. Callers that must know use their own claim."""
        entry[2] = None

    def close(self) -> None:
        """Stop the thread; pending callbacks never run."""
        with self._lock:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            due = self._wait_for_due()
            if due is None:
                return
            for callback in due:
                try:
                    callback()
                except Exception:
                    log.exception("timer callback %r failed", callback)

    def _wait_for_due(self) -> list[Callable[[], None]] | None:
        heap = self._heap
        with self._lock:
            while not self._closed:
                while heap and heap[0][2] is None:
                    heapq.heappop(heap)
                now = time.monotonic()
                if heap and heap[0][0] <= now:
                    due = []
                    while heap and heap[0][0] <= now:
                        callback = heapq.heappop(heap)[2]
                        if callback is not None:
                            due.append(callback)
                    return due
                self._sleeping_until = heap[0][0] if heap else math.inf
                self._cond.wait(None if not heap else self._sleeping_until - now)
                self._sleeping_until = math.inf
            return None
