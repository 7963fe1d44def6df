"""``AccuracyAwareCalibration``: the calibration source of an int8 cell with an ``int8:`` variant.

It wraps the sweep's :class:`calib.source.CalibrationData` (same calibration images, settings and
caches) and changes one thing: with ``max_accuracy_drop`` the Q/DQ model a backend asks for leaves the
nodes the accuracy budget names in FP32 (:func:`calib.sensitivity.mixed_precision`), so ort-cpu,
ort-cuda and TensorRT's explicit (Q/DQ) INT8 run it; with ``sensitivity`` only, the plain Q/DQ model
runs and the per-node table is stored with the cell. Implicit INT8 on TensorRT (a calibration table or
TensorRT's calibrator) cannot keep chosen layers in FP32, so a budget there is refused with a message
naming ``int8_mode: explicit``.

The analysis (table, nodes kept in FP32 and why) is cached under ``<cache>/calib/`` by everything it
depends on (the calibration provenance, the variant's settings, the Q/DQ flavour and the held-out
images) with a checksum sidecar; the budget model is the calibration source's own Q/DQ model with
those nodes excluded (``CalibrationData.qdq_onnx(exclude_nodes=...)``: keyed by them, provenance,
healing). A damaged file is rebuilt with a note, like every other calibration artifact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from calib.sensitivity import analyse_calibrated, holdout_set
from harness.store import cache_files
from harness.errors import HarnessError
from harness.store.fingerprint import dict_hash
from harness.phases import PhaseTimes

ANALYSIS_FORMAT_VERSION = 1


class AccuracyAwareCalibration:
    """A ``CalibrationSource`` (see :class:`backends.base.CalibrationSource`) for one int8 variant."""

    def __init__(self, inner: Any, settings: Any, train: Any, *, label_map: Any = None) -> None:
        self.inner = inner
        self.settings = settings  # harness.config.Int8Settings
        self.train = train
        self.label_map = None if label_map is None else list(label_map)
        self.notes = inner.notes  # one list: the cell's notes see both
        self._analysis: dict[str, dict[str, Any]] = {}
        self._holdout: str | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def calibration_set(self) -> Any:
        return self.inner.calibration_set

    def _holdout_hash(self) -> str:
        if self._holdout is None:
            s = self.settings
            self._holdout = holdout_set(self.train, self.inner.calibration_set, count=s.holdout,
                                        seed=s.holdout_seed).file_list_hash
        return self._holdout

    @property
    def provenance(self) -> dict[str, Any]:
        return {**self.inner.provenance, "int8": self.settings.model_dump(), "holdout_file_list_hash":
                self._holdout_hash()}

    @property
    def provenance_hash(self) -> str:
        return dict_hash(self.provenance)[:16]

    # -- the analysis -----------------------------------------------------------------------

    def _path(self, target: str) -> tuple[Path, dict[str, Any]]:
        key_data = {"provenance": self.provenance, "target": target, "format": ANALYSIS_FORMAT_VERSION}
        return Path(self.inner.cache_dir) / "calib" / f"sensitivity-{dict_hash(key_data)[:20]}.json", key_data

    def analysis(self, target: str, phases: PhaseTimes | None = None) -> dict[str, Any]:
        """The stored analysis for ``target``: ``sensitivity`` (table), ``mixed_precision`` (or None),
        ``calibration``; computed once and cached (time to ``phases`` as ``calibrate``)."""
        if target in self._analysis:
            return self._analysis[target]
        json_path, key_data = self._path(target)
        found = self._cached_analysis(json_path)
        if found is None:
            start = time.perf_counter()
            s = self.settings
            json_path.parent.mkdir(parents=True, exist_ok=True)
            run = analyse_calibrated(
                self.inner.onnx_path(), self.inner.calibration_set, self.train, self.inner.transform,
                method=self.inner.method, holdout_count=s.holdout, holdout_seed=s.holdout_seed, target=target,
                mode=s.sensitivity_mode, label_map=self.label_map, max_drop_points=s.max_accuracy_drop,
                work_parent=json_path.parent)
            found = run.to_dict()
            cache_files.write_bytes(json_path, json.dumps(found, sort_keys=True, default=str).encode(), key_data)
            (phases if phases is not None else self.inner.phases).add("calibrate", time.perf_counter() - start)
        self._analysis[target] = found
        return found

    def _cached_analysis(self, json_path: Path) -> dict[str, Any] | None:
        reason = cache_files.damaged(json_path)
        if reason is None and json_path.exists():
            try:
                return dict(json.loads(json_path.read_text()))
            except ValueError as exc:
                reason = f"it is not JSON ({exc})"
        if reason is not None:
            cache_files.discard(json_path)
            self.notes.append(cache_files.rebuilt_note("sensitivity analysis", json_path, reason))
        return None

    def fp32_nodes(self, target: str) -> list[str]:
        """The nodes the accuracy budget keeps in FP32 for ``target`` (empty without a budget)."""
        mixed = self.analysis(target).get("mixed_precision") or {}
        return [e["node"] for e in mixed.get("excluded", [])]

    # -- CalibrationSource ------------------------------------------------------------------

    def qdq_onnx(self, target: Literal["cpu", "tensorrt"], phases: PhaseTimes) -> Path:
        self.analysis(target, phases)
        return self.inner.qdq_onnx(target, phases, exclude_nodes=self.fp32_nodes(target))

    def _implicit(self, what: str) -> None:
        if self.settings.max_accuracy_drop is not None:
            raise HarnessError(f"an int8 accuracy budget keeps chosen layers in FP32 through the Q/DQ model; {what} "
                               "cannot; set int8_mode: explicit (TensorRT then builds from the Q/DQ model)")

    def ort_trt_table(self, cache_dir: Path, phases: PhaseTimes) -> Path:
        self._implicit("ONNX Runtime's TensorRT EP calibration table")
        return self.inner.ort_trt_table(cache_dir, phases)

    def trt_calibrator_core(self, batch_size: int, input_shape: tuple[int, ...], **kwargs: Any) -> Any:
        self._implicit("TensorRT's own calibrator")
        return self.inner.trt_calibrator_core(batch_size, input_shape, **kwargs)

    def batches(self, batch_size: int) -> Any:
        return self.inner.batches(batch_size)

    def stored(self) -> dict[str, Any]:
        """What the cell stores: every analysis computed (by Q/DQ flavour)."""
        return {target: analysis for target, analysis in self._analysis.items()}


__all__ = ["AccuracyAwareCalibration"]
