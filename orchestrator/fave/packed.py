"""Arrays of ints as little-endian bytes: how a result-cache pack stores its arrays (``fave.cache``'s key index and
sources, ``fave.packlist``'s element ends), whatever the byte order of the machine that wrote or reads it."""

from __future__ import annotations

import sys
from array import array

_SWAP = sys.byteorder != "little"


def to_le(values: array[int]) -> bytes:
    """The little-endian bytes of ``values`` (``values`` is left as it is)."""
    if not _SWAP:
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def from_le(typecode: str, data: bytes) -> array[int]:
    """The ints of ``typecode`` whose little-endian bytes are ``data`` (``ValueError`` if its length is not a whole
    number of them)."""
    values = array(typecode, data)
    if _SWAP:
        values.byteswap()
    return values
