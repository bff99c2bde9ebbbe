"""The request lease (fave.lease) on every store backend: one holder, renewal, takeover, dead local drivers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from fave.clock import ManualClock
from fave.keys import lease_key
from fave.lease import Keeper, Lease, LeaseHeldError, Leases
from fave_shared.store import ObjectStore

REQUEST = "01JD2ZK0000000000000000000"


def test_one_holder_at_a_time_and_release_lets_the_next_in(store: ObjectStore) -> None:
    clock = ManualClock(1000.0)
    leases = Leases(store, clock)
    first = leases.try_acquire(REQUEST, 30)
    assert first is not None and first.expires_at == 1030.0
    assert leases.try_acquire(REQUEST, 30) is None
    with pytest.raises(LeaseHeldError, match=REQUEST):
        leases.check_free(REQUEST)
    leases.release(first)
    assert store.head(lease_key(REQUEST)) is None
    leases.check_free(REQUEST)
    assert leases.try_acquire(REQUEST, 30) is not None


def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew_it(store: ObjectStore) -> None:
    clock = ManualClock(1000.0)
    leases = Leases(store, clock)
    dead = leases.try_acquire(REQUEST, 30)
    assert dead is not None
    clock.advance(29)
    assert leases.try_acquire(REQUEST, 30) is None  # still within its ttl
    clock.advance(2)
    taker = leases.try_acquire(REQUEST, 30)
    assert taker is not None and taker.owner != dead.owner
    assert leases.renew(dead) is None  # lost: the old holder learns it at its next renewal
    renewed = leases.renew(taker)
    assert renewed is not None and renewed.expires_at == clock.now() + 30


def test_the_keeper_renews_while_the_holder_works(store: ObjectStore) -> None:
    clock = ManualClock(1000.0)
    leases = Leases(store, clock)
    lease = leases.try_acquire(REQUEST, 0.3)  # renewed every 0.1 s of real time
    assert lease is not None
    keeper = Keeper(leases, lease)
    try:
        for _ in range(5):  # the clock moves past many ttls while the holder works: the lease stays
            time.sleep(0.15)
            clock.advance(0.2)
            assert Leases(store, clock).try_acquire(REQUEST, 0.3) is None
        assert not keeper.lost
    finally:
        keeper.stop_and_release()
    assert store.head(lease_key(REQUEST)) is None


def test_a_keeper_that_lost_its_lease_does_not_delete_the_new_holders(store: ObjectStore) -> None:
    clock = ManualClock(1000.0)
    leases = Leases(store, clock)
    lease = leases.try_acquire(REQUEST, 0.3)
    assert lease is not None
    stolen = threading.Event()

    class Stall(Leases):
        def renew(self, lease: Lease) -> Lease | None:
            stolen.wait(5)
            return super().renew(lease)

    keeper = Keeper(Stall(store, clock), lease)
    clock.advance(1)  # the holder stalls past its ttl; another takes over
    taker = leases.try_acquire(REQUEST, 30)
    assert taker is not None
    stolen.set()
    deadline = time.monotonic() + 5
    while not keeper.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    keeper.stop_and_release()
    assert keeper.lost
    assert json.loads(store.get(lease_key(REQUEST)).data)["owner"] == taker.owner


def test_a_dead_local_driver_is_taken_over_at_once(store: ObjectStore) -> None:
    clock = ManualClock(1000.0)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(child.stdout)
    leases = Leases(store, clock, local_process=True)
    lease = leases.try_acquire(REQUEST, 30)
    assert lease is not None
    record = json.loads(store.get(lease_key(REQUEST)).data)
    assert record["pid"] == os.getpid()
    assert leases.try_acquire(REQUEST, 30) is None  # this process is alive: no takeover

    record["pid"] = dead_pid  # as if a driver that exited (SIGKILL) had written it
    store.put(lease_key(REQUEST), json.dumps(record).encode())
    assert Leases(store, clock, local_process=True).try_acquire(REQUEST, 30) is not None
