"""Run the SAM translator (in .venv-sam) from tests that run in .venv.

``translate(doc_or_path, ...)`` returns the CloudFormation template SAM deploys. Tests that need it skip
with a clear reason when .venv-sam is missing (``./dev setup`` and ``./dev test`` always create it).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAM_VENV = ROOT / ".venv-sam"
SAM_PYTHON = SAM_VENV / "bin" / "python"
_SCRIPT = Path(__file__).with_name("sam_translate.py")


class TranslationError(AssertionError):
    """The SAM translator rejected a template (the message is the translator's)."""


def require_sam() -> Path:
    """.venv-sam's python, or skip the test with the reason."""
    if not SAM_PYTHON.exists():
        pytest.skip(f"{SAM_VENV.name} is missing: `./dev setup` creates it from requirements/sam.txt (aws-sam-cli)")
    return SAM_PYTHON


def translate_many(
    templates: Sequence[Mapping[str, Any] | Path], parameters: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Translate several templates in one .venv-sam process (starting one costs seconds).

    A template is a path or a parsed document (long-form intrinsics, e.g. from ``fave.template.load_yaml``).
    Raises ``TranslationError`` for the first one SAM rejects.
    """
    python = require_sam()
    with tempfile.TemporaryDirectory(prefix="fave-sam-") as tmp:
        paths = []
        for n, template in enumerate(templates):
            if isinstance(template, Path):
                paths.append(str(template))
            else:
                path = Path(tmp) / f"template-{n}.yaml"
                path.write_text(yaml.safe_dump(dict(template), sort_keys=False))
                paths.append(str(path))
        args = [str(python), str(_SCRIPT)]
        for name, value in (parameters or {}).items():
            args += ["--parameter", f"{name}={value}"]
        env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
        run = subprocess.run([*args, *paths], capture_output=True, text=True, env=env, timeout=300, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"sam_translate.py failed ({run.returncode}): {run.stderr.strip()[-2000:]}")
    results: list[dict[str, Any]] = json.loads(run.stdout)
    out = []
    for path, result in zip(paths, results, strict=True):
        if "error" in result:
            raise TranslationError(f"SAM rejects {path}: {result['error']}")
        out.append(result["template"])
    return out


def translate(template: Mapping[str, Any] | Path, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The CloudFormation that SAM makes of one template."""
    return translate_many([template], parameters)[0]


@functools.cache
def _translated_repo_template(text: str, parameters: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(translate(TEMPLATE, dict(parameters)))


def translated_template(parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The repository's template.yaml, translated (cached per process and text); a fresh copy each call."""
    key = tuple(sorted((parameters or {}).items()))
    return json.loads(_translated_repo_template(TEMPLATE.read_text(), key))  # type: ignore[no-any-return]
