"""Results that survive a crash: one SQLite row per sweep cell, committed cell by cell.

Cells are :class:`harness.store.outcome.CellOutcome` values, stored as the same JSON
as ever. A cell's key is a stable hash of what identifies it (model, weights,
dataset, pruning, backend, precision, batch size, calibration). Rows are upserted
by key, so rerunning never duplicates; ``--resume`` skips cells already ``ok``.
Exports flatten each cell to one row per timing definition: the thesis's
columns first (same names and units: ``Accuracy`` in percent with two decimals,
``Quantizer`` the precision or ``-`` for fp32, sizes in MB of 10^6 bytes), then
extended columns (``backend``, ``accuracy_top1_fraction``, ...).
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, describe_os_error
from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow, cell_key  # noqa: F401 - re-exported

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    identity TEXT NOT NULL,
    result TEXT,
    error TEXT,
    traceback TEXT,
    finished_at REAL NOT NULL
)
"""

#: ``PRAGMA user_version`` of databases this version writes; a newer one is refused, never altered.
#: 0 is a database from before versioning (same layout as 1) and is upgraded in place.
SCHEMA_VERSION = 1

THESIS_COLUMNS = (
    "Model", "Pruner", "Quantizer", "Dataset", "Amount", "Accuracy", "Inference Time (ms)",
    "Original Size", "Compressed Size", "Batch Size", "Prep Time (s)",
)


class ResultStoreError(HarnessError):
    """The results database cannot be opened or used (path, permissions, schema, damage)."""


class ResultStore:
    """The sweep's SQLite database (WAL journal; one transaction per cell).

    Opening raises :class:`ResultStoreError` with one line for every environment fault
    (an output path under a file, a read-only or damaged database, one from a newer schema).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultStoreError(f"cannot create the output directory {path.parent} "
                                   f"({describe_os_error(exc)})") from exc
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise ResultStoreError(f"cannot open the results database {path} ({exc})") from exc
        try:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ResultStoreError(
                    f"the results database {path} was written by a newer PQ Harness (schema {version}; this "
                    f"version reads up to {SCHEMA_VERSION}); upgrade pq-harness or choose another --out")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
            if version < SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._db.close()
            if _read_only(path):
                raise ResultStoreError(f"the results database {path} is read-only ({exc}); make it and its "
                                       "directory writable, or choose another --out") from exc
            raise ResultStoreError(f"cannot use the results database {path} ({exc})") from exc
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, status: str | None = "ok") -> int:
        """Cells stored (with ``status``; all cells when None)."""
        if status is None:
            return int(self._db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM cells WHERE status = ?", (status,)).fetchone()[0])

    def finished_ok(self, key: str) -> bool:
        row = self._db.execute("SELECT 1 FROM cells WHERE key = ? AND status = 'ok'", (key,)).fetchone()
        return row is not None

    def put(self, outcome: CellOutcome) -> None:
        """Commit one cell (replacing an earlier run of the same cell)."""
        result = None if outcome.result is None else json.dumps(outcome.result.to_dict(), default=str)
        self._db.execute(
            "INSERT INTO cells (key, status, identity, result, error, traceback, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET status=excluded.status, "
            "identity=excluded.identity, result=excluded.result, error=excluded.error, "
            "traceback=excluded.traceback, finished_at=excluded.finished_at",
            (outcome.key, outcome.status, json.dumps(outcome.identity.to_dict(), sort_keys=True), result,
             outcome.error, outcome.traceback, time.time()),
        )

    def records(self) -> Iterator[CellOutcome]:
        for key, status, identity, result, error, tb, finished in self._db.execute(
            "SELECT key, status, identity, result, error, traceback, finished_at FROM cells ORDER BY finished_at"
        ):
            yield CellOutcome(identity=CellIdentity.from_dict(json.loads(identity)), status=status,
                              result=CellResult.from_dict(json.loads(result)) if result else None,
                              error=error, traceback=tb, finished_at=finished, key=key)


def _read_only(path: Path) -> bool:
    """The database file or its directory cannot be written (permissions or a read-only filesystem)."""
    return not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK))


def count_safe_cells(path: Path) -> int | None:
    """Finished (``ok``) cells in the database at ``path``, read without writing; None when unreadable."""
    if not Path(path).is_file():
        return 0
    uri = Path(path).resolve().as_uri()
    # immutable=1 reads a database on a read-only filesystem (no WAL index to create); tried second
    # because it would miss cells still in a WAL file that another writer holds open.
    for query in ("?mode=ro", "?mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(uri + query, uri=True)
            try:
                return int(db.execute("SELECT COUNT(*) FROM cells WHERE status = 'ok'").fetchone()[0])
            finally:
                db.close()
        except sqlite3.Error:
            continue
    return None


def megabytes(n: Any) -> float | None:
    """Bytes as MB of 10^6 bytes (six decimals), as every export writes sizes."""
    return None if n is None else round(float(n) / 1e6, 6)


def percent(fraction: Any) -> float | None:
    """A fraction as a percentage with two decimals, rounded half up on its decimal digits (0.70125 ->
    70.13, as the thesis's Table 1 writes 76.51), not on the binary float (which would give 70.12)."""
    if fraction is None:
        return None
    return float((Decimal(repr(float(fraction))) * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def flat_rows(record: CellOutcome) -> list[dict[str, Any]]:
    """One export row per timing definition (one row with the error for a failed cell)."""
    ident, res = record.identity, record.result or CellResult()
    precision, backend = ident.precision, ident.backend
    # As the thesis wrote it: the precision, "-" when unquantized (the backend has its own column).
    quantizer = "-" if precision == "fp32" else precision
    phases = res.prep_phases_s
    acc = res.accuracy or {}
    prune = res.pruning or {}
    sizes = prune.get("sizes") or {}
    base = {
        "Model": ident.model,
        "Pruner": ident.pruner if ident.pruner != "none" else "-",
        "Quantizer": quantizer,
        "Dataset": ident.dataset,
        "Amount": ident.amount,
        "Accuracy": percent(acc.get("top1")),
        "Inference Time (ms)": None,
        "Original Size": megabytes(res.original_size_bytes),
        "Compressed Size": megabytes(res.compressed_size_bytes),
        "Batch Size": ident.batch_size,
        "Prep Time (s)": res.prep_time_s,
        "status": record.status,
        "backend": backend,
        "precision": precision,
        "weights": ident.weights,
        "accuracy_top1_fraction": acc.get("top1"),
        "accuracy_top1_1000": acc.get("top1_1000"),
        "eval_samples": acc.get("samples"),
        "achieved_sparsity": prune.get("achieved_sparsity"),
        "size_dense_mb": sizes.get("dense_mb"),
        "size_sparse_csr_mb": sizes.get("sparse_mb"),
        "size_gzip_mb": sizes.get("gzip_mb"),
        "params_before": prune.get("params_before"),
        "params_after": prune.get("params_after"),
        "macs_before": prune.get("macs_before"),
        "macs_after": prune.get("macs_after"),
        **{f"prep_{phase}_s": phases.get(phase) for phase in ("load", "prune", "export", "calibrate", "build")},
        "onnx_max_abs_diff": (res.artifact_notes.get("onnx_export") or {}).get("max_abs_diff"),
        "device": res.device,
        "device_name": res.device_name,
        "energy_mj_per_image": None,
        "device_warnings": "; ".join(res.device_warnings) or None,
        "versions": json.dumps(res.versions, sort_keys=True) if res.versions else None,
        "harness_commit": res.harness_commit,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.finished_at or 0.0)),
        "cell_key": record.key,
        "error": record.error,
    }
    timings = res.timings
    if not timings:
        return [dict(base, timing_definition=None)]
    rows = []
    for timing in timings:
        stats = timing.stats
        rows.append(dict(
            base,
            **{"Inference Time (ms)": timing.median_ms},
            timing_definition=timing.definition,
            timer=timing.timer,
            latency_mean_ms=stats["mean_ms"], latency_min_ms=stats["min_ms"], latency_p90_ms=stats["p90_ms"],
            latency_p95_ms=stats["p95_ms"], latency_p99_ms=stats["p99_ms"], latency_stdev_ms=stats["stdev_ms"],
            latency_cv=stats["cv"], throughput_ips=stats["throughput_ips"], timed_iterations=stats["samples"],
            energy_mj_per_image=timing.energy_mj_per_image,
            **_uncertainty_columns(timing),
        ))
    return rows


def _uncertainty_columns(timing: TimingWindow) -> dict[str, Any]:
    """CI of the median and of throughput, the stability verdict and until-stable convergence as
    stored (empty cells for databases written before they were measured)."""
    ci = timing.ci or {}
    verdict = timing.stability or {}
    until = timing.until_stable or {}
    stable = verdict.get("stable")
    return {
        "latency_median_ci_low_ms": ci.get("low_ms"),
        "latency_median_ci_high_ms": ci.get("high_ms"),
        "throughput_ci_low_ips": ci.get("throughput_low_ips"),
        "throughput_ci_high_ips": ci.get("throughput_high_ips"),
        "stable": stable,
        "instability": "; ".join(verdict.get("reasons") or []) or None,
        "ci_method": ci.get("method"),
        "until_stable_converged": until.get("converged"),
    }


def export_csv(store: ResultStore, path: Path) -> int:
    rows = [row for record in store.records() for row in flat_rows(record)]
    columns: list[str] = list(THESIS_COLUMNS)
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def export_json(store: ResultStore, path: Path) -> int:
    records = [
        {"key": r.key, "status": r.status, "identity": r.identity.to_dict(),
         "result": None if r.result is None else r.result.to_dict(), "error": r.error,
         "traceback": r.traceback, "finished_at": r.finished_at}
        for r in store.records()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2, default=str))
    return len(records)
