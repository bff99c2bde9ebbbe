"""Start work on threads at the same moment (a barrier), for the concurrency contracts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
THREADS_TIMEOUT_S = 120  # a hang (a lock never released) fails the test instead of the whole run


def in_threads(n: int, work: Callable[[int], T], timeout: float = THREADS_TIMEOUT_S) -> list[T]:
    """``work(0..n-1)`` on n threads that start together (a barrier), their results in order."""
    barrier = threading.Barrier(n)

    def start_together(i: int) -> T:
        barrier.wait(timeout=timeout)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(start_together, range(n), timeout=timeout))
