"""``fave queue`` on the sales example (its input declares ``source`` (a file), ``top`` (integer 1-50) and
``currency`` (three capitals)) and a local store: a 50-row CSV is queued in one command with its cells converted
to the declared types; a bad row exits 2 naming the row and the field and adds nothing (not even the store);
``add`` with ``--key``, ``--priority``, ``--at``, ``--every``; ``list``, ``stats``, ``pause``, ``retry``,
``remove`` and ``clear``, in text and ``--json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fave.cli.main import main
from fave.queue import AdmissionQueue
from fave_shared.store import LocalStore
from support import e2e

PIPELINE = str(e2e.ROOT / "examples" / "sales" / "pipeline.yaml")
SALES_CSV = str(e2e.ROOT / "examples" / "sales" / "data" / "sales.csv")


def fave(capsys: pytest.CaptureFixture[str], store: Path, *args: str) -> tuple[int, str, str]:
    code = main(["queue", *args, "--pipeline", PIPELINE, "--store", str(store)])
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_50_row_csv_is_queued_in_one_command_with_typed_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"sku": f"sku-{i}", "source": SALES_CSV, "top": 1 + i % 5, "currency": "" if i % 2 else "USD"}
        for i in range(50)
    ]
    csv_file = write_csv(tmp_path / "batch.csv", rows, ["sku", "source", "top", "currency"])
    store = tmp_path / "store"
    code, out, err = fave(capsys, store, "add-batch", str(csv_file), "--key-field", "sku", "--priority", "2", "--json")
    assert code == 0, err
    added = json.loads(out)
    assert len(added) == 50 and "queued 50 entries" in err
    entries = {e.key: e for e in AdmissionQueue(LocalStore(store), "sales").list()}
    assert len(entries) == 50
    assert entries["sku-3"].input == {"source": SALES_CSV, "top": 4, "currency": "EUR"}  # empty cell: the default
    assert entries["sku-4"].input["currency"] == "USD"
    assert {e.priority for e in entries.values()} == {2}
    # The same file again adds nothing: every key is queued already.
    code, out, err = fave(capsys, store, "add-batch", str(csv_file), "--key-field", "sku")
    assert code == 0 and "queued 0 entries" in err and "50 with a key already queued" in err
    assert out.split() == [e["id"] for e in added]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"top": "many"}, "row 7: top: 'many' is not integer"),
        ({"top": "99"}, "row 7: top: must be smaller than or equal to 50"),
        ({"currency": "euro"}, "row 7: currency:"),
        ({"source": str(Path("/no/such.csv"))}, "row 7: source: no such file"),
    ],
)
def test_a_bad_row_names_row_and_field_and_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: dict[str, str], expected: str
) -> None:
    rows: list[dict[str, Any]] = [{"source": SALES_CSV, "top": 2} for _ in range(10)]
    rows[6] = {**rows[6], **row}
    csv_file = write_csv(tmp_path / "batch.csv", rows, ["source", "top", "currency"])
    code, _, err = fave(capsys, tmp_path / "store", "add-batch", str(csv_file))
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "store").exists()  # checked before the store was opened


def test_jsonl_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [json.dumps({"source": SALES_CSV, "top": i + 1}) for i in range(3)]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n\n")
    code, out, _ = fave(capsys, tmp_path / "store", "add-batch", str(tmp_path / "b.jsonl"))
    assert code == 0 and len(out.split()) == 3
    (tmp_path / "bad.jsonl").write_text(lines[0] + "\n" + json.dumps({"top": 1}) + "\n")
    code, _, err = fave(capsys, tmp_path / "store", "add-batch", str(tmp_path / "bad.jsonl"))
    assert code == 2 and "row 2: source: required" in err


def test_add_list_stats_pause_retry_remove_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    given = json.dumps({"source": SALES_CSV})
    code, out, err = fave(
        capsys, store, "add", "--input", given, "--key", "nightly", "--priority", "1", "--every", "1d"
    )
    assert code == 0, err
    entry_id = out.strip()
    code, out, _ = fave(capsys, store, "add", "--input", given, "--key", "nightly", "--json")
    assert json.loads(out)["id"] == entry_id and json.loads(out)["duplicate"] is True
    code, out, _ = fave(
        capsys, store, "add", "--input", given, "--at", "+10m", "--json", "--budget", '{"max_wall": "1h"}'
    )
    later = json.loads(out)
    assert later["budget"] == {"max_wall": "1h"}
    assert later["not_before"] == pytest.approx(time.time() + 600, abs=30)

    code, out, _ = fave(capsys, store, "list")
    assert code == 0 and out.splitlines()[0].startswith(f"{entry_id}  p1 QUEUED") and "nightly" in out
    assert "due in" in out.splitlines()[1]
    code, out, _ = fave(capsys, store, "stats", "--json")
    stats = json.loads(out)
    assert (stats["depth"], stats["due"], stats["cooling_down"], stats["depth_by_priority"]["1"]) == (2, 1, 1, 1)

    assert fave(capsys, store, "pause", "nightly")[1].strip() == f"{entry_id}  QUEUED paused"
    assert AdmissionQueue(LocalStore(store), "sales").claim("w") == []  # paused; the other is not due yet
    assert fave(capsys, store, "unpause", entry_id)[0] == 0
    assert fave(capsys, store, "retry", later["id"])[0] == 0  # due now
    code, out, _ = fave(capsys, store, "list", "--status", "queued", "--json")
    assert [e["id"] for e in json.loads(out)] == [entry_id, later["id"]]
    assert fave(capsys, store, "remove", "nightly")[1].strip() == f"{entry_id}  removed"
    code, _, err = fave(capsys, store, "remove", "nightly")
    assert code == 2 and "no queue entry with key or id 'nightly'" in err
    assert fave(capsys, store, "clear", "--status", "queued")[1].strip() == "cleared 1 queued entries"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["add", "--input", '{"top": 3}'], "input: source: required"),
        (["add", "--input", "{}", "--priority", "9"], "--priority: must be 1 (highest) to 5"),
        (["add", "--input", "{}", "--at", "tomorrow"], "--at: not a time"),
        (["add", "--input", "{}", "--every", "weekly"], "--every: not a duration"),
        (["add-batch", "missing.csv"], "missing.csv: no such file"),
        (["add", "--input", "{}", "--budget", '{"max_wall": "soon"}'], "--budget.max_wall: not a duration"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    if args[0] == "add" and "source" not in args[2]:
        args[2] = json.dumps({"source": SALES_CSV, **json.loads(args[2])}) if "top" not in args[2] else args[2]
    code, _, err = fave(capsys, tmp_path / "store", *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "store").exists()
