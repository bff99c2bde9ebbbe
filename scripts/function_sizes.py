#!/usr/bin/env python3
"""Deployment size of every stage function: can it ship as a Lambda zip, or must it be a container image?

For each ``functions/<name>/requirements.txt`` the requirements are installed with ``uv pip install
--target`` into a temporary directory as Lambda would get them (CPython 3.11 manylinux x86_64 wheels,
no bytecode), and the unzipped size is measured without ``__pycache__``/``*.pyc``, plus the function's
own code. Lambda allows 250 MB unzipped for a zip package *including its layers*; anything larger has
to be a container image (10 GB). The shared layer (fave_shared, pydantic) is not counted here.

Usage::

    .venv/bin/python scripts/function_sizes.py [--json sizes.json] [--only transcribe detect] [--zipped]

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

    @property
    def total_mb(self) -> float:
        return round(self.packages_mb + self.code_mb, 1)

    @property
    def deploy_as(self) -> str:
        if self.error:
            return "?"
        return "zip" if self.total_mb <= ZIP_LIMIT_MB else "container image"


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


def measure(folder: Path, zipped: bool = False) -> FunctionSize:
    """Install one function's requirements into a temporary directory and measure them."""
    reqs = parse_requirements((folder / "requirements.txt").read_text())
    size = FunctionSize(folder.name, reqs, code_mb=round(function_code_size(folder) / MB, 3))
    if not reqs:
        return size
    with tempfile.TemporaryDirectory(prefix=f"fave-size-{folder.name}-") as tmp:
        target = Path(tmp) / "package"
        cmd = [
            uv_binary(), "pip", "install", "--quiet", "--target", str(target),
            "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM, "--only-binary", ":all:",
            "-r", str(folder / "requirements.txt"),
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            size.error = (
                (run.stderr or run.stdout).strip().splitlines()[-1:][0]
                if (run.stderr or run.stdout)
                else "failed"
            )
            return size
        size.packages_mb = round(tree_size(target) / MB, 1)
        size.largest = largest_entries(target)
        if zipped:
            size.zipped_mb = round(deflated_size(target) / MB, 1)
    return size


_COLUMNS = f"{'function':<12} {'packages MB':>11} {'code MB':>8} {'total MB':>9} " + (
    f"{'zipped MB':>9}  {'deploy as':<20} largest"
)


def format_row(s: FunctionSize) -> str:
    """One table line: sizes, how to deploy, and the largest packages (or the install error)."""
    zipped = "-" if s.zipped_mb is None else f"{s.zipped_mb:.1f}"
    largest = s.error or ", ".join(f"{k} {v:.0f}" for k, v in s.largest.items())
    flag = s.deploy_as + (" (!)" if s.deploy_as == "container image" else "")
    sizes = f"{s.packages_mb:>11.1f} {s.code_mb:>8.2f} {s.total_mb:>9.1f} {zipped:>9}"
    return f"{s.name:<12} {sizes}  {flag:<20} {largest}"


def format_table(sizes: list[FunctionSize]) -> str:
    """A plain-text table, one function per line, with a legend for the flag."""
    lines = [_COLUMNS, "-" * len(_COLUMNS), *(format_row(s) for s in sizes)]
    lines.append(f"(!) over Lambda's {ZIP_LIMIT_MB:.0f} MB unzipped limit (layers included): container image")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure the selected functions, print a table, optionally write JSON; exit 0 even when some are big."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the sizes as JSON to this file")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these functions")
    parser.add_argument("--zipped", action="store_true", help="also estimate the zipped size (slower)")
    args = parser.parse_args(argv)

    folders = sorted(p.parent for p in FUNCTIONS.glob("*/requirements.txt"))
    if args.only:
        folders = [f for f in folders if f.name in set(args.only)]
    sizes = []
    for folder in folders:
        print(f"measuring {folder.name} ...", file=sys.stderr, flush=True)
        sizes.append(measure(folder, zipped=args.zipped))
    print(format_table(sizes))
    if args.json:
        payload = [
            {**asdict(s), "total_mb": s.total_mb, "deploy_as": s.deploy_as, "limit_mb": ZIP_LIMIT_MB}
            for s in sizes
        ]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if any(s.error for s in sizes) else 0


if __name__ == "__main__":
    sys.exit(main())
