"""The orchestrator's Lambda bundle (orchestrator/Makefile, as `sam build` runs it) holds no cli/, local/ or
web/ code, and the Lambda entry points import from it alone (with the shared layer), cold, without them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundle_leaves_out_the_cli_and_the_local_emulator_and_still_imports(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["make", "-s", "-f", str(ROOT / "orchestrator" / "Makefile"), "bundle-code", f"ARTIFACTS_DIR={bundle}"],
        check=True,
        cwd=tmp_path,
    )
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert "fave/app/handlers.py" in files and "pipeline.yaml" in files and "fave/core/engine.py" in files
    assert not [f for f in files if f.startswith(("fave/cli/", "fave/local/", "fave/web/")) or "__pycache__" in f]

    # Import every module of the bundle from the bundle and the layer only (site-packages stay for the
    # third-party wheels the bundle would carry): a module that needs cli/, local/ or web/ fails here.
    modules = sorted(
        ".".join(Path(f).with_suffix("").parts).removesuffix(".__init__") for f in files if f.endswith(".py")
    )
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    code += "assert not [m for m in sys.modules if m.startswith(('fave.cli', 'fave.local', 'fave.web'))]\n"
    code += f"import fave; assert fave.__file__.startswith({str(bundle)!r}), fave.__file__\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = f"{bundle}{os.pathsep}{ROOT / 'shared'}"
    done = subprocess.run(
        [sys.executable, "-c", code, *modules],
        env=env,
        cwd=bundle,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
