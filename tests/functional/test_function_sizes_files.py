"""scripts/function_sizes.py on files: folder sizes and the package types template.yaml gives. The pure helpers:
tests/unit/test_function_sizes.py."""

from __future__ import annotations

from pathlib import Path

from support.scripts import load_script

sizes = load_script("function_sizes")


def test_tree_size_skips_bytecode(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_bytes(b"x" * 100)
    (tmp_path / "pkg" / "b.pyc").write_bytes(b"x" * 1000)
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x" * 1000)
    (tmp_path / "lib.so").write_bytes(b"x" * 10)
    assert sizes.tree_size(tmp_path) == 110
    assert sizes.largest_entries(tmp_path) == {"pkg": 0.0, "lib.so": 0.0}


def test_template_package_types_come_from_template_yaml() -> None:
    types = sizes.template_package_types()
    assert types["transcribe"] == types["detect"] == "Image"
    assert types["audio"] == types["normalize"] == types["orchestrator"] == "Zip"
