"""The sales stages called as Lambda calls them: an event in, the result out (``pytest examples/sales/tests``)."""

import csv
import importlib.util
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sales.csv"


def handler(stage):
    spec = importlib.util.spec_from_file_location(f"sales_{stage}_app", ROOT / "functions" / stage / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def event(tmp_path, stage, request, *, needs=None, item=None, index=None):
    return {
        "fave": 1,
        "task": {"request_id": "01TESTSALES", "stage": stage, "item": index, "attempt": 1},
        "mode": "sync",
        "store": str(tmp_path),
        "input": {"request": request, "needs": needs or {}, "config": {}, "item": item, "index": index},
    }


def test_load_groups_every_row_by_region(tmp_path):
    out = handler("load")(event(tmp_path, "load", {"source": str(SAMPLE)}))
    rows = list(csv.DictReader(SAMPLE.open()))
    assert out["rows"] == len(rows)
    assert [r["name"] for r in out["regions"]] == sorted({r["region"] for r in rows})
    assert sum(len(r["sales"]) for r in out["regions"]) == len(rows)


def test_load_refuses_a_file_without_the_columns_as_terminal(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,region,product\n2026-01-01,north,tea\n")
    result = handler("load")(event(tmp_path, "load", {"source": str(bad)}))
    error = result["$fave_error"]
    assert error["terminal"] is True and "missing column units, unit_price" in error["errorMessage"]


def test_region_ranks_products_by_revenue(tmp_path):
    item = {
        "name": "x",
        "sales": [
            {"date": "d", "product": "a", "units": 2, "unit_price": "10.00"},
            {"date": "d", "product": "b", "units": 1, "unit_price": "40.00"},
            {"date": "d", "product": "a", "units": 1, "unit_price": "10.00"},
        ],
    }
    out = handler("region")(event(tmp_path, "region", {"top": 1}, item=item, index=0))
    assert out["region"] == "x" and out["units"] == 4 and out["revenue"] == "70.00"
    assert out["top"] == [{"product": "b", "units": 1, "revenue": "40.00"}]


@pytest.mark.parametrize("missing", [[], [1]])
def test_report_joins_totals_and_regions(tmp_path, missing):
    regions = [
        {"region": "a", "units": 1, "revenue": "25.00", "top": []},
        {"region": "b", "units": 3, "revenue": "75.00", "top": []},
    ]
    for i in missing:
        regions[i] = None
    needs = {"totals": {"rows": 4, "units": 4, "revenue": "100.00"}, "region": regions}
    out = handler("report")(event(tmp_path, "report", {"currency": "EUR"}, needs=needs))
    assert out["revenue"] == "100.00" and Decimal(out["revenue"]) == 100
    assert out["best_region"] == ("a" if missing else "b")
    assert [line["share_pct"] for line in out["regions"]] == ([25.0] if missing else [75.0, 25.0])
