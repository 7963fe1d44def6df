"""INT8 calibration on real training images, with provenance-checked caches.

* :mod:`calib.calibset`: the seeded calibration file list (train split only) and its batches;
* :mod:`calib.provenance`: what each artifact depends on, stored beside it;
* :mod:`calib.ort_base`: ONNX Runtime's quantization tools, the streaming calibration reader;
* :mod:`calib.ort_ranges`: per-tensor activation ranges (TensorRT's entropy search), shared by the next two;
* :mod:`calib.ort_qdq`: explicit INT8, a Q/DQ ONNX model (ONNX Runtime's quantizer, via
  :mod:`calib.ort_static_quant` on every onnxruntime an image pins);
* :mod:`calib.ort_table`: implicit INT8 for ONNX Runtime's TensorRT EP (dynamic-range table);
* :mod:`calib.trt_calibrator`: native TensorRT 10.x entropy calibrator;
* :mod:`calib.source`: :class:`CalibrationData`, the ``CalibrationSource`` backends receive.

:func:`build_calibration_artifacts` is what ``harness calib`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calib.calibset import (
    DEFAULT_CALIB_COUNT,
    CalibrationSet,
    Transform,
    file_list_hash,
    select_calibration_files,
)
from calib.ort_qdq import QDQ_TARGETS, build_qdq_model, count_qdq_nodes
from calib.ort_table import TABLE_FILE_NAME, read_table_entries, write_trt_calibration_table
from calib.provenance import (
    METHODS,
    Provenance,
    ProvenancedArtifact,
    load_if_matching,
    sidecar_path,
    write_with_provenance,
)
from calib.source import DEFAULT_ORT_BATCH_SIZE, CalibrationData, transform_fingerprint
from calib.trt_calibrator import TRT_API_USED, CalibratorCore, make_entropy_calibrator
from harness.phases import PhaseTimes


@dataclass(frozen=True)
class CalibrationArtifacts:
    """What :func:`build_calibration_artifacts` produced (for the CLI to print or record)."""

    qdq_onnx: dict[str, Path]  # target -> Q/DQ model
    trt_table: Path | None  # calibration.flatbuffers for ONNX Runtime's TensorRT EP
    provenance: dict[str, Any]
    provenance_hash: str
    calib_files: int
    seconds: float
    built: dict[str, int] = field(default_factory=dict)  # kind -> builds (0 when all were reused)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "qdq_onnx": {k: str(v) for k, v in self.qdq_onnx.items()},
            "trt_table": str(self.trt_table) if self.trt_table is not None else None,
            "provenance": self.provenance,
            "provenance_hash": self.provenance_hash,
            "calib_files": self.calib_files,
            "seconds": self.seconds,
            "built": dict(self.built),
            "notes": list(self.notes),
        }


def build_calibration_artifacts(
    fp32_onnx: Path,
    train_samples: Sequence[tuple[Path, int]],
    *,
    transform: Transform,
    cache_dir: Path,
    eval_samples: Iterable[tuple[Path, int]] = (),
    method: str = "entropy",
    count: int = DEFAULT_CALIB_COUNT,
    seed: int = 0,
    qdq_targets: Sequence[str] = ("cpu", "tensorrt"),
    trt_table: bool = True,
    table_dir: Path | None = None,
    ort_batch_size: int = DEFAULT_ORT_BATCH_SIZE,
    rebuild: bool = False,
) -> CalibrationArtifacts:
    """Select the calibration images and build (or reuse) the Q/DQ models and the TensorRT EP table.

    ``train_samples`` / ``eval_samples`` are ``(path, label)`` lists (e.g. an
    ImageSplit's ``.samples``); calibration never uses an evaluation file.  The table
    goes to ``table_dir`` (default ``<cache_dir>/calib/ort-trt-<provenance hash>/``).
    ``rebuild`` deletes matching cached artifacts first (``--rebuild-calib``).
    """
    calib_set = CalibrationSet.select(train_samples, count=count, seed=seed,
                                      exclude=[Path(p) for p, _ in eval_samples])
    phases = PhaseTimes()
    data = CalibrationData(lambda: Path(fp32_onnx), calib_set, transform, method, Path(cache_dir), phases,
                           ort_batch_size, rebuild=rebuild)
    qdq = {target: data.qdq_onnx(target, phases) for target in qdq_targets}
    table = None
    if trt_table:
        table = data.ort_trt_table(table_dir or Path(cache_dir) / "calib" / f"ort-trt-{data.provenance_hash}",
                                   phases)
    return CalibrationArtifacts(
        qdq_onnx=qdq,
        trt_table=table,
        provenance=data.provenance,
        provenance_hash=data.provenance_hash,
        calib_files=calib_set.count,
        seconds=phases.seconds.get("calibrate", 0.0),
        built=dict(data.builds),
        notes=tuple(data.notes),
    )


__all__ = [
    "DEFAULT_CALIB_COUNT",
    "DEFAULT_ORT_BATCH_SIZE",
    "METHODS",
    "QDQ_TARGETS",
    "TABLE_FILE_NAME",
    "TRT_API_USED",
    "CalibrationArtifacts",
    "CalibrationData",
    "CalibrationSet",
    "CalibratorCore",
    "Provenance",
    "ProvenancedArtifact",
    "build_calibration_artifacts",
    "build_qdq_model",
    "count_qdq_nodes",
    "file_list_hash",
    "load_if_matching",
    "make_entropy_calibrator",
    "read_table_entries",
    "select_calibration_files",
    "sidecar_path",
    "transform_fingerprint",
    "write_trt_calibration_table",
    "write_with_provenance",
]
