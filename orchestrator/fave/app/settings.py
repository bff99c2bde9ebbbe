"""What the orchestrator function reads from its environment (see ``fave.app`` for the list)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The code root: ``orchestrator/`` in the repository, the function's ``LAMBDA_TASK_ROOT`` in the bundle.
CODE_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_PIPELINE = "pipeline.yaml"
DEFAULT_UPLOAD_PREFIX = "uploads/"
DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class Settings:
    """The function's configuration, read once per execution environment."""

    store_uri: str
    """Where requests live (``s3://bucket[/prefix]``); empty when a test injects the store."""
    pipeline_path: Path
    upload_prefix: str = DEFAULT_UPLOAD_PREFIX
    default_query: str | None = None
    default_profile: str = DEFAULT_PROFILE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``FAVE_STORE``, ``FAVE_PIPELINE``, ``FAVE_UPLOAD_PREFIX``, ``FAVE_DEFAULT_QUERY`` and
        ``FAVE_DEFAULT_PROFILE``. A relative ``FAVE_PIPELINE`` is taken from the code root."""
        env = os.environ if environ is None else environ
        pipeline = Path(env.get("FAVE_PIPELINE") or DEFAULT_PIPELINE)
        if not pipeline.is_absolute():
            pipeline = CODE_ROOT / pipeline
        prefix = env.get("FAVE_UPLOAD_PREFIX") or DEFAULT_UPLOAD_PREFIX
        return cls(
            store_uri=env.get("FAVE_STORE", "").strip(),
            pipeline_path=pipeline,
            upload_prefix=prefix if prefix.endswith("/") else prefix + "/",
            default_query=env.get("FAVE_DEFAULT_QUERY") or None,
            default_profile=env.get("FAVE_DEFAULT_PROFILE") or DEFAULT_PROFILE,
        )
