"""harness.results: the crash-safe SQLite store and the CSV/JSON exports.

Regressions (REFERENCE.md section 1): the thesis tool swallowed failures with no row and no traceback and
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

from harness.results import ResultStore, cell_key, export_csv, export_json
from harness.timing import PerfCounterTimer, TimingConfig, measure

REPO = Path(__file__).resolve().parent.parent

THESIS_HEADER = [
    "Model", "Pruner", "Quantizer", "Dataset", "Amount", "Accuracy", "Inference Time (ms)",
    "Original Size", "Compressed Size", "Batch Size", "Prep Time (s)",
]


def _identity(**changes: Any) -> dict[str, Any]:
    ident = {
        "model": "resnet18", "weights": "random", "dataset": "imagenette", "pruner": "l1", "amount": 0.5,
        "backend": "torch", "precision": "fp32", "batch_size": 8, "calibration": None,
    }
    ident.update(changes)
    return ident


def _timings() -> list[dict[str, Any]]:
    cfg = TimingConfig(warmup=0, iterations=3, repeats=1)
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
        store.put_ok(key, ident, _result())
        store.put_ok(key, ident, _result(prep_time_s=9.0))
        err, tb = _error()
        store.put_error(key, ident, err, tb)
        store.put_ok(key, ident, _result(prep_time_s=3.0))
        records = list(store.records())
    assert len(records) == 1
    (rec,) = records
    assert rec.key == key
    assert rec.status == "ok"
    assert rec.result is not None and rec.result["prep_time_s"] == 3.0
    assert rec.error is None and rec.traceback is None  # the later ok clears the earlier error
    assert rec.identity == ident


def test_put_error_stores_error_and_traceback(tmp_path: Path) -> None:
    ident = _identity(backend="ort-cpu", precision="int8")
    key = cell_key(ident)
    err, tb = _error()
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.put_error(key, ident, err, tb, partial={"prep_time_s": 0.5})
        (rec,) = list(store.records())
    assert rec.status == "error"
    assert rec.error == err
    assert rec.traceback == tb
    assert "Traceback (most recent call last)" in rec.traceback
    assert "RuntimeError: engine build failed" in rec.traceback
    assert rec.result == {"prep_time_s": 0.5}


def test_finished_ok(tmp_path: Path) -> None:
    ok_ident, bad_ident = _identity(), _identity(batch_size=16)
    ok_key, bad_key = cell_key(ok_ident), cell_key(bad_ident)
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert not store.finished_ok(ok_key)
        store.put_ok(ok_key, ok_ident, _result())
        store.put_error(bad_key, bad_ident, *_error())
        assert store.finished_ok(ok_key)
        assert not store.finished_ok(bad_key)
        assert not store.finished_ok("no-such-key")
        # An ok cell that fails on rerun is no longer finished.
        store.put_error(ok_key, ok_ident, *_error())
        assert not store.finished_ok(ok_key)
        # A failed cell that succeeds on rerun is.
        store.put_ok(bad_key, bad_ident, _result())
        assert store.finished_ok(bad_key)


def test_store_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    idents = [_identity(batch_size=b) for b in (1, 8, 32)]
    store = ResultStore(db)
    for ident in idents:
        store.put_ok(cell_key(ident), ident, _result())
    store.put_error(cell_key(_identity(model="vit_b_16")), _identity(model="vit_b_16"), *_error())
    store.close()

    with ResultStore(db) as reopened:
        records = {r.key: r for r in reopened.records()}
        assert len(records) == 4
        for ident in idents:
            assert reopened.finished_ok(cell_key(ident))
            assert records[cell_key(ident)].identity == ident
        assert records[cell_key(_identity(model="vit_b_16"))].status == "error"
        # upsert still works after reopening
        reopened.put_ok(cell_key(idents[0]), idents[0], _result())
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
        store.put_ok(cell_key(ok_ident), ok_ident, ok_result)
        store.put_error(cell_key(err_ident), err_ident, err, tb)
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
        assert row["Quantizer"] == "-"  # torch fp32 is the unquantized baseline
        assert row["Dataset"] == "imagenette"
        assert float(row["Amount"]) == 0.5
        assert float(row["Accuracy"]) == pytest.approx(0.87)
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
    assert err_row["Quantizer"] == "ort-cpu int8"
    assert err_row["cell_key"] == cell_key(err_ident)


def test_export_csv_of_only_failures_keeps_thesis_header(tmp_path: Path) -> None:
    ident = _identity()
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.put_error(cell_key(ident), ident, *_error())
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
        store.put_ok(cell_key(ok_ident), ok_ident, ok_result)
        store.put_error(cell_key(err_ident), err_ident, err, tb)
        out = tmp_path / "results.json"
        assert export_json(store, out) == 2
    data = {rec["key"]: rec for rec in json.loads(out.read_text())}
    assert set(data) == {cell_key(ok_ident), cell_key(err_ident)}
    ok = data[cell_key(ok_ident)]
    assert ok["status"] == "ok"
    assert ok["identity"] == ok_ident
    assert ok["result"] == json.loads(json.dumps(ok_result))
    assert ok["error"] is None and ok["traceback"] is None
    assert isinstance(ok["finished_at"], float)
    bad = data[cell_key(err_ident)]
    assert (bad["status"], bad["error"], bad["traceback"], bad["result"]) == ("error", err, tb, None)


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
        "import json, sys; from harness.results import cell_key; "
        "print(cell_key(json.loads(sys.argv[1])))"
    )
    # A different hash seed than this process (str hashing is randomised per process).
    env = dict(os.environ, PYTHONHASHSEED=str(12345 if os.environ.get("PYTHONHASHSEED") != "12345" else 54321),
               PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(dict(reversed(list(ident.items()))))],
                         env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == cell_key(ident)
