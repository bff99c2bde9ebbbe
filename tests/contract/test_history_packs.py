"""The run history's day packs and the alerts' markers under real concurrency, on the local store and the HTTP
moto server (whose conditional writes are atomic; see tests/contract/test_store_concurrency.py): readers packing
a day while a writer records lose no summary, and workers seeing the same failure at once send one alert."""

from __future__ import annotations

import json
import shlex
import threading
from pathlib import Path

from fave.alerts import Alerter
from fave.core.model import Failure, RequestState, RequestStatus, StageState
from fave.history import SEAL_MARGIN_S, day_end, day_of, read, record
from fave.keys import history_pack_key
from fave_shared.store import ObjectStore
from immutables import Map

TIMEOUT = 120
# (summaries, readers): the HTTP server does ~100 requests/s here, the local store thousands.
LOAD = {"local": (120, 3), "server": (12, 2), "localstack": (12, 2)}
T0 = 1_772_323_200.0 + 3600.0  # 2026-03-01 01:00 UTC


def _id(n: int) -> str:
    return f"01KJKB3Q00CV45NK{n:010d}"


def _ended(n: int, status: RequestStatus = RequestStatus.COMPLETED) -> RequestState:
    return RequestState(
        request_id=_id(n),
        input={},
        pipeline_digest="d",
        created_at=T0,
        status=status,
        started_at=T0,
        finished_at=T0 + n,
        stages=Map({"only": StageState(total=1)}),
        failure=Failure("only", None, "Boom", "boom") if status is RequestStatus.FAILED else None,
    )


def _load(store: ObjectStore) -> tuple[int, int]:
    name = "server" if "moto" in type(store).__name__.lower() or store.uri.startswith("s3://") else "local"
    return LOAD[name]


def test_readers_packing_a_day_while_it_is_written_lose_nothing(shared_store: ObjectStore) -> None:
    n, readers = _load(shared_store)
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(n):
                record(shared_store, _ended(i), "demo", now=T0 + i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def read_along() -> None:
        try:
            while not done.is_set():
                read(shared_store, T0 - 60, now=T0 + n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read_along) for _ in range(readers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert errors == []
    assert len(read(shared_store, T0 - 60, now=T0 + n)) == n
    # Readers sealing the day at once: one sealed pack with every summary.
    later = day_end(day_of(T0)) + SEAL_MARGIN_S + 1
    sealers = [threading.Thread(target=read, args=(shared_store, T0 - 60), kwargs={"now": later}) for _ in range(3)]
    for thread in sealers:
        thread.start()
    for thread in sealers:
        thread.join(TIMEOUT)
    pack = json.loads(shared_store.get(history_pack_key(day_of(T0))).data)
    assert pack["sealed"] is True and len(pack["summaries"]) == n


def test_workers_seeing_one_failure_at_once_send_one_alert(shared_store: ObjectStore, tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    command = f"cat >> {shlex.quote(str(sent))}; echo >> {shlex.quote(str(sent))}"
    alerters = [Alerter(None, command, shared_store, pipeline="demo") for _ in range(4)]
    barrier = threading.Barrier(len(alerters))

    def see(a: Alerter) -> None:
        barrier.wait(TIMEOUT)
        a.request_ended(_ended(1, RequestStatus.FAILED))

    threads = [threading.Thread(target=see, args=(a,)) for a in alerters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    for a in alerters:
        a.close()
    lines = [line for line in sent.read_text().splitlines() if line.strip()]
    assert len(lines) == 1
    assert json.loads(lines[0])["fave"]["request_id"] == _id(1)
    assert sum(len(a.delivered) for a in alerters) == 1
