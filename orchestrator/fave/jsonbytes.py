"""JSON encoding for the orchestrator's large values, with orjson: about ten times the standard library's
encoder on the lists of a large fan-out (a 10,000-element list in ~0.6 ms instead of ~8 ms), and the standard
library's exact behaviour wherever the two differ.

Where orjson differs from ``json`` (and what ``Encoder`` does about it):

- NaN and ±Infinity: ``json`` writes ``NaN``/``Infinity`` (or refuses them, ``allow_nan=False``), orjson writes
  ``null``, which would make a NaN and a None the same text (the same cache key). So a text that holds ``null`` is
  read back and compared with the value: unless they are equal, the standard library encodes the value with the
  caller's settings (the bytes and the errors of before). A text without a single ``null`` holds no NaN.
- integers beyond 64 bits, keys that are not strings, nesting deeper than 254, dataclasses and datetimes (told to
  pass through): orjson refuses them, so the standard library encodes them, converting or refusing as before.
- output: always UTF-8 (never ``\\u``-escaped) and floats as their shortest round trip (``1e-7`` for ``1e-07``):
  the same values, other bytes. Enums are written as their values (``json`` refuses those that are not also
  ``str`` or ``int``).

Decoding stays with the standard library (orjson reads an integer beyond 64 bits as a float, silently), except
for a document ``tagged`` says orjson wrote exactly: it has no such integer, and orjson reads it (``loads``).
"""

from __future__ import annotations

import json
import marshal
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import orjson

_PASS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_NULL = b"null"


class Encoder:
    """Compact JSON bytes of a value: orjson's where they mean the same as the standard library's with these
    settings, the standard library's otherwise (see the module docs). Thread-safe, no state."""

    __slots__ = ("_option", "_stdlib")

    def __init__(self, *, sort_keys: bool = False, ensure_ascii: bool = True, allow_nan: bool = True) -> None:
        self._option = _PASS | (orjson.OPT_SORT_KEYS if sort_keys else 0)
        self._stdlib = json.JSONEncoder(
            separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=allow_nan
        )

    def exact(self, value: Any) -> bytes | None:
        """orjson's bytes of ``value`` if they read back as ``value`` (JSON-equal), else None."""
        try:
            data = orjson.dumps(value, option=self._option)
        except TypeError:  # orjson.JSONEncodeError: something only the standard library writes (or refuses)
            return None
        if _NULL in data and orjson.loads(data) != value:  # a non-finite float (or a tuple: merely unsure)
            return None
        return data

    def pieces(self, values: Iterable[Any]) -> Iterator[bytes]:
        """orjson's bytes of each of ``values``, one at a time: for the elements of a list that ``exact`` wrote (then
        each element's bytes are exact too, and are the list's text between its commas). Lazy: 10,000 of them kept
        at once cost ~25 ms here (each made in a buffer of 1 KB or more, then shrunk), one at a time ~1 ms."""
        return map(partial(orjson.dumps, option=self._option), values)

    def encode(self, value: Any) -> bytes:
        """Raises ``TypeError`` or ``ValueError`` as the standard library's encoder would."""
        data = self.exact(value)
        return data if data is not None else self._stdlib.encode(value).encode()

    def text(self, value: Any) -> str:
        """``encode`` as a string, for text that is composed further."""
        data = self.exact(value)
        return data.decode() if data is not None else self._stdlib.encode(value)

    def tagged(self, doc: dict[str, Any]) -> bytes:
        """``encode`` of a non-empty document, with a first member saying so when orjson wrote them exactly: then
        ``loads`` reads them with orjson (about twice the standard library's speed). The member is read back."""
        data = self.exact(doc) if doc else None
        if data is None:
            return self._stdlib.encode(doc).encode()
        return _TAG + data[1:]


_TAG = b'{"orjson":1,'


def loads(data: bytes) -> Any:
    """A JSON document's value: orjson reads one ``Encoder.tagged`` wrote exactly, the standard library anything
    else. Raises ``ValueError`` (or ``UnicodeDecodeError``, ``RecursionError``) on what is not JSON."""
    if data.startswith(_TAG):
        return orjson.loads(data)
    return json.loads(data)


def same_json(a: Any, b: Any) -> bool:
    """Whether two values that ``==`` finds equal are the same JSON value to a cache key, which ``==`` is not sure of
    (it takes 1, 1.0 and true, and 0.0 and -0.0, for one another): their orjson texts are compared (dicts' key
    orders too: a false "differs" only costs a key), or, for values orjson refuses, their ``marshal`` bytes
    (version 2: no back-references), which tell every type apart. Never compares a NaN (``==`` says it differs)."""
    try:
        return orjson.dumps(a) == orjson.dumps(b)
    except TypeError:
        return marshal.dumps(a, 2) == marshal.dumps(b, 2)
