"""examples/sales, the bundled non-video pipeline (issue 11, requirement 6), end to end through ``fave run``.

A data DAG: load a CSV, then two parallel branches (totals; one asynchronous task per region), joined by
report. The figures are computed here again from the CSV, independently of the stages; the example's own
stage tests run too, as a user of the example would run them.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from fave.local.orchestrator import load_local_pipeline
from support import e2e

EXAMPLE = e2e.ROOT / "examples" / "sales"
PIPELINE = EXAMPLE / "pipeline.yaml"
SAMPLE = EXAMPLE / "data" / "sales.csv"


def fave(*args: str) -> e2e.Result:
    return e2e.fave(*args, env=e2e.child_env(), timeout=120)


def expected(path: Path, top: int) -> dict[str, object]:
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    per_product: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    units = 0
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    for row in rows:
        amount = int(row["units"]) * Decimal(row["unit_price"])
        revenue[row["region"]] += amount
        per_product[row["region"]][row["product"]] += amount
        units += int(row["units"])
    total = sum(revenue.values(), Decimal(0))
    ranked = sorted(revenue, key=lambda r: -revenue[r])
    return {
        "rows": len(rows),
        "units": units,
        "revenue": total,
        "best_region": ranked[0],
        "order": ranked,
        "top": {r: sorted(p, key=lambda k: (-p[k], k))[:top] for r, p in per_product.items()},
    }


def test_the_example_is_a_dag_with_parallel_branches_and_a_per_region_fan_out() -> None:
    pipeline = load_local_pipeline(PIPELINE)
    assert pipeline.stages["totals"].needs == ("load",) and pipeline.stages["region"].needs == ("load",)
    assert str(pipeline.stages["region"].for_each) == "load.regions"
    assert pipeline.stages["region"].mode == "async" and pipeline.final == "report"
    assert pipeline.upload_field == "source"


def test_fave_run_on_the_sample_csv_reports_what_the_csv_says(tmp_path: Path) -> None:
    run = fave("run", str(SAMPLE), "--pipeline", str(PIPELINE), "--store", str(tmp_path), "--input", '{"top": 2}',
               "--json")  # fmt: skip
    assert run.code == 0, run.describe()
    doc = run.json
    assert doc["status"] == "COMPLETED"
    assert doc["input"]["source"] == str(SAMPLE) and doc["input"]["currency"] == "EUR"  # a declared default
    want = expected(SAMPLE, top=2)
    final = doc["final"]
    assert (final["rows"], final["units"], Decimal(final["revenue"])) == (want["rows"], want["units"], want["revenue"])
    assert final["best_region"] == want["best_region"]
    assert [line["region"] for line in final["regions"]] == want["order"]
    assert {line["region"]: [p["product"] for p in line["top"]] for line in final["regions"]} == want["top"]
    assert abs(sum(line["share_pct"] for line in final["regions"]) - 100) < 0.05
    assert doc["stages"]["region"]["total"] == len(want["order"])  # one task per region


def test_bad_input_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    for args, field in (
        (["--input", '{"top": "three"}'], "top"),
        (["--input", '{"currency": "euro"}'], "currency"),
        (["--input", '{"sorce": "x.csv"}'], "sorce"),
    ):
        run = fave("run", str(SAMPLE), "--pipeline", str(PIPELINE), "--store", str(tmp_path / "s"), *args)
        assert run.code == 2, run.describe()
        assert field in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    missing = fave("run", "--pipeline", str(PIPELINE), "--store", str(tmp_path / "s"))
    assert missing.code == 2 and "source" in missing.stderr, missing.describe()
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").rglob("state.json"))


def test_a_csv_without_the_columns_fails_at_once_with_the_stage_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,region\n2026-02-01,north\n", encoding="utf-8")
    run = fave("run", str(bad), "--pipeline", str(PIPELINE), "--store", str(tmp_path / "s"), "--json")
    assert run.code == 1, run.describe()
    doc = run.json
    assert doc["status"] == "FAILED" and "missing column" in json.dumps(doc["failure"])
    page = fave("status", doc["request_id"], "--stage", "load", "--store", str(tmp_path / "s"), "--json")
    assert page.code == 0, page.describe()
    row = page.json["items"][0]
    assert row["status"] == "FAILED" and row["attempts"] == 1  # terminal: declared by the stage, not retried


def test_the_examples_own_stage_tests_pass() -> None:
    done = e2e.pytest_in(EXAMPLE)
    assert done.code == 0 and "5 passed" in done.stdout, done.stdout + done.stderr


def test_every_stage_is_cached_on_the_fields_it_reads(tmp_path: Path) -> None:
    """The same CSV again runs nothing; another ``currency`` runs report alone; the CSV's bytes changed under the
    same name run everything again (load keys the source by its content)."""
    csv_path = tmp_path / "sales.csv"
    csv_path.write_bytes(SAMPLE.read_bytes())
    store = str(tmp_path / "s")

    def ran(*extra: str) -> dict[str, int]:
        run = fave("run", str(csv_path), "--pipeline", str(PIPELINE), "--store", store, "--json", *extra)
        assert run.code == 0 and run.json["status"] == "COMPLETED", run.describe()
        counts = {}
        for stage in ("load", "totals", "region", "report"):
            page = fave("status", run.json["request_id"], "--stage", stage, "--store", store, "--json")
            counts[stage] = sum(not row.get("cached") for row in page.json["items"])
        return counts

    regions = len(expected(SAMPLE, top=3)["order"])  # type: ignore[arg-type]
    assert ran() == {"load": 1, "totals": 1, "region": regions, "report": 1}
    assert ran() == {"load": 0, "totals": 0, "region": 0, "report": 0}
    assert ran("--input", '{"currency": "USD"}') == {"load": 0, "totals": 0, "region": 0, "report": 1}
    csv_path.write_bytes(SAMPLE.read_bytes() + b"2026-03-31,north,widget,1,1.00\n")
    assert ran() == {"load": 1, "totals": 1, "region": 1, "report": 1}  # only north's list changed
