"""Per-node INT8 (or FP8) sensitivity and accuracy-aware mixed precision for Q/DQ models.

When INT8 loses accuracy, the useful question is *which layers* cause it (NNCF's accuracy-controlled
quantization, ModelOpt's AutoQuantize and Polygraphy's ``debug precision`` answer it). Here:

* :class:`QdqVariants` calibrates once (the same ranges, settings and Q/DQ flavour as
  :func:`calib.ort_qdq.build_qdq_model`) and then builds any variant of the Q/DQ model with some
  nodes left in FP32 (``nodes_to_exclude``) or with only some nodes quantized (``nodes_to_quantize``);
* :func:`sensitivity` scores every quantizable node (Conv, ConvTranspose, Gemm, MatMul): top-1
  accuracy, top-1 agreement with FP32 and the SNR of the logits against FP32's, when *only that
  node* is left in FP32 (mode ``fp32-one``), or, when only it is quantized (mode ``int8-one``);
  the table is sorted by harm (the accuracy the node costs in INT8, then the SNR);
* :func:`mixed_precision` starts from full INT8 and leaves the most harmful nodes in FP32, one at a
  time in sensitivity order, until the accuracy drop is within the budget, recording why each node
  stayed in higher precision.

Every score is measured on images the caller chooses; the sweep and ``harness sensitivity`` pass a
held-out part of the **train** split disjoint from the calibration images (:func:`holdout_set`),
never the split whose accuracy is reported. The ``cpu`` flavour is scored with ONNX Runtime's
optimised CPU kernels (what ort-cpu runs); the ``tensorrt`` flavour with graph optimisations off,
the reference Q/DQ arithmetic that TensorRT's int32 accumulation follows (see :mod:`calib.ort_qdq`);
the ``fp8`` flavour (:mod:`calib.fp8_qdq`, the same calibration ranges) at the optimisation level
its emulation is exact at. The tables name the quantized precision ``int8`` in their field names
whatever it is; ``precision`` says which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calib.fp8_qdq import ORT_FP8_OPTIMIZATION, WEIGHTED_OPS, write_fp8_qdq
from calib.ort_base import BatchFactory, calibration_method, count_or_materialize
from calib.ort_qdq import QDQ_TARGETS, check_target, precision_of, preprocess_for_quantization, quantize_options
from calib.ort_ranges import compute_tensor_ranges, tensor_thresholds
from calib.ort_static_quant import quantize_with_ranges
from calib.provenance import calibration_settings
from harness.errors import HarnessError
from harness.onnx_export import INPUT_NAME

#: Node types whose quantization the sensitivity scores (the weighted compute ops).
QUANTIZABLE_OPS: tuple[str, ...] = WEIGHTED_OPS
Mode = Literal["fp32-one", "int8-one"]
MODES: tuple[str, ...] = ("fp32-one", "int8-one")
#: SNR of identical outputs (the error is exactly zero), in dB.
SNR_CAP_DB = 200.0


# --------------------------------------------------------------------------- scoring


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """10 log10(signal power / error power) of ``other`` against ``reference`` (capped for exact equality)."""
    ref = np.asarray(reference, dtype=np.float64)
    err = np.asarray(other, dtype=np.float64) - ref
    noise = float(np.sum(err * err))
    if noise == 0.0:
        return SNR_CAP_DB
    signal = float(np.sum(ref * ref))
    return SNR_CAP_DB if signal == 0.0 else min(SNR_CAP_DB, 10.0 * math.log10(signal / noise))


@dataclass(frozen=True)
class Score:
    """One model variant on the held-out images, against FP32."""

    accuracy: float
    agreement: float
    snr_db: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class HeldOutData:
    """Preprocessed images (float32 NCHW) and labels in the model's output space, held in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 64,
                 description: dict[str, Any] | None = None) -> None:
        if images.ndim != 4 or len(images) != len(labels) or len(images) == 0:
            raise HarnessError(f"held-out data must be N x C x H x W images with N labels, got {images.shape} "
                               f"and {len(labels)} labels")
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.description = dict(description or {})

    def __len__(self) -> int:
        return len(self.labels)

    def logits(self, onnx_path: Path, *, optimize: bool | str) -> np.ndarray:
        """Every image's logits from ONNX Runtime's CPU EP (``optimize``: True all graph optimisations, False
        none, or a level's name: ``basic``, ``extended``)."""
        import onnxruntime as ort

        levels = {True: "ORT_ENABLE_ALL", False: "ORT_DISABLE_ALL", "all": "ORT_ENABLE_ALL",
                  "none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, levels[optimize])
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise HarnessError(f"ONNX Runtime could not load {Path(onnx_path).name}: {exc}") from exc
        name = session.get_inputs()[0].name
        out = [session.run(None, {name: self.images[i:i + self.batch_size]})[0]
               for i in range(0, len(self.images), self.batch_size)]
        return np.concatenate(out).reshape(len(self.images), -1)

    def score(self, logits: np.ndarray, reference: np.ndarray) -> Score:
        pred, ref_pred = logits.argmax(1), reference.argmax(1)
        return Score(accuracy=float(np.mean(pred == self.labels)), agreement=float(np.mean(pred == ref_pred)),
                     snr_db=snr_db(reference, logits))


# --------------------------------------------------------------------------- Q/DQ variants


class QdqVariants:
    """One calibration of an fp32 ONNX model, and the Q/DQ variants built from it (in ``work_dir``)."""

    def __init__(self, fp32_onnx: Path, calib_batches: BatchFactory, work_dir: Path, method: str = "entropy", *,
                 target: str = "cpu", num_batches: int | None = None, preprocess: bool = True) -> None:
        import onnx

        self.target = check_target(target)
        self.settings = calibration_settings(method)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.fp32_onnx = Path(fp32_onnx)
        if not self.fp32_onnx.exists():
            raise HarnessError(f"ONNX model {self.fp32_onnx} does not exist")
        self.notes: list[str] = []
        self.model_in = self.fp32_onnx
        if preprocess:
            pre = self.work_dir / "preprocessed.onnx"
            note = preprocess_for_quantization(self.fp32_onnx, pre)
            if note is None:
                self.model_in = pre
            else:
                self.notes.append(note)
        factory, length = count_or_materialize(calib_batches, num_batches)
        if length < 1:
            raise HarnessError("no calibration batches: the calibration set is empty")
        self.ranges = compute_tensor_ranges(self.model_in, factory, self.settings, num_batches=length,
                                            work_dir=self.work_dir,
                                            symmetric=bool(QDQ_TARGETS[self.target]["activation_symmetric"]))
        self.precision = precision_of(self.target)
        graph = onnx.load(str(self.model_in), load_external_data=False).graph
        self.all_nodes = [n.name for n in graph.node]
        self.nodes: list[tuple[str, str]] = [(n.name, n.op_type) for n in graph.node if n.op_type in QUANTIZABLE_OPS]
        unnamed = [op for name, op in self.nodes if not name]
        if unnamed:
            raise HarnessError(f"{len(unnamed)} quantizable node(s) of {self.fp32_onnx.name} have no name; "
                               "per-node precision needs named nodes")
        self._count = 0

    @property
    def node_names(self) -> list[str]:
        return [name for name, _ in self.nodes]

    def op_type(self, node: str) -> str:
        return dict(self.nodes)[node]

    def build(self, out_path: Path | None = None, *, exclude: Sequence[str] = (),
              only: Sequence[str] | None = None) -> Path:
        """A Q/DQ model with ``exclude`` left in FP32, or with only ``only`` quantized (every other node of the
        graph excluded: ``nodes_to_quantize``); the same quantizer call as :func:`calib.ort_qdq.build_qdq_model`
        on the ranges computed once. Returns its path."""
        unknown = [n for n in [*exclude, *(only or [])] if n not in self.node_names]
        if unknown:
            raise HarnessError(f"unknown node(s) {', '.join(unknown)}; quantizable nodes: {', '.join(self.node_names)}")
        if out_path is None:
            self._count += 1
            out_path = self.work_dir / f"variant-{self._count}.onnx"
        if self.precision == "fp8":
            write_fp8_qdq(self.model_in, Path(out_path), tensor_thresholds(self.ranges), exclude_nodes=list(exclude),
                          only_nodes=None if only is None else list(only))
            return Path(out_path)
        if only is not None:
            exclude = [n for n in self.all_nodes if n not in set(only)]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_with_ranges(self.model_in, Path(out_path), self.ranges,
                                     calibration_method(self.settings.method), quantize_options(self.target),
                                     work_dir=self.work_dir, exclude_nodes=list(exclude))
        except HarnessError:
            raise
        except Exception as exc:
            raise HarnessError(f"ONNX Runtime could not quantise {self.fp32_onnx.name} ({self.settings.method}): "
                               f"{type(exc).__name__}: {exc}") from exc
        return Path(out_path)

    @property
    def optimize(self) -> bool | str:
        """Score with ORT's optimised CPU kernels (the cpu flavour), the reference arithmetic (tensorrt), or
        FP8's exact emulation level (fp8)."""
        return ORT_FP8_OPTIMIZATION if self.target == "fp8" else self.target == "cpu"


# --------------------------------------------------------------------------- sensitivity


@dataclass(frozen=True)
class NodeSensitivity:
    node: str
    op_type: str
    accuracy: float
    agreement: float
    snr_db: float
    harm_points: float  # top-1 points this node costs in INT8 (see SensitivityTable.mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SensitivityTable:
    """Per-node scores, most harmful first. ``fp32-one``: harm = accuracy with only this node in FP32
    minus full INT8's; ``int8-one``: harm = FP32's accuracy minus the accuracy with only this node
    quantized. Ties in accuracy are broken by the SNR (the continuous measure)."""

    mode: str
    target: str
    method: str
    fp32: Score
    int8: Score
    rows: tuple[NodeSensitivity, ...]
    samples: int
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def int8_drop_points(self) -> float:
        return 100.0 * (self.fp32.accuracy - self.int8.accuracy)

    def ranking(self) -> list[str]:
        return [r.node for r in self.rows]

    @property
    def precision(self) -> str:
        """The quantized precision the table scores (``int8`` or ``fp8``)."""
        return precision_of(self.target)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "target": self.target, "precision": self.precision, "method": self.method,
                "fp32": self.fp32.to_dict(),
                "int8": self.int8.to_dict(), "int8_drop_points": self.int8_drop_points,
                "rows": [r.to_dict() for r in self.rows], "samples": self.samples, "data": dict(self.data)}


def sensitivity(variants: QdqVariants, data: HeldOutData, *, mode: str = "fp32-one",
                on_node: Callable[[int, int, str], None] | None = None) -> SensitivityTable:
    """Score every quantizable node of ``variants`` on ``data`` (see :class:`SensitivityTable`)."""
    if mode not in MODES:
        raise HarnessError(f"unknown sensitivity mode '{mode}'; choose one of {', '.join(MODES)}")
    reference = data.logits(variants.fp32_onnx, optimize=True)
    fp32 = data.score(reference, reference)
    int8 = data.score(data.logits(variants.build(), optimize=variants.optimize), reference)
    rows: list[NodeSensitivity] = []
    nodes = variants.node_names
    for i, node in enumerate(nodes):
        if on_node is not None:
            on_node(i, len(nodes), node)
        path = variants.build(exclude=[node]) if mode == "fp32-one" else variants.build(only=[node])
        s = data.score(data.logits(path, optimize=variants.optimize), reference)
        path.unlink(missing_ok=True)
        harm = (s.accuracy - int8.accuracy) if mode == "fp32-one" else (fp32.accuracy - s.accuracy)
        rows.append(NodeSensitivity(node, variants.op_type(node), s.accuracy, s.agreement, s.snr_db, 100.0 * harm))
    # fp32-one: a high SNR with the node in FP32 means its quantization hurt; int8-one: a low SNR does
    sign = -1.0 if mode == "fp32-one" else 1.0
    rows.sort(key=lambda r: (-round(r.harm_points, 9), sign * r.snr_db))
    return SensitivityTable(mode=mode, target=variants.target, method=variants.settings.method, fp32=fp32,
                            int8=int8, rows=tuple(rows), samples=len(data), data=data.description)


# --------------------------------------------------------------------------- mixed precision


@dataclass(frozen=True)
class MixedPrecision:
    """The accuracy-budget result: which nodes stayed in FP32, why, and the drop at each step."""

    budget_points: float
    excluded: tuple[dict[str, Any], ...]  # {node, op_type, reason}
    steps: tuple[dict[str, Any], ...]  # {excluded: [...], accuracy, drop_points, agreement, snr_db}
    fp32_accuracy: float
    accuracy: float
    drop_points: float
    within_budget: bool
    model: Path | None = None

    @property
    def excluded_nodes(self) -> list[str]:
        return [e["node"] for e in self.excluded]

    def to_dict(self) -> dict[str, Any]:
        return {"budget_points": self.budget_points, "excluded": [dict(e) for e in self.excluded],
                "steps": [dict(s) for s in self.steps], "fp32_accuracy": self.fp32_accuracy,
                "accuracy": self.accuracy, "drop_points": self.drop_points, "within_budget": self.within_budget}


def mixed_precision(variants: QdqVariants, data: HeldOutData, table: SensitivityTable, max_drop_points: float,
                    out_path: Path | None = None) -> MixedPrecision:
    """From full INT8, leave nodes in FP32 one at a time in ``table``'s order until the drop on ``data``
    (against FP32) is within ``max_drop_points``; the final Q/DQ model goes to ``out_path``."""
    if not max_drop_points >= 0:
        raise HarnessError(f"max_accuracy_drop must be >= 0 points, got {max_drop_points}")
    reference = data.logits(variants.fp32_onnx, optimize=True)
    fp32_acc = data.score(reference, reference).accuracy
    harm = {r.node: r.harm_points for r in table.rows}
    excluded: list[str] = []
    reasons: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    path = variants.build(out_path)
    score = data.score(data.logits(path, optimize=variants.optimize), reference)
    steps.append({"excluded": [], **score.to_dict(), "drop_points": 100.0 * (fp32_acc - score.accuracy)})
    for rank, node in enumerate(table.ranking(), start=1):
        if 100.0 * (fp32_acc - score.accuracy) <= max_drop_points + 1e-9:
            break
        before = 100.0 * (fp32_acc - score.accuracy)
        excluded.append(node)
        path = variants.build(out_path, exclude=excluded)
        score = data.score(data.logits(path, optimize=variants.optimize), reference)
        after = 100.0 * (fp32_acc - score.accuracy)
        steps.append({"excluded": list(excluded), **score.to_dict(), "drop_points": after})
        reasons.append({"node": node, "op_type": variants.op_type(node), "sensitivity_rank": rank,
                        "reason": (f"rank {rank} by sensitivity ({table.mode}: {harm[node]:.2f} points); the drop was "
                                   f"{before:.2f} > {max_drop_points:g} points with it quantized, {after:.2f} with it "
                                   "in FP32")})
    drop = 100.0 * (fp32_acc - score.accuracy)
    return MixedPrecision(budget_points=max_drop_points, excluded=tuple(reasons), steps=tuple(steps),
                          fp32_accuracy=fp32_acc, accuracy=score.accuracy, drop_points=drop,
                          within_budget=drop <= max_drop_points + 1e-9, model=path)


# --------------------------------------------------------------------------- data from splits


def holdout_set(train: Any, calibration_set: Any, *, count: int = 500, seed: int = 1) -> Any:
    """A seeded sample of the train split's images that are not calibration images (a ``CalibrationSet``,
    so it loads with the same reader and transform); never touches the evaluation split."""
    from calib.calibset import CalibrationSet

    used = {Path(p).resolve() for p in calibration_set.paths}
    rest = [(p, label) for p, label in train.samples if Path(p).resolve() not in used]
    if not rest:
        raise HarnessError(f"every train image of {train.name} is a calibration image; nothing is left to "
                           "measure the accuracy drop on (use fewer calibration images)")
    return CalibrationSet.select(rest, count=count, seed=seed, root=calibration_set.root)


def held_out_data(holdout: Any, transform: Any, label_map: Sequence[int] | None = None,
                  batch_size: int = 64) -> HeldOutData:
    """The held-out images preprocessed with the model's transform, labels in its output space."""
    images = np.concatenate([b.numpy() for b in holdout.batches(transform, batch_size)])
    labels = np.array([label for _, label in holdout.files])
    if label_map is not None:
        labels = np.asarray(label_map)[labels]
    return HeldOutData(images, labels, batch_size=batch_size,
                       description={"split": "train (held out from calibration)", "count": holdout.count,
                                    "seed": holdout.seed, "file_list_hash": holdout.file_list_hash})


def calibration_batches(calibration_set: Any, transform: Any, batch_size: int = 16) -> tuple[BatchFactory, int]:
    """(factory, length) of the calibration images as float32 arrays, as the Q/DQ build reads them."""
    return ((lambda: (b.numpy() for b in calibration_set.batches(transform, batch_size))),
            calibration_set.num_batches(batch_size))


#: The Q/DQ flavour each backend runs (explicit INT8 on TensorRT uses the symmetric flavour).
BACKEND_TARGETS: dict[str, str] = {"ort-cpu": "cpu", "ort-cuda": "tensorrt", "ort-trt": "tensorrt",
                                   "trt-native": "tensorrt"}
#: The backends that run FP8 Q/DQ models (one flavour for all of them).
FP8_BACKENDS: tuple[str, ...] = ("ort-cpu", "trt-native")


def target_for_backend(backend: str, precision: str = "int8") -> str:
    if precision == "fp8":
        if backend not in FP8_BACKENDS:
            raise HarnessError(f"backend '{backend}' runs no FP8 Q/DQ model (choose one of {', '.join(FP8_BACKENDS)})")
        return "fp8"
    if precision != "int8":
        raise HarnessError(f"sensitivity scores quantized Q/DQ models (int8, fp8), not {precision}")
    if backend not in BACKEND_TARGETS:
        raise HarnessError(f"sensitivity scores Q/DQ models; backend '{backend}' runs none "
                           f"(choose one of {', '.join(BACKEND_TARGETS)})")
    return BACKEND_TARGETS[backend]


@dataclass(frozen=True)
class SensitivityRun:
    """What ``harness sensitivity`` (and an int8 cell with ``sensitivity: true``) computes."""

    table: SensitivityTable
    mixed: MixedPrecision | None
    calibration: dict[str, Any]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"sensitivity": self.table.to_dict(), "mixed_precision": None if self.mixed is None
                else self.mixed.to_dict(), "calibration": dict(self.calibration), "notes": list(self.notes)}


def analyse(fp32_onnx: Path, train: Any, evaluation: Any, transform: Any, *, method: str = "entropy",
            count: int = 512, seed: int = 0, **kwargs: Any) -> SensitivityRun:
    """:func:`analyse_calibrated` on a seeded calibration sample of ``train`` (``evaluation``'s files are
    only used to keep them out; no image of it is read)."""
    from calib.calibset import CalibrationSet

    calib_set = CalibrationSet.from_splits(train, evaluation, count=count, seed=seed)
    return analyse_calibrated(fp32_onnx, calib_set, train, transform, method=method, **kwargs)


def analyse_calibrated(fp32_onnx: Path, calib_set: Any, train: Any, transform: Any, *, method: str = "entropy",
                       holdout_count: int = 500, holdout_seed: int = 1, target: str = "cpu",
                       mode: str = "fp32-one", label_map: Sequence[int] | None = None,
                       max_drop_points: float | None = None, qdq_out: Path | None = None,
                       work_parent: Path | None = None,
                       on_node: Callable[[int, int, str], None] | None = None) -> SensitivityRun:
    """Calibrate on ``calib_set``, score every node on a held-out part of ``train`` disjoint from it, and
    with ``max_drop_points`` build the accuracy-budget Q/DQ model (moved to ``qdq_out`` when given)."""
    holdout = holdout_set(train, calib_set, count=holdout_count, seed=holdout_seed)
    data = held_out_data(holdout, transform, label_map)
    factory, length = calibration_batches(calib_set, transform)
    with tempfile.TemporaryDirectory(prefix="sensitivity.", dir=work_parent) as tmp:
        variants = QdqVariants(fp32_onnx, factory, Path(tmp), method, target=target, num_batches=length)
        table = sensitivity(variants, data, mode=mode, on_node=on_node)
        mixed = None
        if max_drop_points is not None:
            ranking = table if mode == "fp32-one" else sensitivity(variants, data, mode="fp32-one")
            mixed = mixed_precision(variants, data, ranking, max_drop_points, out_path=Path(tmp) / "budget.onnx")
            if qdq_out is not None:
                from harness.store.atomic import atomic_replace

                Path(qdq_out).parent.mkdir(parents=True, exist_ok=True)
                atomic_replace(Path(tmp) / "budget.onnx", Path(qdq_out))
                mixed = dataclasses.replace(mixed, model=Path(qdq_out))
            else:
                mixed = dataclasses.replace(mixed, model=None)  # the folder is going away
        notes = tuple(variants.notes)
    return SensitivityRun(table=table, mixed=mixed, notes=notes, calibration={
        "method": method, "count": calib_set.count, "seed": calib_set.seed,
        "calib_file_list_hash": calib_set.file_list_hash, "target": target})


__all__ = [
    "BACKEND_TARGETS",
    "FP8_BACKENDS",
    "INPUT_NAME",
    "MODES",
    "QUANTIZABLE_OPS",
    "HeldOutData",
    "MixedPrecision",
    "NodeSensitivity",
    "QdqVariants",
    "Score",
    "SensitivityRun",
    "SensitivityTable",
    "analyse",
    "analyse_calibrated",
    "calibration_batches",
    "held_out_data",
    "holdout_set",
    "mixed_precision",
    "sensitivity",
    "snr_db",
    "target_for_backend",
]
