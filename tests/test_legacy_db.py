"""A database written by an earlier version of the harness still reads, exports and resumes unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.config import load_config
from harness.store.results import ResultStore, export_csv, flat_rows
from harness.sweep.driver import run_sweep
from harness.sweep.plan import plan_cells

LEGACY = Path(__file__).parent / "data" / "legacy_db"


def _copy(tmp_path: Path) -> Path:
    db = tmp_path / "results.db"
    shutil.copy(LEGACY / "results.db", db)
    return db


def _legacy_config(tmp_path: Path):
    # The sweep that wrote the database (its cells' identities, hence their keys).
    return load_config(None, {
        "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [4],
        "backends": {"torch": ["fp32"], "ort-cpu": ["fp32", "int8"]},
        "pruners": [{"method": "l1-global", "amounts": [0.5]}],
        "calibration": {"method": "minmax", "count": 16, "seed": 0},
        "timing": {"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 3, "repeats": 2}, "max_eval_samples": 40,
        "cache_dir": tmp_path / "cache", "data_root": tmp_path / "data", "out_dir": tmp_path / "out"})


def test_legacy_records_export_exactly_as_the_old_code_did(tmp_path: Path) -> None:
    db = _copy(tmp_path)
    with ResultStore(db) as store:
        records = list(store.records())
        rows = [r for rec in records for r in flat_rows(rec)]
        export_csv(store, tmp_path / "results.csv")
    assert len(records) == 6 and {r.status for r in records} == {"ok"}
    expected = json.loads((LEGACY / "flat_rows.json").read_text())
    assert json.loads(json.dumps(rows, sort_keys=True, default=str)) == expected
    assert (tmp_path / "results.csv").read_text() == (LEGACY / "results.csv").read_text()


def test_legacy_records_round_trip_to_the_same_json(tmp_path: Path) -> None:
    import sqlite3

    db = _copy(tmp_path)
    conn = sqlite3.connect(db)
    stored = {k: json.loads(r) for k, r in conn.execute("SELECT key, result FROM cells")}
    conn.close()
    with ResultStore(db) as store:
        for record in store.records():
            assert record.result is not None
            assert json.loads(json.dumps(record.result.to_dict())) == stored[record.key]


def test_legacy_database_resumes_with_every_cell_skipped(tmp_path: Path) -> None:
    config = _legacy_config(tmp_path)
    db = _copy(tmp_path)
    with ResultStore(db) as store:
        keys = {r.key for r in store.records()}
        planned = {c.identity(config).key for c in plan_cells(config)}
        assert planned == keys
        counts = run_sweep(config, store, resume=True)
    assert counts == {"ok": 0, "error": 0, "skipped": 6}
