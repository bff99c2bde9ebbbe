"""The one fake Lambda context of the test suite: the parts of a Lambda context object that fave's handlers
and Powertools (Logger's ``inject_lambda_context``, Tracer, Metrics) read.

A real Lambda passes one per invocation: make a new ``LambdaContext()`` per call (each gets its own
``aws_request_id``). Stage handlers accept ``None`` as well (``fave_shared.stage`` then counts a 15-minute
budget from the start of the call); pass one to pin ``get_remaining_time_in_millis``.
"""

from __future__ import annotations

import uuid


class LambdaContext:
    """A Lambda context for ``function_name`` with ``remaining_ms`` left (fixed: it does not count down)."""

    function_version = "$LATEST"
    memory_limit_in_mb = 512
    log_stream_name = "2026/11/18/[$LATEST]0123456789abcdef"

    def __init__(self, function_name: str = "fave-OrchestratorFunction-test", *, remaining_ms: int = 300_000) -> None:
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.aws_request_id = f"test-{uuid.uuid4().hex}"
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
