"""Implicit INT8 for ONNX Runtime's TensorRT EP: a per-tensor dynamic-range table.

ONNX Runtime's ``write_calibration_table(ranges, dir=...)`` writes three files into
``dir``: ``calibration.flatbuffers`` (the format the TensorRT EP reads when
``trt_int8_use_native_calibration_table`` is false), ``calibration.cache`` (plain
text ``<tensor> <range>`` lines) and ``calibration.json``.  The EP looks the table
up as ``<trt_engine_cache_path>/<trt_int8_calibration_table_name>``; so the table
goes into the engine cache directory and the backend passes
``trt_int8_calibration_table_name=path.name`` (``calibration.flatbuffers``) with
``trt_int8_use_native_calibration_table=False``.  Never pass a table for a Q/DQ model.

The table is computed on the **unmodified** fp32 ONNX model (the EP matches its
entries by tensor name) with symmetric ranges: TensorRT's dynamic ranges are
symmetric, and ORT writes ``max(highest, lowest)`` per tensor, which is the
magnitude only when the range is symmetric.

Caveat for the caller: ONNX Runtime's TensorRT engine cache is not keyed on the
calibration table; give each calibration provenance its own engine cache
directory (e.g. ``<cache>/<provenance key>/``) or an old INT8 engine is reused.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from calib.ort_base import BatchFactory, import_quantization, missing_ort_api
from calib.ort_ranges import compute_tensor_ranges, entropy_threshold, tensor_thresholds
from calib.provenance import (
    DEFAULT_NUM_BINS,
    DEFAULT_NUM_QUANTIZED_BINS,
    DEFAULT_PERCENTILE,
    CalibrationSettings,
    calibration_settings,
)
from harness.store.atomic import atomic_replace
from harness.errors import HarnessError

#: The file the TensorRT EP reads (non-native table); ORT also writes the two siblings.
TABLE_FILE_NAME = "calibration.flatbuffers"
TABLE_SIBLINGS: tuple[str, ...] = ("calibration.cache", "calibration.json")


def _write_table_fn() -> Callable[..., None]:
    q = import_quantization()
    # ``write_calibration_table(ranges, dir=...)`` has the same signature in every version an image pins.
    return q.write_calibration_table  # type: ignore[no-any-return]


def write_trt_calibration_table(
    fp32_onnx: Path,
    calib_batches: BatchFactory,
    cache_dir: Path,
    method: str | CalibrationSettings = "entropy",
    *,
    num_batches: int | None = None,
    num_bins: int | None = None,
    num_quantized_bins: int | None = None,
    percentile: float | None = None,
) -> Path:
    """Calibrate ``fp32_onnx`` and write the TensorRT EP table into ``cache_dir``.

    Returns ``cache_dir / "calibration.flatbuffers"`` (its ``.cache`` and ``.json``
    siblings are written too).  Each file is moved into place atomically.  The
    histogram settings default to :class:`CalibrationSettings` (2048 bins).
    """
    method = calibration_settings(method, num_bins=num_bins, num_quantized_bins=num_quantized_bins,
                                  percentile=percentile)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_table = _write_table_fn()
    with tempfile.TemporaryDirectory(prefix="calib-table.", dir=cache_dir) as tmp_name:
        tmp = Path(tmp_name)
        ranges = compute_tensor_ranges(fp32_onnx, calib_batches, method, num_batches=num_batches, work_dir=tmp)
        out = tmp / "table"
        out.mkdir()
        write_table(ranges, dir=str(out))
        table = out / TABLE_FILE_NAME
        if not table.exists() or table.stat().st_size == 0:
            written = ", ".join(sorted(p.name for p in out.iterdir())) or "nothing"
            raise HarnessError(f"ONNX Runtime wrote no {TABLE_FILE_NAME} (it wrote: {written})")
        for name in TABLE_SIBLINGS:
            if (out / name).exists():
                atomic_replace(out / name, cache_dir / name)
        atomic_replace(table, cache_dir / TABLE_FILE_NAME)
    return cache_dir / TABLE_FILE_NAME


def read_table_entries(table: Path) -> dict[str, float]:
    """``{tensor: range}`` from a ``calibration.flatbuffers`` table (for checks and reports)."""
    import_quantization()
    try:
        from onnxruntime.quantization.CalTableFlatBuffers.TrtTable import TrtTable
    except ImportError as exc:
        raise missing_ort_api("TensorRT calibration table reader", f"{type(exc).__name__}: {exc}") from None

    data = Path(table).read_bytes()
    parsed = TrtTable.GetRootAsTrtTable(data, 0)
    entries: dict[str, float] = {}
    for i in range(parsed.DictLength()):
        kv = parsed.Dict(i)
        entries[kv.Key().decode()] = float(kv.Value())
    return entries


__all__ = ["DEFAULT_NUM_BINS", "DEFAULT_NUM_QUANTIZED_BINS", "DEFAULT_PERCENTILE", "TABLE_FILE_NAME",
           "TABLE_SIBLINGS", "CalibrationSettings", "calibration_settings", "compute_tensor_ranges",
           "entropy_threshold", "read_table_entries", "tensor_thresholds", "write_trt_calibration_table"]
