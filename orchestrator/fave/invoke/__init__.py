"""The invoker seam: run a function by logical id, wherever it is deployed.

* ``Invoker`` / ``InvokeResult``: the protocol (``fave.invoke.base``).
* ``LambdaInvoker``: AWS Lambda through an injected boto3 client (``fave.invoke.aws``).
* ``OpenFaaSInvoker``: an OpenFaaS gateway over HTTP (``fave.invoke.openfaas``; ``FAVE_INVOKER=openfaas``).
* The local backend, ``fave.local.runtime.LocalRuntime``, lives with the local Lambda emulator (never shipped
  to Lambda).

``LambdaInvoker`` and ``OpenFaaSInvoker`` are imported on first use, so ``import fave.invoke`` pulls in neither
pydantic nor boto3.
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
    from fave.invoke.openfaas import OpenFaaSInvoker

__all__ = [
    "MAX_ASYNC_PAYLOAD_BYTES",
    "MAX_SYNC_PAYLOAD_BYTES",
    "FunctionNotFoundError",
    "InvokeResult",
    "Invoker",
    "LambdaInvoker",
    "OpenFaaSInvoker",
    "RetryableInvocationError",
    "TerminalInvocationError",
]


_LAZY = {"LambdaInvoker": "fave.invoke.aws", "OpenFaaSInvoker": "fave.invoke.openfaas"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
