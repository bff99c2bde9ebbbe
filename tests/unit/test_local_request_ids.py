"""The local runtime's request ids and log stream names look like Lambda's: version-4 UUIDs, made without
importing uuid (which imports platform on every command's path)."""

from __future__ import annotations

import re
import uuid

from fave.local.runtime import _log_stream, _RequestIds, _uuid4


def test_uuid4_text_is_a_random_version_4_uuid() -> None:
    seen = set()
    for _ in range(2000):
        text = _uuid4()
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 2000


def test_request_ids_are_uuid_shaped_and_distinct() -> None:
    ids = _RequestIds()
    made = [ids() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(uuid.UUID(i).version == 4 for i in made)


def test_a_log_stream_is_named_as_lambda_names_it() -> None:
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", _log_stream())
