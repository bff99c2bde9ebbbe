"""The list a result-cache pack was last written for, kept as its JSON text (``fave.cache``).

A re-run of a weekly list compares its 10,000 elements with the pack's by position (``cache.bulk_rows``). Decoding
the pack's list into 10,000 objects and comparing them (``==``, then their orjson texts: ``==`` takes 1, 1.0 and
true for one another) cost ~4.5 ms of the ~35 a cached re-run takes. So a pack's base keeps the list as the text
orjson wrote for it (``"list_text"``, a JSON string), with the end of each element in that text (``"list_ends"``:
little-endian uint32s, hex) and a digest of both (``"list_check"``); the reader encodes the new list once and
compares the two texts a run of elements at a time (``ListText.same``): a run of equal bytes from an element's
start to a separator is a run of equal elements, the same JSON values to a key (their texts are equal), found by
doubling the run, then halving it where it differs. A differing element's own text gives the new list's offset
of the next. ~1.5 ms for 10,000 elements of which 100 changed.

The ends are trusted only with their digest (a flipped bit would misplace every element after it: a wrong hit,
where a corrupt pack must be a miss); a list that orjson does not write exactly (a NaN, an integer beyond 64 bits,
a value only the standard library encodes) is kept as before, as a JSON array (``"list"``). The text is decoded
only when asked for as elements (``ListText`` is a sequence: a delta's patches, the tools).
"""

from __future__ import annotations

import hashlib
import operator
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate, repeat
from typing import Any, overload

import orjson

from fave.jsonbytes import Encoder
from fave.packed import from_le, to_le

_ENCODER = Encoder(ensure_ascii=False, allow_nan=False)
"""orjson's exact bytes (``Encoder.exact``) do not depend on ``ensure_ascii``/``allow_nan``, only on the key order
(not sorted, as the pack's own encoder): the text compared is the text written."""
_MAX_TEXT = 2**32 - 1


def _check(text: bytes, ends: bytes) -> str:
    return hashlib.sha256(text + b"\0" + ends).hexdigest()[:32]


def fields(elements: Sequence[Any]) -> dict[str, Any]:
    """A pack's members for its list: the text, ends and digest when orjson writes the list exactly, else the
    list itself (``"list"``)."""
    values = list(elements)
    text = _ENCODER.exact(values) if values else None
    if text is None or len(text) > _MAX_TEXT:
        return {"list": values}
    lengths = map(len, _ENCODER.pieces(values))
    ends = array("I", accumulate(map(operator.add, lengths, repeat(1))))  # element i ends at 1 + its text + i commas
    if ends[-1] != len(text) - 1:  # not where the whole list's text says: keep the list itself
        return {"list": values}
    raw = to_le(ends)
    return {"list_text": text.decode(), "list_ends": raw.hex(), "list_check": _check(text, raw)}


class ListText(Sequence[Any]):
    """A pack's list as its text: its length and ``same`` without decoding it; its elements decoded (once) when
    indexed."""

    __slots__ = ("_decoded", "_ends", "_text")

    def __init__(self, text: bytes, ends: array[int]) -> None:
        self._text = text
        self._ends = ends
        self._decoded: list[Any] | None = None

    @classmethod
    def read(cls, doc: dict[str, Any]) -> ListText | None:
        """The list of a pack document that holds it as text; None when it does not, or when its members are
        malformed or do not match their digest (then the pack is not used: a miss, never a wrong hit)."""
        text, ends_hex, check = doc.get("list_text"), doc.get("list_ends"), doc.get("list_check")
        if not (isinstance(text, str) and isinstance(ends_hex, str) and isinstance(check, str)):
            return None
        try:
            data, raw = text.encode(), bytes.fromhex(ends_hex)
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) % 4 or not raw or _check(data, raw) != check:
            return None
        ends = from_le("I", raw)
        if ends[-1] != len(data) - 1 or not data.startswith(b"[") or not data.endswith(b"]"):
            return None
        return cls(data, ends)

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._elements()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._elements())

    def _elements(self) -> list[Any]:
        if self._decoded is None:
            value = orjson.loads(self._text)
            if not isinstance(value, list) or len(value) != len(self._ends):
                raise ValueError("a pack's list text does not hold its elements")
            self._decoded = value
        return self._decoded

    def _start(self, i: int) -> int:
        return 1 if i == 0 else self._ends[i - 1] + 1

    def same(self, elements: Sequence[Any], text: bytes | None = None) -> list[bool] | None:
        """Per position (up to the shorter list), whether ``elements[i]`` is the same JSON value as this list's
        (``cache.same_values``' answer), from the two texts; None when ``elements`` has no exact orjson text.
        ``text``: that text (``_ENCODER.exact(list(elements))``), when the caller made it already."""
        new = text if text is not None else _ENCODER.exact(list(elements))
        if new is None:
            return None
        count = min(len(elements), len(self))
        equal = [False] * count
        if not count:
            return equal
        text, ends = self._text, self._ends
        last = count - 1  # the elements before it are compared with the comma after them (both lists go on)
        shift = 0  # the new text's offset of an element minus this text's

        def run_equal(i: int, j: int) -> bool:  # elements i..j-1 (j <= last) and their commas
            a, b = self._start(i), ends[j - 1] + 1
            return text[a:b] == new[a + shift : b + shift]

        i = 0
        while i < last:
            step, j = 1, i
            while j < last:  # double the run while it is equal
                k = min(j + step, last)
                if not run_equal(j, k):
                    break
                j, step = k, step * 2
            else:
                equal[i:j] = repeat(True, j - i)
                break
            lo, hi = j, min(j + step, last)  # the first element that differs is in lo..hi-1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if run_equal(lo, mid):
                    lo = mid
                else:
                    hi = mid
            equal[i:lo] = repeat(True, lo - i)
            piece = _ENCODER.exact(elements[lo])
            if piece is None:
                return None
            shift += len(piece) - (ends[lo] - self._start(lo))
            i = lo + 1
        a = self._start(last)
        piece = _ENCODER.exact(elements[last])
        if piece is not None and text[a : ends[last]] == piece and new[a + shift : a + shift + len(piece)] == piece:
            equal[last] = True
        return equal
