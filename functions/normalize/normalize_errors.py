"""Errors the normalize stage raises for input that retrying cannot fix."""

from __future__ import annotations

from fave_shared.errors import TerminalError


class MediaInputError(TerminalError):
    """The source is missing, not a video, corrupt, or over a profile limit.

    The message is the user-facing reason the orchestrator writes into state.json, so it names the file and
    the measured value next to the limit.
    """
