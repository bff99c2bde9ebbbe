"""The invoker seam: run a template.yaml function by logical id, locally or on AWS Lambda.

* ``Invoker`` / ``InvokeResult``: the protocol (``fave.invoke.base``).
* ``LocalRuntime``: Lambda-like execution environments on this machine (``fave.invoke.local``).
* ``LambdaInvoker``: AWS Lambda through an injected boto3 client (``fave.invoke.aws``).

The two backends are imported on first use, so ``import fave.invoke`` pulls in neither pydantic nor boto3.
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
    from fave.invoke.local import FunctionStats, LocalRuntime

__all__ = [
    "MAX_ASYNC_PAYLOAD_BYTES",
    "MAX_SYNC_PAYLOAD_BYTES",
    "FunctionNotFoundError",
    "FunctionStats",
    "InvokeResult",
    "Invoker",
    "LambdaInvoker",
    "LocalRuntime",
    "RetryableInvocationError",
    "TerminalInvocationError",
]

_LAZY = {
    "LocalRuntime": "fave.invoke.local",
    "FunctionStats": "fave.invoke.local",
    "LambdaInvoker": "fave.invoke.aws",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
