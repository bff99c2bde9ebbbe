"""What a request's source *is*, for the result cache: the content behind the URI in its upload field.

The upload field (``trigger.upload.field``; the video pipeline's ``video_uri``) names a file or an object, and
the same name may hold other bytes tomorrow (a re-encoded video uploaded again under the same key). A cache key
that saw only the name would hand the old video's scenes to the new one, so the key sees the content instead:

* a local path (or ``file://``): the sha256 of the file's bytes, remembered per (path, size, mtime) so a
  process hashes a file once;
* ``s3://BUCKET/KEY`` inside the store's own bucket and prefix (where sources live as deployed: ``inputs/`` and
  ``uploads/`` of the stack's bucket): the object's ETag, one HEAD through the store (the orchestrator's role
  may read them; S3's ETag changes with every new body);
* anything else (another bucket, an http URL): unknown (None): the task is not cached, and the service logs why.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from fave_shared.errors import FaveError
from fave_shared.store import ObjectStore

__all__ = ["source_identity"]

_CHUNK = 1 << 20
_files: dict[tuple[str, int, int], str] = {}
_files_lock = threading.Lock()
_FILES_KEPT = 256


def _file_digest(path: Path) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _files_lock:
        known = _files.get(key)
    if known is not None:
        return known
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    digest = "sha256:" + h.hexdigest()
    with _files_lock:
        if len(_files) >= _FILES_KEPT:
            _files.clear()  # a long-lived process sees many sources: forget them all rather than grow
        _files[key] = digest
    return digest


def source_identity(uri: str, store: ObjectStore) -> str | None:
    """A text that changes whenever the content behind ``uri`` changes, or None when it cannot be known."""
    if uri.startswith("s3://"):
        base = store.uri.rstrip("/") + "/"
        if not base.startswith("s3://") or not uri.startswith(base):
            return None
        try:
            etag = store.head(uri[len(base) :])
        except FaveError:
            return None
        return None if etag is None else "etag:" + etag.strip('"')
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    elif "://" in uri:
        return None
    return _file_digest(Path(uri))
