"""Compare-and-swap under real concurrency: no lost updates, exactly one creator.

Threads run against the local store and the HTTP moto server (in-process moto is not atomic under
concurrency, see tests/support/stores.py), or LocalStack alone on ``--tier localstack``; processes (spawned,
as on macOS and in Lambda-like workers) against the local store, whose locks are ``flock``s shared by every
process on the machine.

Every increment appends ``"worker:i"`` to a log inside the counter object, so a lost update shows up twice:
as a count below the number of successful increments and as a missing log entry.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fave_shared.errors import ConflictError
from fave_shared.store import LocalStore, ObjectStore, get_json, put_json
from support.stores import cas_increment, local_cas_worker, local_create_worker
from support.threads import in_threads

T = TypeVar("T")
KEY = "requests/r1/metadata/counter.json"
# (threads, increments per thread): the HTTP server does ~100 requests/s here, the local store thousands.
THREAD_LOAD = {"local": (8, 25), "server": (6, 4), "localstack": (6, 4)}
PROCESSES = 4
TIMEOUT = 60  # seconds; a hang (a lock never released) fails the test instead of the whole run


@pytest.fixture(scope="module")
def spawn_pool() -> Iterator[Pool]:
    """A warm pool of spawned processes (spawn: nothing inherited, each child opens its own store)."""
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        pool.map(abs, range(PROCESSES))  # pay the interpreter start-up before any test's clock starts
        yield pool


def _assert_counter(store: ObjectStore, workers: list[str], per_worker: int) -> None:
    value, _ = get_json(store, KEY)
    expected = sorted(f"{w}:{i}" for w in workers for i in range(per_worker))
    assert value["n"] == len(expected)
    assert sorted(value["log"]) == expected


def test_cas_counter_from_threads(shared_store: ObjectStore, request: pytest.FixtureRequest) -> None:
    threads, per_thread = THREAD_LOAD[request.node.callspec.params["shared_store"]]
    put_json(shared_store, KEY, {"n": 0, "log": []}, if_none_match=True)
    conflicts = in_threads(threads, lambda t: cas_increment(shared_store, KEY, f"t{t}", per_thread))
    _assert_counter(shared_store, [f"t{t}" for t in range(threads)], per_thread)
    # Not a correctness condition, but without contention the test above proves nothing.
    assert sum(conflicts) > 0, "no compare-and-swap ever lost a race: the test did not exercise contention"


def test_create_only_has_one_winner_from_threads(shared_store: ObjectStore) -> None:
    threads = 8

    def create(t: int) -> bool:
        try:
            shared_store.put("race/once", f"t{t}".encode(), if_none_match=True)
        except ConflictError:
            return False
        return True

    won = in_threads(threads, create)
    assert won.count(True) == 1
    assert shared_store.get("race/once").data == f"t{won.index(True)}".encode()


def test_local_cas_counter_from_threads_with_separate_instances(tmp_path: Path) -> None:
    # Each thread opens its own LocalStore on the same root, as separate processes would.
    root = tmp_path / "store"
    put_json(LocalStore(root), KEY, {"n": 0, "log": []})
    in_threads(6, lambda t: cas_increment(LocalStore(root), KEY, f"t{t}", 20))
    _assert_counter(LocalStore(root), [f"t{t}" for t in range(6)], 20)


def test_local_cas_counter_from_processes(tmp_path: Path, spawn_pool: Pool) -> None:
    root, per_process = str(tmp_path / "store"), 20
    put_json(LocalStore(root), KEY, {"n": 0, "log": []}, if_none_match=True)
    jobs = [(root, KEY, f"p{p}", per_process) for p in range(PROCESSES)]
    spawn_pool.starmap_async(local_cas_worker, jobs).get(timeout=TIMEOUT)
    _assert_counter(LocalStore(root), [f"p{p}" for p in range(PROCESSES)], per_process)


def test_local_create_only_has_one_winner_from_processes(tmp_path: Path, spawn_pool: Pool) -> None:
    root = str(tmp_path / "store")
    keys = [f"race/{i:03d}" for i in range(200)]
    jobs: list[tuple[Any, ...]] = [(root, keys, f"p{p}") for p in range(PROCESSES)]
    results: list[list[str]] = spawn_pool.starmap_async(local_create_worker, jobs).get(timeout=TIMEOUT)
    winners = {key: f"p{p}" for p, won in enumerate(results) for key in won}
    assert sum(len(won) for won in results) == len(keys)  # every key created exactly once
    store = LocalStore(root)
    assert all(store.get(key).data == winners[key].encode() for key in keys)
    assert list(store.list("race/")) == keys


def test_fork_while_a_lock_is_held_does_not_keep_it_held(local_store: LocalStore) -> None:
    # A child forked while a thread holds a stripe lock inherits the lock's file descriptor; if the child
    # kept it open, the parent's release would not free the flock and writers would hang while the child
    # lives. LocalStore closes inherited lock descriptors in forked children.
    import time

    local_store.put("k", b"v0")
    fork = multiprocessing.get_context("fork")
    with local_store._locked("k"):
        child = fork.Process(target=time.sleep, args=(30,), daemon=True)
        child.start()
    try:
        writer = threading.Thread(target=local_store.put, args=("k", b"v1"), daemon=True)
        writer.start()
        writer.join(timeout=5)
        assert not writer.is_alive(), "put blocked on a lock the forked child inherited"
        assert local_store.get("k").data == b"v1"
    finally:
        child.kill()
        child.join()
