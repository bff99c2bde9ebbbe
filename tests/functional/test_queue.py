"""The admission queue (``fave.queue``) on a real local store: it survives a restart (a new ``AdmissionQueue``
over the same store sees everything), claims in order (priority, then oldest), dedupes by key, cools a failed
entry down with exponential backoff up to its max attempts (clock injected), skips paused entries, gives back a
dead worker's claim after its lease, releases on shutdown without counting an attempt, and keeps ``list``,
``claim`` and ``stats`` to the open entries' index."""

from __future__ import annotations

from pathlib import Path

import pytest
from fave.keys import queue_open_key, queue_open_prefix
from fave.queue import AdmissionQueue, QueueError
from fave_shared.errors import ConflictError
from fave_shared.store import LocalStore

T0 = 1_800_000_000.0
REQUEST = "01J0000000000000000000000A"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(local_store: LocalStore, clock: Clock) -> AdmissionQueue:
    return AdmissionQueue(local_store, "sales", clock=clock)


def test_a_restarted_queue_sees_every_entry_where_it_was(tmp_path: Path, clock: Clock) -> None:
    first = AdmissionQueue(LocalStore(tmp_path / "s"), "sales", clock=clock)
    a = first.add({"n": 1}, key="a")
    b = first.add({"n": 2}, priority=1)
    [claimed] = first.claim("w1")
    first.started(claimed.id, REQUEST)
    again = AdmissionQueue(LocalStore(tmp_path / "s"), "sales", clock=clock)
    assert {e.id: e.status for e in again.list()} == {a.id: "QUEUED", b.id: "RUNNING"}
    assert [e.request_id for e in again.running()] == [REQUEST]
    assert again.add({"n": 1}, key="a").id == a.id  # the key is still taken


def test_claims_go_by_priority_then_age(queue: AdmissionQueue, clock: Clock) -> None:
    added = []
    for n, priority in enumerate([3, 5, 1, 3, 1]):
        clock.now += 1
        added.append(queue.add({"n": n}, priority=priority))
    order = [e.input["n"] for e in queue.claim("w", limit=10)]
    assert order == [2, 4, 0, 3, 1]
    assert queue.claim("w") == []  # all claimed now


def test_a_batch_made_in_one_millisecond_is_claimed_in_its_row_order(queue: AdmissionQueue) -> None:
    queue.add_batch([{"input": {"n": n}} for n in range(40)])  # the clock does not move: one millisecond
    assert [e.input["n"] for e in queue.claim("w", limit=40)] == list(range(40))


def test_the_same_key_is_not_added_twice_while_open(queue: AdmissionQueue) -> None:
    first = queue.add({"n": 1}, key="sku-1")
    dup = queue.add({"n": 99}, key="sku-1", priority=1)
    assert dup.duplicate and dup.id == first.id and dup.input == {"n": 1}
    assert len(queue.list()) == 1
    [claimed] = queue.claim("w")
    queue.started(claimed.id, REQUEST)
    assert queue.add({"n": 2}, key="sku-1").id == first.id  # RUNNING: still a duplicate
    queue.finished(first.id, "COMPLETED")
    fresh = queue.add({"n": 3}, key="sku-1")  # DONE: a new entry
    assert not fresh.duplicate and fresh.id != first.id
    assert queue.resolve("sku-1").id == fresh.id


def test_an_add_that_died_before_its_marker_is_healed_by_the_next_add_of_its_key(
    queue: AdmissionQueue, local_store: LocalStore
) -> None:
    entry = queue.add({"n": 1}, key="sku")
    local_store.delete(queue_open_key("sales", entry.priority, entry.id))  # as if the add died just before it
    assert queue.claim("w") == []
    assert queue.add({"n": 1}, key="sku").duplicate
    assert [e.id for e in queue.claim("w")] == [entry.id]


def test_batch_dedupes_within_itself_and_refuses_a_bad_row_whole(queue: AdmissionQueue) -> None:
    rows = [{"input": {"n": i}, "key": f"k{i % 3}"} for i in range(9)]
    entries = queue.add_batch(rows, priority=2)
    assert len({e.id for e in entries}) == 3 and sum(not e.duplicate for e in entries) == 3
    with pytest.raises(QueueError, match=r"rows\[1\]\.priority"):
        queue.add_batch([{"input": {"n": 1}}, {"input": {"n": 2}, "priority": 9}])
    assert len(queue.list()) == 3


def test_a_failed_entry_cools_down_with_backoff_until_max_attempts(queue: AdmissionQueue, clock: Clock) -> None:
    e = queue.add({"n": 1}, max_attempts=3)
    waits = []
    for attempt in range(3):
        [claimed] = queue.claim("w")
        queue.started(claimed.id, REQUEST)
        after = queue.finished(e.id, "FAILED", error=f"boom {attempt}")
        if after.status == "QUEUED":
            waits.append(after.not_before - clock.now)
            clock.now = after.not_before - 1
            assert queue.claim("w") == []  # still cooling down
            clock.now += 1
    assert waits == [60.0, 120.0]
    final = queue.get(e.id)
    assert (final.status, final.attempts, final.error) == ("FAILED", 3, "boom 2")
    assert [x.id for x in queue.list(["failed"])] == [e.id]
    assert queue.stats().failed == 1
    assert queue.retry(e.id).status == "QUEUED"
    assert [x.id for x in queue.claim("w")] == [e.id]


def test_paused_entries_are_skipped_until_unpaused(queue: AdmissionQueue) -> None:
    queue.add({"n": 1}, key="a", priority=1)
    b = queue.add({"n": 2}, priority=5)
    queue.pause("a")
    assert [e.id for e in queue.claim("w")] == [b.id]
    queue.unpause("a")
    assert [e.input for e in queue.claim("w")] == [{"n": 1}]


def test_a_dead_workers_claim_is_claimable_after_its_lease(local_store: LocalStore, clock: Clock) -> None:
    queue = AdmissionQueue(local_store, "sales", clock=clock, lease_s=30)
    e = queue.add({"n": 1})
    assert [x.worker for x in queue.claim("dead")] == ["dead"]
    clock.now += 29
    assert queue.claim("alive") == []
    clock.now += 2
    assert [(x.id, x.worker) for x in queue.claim("alive")] == [(e.id, "alive")]


def test_release_on_shutdown_counts_no_attempt_and_keeps_the_request(queue: AdmissionQueue) -> None:
    e = queue.add({"n": 1})
    queue.claim("w")
    queue.started(e.id, REQUEST)
    released = queue.release(e.id)
    assert (released.status, released.attempts, released.request_id) == ("QUEUED", 0, REQUEST)
    [again] = queue.claim("w2")
    assert again.request_id == REQUEST  # the next worker resumes that request instead of starting one
    assert queue.started(again.id, REQUEST).status == "RUNNING"


def test_a_recurring_entry_comes_back_every_s_after_success(queue: AdmissionQueue, clock: Clock) -> None:
    e = queue.add({"n": 1}, key="weekly", every_s=7 * 86400)
    queue.claim("w")
    queue.started(e.id, REQUEST)
    after = queue.finished(e.id, "COMPLETED")
    assert (after.status, after.not_before) == ("QUEUED", clock.now + 7 * 86400)
    assert queue.add({"n": 1}, key="weekly").duplicate
    assert queue.claim("w") == []
    clock.now += 7 * 86400
    assert [x.id for x in queue.claim("w")] == [e.id]
    assert queue.stats().completed_24h == 0  # a week later, last week's success is out of the window


def test_stale_keyed_entries_are_queued_again(queue: AdmissionQueue, clock: Clock) -> None:
    e = queue.add({"n": 1}, key="sku")
    queue.claim("w")
    queue.started(e.id, REQUEST)
    queue.finished(e.id, "COMPLETED")
    clock.now += 3600
    assert queue.requeue_stale(7 * 86400) == []
    clock.now += 7 * 86400
    assert [x.id for x in queue.requeue_stale(7 * 86400)] == [e.id]
    assert [x.id for x in queue.claim("w")] == [e.id]


def test_remove_and_clear(queue: AdmissionQueue) -> None:
    a = queue.add({"n": 1}, key="a")
    b = queue.add({"n": 2}, max_attempts=1)
    queue.claim("w", limit=2)
    with pytest.raises(ConflictError, match="CLAIMED"):
        queue.remove("a")
    queue.finished(a.id, "COMPLETED")
    queue.finished(b.id, "FAILED")
    assert queue.clear("failed") == 1
    assert queue.remove("a").id == a.id
    assert queue.list() == []
    with pytest.raises(QueueError, match="no queue entry"):
        queue.retry("a")


def test_closed_entries_leave_the_claim_index(queue: AdmissionQueue, local_store: LocalStore) -> None:
    ids = [queue.add({"n": n}).id for n in range(5)]
    for claimed in queue.claim("w", limit=5):
        queue.finished(claimed.id, "COMPLETED")
    assert list(local_store.list(queue_open_prefix("sales"))) == []
    assert sorted(e.id for e in queue.list(["DONE"])) == sorted(ids)
    stats = queue.stats()
    assert (stats.depth, stats.completed_24h) == (0, 5)


def test_pipeline_names_cannot_leave_the_queue_prefix(local_store: LocalStore) -> None:
    with pytest.raises(ValueError, match="pipeline name"):
        AdmissionQueue(local_store, "../requests")
