"""Wire formats that cross a process or network boundary (pydantic models).

* ``StageEvent``: what the orchestrator sends a stage function (the Lambda invocation payload). docs/stages.md
  documents it, and docs/schemas/ has a JSON Schema for it and for what comes back.
* ``StageInput``: the base of every stage's single input model (``StageEvent.input``).
* ``DestinationEnvelope``: what Lambda (or the local runtime) delivers to the orchestrator when an
  asynchronous invocation ends (OnSuccess / OnFailure destinations).
* ``LambdaError``: the error payload a failed invocation returns.

Fields may be added freely; existing names are a contract.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WIRE_VERSION = 1


class TaskRef(BaseModel):
    """Which task an invocation is for. ``item`` is the fan-out index, None for a single-task stage."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    stage: str
    item: int | None = None
    attempt: int = Field(ge=1)


class StageEvent(BaseModel):
    """The invocation payload of every stage function."""

    model_config = ConfigDict(extra="allow")

    fave: Literal[1] = 1
    task: TaskRef
    mode: Literal["sync", "async"] | None = Field(
        default=None, description="how this attempt was invoked (None: not said, read as async)"
    )
    store: str = Field(description="URI of the object store the request lives in (dir path or s3://)")
    input: dict[str, Any] = Field(
        default_factory=dict,
        description='the stage\'s input (StageInput), or a {"$ref": key, ...} marker to it when the event would '
        "be over what Lambda carries (fave_shared.refs.event_limit)",
    )


class RequestInput(BaseModel):
    """The user's request. Unknown fields are kept (``fave run --input``) and passed to every stage."""

    model_config = ConfigDict(extra="allow")

    video_uri: str | None = None
    query: str | None = None
    profile: str = "default"


class StageInput(BaseModel):
    """Base of every stage's input model: subclass it and narrow ``item``/``needs``/``config``.

    * ``request``: the user's request input.
    * ``item`` / ``index``: the fan-out element and its position (None for single-task stages).
    * ``needs``: upstream outputs by stage name. For a per-item upstream of a per-item stage this is that
      item's output; for a stage that needs a whole fanned-out stage it is a list ordered by item, with
      None where an item failed within the tolerated failures or was skipped.
    * ``config``: the stage's ``config`` from pipeline.yaml merged with the request profile's overrides.
    """

    model_config = ConfigDict(extra="ignore")

    request: RequestInput = Field(default_factory=RequestInput)
    item: Any = None
    index: int | None = None
    needs: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


class LambdaError(BaseModel):
    """Lambda's error payload (``FunctionError`` set on the response)."""

    model_config = ConfigDict(extra="allow")

    errorMessage: str = ""  # noqa: N815 - Lambda's own field names
    errorType: str = "Error"  # noqa: N815
    stackTrace: list[str] = Field(default_factory=list)  # noqa: N815


class DestinationRequestContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    requestId: str  # noqa: N815
    functionArn: str  # noqa: N815
    condition: Literal["Success", "RetriesExhausted", "EventAgeExceeded"]
    approximateInvokeCount: int = 1  # noqa: N815


class DestinationResponseContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    statusCode: int = 200  # noqa: N815
    executedVersion: str = "$LATEST"  # noqa: N815
    functionError: str | None = None  # noqa: N815


class DestinationEnvelope(BaseModel):
    """Lambda's asynchronous-invocation destination record (version 1.0)."""

    model_config = ConfigDict(extra="allow")

    version: str = "1.0"
    timestamp: str
    requestContext: DestinationRequestContext  # noqa: N815
    requestPayload: dict[str, Any]  # noqa: N815
    responseContext: DestinationResponseContext  # noqa: N815
    responsePayload: Any = None  # noqa: N815

    @property
    def succeeded(self) -> bool:
        return self.requestContext.condition == "Success" and not self.responseContext.functionError
