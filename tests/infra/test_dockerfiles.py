"""The container-image functions' Dockerfiles, checked without Docker (this machine has no daemon).

For every ``PackageType: Image`` function of template.yaml: the Dockerfile named in its Metadata exists, its
base image is Lambda's Python image for the runtime the Zip functions use, everything it COPYs exists in the
build context and survives .dockerignore, its CMD is the function's ``ImageConfig.Command``, and it
installs the function's and the shared layer's requirements and copies the shared package.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest
from fave.local.template import load_template, load_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
RAW = load_yaml(TEMPLATE.read_text())
IMAGES = sorted(lid for lid, spec in load_template(TEMPLATE).functions.items() if spec.package_type == "Image")


def dockerignore_excludes(context: Path, relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a pattern also covers what is below."""
    patterns = [
        line.strip()
        for line in (context / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    excluded = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if body.startswith("**/"):
            matched = any(fnmatch.fnmatchcase(part, body[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatchcase(prefix, body) for prefix in prefixes)
        if matched:
            excluded = not negate
    return excluded


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_the_heavy_stages_are_images() -> None:
    assert IMAGES == ["DetectFunction", "TranscribeFunction"]


@pytest.mark.parametrize("lid", IMAGES)
def test_dockerfile_builds_the_function(lid: str) -> None:
    resource = RAW["Resources"][lid]
    metadata, props = resource["Metadata"], resource["Properties"]
    context = (ROOT / metadata["DockerContext"]).resolve()
    dockerfile = context / metadata["Dockerfile"]
    assert dockerfile.is_file() and metadata["DockerTag"]
    steps = instructions(dockerfile)

    runtimes = {
        p["Properties"].get("Runtime") for p in RAW["Resources"].values() if p["Type"] == "AWS::Serverless::Function"
    }
    runtimes.discard(None)
    (runtime,) = runtimes  # one Python for every function
    assert ("FROM", f"public.ecr.aws/lambda/python:{runtime.removeprefix('python')}") in steps

    copied: list[str] = []
    for keyword, rest in steps:
        if keyword == "COPY":
            *sources, _dest = rest.split()
            for source in sources:
                matches = [p for p in context.glob(source) if p.exists()]
                assert matches, f"{dockerfile}: COPY {source}: nothing in the context {context}"
                for match in matches:
                    relative = match.relative_to(context).as_posix()
                    assert not dockerignore_excludes(context, relative), f"{relative} is excluded by .dockerignore"
                copied.append(source)

    folder = Path(metadata["Dockerfile"]).parent.as_posix()
    assert f"{folder}/requirements.txt" in copied and "shared/requirements.txt" in copied
    assert "shared/fave_shared" in copied and f"{folder}/*.py" in copied
    (cmd,) = [rest for keyword, rest in steps if keyword == "CMD"]
    assert json.loads(cmd) == props["ImageConfig"]["Command"]
    assert (ROOT / folder / "app.py").is_file()


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (".venv/lib/x.py", "tests/fixtures/scenes20.mp4", "functions/audio/app.py", "fave-artifacts/x"):
        assert dockerignore_excludes(ROOT, path), path
    for path in ("shared/fave_shared/stage.py", "functions/transcribe/app.py", "functions/detect/requirements.txt"):
        assert not dockerignore_excludes(ROOT, path), path
    assert dockerignore_excludes(ROOT, "shared/fave_shared/__pycache__/stage.cpython-311.pyc")
