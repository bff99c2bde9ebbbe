"""The invoker seam: run a function by logical id, wherever it is deployed.

* ``Invoker`` / ``InvokeResult``: the protocol (``fave.invoke.base``).
* ``LambdaInvoker``: AWS Lambda through an injected boto3 client (``fave.invoke.aws``).
* The local backend, ``fave.local.runtime.LocalRuntime``, lives with the local Lambda emulator (never shipped
  to Lambda).

``LambdaInvoker`` is imported on first use, so ``import fave.invoke`` pulls in neither pydantic nor boto3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fave.invoke.base import (
    MAX_ASYNC_PAYLOAD_BYTES,
    MAX_SYNC_PAYLOAD_BYTES,
    FunctionNotFoundError,
    Invoker,
    InvokeResult,
    RetryableInvocationError,
    TerminalInvocationError,
)

if TYPE_CHECKING:
    from fave.invoke.aws import LambdaInvoker

__all__ = [
    "MAX_ASYNC_PAYLOAD_BYTES",
    "MAX_SYNC_PAYLOAD_BYTES",
    "FunctionNotFoundError",
    "InvokeResult",
    "Invoker",
    "LambdaInvoker",
    "RetryableInvocationError",
    "TerminalInvocationError",
]


def __getattr__(name: str) -> Any:
    if name != "LambdaInvoker":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module("fave.invoke.aws").LambdaInvoker
