"""The artifacts bucket of ``fave serve``: a local S3 endpoint that keeps its bucket in a folder and tells the
orchestrator about uploads, as the deployed bucket does.

``LocalBucket(bucket, mirror=LocalStore(DIR), upload_prefix="uploads/", notify=...)`` runs an ``S3Server``
(moto's S3 over HTTP, writes serialised) holding ``bucket``, and adds the two things a deployment has that moto
alone does not:

* **Persistence.** Every successful write to the bucket (PutObject, CopyObject, CompleteMultipartUpload,
  DeleteObject, DeleteObjects) is written through to ``mirror`` under the server's write lock, so the folder
  is the bucket, object for object, in the order S3 accepted the writes. At start the folder is loaded back
  into the bucket: requests survive a restart, and ``fave status --store DIR`` reads the same objects. The
  folder keeps each object's bytes only: content types and ``x-amz-meta-*`` metadata do not survive a restart
  (the upload trigger reads metadata when the object's event fires, which is at once).
* **S3 event notifications.** An object created under ``upload_prefix`` (the template's S3 event filter)
  calls ``notify`` with the event S3 sends Lambda (``Records`` of one ``ObjectCreated:*`` record: URL-encoded
  key, size, etag, a sequencer that grows with every write), after the write and still under the lock, so
  events leave in write order. ``notify`` must be quick (``fave serve`` queues an asynchronous invocation):
  the PUT waits for it.

Path-style addressing only (``http://HOST:PORT/bucket/key``), which boto3 and the AWS CLI use for a
``localhost`` / ``127.0.0.1`` endpoint. Other buckets may be created and used; they are neither mirrored nor
notified.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote_plus

from fave_shared.errors import FaveError
from fave_shared.store import LocalStore

from fave.local.s3server import S3Server

__all__ = ["LocalBucket", "Notify", "s3_event"]

log = logging.getLogger("fave.local.s3bucket")

#: Called with an S3 event (``{"Records": [...]}``) for each object created under the upload prefix.
Notify = Callable[[dict[str, Any]], None]

_OWNER = "FAVELOCAL"
# Query parameters of a PUT that change something other than the object's bytes (a part, its tags, its ACL...).
_NOT_AN_OBJECT_WRITE = frozenset(
    {"partNumber", "uploadId", "tagging", "acl", "retention", "legal-hold", "restore", "torrent", "attributes"}
)


def s3_event(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str,
    sequencer: str,
    event_name: str = "ObjectCreated:Put",
    region: str = "us-east-1",
    configuration_id: str = "fave-uploads",
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The event S3 sends a Lambda function for one created object (events/s3-upload.json's shape)."""
    now = datetime.now(UTC)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z",
                "eventName": event_name,
                "userIdentity": {"principalId": f"AWS:{_OWNER}"},
                "requestParameters": {"sourceIPAddress": source_ip},
                "responseElements": {"x-amz-request-id": sequencer[-16:], "x-amz-id-2": sequencer},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": configuration_id,
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": _OWNER},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    # S3 URL-encodes the key in events (a space as '+'); '/' stays as it is.
                    "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag, "sequencer": sequencer},
                },
            }
        ]
    }


class LocalBucket:
    """One bucket on a local S3 endpoint, mirrored into a folder, notifying uploads (see the module docs)."""

    def __init__(
        self,
        bucket: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mirror: LocalStore | None = None,
        upload_prefix: str | None = None,
        notify: Notify | None = None,
        region: str = "us-east-1",
        configuration_id: str = "fave-uploads",
    ) -> None:
        self.bucket = bucket
        self.mirror = mirror
        self.upload_prefix = upload_prefix
        self.region = region
        self._notify = notify
        self._configuration_id = configuration_id
        self._server = S3Server(host, port, after_write=self._after_write)
        self._backend: Any = None
        # S3's sequencer: hex that grows with every event of a key; time-based, so it also grows across restarts.
        self._sequence = itertools.count()
        self._notified = 0
        self._lock = threading.Lock()
        self.loaded = 0
        """How many objects ``start`` loaded back from the mirror folder."""

    # -- life ---------------------------------------------------------------------------------------------

    def start(self) -> LocalBucket:
        """Create the bucket, load the mirror folder into it, then serve (``OSError`` if the port is taken)."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        self._backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        if self.bucket not in s3_backends.bucket_accounts:
            self._backend.create_bucket(self.bucket, self.region)
        if self.mirror is not None:
            self.loaded = self._load(self.mirror)
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> LocalBucket:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint URL, ``http://HOST:PORT`` (for boto3's ``endpoint_url`` and ``--endpoint-url``)."""
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def notified(self) -> int:
        """How many upload events were sent so far."""
        return self._notified

    # -- the write hook (under the server's write lock) ----------------------------------------------------

    def _after_write(self, method: str, path: str, query: str, status: int) -> None:
        bucket, _, raw_key = path.lstrip("/").partition("/")
        if bucket != self.bucket:
            return
        # PATH_INFO is the URL-decoded path as latin-1 text (PEP 3333): its bytes are the key's UTF-8.
        key = raw_key.encode("latin-1", "replace").decode("utf-8", "replace")
        params = parse_qs(query, keep_blank_values=True)
        try:
            if not key:
                if method == "POST" and "delete" in params:  # DeleteObjects: which keys, the backend knows
                    self._forget_deleted()
                return
            if method == "PUT" and not _NOT_AN_OBJECT_WRITE.intersection(params):
                self._created(key, "ObjectCreated:Put")
            elif method == "POST" and "uploadId" in params:
                self._created(key, "ObjectCreated:CompleteMultipartUpload")
            elif method == "DELETE" and self.mirror is not None and not {"uploadId", "tagging"} & set(params):
                self.mirror.delete(key)
        except FaveError as exc:  # e.g. a key a folder cannot hold (`a` and `a/b`): the bucket still has it
            log.warning("s3://%s/%s: not mirrored into %s: %s", self.bucket, key, self._mirror_root(), exc)
        except Exception:  # never fail S3's answer for the mirror or a notification
            log.exception("s3://%s/%s: after %s", self.bucket, key, method)

    def _created(self, key: str, event_name: str) -> None:
        obj = self._backend.get_object(self.bucket, key)
        if obj is None:
            return
        if self.mirror is not None:
            self.mirror.put(key, bytes(obj.value))
        prefix = self.upload_prefix
        if self._notify is None or prefix is None or not key.startswith(prefix):
            return
        sequencer = f"{time.time_ns():016X}{next(self._sequence) % 0x10000:04X}"
        event = s3_event(
            self.bucket,
            key,
            size=int(obj.size),
            etag=str(obj.etag).strip('"'),
            sequencer=sequencer,
            event_name=event_name,
            region=self.region,
            configuration_id=self._configuration_id,
        )
        self._notify(event)
        with self._lock:
            self._notified += 1

    def _forget_deleted(self) -> None:
        if self.mirror is None:
            return
        present = set(self._backend.get_bucket(self.bucket).keys)
        for key in list(self.mirror.list("")):
            if key not in present:
                self.mirror.delete(key)

    def _load(self, mirror: LocalStore) -> int:
        count = 0
        for key in mirror.list(""):
            try:
                data = mirror.get(key).data
            except FaveError as exc:  # deleted meanwhile, or a link planted in the folder: not an object
                log.warning("%s: %s not loaded: %s", mirror.root, key, exc)
                continue
            self._backend.put_object(self.bucket, key, data, disable_notification=True)
            count += 1
        return count

    def _mirror_root(self) -> str:
        return str(self.mirror.root) if self.mirror is not None else "-"
