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
#: Where a request's source may be in the store's bucket (besides the upload prefix).
DEFAULT_INPUT_PREFIXES = ("uploads/", "inputs/")


@dataclass(frozen=True)
class Settings:
    """The function's configuration, read once per execution environment."""

    store_uri: str
    """Where requests live (``s3://bucket[/prefix]``); empty when a test injects the store."""
    pipeline_path: Path
    upload_prefix: str = DEFAULT_UPLOAD_PREFIX
    default_query: str | None = None
    default_profile: str = DEFAULT_PROFILE
    input_prefixes: tuple[str, ...] = DEFAULT_INPUT_PREFIXES
    """Bucket key prefixes a request's source may be under (like ``upload_prefix``; the upload prefix always may)."""
    self_function: str = ""
    """This function's own name, for the asynchronous self-invoke that takes a request's steps."""

    @property
    def source_prefixes(self) -> tuple[str, ...]:
        """Every prefix a source may be under: the input prefixes and the upload prefix."""
        return tuple(dict.fromkeys((*self.input_prefixes, self.upload_prefix)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``FAVE_STORE``, ``FAVE_PIPELINE``, ``FAVE_UPLOAD_PREFIX``, ``FAVE_INPUT_PREFIXES`` (comma
        separated), ``FAVE_DEFAULT_QUERY``, ``FAVE_DEFAULT_PROFILE`` and ``FAVE_SELF_FUNCTION`` (else Lambda's
        ``AWS_LAMBDA_FUNCTION_NAME``). A relative ``FAVE_PIPELINE`` is taken from the code root."""
        env = os.environ if environ is None else environ
        pipeline = Path(env.get("FAVE_PIPELINE") or DEFAULT_PIPELINE)
        if not pipeline.is_absolute():
            pipeline = CODE_ROOT / pipeline
        prefix = _folder(env.get("FAVE_UPLOAD_PREFIX") or DEFAULT_UPLOAD_PREFIX)
        inputs = env.get("FAVE_INPUT_PREFIXES")
        input_prefixes = (
            tuple(_folder(p) for p in inputs.split(",") if p.strip()) if inputs is not None else DEFAULT_INPUT_PREFIXES
        )
        return cls(
            store_uri=env.get("FAVE_STORE", "").strip(),
            pipeline_path=pipeline,
            upload_prefix=prefix,
            default_query=env.get("FAVE_DEFAULT_QUERY") or None,
            default_profile=env.get("FAVE_DEFAULT_PROFILE") or DEFAULT_PROFILE,
            input_prefixes=input_prefixes,
            self_function=(env.get("FAVE_SELF_FUNCTION") or env.get("AWS_LAMBDA_FUNCTION_NAME") or "").strip(),
        )


def _folder(prefix: str) -> str:
    prefix = prefix.strip()
    return prefix if prefix.endswith("/") else prefix + "/"
