#!/usr/bin/env python3
"""Deployment size of every stage function: can it ship as a Lambda zip, or must it be a container image?

For each ``functions/<name>/requirements.txt`` the requirements are installed with ``uv pip install
--target`` into a temporary directory as Lambda would get them (CPython 3.12 manylinux_2_34 x86_64 wheels,
the python3.12 runtime of template.yaml; no bytecode), and the unzipped size is measured without
``__pycache__``/``*.pyc``, plus the function's own code. Lambda allows 250 MB unzipped for a zip package
*including its layers*, so a Zip function's total includes the shared layer (``shared/requirements.txt``
and ``fave_shared``); anything larger has to be a container image (10 GB), which bundles what the layer
holds. The table also shows the PackageType template.yaml gives each function and flags a Zip function
over the limit (exit status 1).

Usage::

    .venv/bin/python scripts/function_sizes.py [--json sizes.json] [--only transcribe detect] [--zipped]

Measured (python3.12 wheels, totals with the 7.8 MB layer): audio 217.5 MB, extract and split 192.1,
normalize 162.7, orchestrator 47.3, aggregate 7.8 (zip); detect 296.4 and transcribe 553.6 (images).

Runs on demand (it downloads wheels from PyPI on a cold uv cache); it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
ZIP_LIMIT_MB = 250.0
"""Lambda's limit on a function's unzipped deployment package, layers included."""
PYTHON_VERSION = "3.12"
PLATFORM = "x86_64-manylinux_2_34"
MB = 1_000_000
SHARED = ROOT / "shared"
TEMPLATE = ROOT / "template.yaml"


@dataclass
class FunctionSize:
    """What one function weighs once its requirements are installed."""

    name: str
    requirements: list[str]
    packages_mb: float = 0.0
    code_mb: float = 0.0
    largest: dict[str, float] = field(default_factory=dict)
    zipped_mb: float | None = None
    error: str | None = None
    #: The shared layer's size, counted towards a Zip function's limit (0 for an image: it bundles its own).
    layer_mb: float = 0.0
    #: ``PackageType`` in template.yaml ("Zip" / "Image"), None if the template has no such function.
    template_package: str | None = None

    @property
    def total_mb(self) -> float:
        return round(self.packages_mb + self.code_mb + self.layer_mb, 1)

    @property
    def deploy_as(self) -> str:
        if self.error:
            return "?"
        return "zip" if self.total_mb <= ZIP_LIMIT_MB else "container image"

    @property
    def problem(self) -> str | None:
        """Why the template's choice cannot deploy (a Zip function over the limit), else None."""
        if self.template_package == "Zip" and self.deploy_as == "container image":
            return f"template.yaml deploys it as Zip, but {self.total_mb:.1f} MB > {ZIP_LIMIT_MB:.0f} MB"
        return None


def parse_requirements(text: str) -> list[str]:
    """Requirement lines of a requirements.txt, without comments and blank lines."""
    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def tree_size(root: Path, skip_dirs: frozenset[str] = frozenset({"__pycache__"})) -> int:
    """Bytes of the files under ``root`` without ``skip_dirs`` and ``*.pyc`` (symlinks not followed)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for name in filenames:
            path = Path(dirpath) / name
            if not name.endswith(".pyc") and not path.is_symlink():
                total += path.stat().st_size
    return total


def deflated_size(root: Path) -> int:
    """Approximately the size of a zip of ``root`` (each file deflated at level 6, headers ignored)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".pyc"):
                continue
            comp = zlib.compressobj(6, zlib.DEFLATED, -15)
            with open(Path(dirpath) / name, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(comp.compress(chunk))
            total += len(comp.flush())
    return total


def largest_entries(root: Path, n: int = 5) -> dict[str, float]:
    """The ``n`` largest top-level entries (packages, ``*.libs`` folders) in MB, largest first."""
    sizes = {
        p.name: (tree_size(p) if p.is_dir() else p.stat().st_size) / MB
        for p in root.iterdir()
        if not p.name.endswith(".dist-info") and p.name != "__pycache__"
    }
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:n]
    return {k: round(v, 1) for k, v in top}


def function_code_size(folder: Path) -> int:
    """Bytes of the function's own files (what is zipped next to the packages)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def uv_binary() -> str:
    """The uv next to the running interpreter, else the one on PATH."""
    local = Path(sys.executable).with_name("uv")
    found = str(local) if local.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("uv not found (install it into the virtualenv: pip install uv)")
    return found


def measure(folder: Path, zipped: bool = False, requirements: Path | None = None) -> FunctionSize:
    """Install one function's requirements into a temporary directory and measure them."""
    requirements = requirements or folder / "requirements.txt"
    reqs = parse_requirements(requirements.read_text())
    size = FunctionSize(folder.name, reqs, code_mb=round(function_code_size(folder) / MB, 3))
    if not reqs:
        return size
    with tempfile.TemporaryDirectory(prefix=f"fave-size-{folder.name}-") as tmp:
        target = Path(tmp) / "package"
        cmd = [
            uv_binary(), "pip", "install", "--quiet", "--target", str(target),
            "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM, "--only-binary", ":all:",
            "-r", str(requirements),
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            size.error = (
                (run.stderr or run.stdout).strip().splitlines()[-1:][0] if (run.stderr or run.stdout) else "failed"
            )
            return size
        size.packages_mb = round(tree_size(target) / MB, 1)
        size.largest = largest_entries(target)
        if zipped:
            size.zipped_mb = round(deflated_size(target) / MB, 1)
    return size


_COLUMNS = f"{'function':<12} {'packages MB':>11} {'code MB':>8} {'layer MB':>8} {'total MB':>9} " + (
    f"{'zipped MB':>9}  {'deploy as':<20} {'template':<8} largest"
)


def format_row(s: FunctionSize) -> str:
    """One table line: sizes, how to deploy, the template's choice and the largest packages (or the error)."""
    zipped = "-" if s.zipped_mb is None else f"{s.zipped_mb:.1f}"
    largest = s.problem or s.error or ", ".join(f"{k} {v:.0f}" for k, v in s.largest.items())
    flag = s.deploy_as + (" (!)" if s.deploy_as == "container image" else "")
    sizes = f"{s.packages_mb:>11.1f} {s.code_mb:>8.2f} {s.layer_mb:>8.1f} {s.total_mb:>9.1f} {zipped:>9}"
    template = (s.template_package or "-") + (" !!" if s.problem else "")
    return f"{s.name:<12} {sizes}  {flag:<20} {template:<8} {largest}"


def format_table(sizes: list[FunctionSize]) -> str:
    """A plain-text table, one function per line, with a legend for the flags."""
    lines = [_COLUMNS, "-" * len(_COLUMNS), *(format_row(s) for s in sizes)]
    lines.append(f"(!) over Lambda's {ZIP_LIMIT_MB:.0f} MB unzipped limit (layers included): container image")
    if any(s.problem for s in sizes):
        lines.append("!!  template.yaml deploys it as a zip, which Lambda would reject")
    return "\n".join(lines)


def template_package_types(template: Path = TEMPLATE) -> dict[str, str]:
    """``{function folder name: PackageType}`` of the functions template.yaml deploys."""
    from fave.local.template import load_template  # the project's template reader (run with the project's venv)

    return {spec.code_uri.name: spec.package_type for spec in load_template(template).functions.values()}


def main(argv: list[str] | None = None) -> int:
    """Measure the selected functions, print a table, optionally write JSON; exit 0 even when some are big."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the sizes as JSON to this file")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these functions")
    parser.add_argument("--zipped", action="store_true", help="also estimate the zipped size (slower)")
    args = parser.parse_args(argv)

    folders = [*sorted(p.parent for p in FUNCTIONS.glob("*/requirements.txt")), ROOT / "orchestrator"]
    if args.only:
        folders = [f for f in folders if f.name in set(args.only)]
    packages = template_package_types()
    print("measuring the shared layer ...", file=sys.stderr, flush=True)
    layer = measure(SHARED, zipped=args.zipped)
    layer.code_mb = round(function_code_size(SHARED / "fave_shared") / MB, 3)
    sizes = []
    for folder in folders:
        print(f"measuring {folder.name} ...", file=sys.stderr, flush=True)
        size = measure(folder, zipped=args.zipped)
        size.template_package = packages.get(folder.name)
        if size.template_package != "Image":
            size.layer_mb = layer.total_mb
        sizes.append(size)
    print(format_table(sizes))
    print(f"shared layer: {layer.total_mb:.1f} MB ({', '.join(layer.largest) or layer.error})")
    if args.json:
        payload = [
            {**asdict(s), "total_mb": s.total_mb, "deploy_as": s.deploy_as, "problem": s.problem}
            | {"limit_mb": ZIP_LIMIT_MB}
            for s in sizes
        ]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if layer.error or any(s.error or s.problem for s in sizes) else 0


if __name__ == "__main__":
    sys.exit(main())
