"""One error hierarchy for the whole project.

Every failure that crosses a seam (object store, invoker, stage) is one of these, so callers decide on
*retryable vs terminal* without knowing which backend raised it. Backend errors (botocore, OSError) are
wrapped at the seam that saw them and chained with ``raise ... from``.
"""

from __future__ import annotations


class FaveError(Exception):
    """Root of every error fave raises on purpose."""

    retryable: bool = False


class RetryableError(FaveError):
    """A transient failure: the same call may succeed later (throttling, 5xx, a dropped connection)."""

    retryable = True


class TerminalError(FaveError):
    """A failure that will not go away by retrying the same call."""


class NotFoundError(TerminalError):
    """The addressed object, request or function does not exist."""


class ConflictError(FaveError):
    """A conditional write lost a race (S3 412 PreconditionFailed or 409 ConditionalRequestConflict).

    Retryable in the sense that the caller should re-read and re-decide, never blindly re-send.
    """

    retryable = True


class ValidationError(TerminalError):
    """Input that can never be valid: a bad pipeline file, a malformed event, an unsafe id."""


class InvocationError(FaveError):
    """A function invocation failed before or outside the function's own code (throttle, missing function)."""
