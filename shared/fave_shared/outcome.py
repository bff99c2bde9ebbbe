"""How a stage says that its error is terminal: in its result, not by the error's name.

A Lambda function that raises reports ``{"errorType", "errorMessage", "stackTrace"}`` and nothing else: no field
can say "retrying will not help". So the stage SDK does not raise a ``TerminalError``: it returns it, as

    {"$fave_error": {"errorType": "MediaInputError", "errorMessage": "...", "stackTrace": [...], "terminal": true}}

which the orchestrator turns into a failed attempt that is never retried (``fave.completions``). Lambda sees a
successful invocation, so it does not retry it either (asynchronous retries, ``MaximumRetryAttempts``). Any other
exception is raised as usual: a function error, retried by the pipeline's retry policy.

A stage written without the SDK may return the same object. ``stackTrace`` is a list of lines as Lambda's Python
runtime writes it (``traceback.format_list``), or absent.
"""

from __future__ import annotations

import traceback as tb
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ERROR_KEY = "$fave_error"


@dataclass(frozen=True, slots=True)
class StageError:
    """An error a stage reported: in its result (``terminal`` if it said so) or as a Lambda function error."""

    error_type: str
    message: str
    terminal: bool = False
    traceback: str | None = None


def terminal_result(exc: BaseException) -> dict[str, Any]:
    """The result a stage returns for ``exc``, an error retrying cannot fix."""
    frames = tb.format_list(tb.extract_tb(exc.__traceback__))
    return {
        ERROR_KEY: {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": frames,
            "terminal": True,
        }
    }


def stage_error(result: Any) -> StageError | None:
    """The error a stage's result reports, or None for an ordinary result. Cheap for ordinary ones: it runs for
    every completion."""
    if type(result) is not dict or ERROR_KEY not in result or len(result) != 1:
        return None
    body = result[ERROR_KEY]
    if not isinstance(body, Mapping):
        return None
    error = from_lambda_error(body)
    return StageError(error.error_type, error.message, body.get("terminal") is True, error.traceback)


def from_lambda_error(payload: Any) -> StageError:
    """A Lambda error payload (``errorType``, ``errorMessage``, ``stackTrace``) as a ``StageError``."""
    if not isinstance(payload, Mapping):
        return StageError("Error", str(payload))
    error_type = str(payload.get("errorType") or "Error")
    message = str(payload.get("errorMessage") or "").strip() or "(no message)"
    return StageError(error_type, message, False, _traceback_text(payload.get("stackTrace"), error_type, message))


def _traceback_text(stack: Any, error_type: str, message: str) -> str | None:
    if isinstance(stack, str):
        lines = [stack]
    elif isinstance(stack, list) and stack:
        lines = [str(line) for line in stack]
    else:
        return None
    body = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return f"Traceback (most recent call last):\n{body}{error_type}: {message}"


__all__ = ["ERROR_KEY", "StageError", "from_lambda_error", "stage_error", "terminal_result"]
