"""harness.store.results: the crash-safe SQLite store and the CSV/JSON exports.

Regressions of the thesis tool: the thesis tool swallowed failures with no row and no traceback and
appended duplicate rows; our store upserts by key, keeps the error and traceback, and the CSV keeps the
thesis's columns first (sizes in MB of 10^6 bytes).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

from harness.measure.timing import PerfCounterTimer, TimingSettings, measure
from harness.store.outcome import CellIdentity, CellOutcome, CellResult
from harness.store.results import ResultStore, cell_key, export_csv, export_json
from tests.helpers import repo_env

REPO = Path(__file__).resolve().parent.parent

THESIS_HEADER = [
    "Model", "Pruner", "Quantizer", "Dataset", "Amount", "Accuracy", "Inference Time (ms)",
    "Original Size", "Compressed Size", "Batch Size", "Prep Time (s)",
]


def _identity(**changes: Any) -> dict[str, Any]:
    """An identity shaped as the sweep writes it (calibration only for int8)."""
    ident = {
        "model": "resnet18", "weights": "random", "dataset": "imagenette", "dataset_size": "160", "pruner": "l1",
        "amount": 0.5, "prune_options": {"dim": 0, "importance": "l1", "n": 1.0, "round_to": None,
                                         "targets": ["conv", "linear", "mha"]},
        "backend": "torch", "precision": "fp32", "batch_size": 8,
    }
    ident.update(changes)
    return ident


def _ok(ident: dict[str, Any], result: dict[str, Any]) -> CellOutcome:
    return CellOutcome.ok(CellIdentity.from_dict(ident), CellResult.from_dict(result))


def _err(ident: dict[str, Any], error: str, trace: str) -> CellOutcome:
    return CellOutcome(CellIdentity.from_dict(ident), "error", error=error, traceback=trace)


def _timings() -> list[dict[str, Any]]:
    cfg = TimingSettings(warmup=0, iterations=3, repeats=1, min_seconds=0, warmup_seconds=0)
    return [
        measure(lambda _: sum(range(100)), [0], batch_size=8, config=cfg, definition=d,
                timer=PerfCounterTimer()).to_dict(with_samples=False)
        for d in ("compute", "e2e")
    ]


def _result(**changes: Any) -> dict[str, Any]:
    res = {
        "accuracy": {"samples": 100, "correct": 87, "top1": 0.87, "top1_1000": 0.5, "mapping": "imagenet-subset"},
        "original_size_bytes": 2_500_000,
        "compressed_size_bytes": 1_234_567,
        "prep_time_s": 1.25,
        "prep_phases_s": {"load": 0.5, "prune": 0.75},
        "pruning": {"achieved_sparsity": 0.5, "params_before": 10, "params_after": 5},
        "device": "cpu",
        "timings": _timings(),
    }
    res.update(changes)
    return res


def _error() -> tuple[str, str]:
    try:
        raise RuntimeError("engine build failed: out of memory")
    except RuntimeError as exc:
        return f"{type(exc).__name__}: {exc}", traceback.format_exc()


def _count_rows(path: Path) -> int:
    with ResultStore(path) as store:
        return len(list(store.records()))


# --------------------------------------------------------------------------- store


def test_upsert_never_duplicates_a_key(tmp_path: Path) -> None:
    db = tmp_path / "r" / "results.sqlite"
    ident = _identity()
    key = cell_key(ident)
    with ResultStore(db) as store:
        store.put(_ok(ident, _result()))
        store.put(_ok(ident, _result(prep_time_s=9.0)))
        err, tb = _error()
        store.put(_err(ident, err, tb))
        store.put(_ok(ident, _result(prep_time_s=3.0)))
        records = list(store.records())
    assert len(records) == 1
    (rec,) = records
    assert rec.key == key
    assert rec.status == "ok"
    assert rec.result is not None and rec.result.prep_time_s == 3.0
    assert rec.error is None and rec.traceback is None  # the later ok clears the earlier error
    assert rec.identity.to_dict() == ident


def test_put_error_stores_error_and_traceback(tmp_path: Path) -> None:
    ident = _identity(backend="ort-cpu", precision="int8")
    key = cell_key(ident)
    err, tb = _error()
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.put(_err(ident, err, tb))
        (rec,) = list(store.records())
    assert rec.status == "error"
    assert rec.error == err
    assert rec.traceback == tb
    assert "Traceback (most recent call last)" in rec.traceback
    assert "RuntimeError: engine build failed" in rec.traceback
    assert rec.result is None


def test_finished_ok(tmp_path: Path) -> None:
    ok_ident, bad_ident = _identity(), _identity(batch_size=16)
    ok_key, bad_key = cell_key(ok_ident), cell_key(bad_ident)
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert not store.finished_ok(ok_key)
        store.put(_ok(ok_ident, _result()))
        store.put(_err(bad_ident, *_error()))
        assert store.finished_ok(ok_key)
        assert not store.finished_ok(bad_key)
        assert not store.finished_ok("no-such-key")
        # An ok cell that fails on rerun is no longer finished.
        store.put(_err(ok_ident, *_error()))
        assert not store.finished_ok(ok_key)
        # A failed cell that succeeds on rerun is.
        store.put(_ok(bad_ident, _result()))
        assert store.finished_ok(bad_key)


def test_store_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    idents = [_identity(batch_size=b) for b in (1, 8, 32)]
    store = ResultStore(db)
    for ident in idents:
        store.put(_ok(ident, _result()))
    store.put(_err(_identity(model="vit_b_16"), *_error()))
    store.close()

    with ResultStore(db) as reopened:
        records = {r.key: r for r in reopened.records()}
        assert len(records) == 4
        for ident in idents:
            assert reopened.finished_ok(cell_key(ident))
            assert records[cell_key(ident)].identity.to_dict() == ident
        assert records[cell_key(_identity(model="vit_b_16"))].status == "error"
        # upsert still works after reopening
        reopened.put(_ok(idents[0], _result()))
    assert _count_rows(db) == 4


# --------------------------------------------------------------------------- CSV export


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return header, rows


def test_export_csv_columns_sizes_and_rows(tmp_path: Path) -> None:
    ok_ident = _identity()
    err_ident = _identity(backend="ort-cpu", precision="int8", pruner="none", amount=0.0)
    ok_result = _result()
    err, tb = _error()
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.put(_ok(ok_ident, ok_result))
        store.put(_err(err_ident, err, tb))
        out = tmp_path / "export" / "results.csv"
        n = export_csv(store, out)

    header, rows = _read_csv(out)
    assert header[:len(THESIS_HEADER)] == THESIS_HEADER
    assert "timing_definition" in header and "error" in header
    assert n == len(rows) == 3  # two timing definitions for the ok cell, one row for the failed cell

    ok_rows = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["timing_definition"] for r in ok_rows) == ["compute", "e2e"]
    by_def = {t["definition"]: t for t in ok_result["timings"]}
    for row in ok_rows:
        assert float(row["Inference Time (ms)"]) == pytest.approx(by_def[row["timing_definition"]]["stats"]["median_ms"])
        assert row["timer"] == "perf_counter_ns"
        assert float(row["Original Size"]) == pytest.approx(2.5)        # 2_500_000 bytes = 2.5 MB (10^6)
        assert float(row["Compressed Size"]) == pytest.approx(1.234567)
        assert row["Model"] == "resnet18"
        assert row["Pruner"] == "l1"
        assert row["Quantizer"] == "-"  # fp32 is unquantized: "-" as in the thesis
        assert row["backend"] == "torch"
        assert row["Dataset"] == "imagenette"
        assert float(row["Amount"]) == 0.5
        assert row["Accuracy"] == "87.0"  # percent, as the thesis's Table 1
        assert float(row["accuracy_top1_fraction"]) == pytest.approx(0.87)
        assert int(row["Batch Size"]) == 8
        assert float(row["Prep Time (s)"]) == pytest.approx(1.25)
        assert float(row["prep_load_s"]) == pytest.approx(0.5)
        assert row["error"] == ""
        assert row["cell_key"] == cell_key(ok_ident)

    (err_row,) = [r for r in rows if r["status"] == "error"]
    assert err_row["error"] == err
    assert err_row["timing_definition"] == ""
    assert err_row["Inference Time (ms)"] == ""
    assert err_row["Pruner"] == "-"
    assert err_row["Quantizer"] == "int8" and err_row["backend"] == "ort-cpu"
    assert err_row["Accuracy"] == ""
    assert err_row["cell_key"] == cell_key(err_ident)


@pytest.mark.parametrize("backend, precision, top1, quantizer, accuracy", [
    ("torch", "fp32", 0.76514, "-", 76.51),
    ("ort-cpu", "fp32", 0.7649, "-", 76.49),
    ("trt-native", "fp16", 0.765, "fp16", 76.5),
    ("ort-trt", "int8", 0.70125, "int8", 70.13),
    ("torch", "bf16", 1.0, "bf16", 100.0),
])
def test_thesis_columns_accuracy_percent_and_quantizer_precision(
        backend: str, precision: str, top1: float, quantizer: str, accuracy: float) -> None:
    from harness.store.results import flat_rows

    ident = _identity(backend=backend, precision=precision)
    if precision == "int8":
        ident["calibration"] = {"method": "entropy", "count": 512, "seed": 0}
    res = _result(accuracy={"samples": 10000, "top1": top1})
    for row in flat_rows(_ok(ident, res)):
        assert row["Quantizer"] == quantizer and row["backend"] == backend and row["precision"] == precision
        assert row["Accuracy"] == pytest.approx(accuracy, abs=1e-9)
        assert row["accuracy_top1_fraction"] == top1


def test_export_csv_of_only_failures_keeps_thesis_header(tmp_path: Path) -> None:
    ident = _identity()
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.put(_err(ident, *_error()))
        out = tmp_path / "results.csv"
        assert export_csv(store, out) == 1
    header, rows = _read_csv(out)
    assert header[:len(THESIS_HEADER)] == THESIS_HEADER
    assert rows[0]["status"] == "error" and rows[0]["error"].startswith("RuntimeError")


# --------------------------------------------------------------------------- JSON export


def test_export_json_round_trip(tmp_path: Path) -> None:
    ok_ident, err_ident = _identity(), _identity(batch_size=64)
    ok_result = _result()
    err, tb = _error()
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.put(_ok(ok_ident, ok_result))
        store.put(_err(err_ident, err, tb))
        out = tmp_path / "results.json"
        assert export_json(store, out) == 2
    data = {rec["key"]: rec for rec in json.loads(out.read_text())}
    assert set(data) == {cell_key(ok_ident), cell_key(err_ident)}
    ok = data[cell_key(ok_ident)]
    assert ok["status"] == "ok"
    assert ok["identity"] == ok_ident
    assert {k: ok["result"][k] for k in ok_result} == json.loads(json.dumps(ok_result))
    assert ok["error"] is None and ok["traceback"] is None
    assert isinstance(ok["finished_at"], float)
    bad = data[cell_key(err_ident)]
    assert (bad["status"], bad["error"], bad["traceback"], bad["result"]) == ("error", err, tb, None)


# --------------------------------------------------------------------------- typed outcome, same stored JSON

#: The result keys every database written so far holds (the sweep writes all of them).
STORED_RESULT_KEYS = {
    "accuracy", "accuracy_note", "timings", "original_size_bytes", "compressed_size_bytes", "pruning",
    "prep_phases_s", "prep_time_s", "session", "device", "device_name", "device_report", "device_warnings",
    "versions", "harness_commit", "timing_config", "artifact_notes",
}


def test_cell_result_keeps_the_stored_json_keys() -> None:
    assert set(CellResult().to_dict()) == STORED_RESULT_KEYS


def test_an_old_database_row_reads_back_unchanged(tmp_path: Path) -> None:
    """A row written by the dict-based store (before the typed outcome) reads, exports and round-trips."""
    import sqlite3

    ident = _identity(precision="int8", backend="ort-cpu", calibration={"method": "entropy", "count": 8, "seed": 0})
    result = {**{k: None for k in STORED_RESULT_KEYS}, **_result(), "device_warnings": ["clock throttled"],
              "versions": {"torch": "2.5"}, "prep_phases_s": {"load": 0.5, "prune": 0.75, "export": 0.0,
                                                              "calibrate": 0.0, "build": 0.0},
              "artifact_notes": {"onnx_export": {"max_abs_diff": 1e-6}}, "a_future_key": 1}
    db = tmp_path / "results.db"
    with ResultStore(db):
        pass
    con = sqlite3.connect(db)
    con.execute("INSERT INTO cells VALUES (?, 'ok', ?, ?, NULL, NULL, 1.0)",
                ("oldkey", json.dumps(ident, sort_keys=True), json.dumps(result)))
    con.commit()
    con.close()
    with ResultStore(db) as store:
        (rec,) = list(store.records())
        assert rec.key == "oldkey" and rec.identity.to_dict() == ident
        assert rec.result is not None and rec.result.top1 == pytest.approx(0.87)
        assert rec.result.to_dict() == json.loads(json.dumps(result))
        assert rec.identity.calibration == {"method": "entropy", "count": 8, "seed": 0}
        export_csv(store, tmp_path / "r.csv")
    _, rows = _read_csv(tmp_path / "r.csv")
    assert rows[0]["device_warnings"] == "clock throttled" and rows[0]["onnx_max_abs_diff"] == "1e-06"


def test_failed_outcome_keeps_a_one_line_message_and_the_traceback() -> None:
    from harness.errors import HarnessError

    try:
        raise HarnessError("calibration needs a train split")
    except HarnessError as exc:
        outcome = CellOutcome.failed(CellIdentity.from_dict(_identity()), exc)
    assert outcome.status == "error" and outcome.error == "calibration needs a train split"
    assert outcome.key == cell_key(_identity())
    assert "Traceback" in (outcome.traceback or "")
    assert outcome.summary() == {"error": "calibration needs a train split"}


# --------------------------------------------------------------------------- cell_key


def test_cell_key_is_order_independent_and_discriminating() -> None:
    ident = _identity()
    reordered = dict(reversed(list(ident.items())))
    assert list(reordered) != list(ident)
    assert cell_key(ident) == cell_key(reordered) == cell_key(dict(ident))
    key = cell_key(ident)
    assert len(key) == 24 and all(c in "0123456789abcdef" for c in key)
    for change in ({"batch_size": 16}, {"precision": "fp16"}, {"amount": 0.25}, {"calibration": "abc"}):
        assert cell_key(_identity(**change)) != key, change


def test_cell_key_is_stable_across_processes() -> None:
    ident = _identity()
    code = (
        "import json, sys; from harness.store.results import cell_key; "
        "print(cell_key(json.loads(sys.argv[1])))"
    )
    # A different hash seed than this process (str hashing is randomised per process).
    env = repo_env(PYTHONHASHSEED=str(12345 if os.environ.get("PYTHONHASHSEED") != "12345" else 54321))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(dict(reversed(list(ident.items()))))],
                         env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == cell_key(ident)
