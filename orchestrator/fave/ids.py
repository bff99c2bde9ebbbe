"""Request ids: generated server-side, sortable by creation time, validated wherever they come back in."""

from __future__ import annotations

import re
import secrets
import time

from fave_shared.errors import ValidationError

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in ULIDs
_PATTERN = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def new_request_id(now: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, so ids sort by creation time."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def validate_request_id(value: str) -> str:
    """Return ``value`` if it is a well-formed id; otherwise raise ``ValidationError``.

    Only this exact shape is accepted, so an id can never address anything outside ``requests/{id}/``.
    """
    if not isinstance(value, str) or not _PATTERN.fullmatch(value):
        raise ValidationError(f"not a request id: {value!r} (expected 26 characters of Crockford base32)")
    return value


_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


def request_id_time(request_id: str) -> float:
    """When a request id was made (its ULID timestamp), in seconds since the epoch."""
    ms = 0
    for char in validate_request_id(request_id)[:10]:
        ms = ms * 32 + _VALUE[char]
    return ms / 1000.0
