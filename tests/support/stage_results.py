"""Reading what a stage handler returned when it declared an error terminal (``fave_shared.outcome``)."""

from __future__ import annotations

import re
from typing import Any

from fave_shared.outcome import StageError, stage_error


def terminal(result: Any, error_type: str | None = None, match: str | None = None) -> StageError:
    """The terminal error ``result`` reports; fails the test if it is an ordinary result, of another type, or
    its message does not match ``match`` (``re.search``)."""
    error = stage_error(result)
    assert error is not None, f"not an error result: {result!r}"
    assert error.terminal, f"an error result not marked terminal: {result!r}"
    if error_type is not None:
        assert error.error_type == error_type, error
    if match is not None:
        assert re.search(match, error.message), f"{match!r} not in {error.message!r}"
    return error
