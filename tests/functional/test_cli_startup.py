"""What the ``fave`` command imports before it does anything: ``fave --help`` builds its parser without the
orchestrator, and ``fave run`` imports neither the AWS SDK, nor the Lambda entry points, nor what only other
commands use. Plus the shapes of ``fave bench startup`` and ``fave bench fanout`` (figures are never asserted:
they are benchmarks, the README has them).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from fave.cli import main as cli_main
from support import e2e

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ROOT / "benchmarks" / "chain" / "pipeline.yaml"


def imported_by(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    return e2e.cli_modules(tmp_path / "probe.json", *args)


def loaded(modules: set[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_help_builds_the_parser_without_the_orchestrator(tmp_path: Path) -> None:
    code, modules = imported_by(tmp_path, "--help")
    assert code == 0
    heavy = loaded(modules, "pydantic", "yaml", "boto3", "botocore", "fave.service", "fave.local", "fave.persistence")
    assert heavy == []


def test_run_imports_only_what_it_uses(tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, modules = imported_by(tmp_path, "run", str(CHAIN), "--pipeline", str(CHAIN), "--store", str(store), "--json")
    assert code == 0
    assert "fave.local.runtime" in modules and "fave.service" in modules  # it did run the chain
    unused = loaded(
        modules,
        "boto3",
        "botocore",
        "moto",
        "fave.app",
        "fave.invoke.aws",
        "fave.local.faults",
        "fave.cli.bench",
        "fave.cli.chaos",
        "fave.cli.graph",
        "fave_shared.schemas",
        "fave_shared.stage",
    )
    assert unused == []


def test_the_names_spelled_twice_agree() -> None:
    from fave.local import faults
    from fave.local import orchestrator as local_orchestrator
    from fave.status import UNREADABLE

    assert cli_main.DEFAULT_PIPELINE == local_orchestrator.DEFAULT_PIPELINE
    assert cli_main.UNREADABLE == UNREADABLE
    assert local_orchestrator._FAULTS_VAR == faults.ENV_VAR


def test_main_restores_the_callers_collector_thresholds(capsys: pytest.CaptureFixture[str]) -> None:
    before = gc.get_threshold()
    assert cli_main.main(["graph", "--pipeline", str(CHAIN)]) == 0
    assert "a" in capsys.readouterr().out
    assert gc.get_threshold() == before != cli_main.GC_THRESHOLDS


def bench(*args: str) -> dict[str, Any]:
    proc = e2e.fave("bench", *args, "--json", timeout=300)
    assert proc.code == 0, proc.describe()
    result: dict[str, Any] = proc.json
    return result


def test_bench_startup_reports_the_commands_and_the_bare_interpreter() -> None:
    result = bench("startup", "--repeat", "1")
    for field in ("python_s", "help_s", "run_s", "run_cpu_s", "run_import_s", "run_min_s", "run_max_s", "first_run_s"):
        assert isinstance(result[field], float) and result[field] > 0, field
    assert result["repeat"] == 1 and result["pipeline"] == "benchmarks/chain/pipeline.yaml"
    assert result["target_run_s"] == 0.25


def test_bench_fanout_reports_cpu_memory_a_baseline_and_traffic_by_object() -> None:
    result = bench("fanout", "--items", "300")
    # The README's contract, then the added fields.
    assert {"items", "wall_s", "tasks_per_s", "requests_per_task", "bytes_per_task"} <= set(result)
    assert result["items"] == 300 and result["status"] == "COMPLETED"
    assert result["driver_cpu_per_task_us"] > 0 and result["cpu_per_task_us"] > 0
    assert result["peak_rss_mb"] >= result["rss_at_start_mb"] > 0
    baseline = result["baseline"]
    assert baseline["cpu_per_task_us"] > 0 and baseline["wall_s"] > 0
    assert result["cpu_vs_baseline"] == pytest.approx(result["cpu_s"] / baseline["cpu_s"], rel=0.05)
    kinds = result["store_by_kind"]
    assert {"state", "task_shards", "final", "lease"} <= set(kinds)
    # Every request lands in one kind (no listing here runs past one page).
    total = sum(k["requests"] for k in kinds.values())
    assert total == pytest.approx(result["requests_per_task"] * 300, abs=1)
    assert kinds["final"]["bytes_written"] > 0 and kinds["task_shards"]["bytes_written"] > 0
