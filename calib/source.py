"""``CalibrationData``: the ``backends.base.CalibrationSource`` the backends receive.

Every artifact is built lazily, at most once per object, and cached on disk
under ``<cache_dir>/calib/`` with a provenance sidecar; a cached artifact is
reused only when its provenance matches (stale ones are rebuilt, corrupt ones
raise).  Time spent building goes to the caller's ``phases`` as ``calibrate``
(backends pass the ``PhaseTimes`` of their activation; ``harness calib``, which
passes none, gets it in the object's own ``phases``).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from calib.calibset import CalibrationSet, Transform
from calib.modelopt_qdq import MODELOPT_FIXED, build_modelopt_qdq, modelopt_method, modelopt_version
from calib.ort_qdq import QDQ_TARGETS, build_qdq_model, check_target, precision_of
from calib.ort_table import TABLE_FILE_NAME, read_table_entries, write_trt_calibration_table
from calib.provenance import (
    CALIB_FORMAT_VERSION,
    Provenance,
    calibration_settings,
    check_method,
    library_versions,
    load_if_matching,
    remove_with_sidecar,
    validate_onnx,
    write_with_provenance,
)
from calib.trt_calibrator import BufferFactory, CalibratorCore, calibration_cache_provenance, cuda_buffer_factory
from harness.errors import HarnessError
from harness.store.fingerprint import dict_hash, file_hash
from harness.phases import PhaseTimes

#: ORT calibration batch: peak memory grows with it, not with the image count (ResNet-18 at 224 px,
#: entropy: +0.6 GB at 16, +1.1 GB at 32, measured for 128 and 256 images alike).
DEFAULT_ORT_BATCH_SIZE = 16
ORT_LIBRARIES: tuple[str, ...] = ("onnxruntime", "onnx", "torch", "torchvision", "PIL")
#: Who writes the Q/DQ models: this package, or NVIDIA ModelOpt (calib.modelopt_qdq, the referee).
TOOLS: tuple[str, ...] = ("harness", "modelopt")


def transform_fingerprint(transform: Any) -> str:
    """A stable id of a preprocessing transform: its repr without memory addresses, hashed."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _excluded(nodes: Sequence[str]) -> tuple[str, ...]:
    """The node names to keep in float, in one canonical order (sorted, no repeats)."""
    if isinstance(nodes, str):
        raise TypeError("exclude_nodes is a sequence of node names, not one string")
    return tuple(sorted({str(n) for n in nodes}))


def _validate_table(path: Path) -> None:
    if not read_table_entries(path):
        raise ValueError("the table has no entries")


class CalibrationData:
    """Calibration images plus the INT8 artifacts derived from them, for one model."""

    def __init__(
        self,
        onnx_loader: Callable[[], Path],
        calibration_set: CalibrationSet,
        transform: Transform,
        method: str,
        cache_dir: Path,
        phases: PhaseTimes | None = None,
        ort_batch_size: int = DEFAULT_ORT_BATCH_SIZE,
        *,
        model_hash: str | None = None,
        preprocess_id: str | None = None,
        rebuild: bool = False,
        qdq_preprocess: bool = True,
        tool: str = "harness",
    ) -> None:
        if tool not in TOOLS:
            raise HarnessError(f"calibration tool must be one of {', '.join(TOOLS)}, got '{tool}'")
        self.tool = tool
        self._onnx_loader = onnx_loader
        self.calibration_set = calibration_set
        self.transform = transform
        self.method = check_method(method)
        self.cache_dir = Path(cache_dir)
        self.phases = phases if phases is not None else PhaseTimes()
        self.ort_batch_size = int(ort_batch_size)
        self.preprocess_id = preprocess_id or transform_fingerprint(transform)
        self.rebuild = rebuild
        self.qdq_preprocess = qdq_preprocess
        self.notes: list[str] = list(calibration_set.notes)
        #: How many times each artifact kind was built (not reused) by this object.
        self.builds: dict[str, int] = {}
        self._model_hash = model_hash
        self._onnx: Path | None = None
        self._qdq: dict[tuple[str, tuple[str, ...]], Path] = {}
        self._tables: dict[Path, Path] = {}
        self._removed: set[Path] = set()

    # -- identity -----------------------------------------------------------------------------

    def onnx_path(self) -> Path:
        if self._onnx is None:
            self._onnx = Path(self._onnx_loader())
        return self._onnx

    @property
    def model_hash(self) -> str:
        """sha256 of the fp32 ONNX file (or the hash given at construction)."""
        if self._model_hash is None:
            self._model_hash = file_hash(self.onnx_path())
        return self._model_hash

    @property
    def provenance(self) -> dict[str, Any]:
        cs = self.calibration_set
        return {
            "model_hash": self.model_hash,
            "calib_file_list_hash": cs.file_list_hash,
            "method": self.method,
            "calibration": self._settings_record(),  # bins etc.: never max-abs called entropy
            "count": cs.count,
            "seed": cs.seed,
            "preprocess": self.preprocess_id,
            "ort_batch_size": self.ort_batch_size,
            "versions": library_versions(ORT_LIBRARIES),
            "format_version": CALIB_FORMAT_VERSION,
            # only for ModelOpt: the provenance of everything the harness quantizes stays as it was
            **({"tool": self.tool, "modelopt": modelopt_version()} if self.tool != "harness" else {}),
        }

    @property
    def provenance_hash(self) -> str:
        return dict_hash(self.provenance)[:16]

    def _settings_record(self) -> dict[str, Any]:
        """The calibration algorithm that decides the thresholds: the harness's, or ModelOpt's own."""
        if self.tool == "modelopt":
            return {"method": self.method, "algorithm": f"modelopt {modelopt_method(self.method)} (onnxruntime's "
                    + ("KL search, 128 bins)" if self.method == "entropy" else "max-abs)")}
        return calibration_settings(self.method).to_dict()

    def _artifact_provenance(self, kind: str, options: dict[str, Any]) -> Provenance:
        cs = self.calibration_set
        return Provenance(
            artifact_kind=kind,
            model_hash=self.model_hash,
            calib_file_list_hash=cs.file_list_hash,
            method=self.method,
            count=cs.count,
            seed=cs.seed,
            versions=library_versions(ORT_LIBRARIES),
            options={"preprocess": self.preprocess_id, "ort_batch_size": self.ort_batch_size, **options},
        )

    def qdq_provenance(self, target: str = "cpu", exclude_nodes: Sequence[str] = ()) -> Provenance:
        if self.tool == "modelopt":
            return self._artifact_provenance("modelopt-qdq-onnx", {
                "tool": "modelopt", "modelopt": modelopt_version(), "quantize_mode": precision_of(target),
                "calibration_method": modelopt_method(self.method), **MODELOPT_FIXED})
        options: dict[str, Any] = {"target": target, "quant_pre_process": self.qdq_preprocess, **QDQ_TARGETS[target]}
        excluded = _excluded(exclude_nodes)
        if excluded:  # only then: the provenance of every model quantising all nodes stays as it was
            options["exclude_nodes"] = list(excluded)
        return self._artifact_provenance("ort-qdq-onnx", options)

    def table_provenance(self) -> Provenance:
        return self._artifact_provenance("ort-trt-table", {"symmetric": True, "file": TABLE_FILE_NAME})

    # -- batches ------------------------------------------------------------------------------

    def _ort_batches(self) -> Iterator[Any]:
        for batch in self.calibration_set.batches(self.transform, self.ort_batch_size):
            yield batch.numpy()

    def _ort_num_batches(self) -> int:
        return self.calibration_set.num_batches(self.ort_batch_size)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Full batches of preprocessed calibration images (float32 NCHW, host) for TensorRT."""
        return self.calibration_set.batches(self.transform, batch_size, full_batches_only=True)

    # -- artifacts ----------------------------------------------------------------------------

    def _forget_if_rebuilding(self, path: Path) -> None:
        if self.rebuild and path not in self._removed:
            remove_with_sidecar(path)
            self._removed.add(path)

    def _built(self, kind: str, seconds: float, phases: PhaseTimes | None) -> None:
        (phases if phases is not None else self.phases).add("calibrate", seconds)
        self.builds[kind] = self.builds.get(kind, 0) + 1

    def qdq_path(self, target: str = "cpu", exclude_nodes: Sequence[str] = ()) -> Path:
        target = check_target(target)
        excluded = _excluded(exclude_nodes)
        # Each set of float-kept nodes is its own file, so models of different exclusions never evict each other.
        suffix = f"-x{dict_hash({'exclude_nodes': list(excluded)})[:12]}" if excluded else ""
        if self.tool == "modelopt":  # one INT8 model serves both INT8 targets (ModelOpt writes symmetric INT8)
            return self.cache_dir / "calib" / f"qdq-{self.model_hash[:16]}-{self.method}-modelopt-" \
                                              f"{precision_of(target)}.onnx"
        return self.cache_dir / "calib" / f"qdq-{self.model_hash[:16]}-{self.method}-{target}{suffix}.onnx"

    def qdq_onnx(self, target: str, phases: PhaseTimes | None = None, *, exclude_nodes: Sequence[str] = ()) -> Path:
        """The Q/DQ INT8 model for ``target`` (``cpu``: ORT CPU EP; ``tensorrt``: TensorRT), built or reused;
        build time goes to ``phases`` as ``calibrate``.  ``exclude_nodes`` names fp32-model nodes left in
        float (order and repeats do not matter); they are part of the file name and the provenance."""
        target = check_target(target)
        excluded = _excluded(exclude_nodes)
        if excluded and self.tool == "modelopt":
            raise HarnessError("nodes kept in float (an accuracy budget) come from the harness's own Q/DQ variants; "
                               "with calibration.tool modelopt they are not offered")
        memo = (target, excluded)
        if memo in self._qdq:
            return self._qdq[memo]
        path = self.qdq_path(target, excluded)
        provenance = self.qdq_provenance(target, excluded)
        self._forget_if_rebuilding(path)
        found = load_if_matching(path, provenance, validate=validate_onnx, on_rebuild=self.notes.append)
        if found is None:
            start = time.perf_counter()
            notes: list[str] = []
            if self.tool == "modelopt":
                build_modelopt_qdq(self.onnx_path(), self._ort_batches, path, mode=precision_of(target),
                                   method=self.method, num_batches=self._ort_num_batches())
            else:
                build_qdq_model(self.onnx_path(), self._ort_batches, path, self.method, target=target,
                                num_batches=self._ort_num_batches(), preprocess=self.qdq_preprocess, notes=notes,
                                exclude_nodes=excluded)
            write_with_provenance(path, provenance, notes=notes)
            self.notes.extend(notes)
            self._built(f"qdq-{target}", time.perf_counter() - start, phases)
            found = path
        self._qdq[memo] = found
        return found

    def ort_trt_table(self, cache_dir: Path, phases: PhaseTimes | None = None) -> Path:
        """``<cache_dir>/calibration.flatbuffers`` for ONNX Runtime's TensorRT EP, built or reused.

        ``cache_dir`` must be the EP's ``trt_engine_cache_path``; pass
        ``trt_int8_calibration_table_name=<returned path>.name`` and
        ``trt_int8_use_native_calibration_table=False``.
        """
        self._q_dq_only("ONNX Runtime's TensorRT EP calibration table")
        cache_dir = Path(cache_dir)
        key = cache_dir.resolve()
        if key in self._tables:
            return self._tables[key]
        path = cache_dir / TABLE_FILE_NAME
        provenance = self.table_provenance()
        self._forget_if_rebuilding(path)
        found = load_if_matching(path, provenance, validate=_validate_table, on_rebuild=self.notes.append)
        if found is None:
            start = time.perf_counter()
            write_trt_calibration_table(self.onnx_path(), self._ort_batches, cache_dir, self.method,
                                        num_batches=self._ort_num_batches())
            write_with_provenance(path, provenance)
            self._built("ort-trt-table", time.perf_counter() - start, phases)
            found = path
        self._tables[key] = found
        return found

    def _q_dq_only(self, what: str) -> None:
        if self.tool == "modelopt":
            raise HarnessError(f"calibration.tool modelopt writes Q/DQ models; {what} is the harness's implicit INT8 "
                               "(set int8_mode: explicit)")

    # -- native TensorRT ----------------------------------------------------------------------

    def trt_cache_provenance(self, batch_size: int, input_shape: tuple[int, ...],
                             tensorrt_version: str | None = None) -> Provenance:
        cs = self.calibration_set
        return calibration_cache_provenance(
            model_hash=self.model_hash, calib_file_list_hash=cs.file_list_hash, count=cs.count, seed=cs.seed,
            batch_size=batch_size, input_shape=input_shape, preprocess=self.preprocess_id,
            tensorrt_version=tensorrt_version)

    def trt_calibrator_core(
        self,
        batch_size: int,
        input_shape: tuple[int, ...],
        *,
        cache_dir: Path | None = None,
        buffer_factory: BufferFactory = cuda_buffer_factory,
        tensorrt_version: str | None = None,
        phases: PhaseTimes | None = None,
    ) -> CalibratorCore:
        """A :class:`CalibratorCore` over this set's full batches, caching in ``cache_dir``.

        The native cache is entropy-calibrated whatever ``method`` says (TensorRT's
        ``IInt8EntropyCalibrator2``).  Calibration runs inside the engine build, so its time is
        part of the caller's ``build`` phase; ``phases`` is accepted for the uniform
        ``CalibrationSource`` interface and records nothing here.
        """
        self._q_dq_only("TensorRT's own calibrator")
        provenance = self.trt_cache_provenance(batch_size, input_shape, tensorrt_version)
        directory = Path(cache_dir) if cache_dir is not None else self.cache_dir / "calib"
        cache_path = directory / f"trt-calib-{provenance.key()}.cache"
        return CalibratorCore(self.batches(batch_size), batch_size, input_shape, buffer_factory, cache_path,
                              provenance=provenance, rebuild=self.rebuild)


__all__ = ["DEFAULT_ORT_BATCH_SIZE", "CalibrationData", "transform_fingerprint"]
