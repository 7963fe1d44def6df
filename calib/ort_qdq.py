"""Explicit INT8: a Q/DQ ONNX model from ONNX Runtime's ``quantize_static``.

Always QDQ format with per-channel symmetric int8 weights.  Two *targets*, because
the two consumers of a Q/DQ model want different activations (measured, see
``QDQ_TARGETS``):

* ``cpu`` (ONNX Runtime CPU EP): asymmetric **uint8** activations, int32 biases
  (ORT's defaults for x86).  Measured with onnxruntime 1.32 on 2 shared AVX-512-VNNI
  cores, batch 16, random-weight models: ResNet-18 fp32 395 ms, uint8 226 ms,
  symmetric int8 415-840 ms; MobileNet-v2 fp32 223 ms, uint8 59-114 ms, symmetric
  int8 182-201 ms with 97 % top-1 agreement against 100 % for uint8.  Symmetric int8
  puts a Relu's [0, max] output on [-max, max] (half the levels wasted, and the Relu
  is not folded into the quantisation), and ORT's x86 kernels are U8S8.
* ``tensorrt`` (TensorRT explicit quantization, the only INT8 route in TRT 11):
  symmetric **int8** activations (TensorRT requires zero point 0 and has no
  uint8 Q/DQ) and float biases (TensorRT rejects an int32 DequantizeLinear,
  onnxruntime issue 17738).  This flavour also runs on the CPU EP, slower.

The ranges are computed here (:func:`calib.ort_ranges.compute_tensor_ranges`,
the same code and settings as the TensorRT EP table) and handed to ONNX Runtime's
quantizer (:func:`calib.ort_static_quant.quantize_with_ranges`): ``quantize_static``
forwards only ``symmetric``, moving-average and ``percentile`` options to the
calibrator, never ``num_bins`` / ``num_quantized_bins``, so its "entropy" would
run on ONNX Runtime's default 128-bin histogram with 128 quantized bins, where
the threshold search has a single candidate: max-abs.

Bit-exactness on x86 without VNNI: ONNX Runtime's U8S8 / S8S8 kernels use
``VPMADDUBSW``, whose int16 pair sums saturate with 8-bit weights (ORT's
quantization docs recommend ``reduce_range`` there).  Measured on an AVX2-only
AMD EPYC: the ``tensorrt`` flavour run by the CPU EP with graph optimisations had
cosine 0.94 to fp32 while the same model's reference Q/DQ arithmetic (no fusion)
had 0.997; with 7-bit weights both agreed (0.9998).  So the ``cpu`` flavour uses
7-bit weights (``reduce_range``) on such CPUs (decided by :func:`cpu_needs_reduce_range`
and recorded in ``QDQ_TARGETS``, hence in the provenance), and the ``tensorrt``
flavour keeps full 8-bit weights: TensorRT accumulates in int32 and never
saturates, so its faithful CPU check is the reference Q/DQ arithmetic
(``ORT_DISABLE_ALL``), not ORT's fused CPU kernels.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calib.ort_base import (
    BatchFactory,
    as_numpy,
    calibration_method,
    count_or_materialize,
    import_quantization,
    make_reader,
)
from calib.fp8_qdq import FP8_OPSET, WEIGHTED_OPS, write_fp8_qdq
from calib.ort_ranges import compute_tensor_ranges, tensor_thresholds
from calib.ort_static_quant import quantize_with_ranges
from calib.provenance import CalibrationSettings, calibration_settings
from harness.store.atomic import atomic_replace
from harness.errors import HarnessError

_LOG = logging.getLogger(__name__)


def cpu_needs_reduce_range(cpuinfo: str | None = None) -> bool:
    """True on an x86 CPU with AVX2 but no VNNI (``avx512_vnni`` / ``avx_vnni``): ORT's int8
    kernels use ``VPMADDUBSW`` there, which saturates with full 8-bit weights."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return "avx2" in flags and not ({"avx512_vnni", "avx_vnni"} & flags)


#: Q/DQ flavours: activation type, symmetric activations, quantised (int32) bias, 7-bit weights.
#: (``reduce_range`` of the cpu flavour is a fact of this host's CPU, fixed at import.)
QDQ_TARGETS: dict[str, dict[str, Any]] = {
    "cpu": {"activation_type": "uint8", "activation_symmetric": False, "quantize_bias": True,
            "reduce_range": cpu_needs_reduce_range()},
    "tensorrt": {"activation_type": "int8", "activation_symmetric": True, "quantize_bias": False,
                 "reduce_range": False},
    "fp8": {"activation_type": "float8e4m3fn", "activation_symmetric": True, "quantize_bias": False,
            "weights": "per-channel max/448", "activations": "per-tensor threshold/448",
            "ops": list(WEIGHTED_OPS), "opset": FP8_OPSET},
}
#: The Q/DQ targets whose quantizer is ONNX Runtime's (8-bit integer); ``fp8`` is written by calib.fp8_qdq.
INT8_TARGETS: tuple[str, ...] = ("cpu", "tensorrt")


def precision_of(target: str) -> str:
    """``int8`` or ``fp8``: what a Q/DQ target quantizes to."""
    return "fp8" if check_target(target) == "fp8" else "int8"

def preprocess_for_quantization(src: Path, dst: Path) -> str | None:
    """``quant_pre_process`` (symbolic shape inference + ORT basic optimisation) into ``dst``.

    Returns None on success, else a note saying why the original model is used.
    """
    import_quantization()
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        return f"quant_pre_process unavailable ({exc}); quantised the exported model as is"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        if not dst.exists() or dst.stat().st_size == 0:
            raise RuntimeError("it wrote no model")
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to the unprocessed model
        dst.unlink(missing_ok=True)
        _LOG.info("quant_pre_process failed on %s: %s", src.name, exc)
        return f"quant_pre_process failed ({type(exc).__name__}: {exc}); quantised the exported model as is"
    return None


def check_target(target: str) -> str:
    if target not in QDQ_TARGETS:
        raise HarnessError(f"unknown Q/DQ target '{target}'; choose one of: {', '.join(QDQ_TARGETS)}")
    return target


def quantize_options(target: str = "cpu") -> dict[str, Any]:
    """The keyword arguments (besides model, output, reader, method) given to ``quantize_static``."""
    q = import_quantization()
    flavour = QDQ_TARGETS[check_target(target)]
    if target not in INT8_TARGETS:
        raise HarnessError(f"Q/DQ target '{target}' is not written by ONNX Runtime's quantizer")
    return {
        "quant_format": q.QuantFormat.QDQ,
        "per_channel": True,
        "reduce_range": bool(flavour["reduce_range"]),
        "activation_type": q.QuantType.QInt8 if flavour["activation_type"] == "int8" else q.QuantType.QUInt8,
        "weight_type": q.QuantType.QInt8,
        "extra_options": {
            "ActivationSymmetric": flavour["activation_symmetric"],
            "WeightSymmetric": True,
            "QuantizeBias": flavour["quantize_bias"],
        },
    }


def build_qdq_model(
    fp32_onnx: Path,
    calib_batches: BatchFactory,
    out_path: Path,
    method: str | CalibrationSettings = "entropy",
    *,
    target: str = "cpu",
    num_batches: int | None = None,
    preprocess: bool = True,
    notes: list[str] | None = None,
    num_bins: int | None = None,
    num_quantized_bins: int | None = None,
    percentile: float | None = None,
    exclude_nodes: Sequence[str] = (),
) -> Path:
    """Quantise ``fp32_onnx`` (dynamic batch allowed) into a Q/DQ model at ``out_path``.

    ``calib_batches()`` returns a fresh iterator of float32 NCHW batches (arrays or
    tensors; the last may be smaller).  Pass ``num_batches`` to stream them; without
    it they are held in memory once.  ``notes`` collects remarks (e.g. when
    ``quant_pre_process`` could not run).  ``target`` picks the flavour (``cpu`` for
    ONNX Runtime's CPU EP, ``tensorrt`` for TensorRT; see the module docstring).
    ``method`` is a name or a :class:`calib.provenance.CalibrationSettings`; the histogram
    settings default to 2048 bins (see that class).  ``exclude_nodes`` names nodes of the
    fp32 model left in float (``quantize_static``'s ``nodes_to_exclude``).  Writes atomically.
    """
    settings = calibration_settings(method, num_bins=num_bins, num_quantized_bins=num_quantized_bins,
                                    percentile=percentile)
    options = quantize_options(target) if check_target(target) in INT8_TARGETS else {}
    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    if not fp32_onnx.exists():
        raise HarnessError(f"ONNX model {fp32_onnx} does not exist")
    factory, length = count_or_materialize(calib_batches, num_batches)
    if length < 1:
        raise HarnessError("no calibration batches: the calibration set is empty")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qdq.", dir=out_path.parent) as tmp_name:
        tmp = Path(tmp_name)
        model_in = fp32_onnx
        if preprocess:
            pre = tmp / "preprocessed.onnx"
            note = preprocess_for_quantization(fp32_onnx, pre)
            if note is None:
                model_in = pre
            elif notes is not None:
                notes.append(note)
        _check_excluded_nodes(model_in, exclude_nodes, preprocessed=model_in != fp32_onnx)
        flavour = QDQ_TARGETS[target]
        ranges = compute_tensor_ranges(model_in, factory, settings, num_batches=length, work_dir=tmp,
                                       symmetric=bool(flavour["activation_symmetric"]))
        tmp_out = tmp / "qdq.onnx"
        if target == "fp8":
            summary = write_fp8_qdq(model_in, tmp_out, tensor_thresholds(ranges), exclude_nodes=exclude_nodes)
            if notes is not None:
                notes.append(f"FP8 E4M3 Q/DQ: {len(summary.quantized_nodes)} node(s) quantized "
                             f"({summary.activations} activation, {summary.weights} weight tensors), "
                             f"{len(summary.excluded_nodes)} left in float")
            atomic_replace(tmp_out, out_path)
            return out_path
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_with_ranges(model_in, tmp_out, ranges, calibration_method(settings.method), options,
                                     work_dir=tmp, exclude_nodes=exclude_nodes)
        except HarnessError:
            raise
        except Exception as exc:
            raise HarnessError(f"ONNX Runtime could not quantise {fp32_onnx.name} ({settings.method}): "
                               f"{type(exc).__name__}: {exc}") from exc
        atomic_replace(tmp_out, out_path)
    return out_path


def node_names(path: Path) -> list[str]:
    """The names of the nodes of the ONNX model at ``path`` (graph order)."""
    import onnx

    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node]


def _check_excluded_nodes(model: Path, exclude_nodes: Sequence[str], *, preprocessed: bool) -> None:
    """ONNX Runtime ignores unknown names in ``nodes_to_exclude``: say so instead of quantising them."""
    if isinstance(exclude_nodes, str):
        raise TypeError("exclude_nodes is a sequence of node names, not one string")
    if not exclude_nodes:
        return
    unknown = sorted(set(exclude_nodes) - set(node_names(model)))
    if unknown:
        where = "the model quant_pre_process made (pass preprocess=False to use the exported names)" \
            if preprocessed else model.name
        raise HarnessError(f"exclude_nodes names no node of {where}: {', '.join(unknown[:5])}"
                           f"{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''}")


def count_qdq_nodes(path: Path) -> dict[str, int]:
    """How many QuantizeLinear / DequantizeLinear nodes ``path`` holds."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts


# as_numpy, calibration_method and make_reader live in calib.ort_base; re-exported for existing callers.
__all__ = ["INT8_TARGETS", "QDQ_TARGETS", "as_numpy", "precision_of", "build_qdq_model", "calibration_method",
           "check_target",
           "cpu_needs_reduce_range",
           "count_qdq_nodes", "make_reader", "node_names", "preprocess_for_quantization", "quantize_options"]
