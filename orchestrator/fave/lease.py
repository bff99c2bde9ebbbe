"""One writer per request at a time: a short lease object, kept alive by its holder while it works.

Why, now that commits are copy-on-write (a writer that loses the state.json race leaves nothing visible): two
writers of one request are *correct* but wasteful and surprising. Both would dispatch what they decided, so the
loser's invocations run for nothing (a second ``fave resume`` of the same request dispatching every unfinished
task again), and concurrent Lambda completions would conflict on state.json O(concurrency) times. The lease
turns that into one writer applying batches.

* ``requests/{id}/metadata/lease.json`` is created with ``If-None-Match: *`` and holds the owner and an
  expiry ``now + ttl`` (``LEASE_TTL_S``, short). The holder renews it (``If-Match`` on the etag it wrote) every
  ``ttl / 3`` from a background thread while it works, including while a synchronous stage runs inline, so a
  live holder never loses it, and a holder that died (SIGKILL, Lambda timeout) blocks its request for at most
  one ttl, not for a whole function timeout.
* An expired lease is taken over with ``If-Match``. A local driver's lease also names its host and pid, so a
  ``fave resume`` on the same machine takes over at once from a driver process that no longer exists.
* Released by deleting it, unless a renewal found it taken over (then it is someone else's).

The mailbox for events that arrive while the lease is held lives in ``fave.app.exclusive`` (Lambda only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from fave_shared.errors import ConflictError, FaveError, NotFoundError
from fave_shared.store import ObjectStore

from fave.clock import Clock
from fave.keys import lease_key

__all__ = ["LEASE_TTL_S", "Keeper", "Lease", "LeaseHeldError", "Leases"]

log = logging.getLogger("fave.lease")

#: How long a lease lasts without renewal: the longest a dead holder can block its request.
LEASE_TTL_S = 30.0
_HOST = os.uname().nodename  # socket.gethostname(), without importing socket on every command's path


class LeaseHeldError(ConflictError):
    """Another live process or invocation holds the request's lease."""


@dataclass(frozen=True)
class Lease:
    request_id: str
    owner: str
    expires_at: float
    etag: str = ""
    ttl_s: float = LEASE_TTL_S


def _alive_elsewhere(record: dict[str, Any]) -> bool:
    """False when the record names a process of this host that no longer exists (it cannot renew)."""
    if record.get("host") != _HOST or not isinstance(record.get("pid"), int):
        return True
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class Leases:
    """Leases on requests in one store."""

    def __init__(self, store: ObjectStore, clock: Clock, *, local_process: bool = False) -> None:
        """``local_process``: the holder is this OS process (a CLI driver), so the lease records its host and
        pid and a dead driver's lease on this host can be taken over before it expires."""
        self.store = store
        self.clock = clock
        self.local_process = local_process

    def _body(self, lease: Lease, now: float) -> bytes:
        record: dict[str, Any] = {"owner": lease.owner, "expires_at": lease.expires_at, "taken_at": now}
        if self.local_process:
            record.update(host=_HOST, pid=os.getpid())
        return json.dumps(record).encode()

    def try_acquire(self, request_id: str, duration_s: float = LEASE_TTL_S) -> Lease | None:
        """The lease on ``request_id`` for ``duration_s`` seconds, or None if someone else holds it."""
        key = lease_key(request_id)
        owner = secrets.token_hex(16)
        for _ in range(3):
            now = self.clock.now()
            lease = Lease(request_id, owner, now + duration_s, ttl_s=duration_s)
            body = self._body(lease, now)
            try:
                return replace(lease, etag=self.store.put(key, body, if_none_match=True, content_type=_JSON))
            except ConflictError:
                pass
            try:
                blob = self.store.get(key)
            except NotFoundError:
                continue  # released in between: try to create it again
            try:
                record = json.loads(blob.data)
                expires_at = float(record["expires_at"])
            except (ValueError, KeyError, TypeError):
                record, expires_at = {}, 0.0  # unreadable: treat as expired
            if expires_at > now and _alive_elsewhere(record):
                return None
            try:
                return replace(lease, etag=self.store.put(key, body, if_match=blob.etag, content_type=_JSON))
            except (ConflictError, NotFoundError):
                continue
        return None

    def check_free(self, request_id: str) -> None:
        """``LeaseHeldError`` if a live holder has the lease now (a hint for callers that hand the request to
        another process: that process still takes the lease itself)."""
        try:
            record = json.loads(self.store.get(lease_key(request_id)).data)
            expires_at = float(record["expires_at"])
        except (NotFoundError, ValueError, KeyError, TypeError):
            return
        if expires_at > self.clock.now() and _alive_elsewhere(record):
            raise LeaseHeldError(f"request {request_id} is being driven by another process or invocation")

    def renew(self, lease: Lease) -> Lease | None:
        """The lease extended by its ttl from now, or None if it was lost (taken over or deleted)."""
        now = self.clock.now()
        renewed = replace(lease, expires_at=now + lease.ttl_s)
        try:
            etag = self.store.put(
                lease_key(lease.request_id), self._body(renewed, now), if_match=lease.etag, content_type=_JSON
            )
        except (ConflictError, NotFoundError):
            return None
        return replace(renewed, etag=etag)

    def release(self, lease: Lease) -> None:
        self.store.delete(lease_key(lease.request_id))

    @contextlib.contextmanager
    def hold(self, request_id: str, ttl_s: float = LEASE_TTL_S) -> Iterator[Lease]:
        """Hold the lease while the block runs, renewing it in the background; ``LeaseHeldError`` if it is
        held by someone else."""
        lease = self.try_acquire(request_id, ttl_s)
        if lease is None:
            raise LeaseHeldError(
                f"request {request_id} is being driven by another process or invocation "
                f"(its lease, renewed while it works, expires {ttl_s:g} s after that one stops)"
            )
        keeper = Keeper(self, lease)
        try:
            yield lease
        finally:
            keeper.stop_and_release()


class Keeper:
    """Renews one lease every ttl / 3 on a daemon thread until stopped, then releases it (if still ours)."""

    def __init__(self, leases: Leases, lease: Lease) -> None:
        self.leases = leases
        self.lease: Lease | None = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fave-lease-{lease.request_id}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        return self.lease is None

    def _run(self) -> None:
        while self.lease is not None and not self._stop.wait(self.lease.ttl_s / 3):
            try:
                renewed = self.leases.renew(self.lease)
            except FaveError as exc:  # a transient store error: the next round tries again, within the ttl
                log.warning("lease renewal failed: %s", exc)
                continue
            if renewed is None:
                log.warning("lease on request %s was lost (taken over after expiring)", self.lease.request_id)
            self.lease = renewed

    def stop_and_release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.lease is not None:
            try:
                self.leases.release(self.lease)
            except FaveError as exc:  # it expires by itself within one ttl; say so, the request waits that long
                log.warning(
                    "lease on request %s not released (%s): it expires in %g s",
                    self.lease.request_id,
                    exc,
                    self.lease.ttl_s,
                )


_JSON = "application/json"
