"""Translate SAM templates to plain CloudFormation offline, exactly as ``sam validate`` does.

Runs with .venv-sam's interpreter (aws-sam-cli pins versions the project's .venv does not use), called by
``tests/support/sam.py``::

    .venv-sam/bin/python tests/support/sam_translate.py [--parameter NAME=VALUE ...] TEMPLATE [TEMPLATE ...]

Prints one JSON list, one entry per template: ``{"template": {...}}`` or ``{"error": "..."}``. Local code
paths become placeholder S3 locations and image functions a placeholder ImageUri (as in ``sam validate``);
managed policies are not looked up (no AWS account).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


class _NoManagedPolicies:
    """Stands in for samtranslator's ManagedPolicyLoader, which would call IAM."""

    def load(self) -> dict[str, str]:
        return {}


def translate(path: Path, parameters: dict[str, str]) -> dict[str, Any]:
    from samcli.lib.translate.sam_template_validator import SamTemplateValidator
    from samcli.yamlhelper import yaml_parse

    doc = yaml_parse(path.read_text())
    validator = SamTemplateValidator(
        doc,
        _NoManagedPolicies(),
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        parameter_overrides=parameters,
    )
    try:
        translated = validator.get_translated_template_if_valid()
    except Exception as exc:  # the translator's own errors name the resource and property
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"template": yaml_parse(translated)}


def main(argv: list[str]) -> int:
    parameters: dict[str, str] = {}
    paths: list[Path] = []
    args = iter(argv)
    for arg in args:
        if arg == "--parameter":
            name, _, value = next(args).partition("=")
            parameters[name] = value
        else:
            paths.append(Path(arg))
    json.dump([translate(path, parameters) for path in paths], sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
