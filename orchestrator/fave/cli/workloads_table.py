"""The ``fave bench workloads`` report as a table: Rich's when it is installed, else plain text."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

COLUMNS = ("workload", "case", "compared", "fave", "baseline", "ratio", "notes")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def notes(result: dict[str, Any]) -> str:
    """The figures of a result that the fave / baseline columns do not show."""
    fave, base, name = result["fave"], result["baseline"], result["name"]
    same = "results equal" if result.get("results_equal") else "RESULTS DIFFER"
    if name == "W1":
        return (
            f"overhead {_num(fave['overhead_ms'])} ms/request; `fave run` process "
            f"{_num(fave['fave_run_process_wall_s'])} s vs python {_num(base['process_wall_s'])} s; {same}"
        )
    if name == "W2":
        return (
            f"orchestrator CPU {_num(fave['orchestrator_cpu_per_task_us'], 1)} us/task (driver thread "
            f"{_num(fave['driver_cpu_per_task_us'], 1)}); process CPU {_num(result['cpu_ratio'], 2)}x the pool's "
            f"({_num(base['cpu_per_task_us'], 1)} us/task); "
            f"{_num(fave['requests_per_task'], 3)} store req/task, {_num(fave['bytes_per_task'], 0)} B/task; {same}"
        )
    if name == "W3":
        envs = "" if fave["environments"] is None else f"{fave['environments']} environments; "
        return f"{envs}ideal {_num(base['ideal_wall_s'])} s; {same}"
    if name == "W4":
        return (
            f"first run {fave['first_run_status']} after {fave['first_run_bodies']} bodies; resume ran "
            f"{fave['resume_bodies']} bodies (ideal {fave['ideal_resume_bodies']}): {fave['reran_items']} again, "
            f"{fave['reran_after_success']} after a success, {fave['first_run_on_resume']} first; {same}"
        )
    if name == "W4R":
        return (
            f"{fave['bodies']} bodies (expected {fave['expected_bodies']}); thread pool "
            f"{_num(base['thread_pool_wall_s'])} s; {same}"
        )
    return same


def rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for result in report["workloads"]:
        metric = result["metric"]
        base_metric = "wall_s" if metric == "resume_wall_s" else metric
        ratio = result.get("ratio")
        out.append(
            (
                result["name"],
                result["case"],
                metric,
                _num(result["fave"][metric], 4),
                _num(result["baseline"][base_metric], 4),
                "-" if ratio is None else f"{ratio:.2f}x",
                notes(result),
            )
        )
    return out


def title(report: dict[str, Any]) -> str:
    return (
        f"fave bench workloads (scale {report['scale']:g}; {report['cpus']} CPUs, load average "
        f"{report['load_avg_1m_before']} before, {report['load_avg_1m_after']} after; {report['total_s']} s)"
    )


def plain(report: dict[str, Any]) -> str:
    """A fixed-width table; the notes column is left unpadded (it is the last)."""
    table = [COLUMNS, *rows(report)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS) - 1)]
    lines = [title(report)]
    for row in table:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def print_report(report: dict[str, Any]) -> None:
    if importlib.util.find_spec("rich") is None:
        print(plain(report))
        return
    # Imported by name: Rich is optional and not a dependency of the project.
    console: Any = importlib.import_module("rich.console").Console()
    table: Any = importlib.import_module("rich.table").Table(title=title(report))
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="right" if 2 < i < 6 else "left")
    for row in rows(report):
        table.add_row(*row)
    console.print(table)
