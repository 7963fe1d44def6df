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

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from calib.ort_qdq import calibration_method, count_or_materialize, import_quantization, make_reader, ort_calibration
from calib.provenance import check_method
from harness.errors import HarnessError

#: The file the TensorRT EP reads (non-native table); ORT also writes the two siblings.
TABLE_FILE_NAME = "calibration.flatbuffers"
TABLE_SIBLINGS: tuple[str, ...] = ("calibration.cache", "calibration.json")

BatchFactory = Callable[[], Iterator[Any]]


def _write_table_fn() -> Callable[..., None]:
    import_quantization()
    try:  # re-exported by onnxruntime.quantization in every version that has it
        from onnxruntime.quantization import write_calibration_table
    except ImportError:  # pragma: no cover - older layouts
        from onnxruntime.quantization.quant_utils import write_calibration_table
    return write_calibration_table  # type: ignore[no-any-return]


def compute_tensor_ranges(
    fp32_onnx: Path,
    calib_batches: BatchFactory,
    method: str = "entropy",
    *,
    num_batches: int | None = None,
    work_dir: Path,
) -> Any:
    """Per-tensor symmetric ranges of every float tensor of ``fp32_onnx`` (an ORT ``TensorsData``)."""
    from onnxruntime.quantization.calibrate import create_calibrator

    factory, length = count_or_materialize(calib_batches, num_batches)
    if length < 1:
        raise HarnessError("no calibration batches: the calibration set is empty")
    reader = make_reader(factory, length)
    with ort_calibration("calibrate", Path(fp32_onnx).name, method, reader, length):
        calibrator = create_calibrator(
            Path(fp32_onnx),
            None,  # every float tensor: the EP matches table entries by name
            augmented_model_path=str(work_dir / "augmented.onnx"),
            calibrate_method=calibration_method(method),
            extra_options={"symmetric": True},
        )
        for start in range(length):  # one batch per collect_data call: bounded memory
            reader.set_range(start, start + 1)
            calibrator.collect_data(reader)
        compute = getattr(calibrator, "compute_data", None) or calibrator.compute_range
        ranges = compute()
    return ranges


def write_trt_calibration_table(
    fp32_onnx: Path,
    calib_batches: BatchFactory,
    cache_dir: Path,
    method: str = "entropy",
    *,
    num_batches: int | None = None,
) -> Path:
    """Calibrate ``fp32_onnx`` and write the TensorRT EP table into ``cache_dir``.

    Returns ``cache_dir / "calibration.flatbuffers"`` (its ``.cache`` and ``.json``
    siblings are written too).  Each file is moved into place atomically.
    """
    method = check_method(method)
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
                os.replace(out / name, cache_dir / name)
        os.replace(table, cache_dir / TABLE_FILE_NAME)
    return cache_dir / TABLE_FILE_NAME


def read_table_entries(table: Path) -> dict[str, float]:
    """``{tensor: range}`` from a ``calibration.flatbuffers`` table (for checks and reports)."""
    from onnxruntime.quantization.CalTableFlatBuffers.TrtTable import TrtTable

    data = Path(table).read_bytes()
    parsed = TrtTable.GetRootAsTrtTable(data, 0)
    entries: dict[str, float] = {}
    for i in range(parsed.DictLength()):
        kv = parsed.Dict(i)
        entries[kv.Key().decode()] = float(kv.Value())
    return entries


__all__ = ["TABLE_FILE_NAME", "TABLE_SIBLINGS", "compute_tensor_ranges", "read_table_entries",
           "write_trt_calibration_table"]
