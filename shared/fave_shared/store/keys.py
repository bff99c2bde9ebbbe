"""Object-key validation shared by every store backend.

A key is a ``/``-separated relative path such as ``requests/{id}/metadata/state.json``. Every backend
validates every key on every call, so no key can climb out of a ``LocalStore`` root or an ``S3Store``
prefix, whatever a caller (or a request id taken from an event) puts in it.
"""

from __future__ import annotations

import re

from fave_shared.errors import ValidationError

__all__ = ["MAX_KEY_BYTES", "join_key", "validate_key", "validate_prefix"]

#: S3's limit on the UTF-8 length of an object key; the local store enforces the same so both agree.
MAX_KEY_BYTES = 1024

# C0 controls, DEL and C1 controls: invisible in logs and consoles, and NUL truncates C paths.
# Backslash: a path separator on Windows, and an escape character nearly everywhere else.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def _check_chars(text: str, what: str) -> None:
    match = _FORBIDDEN.search(text)
    if match is not None:
        raise ValidationError(f"invalid object {what} {text!r}: contains forbidden character {match.group()!r}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # lone surrogates cannot be stored by S3 or a file system
        raise ValidationError(f"invalid object {what} {text!r}: not encodable as UTF-8") from e
    if size > MAX_KEY_BYTES:
        raise ValidationError(f"invalid object {what} {text[:40]!r}...: longer than {MAX_KEY_BYTES} bytes")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise ``ValidationError``.

    Rejected: empty keys, a leading ``/``, empty segments (``a//b``, a trailing ``/``), ``.`` and ``..``
    segments, backslashes, NUL and other control characters, text that is not valid UTF-8, and keys longer
    than ``MAX_KEY_BYTES``.
    """
    if not isinstance(key, str):
        raise ValidationError(f"invalid object key {key!r}: not a string")
    if not key:
        raise ValidationError("invalid object key '': empty")
    if key[0] == "/":
        raise ValidationError(f"invalid object key {key!r}: starts with '/'")
    _check_chars(key, "key")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValidationError(f"invalid object key {key!r}: has an empty, '.' or '..' segment")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it is a safe listing prefix, else raise ``ValidationError``.

    A prefix is a plain string prefix of keys (S3 semantics): ``""`` lists everything, ``"a/b/"`` lists the
    keys under ``a/b/``, and ``"a/b"`` lists ``a/b/...`` *and* ``a/bc``. Every complete segment (before the
    last ``/``) must be a valid key segment; the trailing partial segment may be anything a key segment may
    start with.
    """
    if not isinstance(prefix, str):
        raise ValidationError(f"invalid object prefix {prefix!r}: not a string")
    if not prefix:
        return prefix
    if prefix[0] == "/":
        raise ValidationError(f"invalid object prefix {prefix!r}: starts with '/'")
    _check_chars(prefix, "prefix")
    for segment in prefix.split("/")[:-1]:
        if segment in ("", ".", ".."):
            raise ValidationError(f"invalid object prefix {prefix!r}: has an empty, '.' or '..' segment")
    return prefix


def join_key(*parts: str) -> str:
    """Join key parts with ``/`` and validate the result (``join_key("requests", rid, "state.json")``).

    Use it whenever a part comes from outside (a request id, a stage name): a part such as ``..`` or
    ``/etc`` makes the whole key invalid instead of addressing something else.
    """
    return validate_key("/".join(parts))
