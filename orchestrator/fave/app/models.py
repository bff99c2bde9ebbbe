"""Request bodies at the function's boundary (pydantic): the HTTP API's and the upload sidecar's.

Unknown fields are refused (a misspelt ``qeury`` is a 400 naming it, never silently dropped). Further
request fields, which the pipeline's stages may read (``fave run --input`` on the CLI), go in ``extra``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

RESERVED = ("video_uri", "query", "profile")


class RequestOptions(BaseModel):
    """What a request may set besides its video: the query, the profile and extra fields."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query: str | None = Field(None, max_length=1000, description="what to look for, e.g. 'find scenes with cars'")
    profile: str | None = Field(
        None, min_length=1, max_length=64, description="a profile of pipeline.yaml (default: FAVE_DEFAULT_PROFILE)"
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="further request fields, passed to every stage")

    @field_validator("extra")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(value) & set(RESERVED))
        if clash:
            raise ValueError(f"set {', '.join(clash)} at the top level, not in extra")
        return value

    def request_input(self, video_uri: str, *, default_query: str | None, default_profile: str) -> dict[str, Any]:
        """The request input the orchestrator stores and every stage receives."""
        return {
            **self.extra,
            "video_uri": video_uri,
            "query": self.query if self.query else default_query,
            "profile": self.profile or default_profile,
        }


class StartRequest(RequestOptions):
    """``POST /requests``."""

    video_uri: str = Field(
        min_length=6, max_length=2048, description="the video, as s3://bucket/key", examples=["s3://bucket/a.mp4"]
    )

    @field_validator("video_uri")
    @classmethod
    def _s3_only(cls, value: str) -> str:
        # Only S3: a local path would let a caller read the orchestrator's own file system.
        bucket, _, key = value.removeprefix("s3://").partition("/")
        if not value.startswith("s3://") or not bucket or not key:
            raise ValueError("expected s3://bucket/key")
        return value


class CancelRequest(BaseModel):
    """``POST /requests/{id}/cancel`` (the body is optional)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field("cancelled by user", min_length=1, max_length=500)


class UploadSidecar(RequestOptions):
    """``{key}.json`` next to an upload: the same options as ``POST /requests``, without the video."""
