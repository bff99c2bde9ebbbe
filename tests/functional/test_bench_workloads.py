"""``fave bench workloads`` as a command, at a small ``--scale``: the report's shape and the invariants that hold
whatever the machine's speed. No figure is asserted (the README has them, measured in one run)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fave.cli.workloads_table import plain
from support import e2e

SCALE = "0.1"
FIELDS = {"name", "case", "metric", "fave", "baseline", "ratio", "results_equal"}


def bench(*args: str) -> e2e.Result:
    return e2e.fave("bench", "workloads", *args, env=e2e.child_env(), timeout=180)


def check_shape(result: dict[str, Any]) -> None:
    assert set(result) >= FIELDS, result
    metric = result["metric"]
    fave, base = result["fave"], result["baseline"]
    base_value = base["wall_s" if metric == "resume_wall_s" else metric]
    assert fave[metric] > 0 and base_value > 0, result
    assert result["ratio"] == pytest.approx(fave[metric] / base_value, rel=0.01, abs=0.01), result
    assert isinstance(base["kind"], str) and base["kind"], result
    assert result["results_equal"] is True, result


def test_w1_and_w4_report_completed_resumes_that_ran_at_least_what_had_not_succeeded() -> None:
    proc = bench("--only", "w4,W1", "--scale", SCALE, "--json")
    assert proc.code == 0, proc.describe()
    doc = proc.json
    assert doc["scale"] == 0.1 and doc["sizes"]["chain_repeats"] == 5 and doc["sizes"]["fail_items"] == 100
    w1, *w4 = doc["workloads"]  # in the order of the workload list, whatever the order asked
    assert [r["name"] for r in doc["workloads"]] == ["W1", "W4", "W4"]
    for result in doc["workloads"]:
        check_shape(result)

    assert w1["result"] == {"v": 3, "path": ["a", "b", "c"]}
    assert w1["fave"]["requests"] == 5
    assert w1["fave"]["fave_run_process_wall_s"] > 0 and w1["baseline"]["process_wall_s"] > 0

    at_once, capped = (r["fave"] for r in w4)
    for fave, base in ((at_once, w4[0]["baseline"]), (capped, w4[1]["baseline"])):
        assert (fave["first_run_status"], fave["status"]) == ("FAILED", "COMPLETED")
        assert fave["failing_items"] == math.ceil(100 / 10)
        assert fave["first_run_failed_bodies"] >= 1  # the first run failed because an item failed
        assert fave["ideal_resume_bodies"] == base["bodies"] >= fave["failing_items"]
        # Every item without a successful body ran on the resume; whatever had succeeded and ran again is on top.
        assert fave["resume_bodies"] >= fave["ideal_resume_bodies"] + fave["reran_after_success"]
        assert fave["reran_after_success"] <= fave["reran_items"] <= fave["first_run_bodies"]
    # All dispatched at once: each failing item failed its first attempt, so none succeeded before the resume.
    assert at_once["resume_bodies"] >= at_once["failing_items"]
    # 32 at a time: what ran in the first run and was not recorded was in flight, at most max_concurrency.
    assert capped["max_concurrency"] == 32
    assert capped["reran_after_success"] <= capped["max_concurrency"]


def test_every_workload_reports_its_figures_and_prints_as_a_table() -> None:
    proc = bench("--scale", "0.05", "--json")
    assert proc.code == 0, proc.describe()
    doc = proc.json
    results = doc["workloads"]
    assert [r["name"] for r in results] == ["W1", "W2", "W2", "W2", "W3", "W3", "W3", "W4", "W4", "W4R"]
    w3 = [(r["fave"]["isolation"], r["fave"]["core_gate"]) for r in results if r["name"] == "W3"]
    assert w3 == [("process", True), ("thread", True), ("process", False)]
    assert [r["fave"]["items"] for r in results if r["name"] == "W2"] == doc["sizes"]["fanout"] == [5, 50, 500]
    for result in results:
        check_shape(result)
    for w2 in (r for r in results if r["name"] == "W2"):
        assert w2["fave"]["status"] == "COMPLETED"
        assert w2["fave"]["requests_per_task"] > 0 and w2["fave"]["bytes_per_task"] > 0
        assert w2["fave"]["cpu_per_task_us"] > 0 and w2["baseline"]["cpu_per_task_us"] > 0 and w2["cpu_ratio"] > 0
    (w4r,) = (r for r in results if r["name"] == "W4R")
    # Each failing item fails exactly once and is retried once, in the same run.
    assert w4r["fave"]["status"] == "COMPLETED"
    assert w4r["fave"]["bodies"] == w4r["fave"]["expected_bodies"] == 50 + 5
    assert w4r["baseline"]["bodies"] == 50

    table = plain(doc).splitlines()
    assert table[0].startswith("fave bench workloads (scale 0.05;")
    assert table[1].split()[:3] == ["workload", "case", "compared"]
    assert [line.split()[0] for line in table[2:]] == [r["name"] for r in results]
    assert all("results equal" in line for line in table[2:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "W1,W9"], "--only: unknown workload W9 (known: W1, W2, W3, W4, W4R)"),
        (["--only", ","], "--only: unknown workload (none)"),
        (["--scale", "0"], "--scale must be more than 0 and at most 10"),
        (["--scale", "many"], "invalid float value: 'many'"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    proc = bench(*args)
    assert proc.code == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fave: error: ") and message in proc.stderr
