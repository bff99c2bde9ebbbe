"""``fave.local.worker.decode_json``, the local runtime's decoder of events and responses, answers exactly as
``json.loads`` does: the same value, or the same error, whatever surrounds or follows the document."""

from __future__ import annotations

import json

import pytest
from fave.local.worker import decode_json

CASES = [
    b'{"a":1,"b":[true,null,"\\u00e9"]}',
    b'{"a": 1, "b": {"c": [1.5, -2e3]}}',
    b' {"a":1}',
    b'{"a":1} ',
    b"\n[1, 2]\n",
    b'"text"',
    b"1",
    b"NaN",
    b"null",
    b'{"a":1}x',
    b'{"a":1}{"b":2}',
    b"",
    b"  ",
    b"nope",
    b"[1,2",
    '{"é":"ü"}'.encode(),
]


def answer(decode: object, data: bytes) -> tuple[str, object]:
    assert callable(decode)
    try:
        return "value", decode(data)
    except json.JSONDecodeError as exc:
        return "error", (exc.msg, exc.pos)


@pytest.mark.parametrize("data", CASES)
def test_decode_json_answers_as_json_loads(data: bytes) -> None:
    assert answer(decode_json, data) == answer(json.loads, data)
