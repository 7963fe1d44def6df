"""Explicit FP8 (E4M3): a Q/DQ ONNX model from per-tensor activation ranges and per-channel weights.

What TensorRT builds as FP8 on sm_89+ (and what ModelOpt's ``quantize_mode="fp8"`` writes): opset 19
``QuantizeLinear``/``DequantizeLinear`` with ``FLOAT8E4M3FN`` zero points (always 0: E4M3 is
symmetric), placed on the inputs of the weighted compute ops only (Conv, ConvTranspose, Gemm,
MatMul: the layers TensorRT runs in FP8); every other layer stays in float.

* Activations: one scale per tensor, ``threshold / 448`` (448 is E4M3's largest finite value), the
  threshold coming from :func:`calib.ort_ranges.compute_tensor_ranges` with the same images, method
  and histogram settings as INT8 (entropy is TensorRT's KL search there, whose candidate grid was
  designed for INT8's 128 uniform levels: the same threshold is then spread over FP8's logarithmic
  grid). ``QuantizeLinear`` saturates at +-448 x scale (opset 19's ``saturate=1``).
* Weights: one scale per output channel, ``max|w_c| / 448``, stored as FP8 initializers
  (round-to-nearest-even by ``ml_dtypes``, the E4M3 arithmetic numpy lacks) behind a per-axis
  ``DequantizeLinear``. Biases stay float (TensorRT fuses them in float).

Why not ONNX Runtime's quantizer, which INT8 uses: its FP8 scales come from the tensor's standard
deviation under a Gaussian assumption (``quant_utils.compute_scale_zp_float8``), not from a calibrated
range, so it cannot apply the entropy/minmax/percentile thresholds INT8 uses.

Running it on ONNX Runtime's CPU EP (an exact emulation: Q rounds to E4M3, DQ widens, the op runs in
FP32) needs graph optimisations off (:data:`ORT_FP8_OPTIMIZATION`): ONNX Runtime's Q/DQ rewrites assume
integer types. Measured on ResNet-18 (random weights) and small CNNs with 1.20.1, 1.21.1 and 1.32.0: at
extended/all, 1.20 and 1.32 delete the Relu in front of each FP8 QuantizeLinear (``ReluQuantRewrite``
takes zero point 0 for the type's minimum, true of uint8 only; logit SNR -5.6 dB instead of 24.4 dB) and
1.21 fuses DQ-Conv-Q into a QLinearConv that rejects float8 and fails to load; at basic, 1.21's
``WeightBiasQuantization`` turns each float bias into an int32 one at the FP8 scales' product, which
overflows in a model with FP16 float parts (top-1 agreement with the reference fell to 19 %). With no
optimisation the outputs are the written-out arithmetic on every version; the latency is an emulation's
anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError

#: E4M3's largest finite magnitude (``float8_e4m3fn``: no infinities; 0x7F/0xFF are NaN).
FP8_E4M3_MAX = 448.0
#: The first ONNX opset whose QuantizeLinear/DequantizeLinear take float 8 types.
FP8_OPSET = 19
#: IR version 9 introduced the float 8 tensor types.
FP8_IR_VERSION = 9
#: The ONNX Runtime graph optimisation level an FP8 Q/DQ model runs at on the CPU EP (see the module docstring).
ORT_FP8_OPTIMIZATION = "none"
#: The ops whose inputs are quantized: TensorRT's FP8 layers (convolutions and matrix multiplies).
WEIGHTED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Fp8Summary:
    """What :func:`write_fp8_qdq` quantized (recorded with the artifact)."""

    quantized_nodes: tuple[str, ...]
    excluded_nodes: tuple[str, ...]
    activations: int
    weights: int
    opset: int

    def to_dict(self) -> dict[str, Any]:
        return {"element_type": "FLOAT8E4M3FN", "quantized_nodes": len(self.quantized_nodes),
                "excluded_nodes": list(self.excluded_nodes), "activations_per_tensor": self.activations,
                "weights_per_channel": self.weights, "opset": self.opset}


def e4m3(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to E4M3 (nearest even), saturated at +-448, as a ``float8_e4m3fn`` array."""
    from ml_dtypes import float8_e4m3fn

    return np.clip(np.asarray(values, dtype=np.float32), -FP8_E4M3_MAX, FP8_E4M3_MAX).astype(float8_e4m3fn)


def fp8_scale(threshold: float) -> float:
    """The per-tensor scale of an activation whose calibrated threshold is ``threshold``."""
    t = float(threshold)
    if not np.isfinite(t):
        raise HarnessError(f"activation threshold {t} is not finite: the calibration saw inf or NaN")
    return t / FP8_E4M3_MAX if t > 0 else 1.0  # an all-zero tensor: any scale represents it exactly


def _fp8_tensor(name: str, values: np.ndarray) -> Any:
    from onnx import TensorProto, helper

    data = e4m3(values)
    return helper.make_tensor(name, TensorProto.FLOAT8E4M3FN, list(data.shape), data.tobytes(), raw=True)


def _weight_axis(node: Any, weight: np.ndarray) -> int:
    """The output-channel axis of a weighted node's weight (what per-channel means for TensorRT)."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Conv":
        return 0  # [C_out, C_in/g, k...]
    if node.op_type == "ConvTranspose":
        return 1  # [C_in, C_out/g, k...]
    if node.op_type == "Gemm":
        return 0 if "transB" in attrs and attrs["transB"].i else 1  # B is [N, K] or [K, N]
    return weight.ndim - 1  # MatMul: [..., K, N]


def _per_channel(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(FP8 weight, float32 scale per channel along ``axis``)."""
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / FP8_E4M3_MAX, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return weight.astype(np.float32) / scale.reshape(shape), scale


def _at_opset(model: Any) -> Any:
    """``model`` with the default domain at :data:`FP8_OPSET` or newer (converted by ONNX's own converter)."""
    import onnx

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if current is None:
        raise HarnessError("the model imports no default ONNX opset")
    if current < FP8_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, FP8_OPSET)
        except Exception as exc:  # the converter raises RuntimeError/ValidationError for unsupported adapters
            raise HarnessError(f"could not convert the model from opset {current} to {FP8_OPSET} for FP8 "
                               f"Q/DQ: {type(exc).__name__}: {exc}") from exc
    model.ir_version = max(model.ir_version, FP8_IR_VERSION)
    return model


def quantizable_nodes(model: Any) -> list[Any]:
    """The nodes whose inputs FP8 quantizes (named; graph order)."""
    return [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]


def write_fp8_qdq(model_in: Path, model_out: Path, thresholds: Mapping[str, float], *,
                  exclude_nodes: Sequence[str] = (), only_nodes: Iterable[str] | None = None) -> Fp8Summary:
    """Write the FP8 Q/DQ form of ``model_in`` to ``model_out`` (see the module docstring).

    ``thresholds`` maps each activation tensor to its calibrated |x| threshold. ``exclude_nodes``
    names weighted nodes left in float (their inputs unquantized); ``only_nodes`` quantizes just those.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = _at_opset(onnx.load(str(model_in)))
    graph = model.graph
    weighted = quantizable_nodes(model)
    names = {n.name for n in weighted}
    if any(not n.name for n in weighted):
        raise HarnessError(f"{sum(not n.name for n in weighted)} weighted node(s) of {Path(model_in).name} have "
                           "no name; per-node precision needs named nodes")
    unknown = sorted((set(exclude_nodes) | set(only_nodes or ())) - names)
    if unknown:
        raise HarnessError(f"FP8 Q/DQ: no weighted node named {', '.join(unknown[:5])} in {Path(model_in).name}")
    chosen = set(names if only_nodes is None else only_nodes) - set(exclude_nodes)
    initializers = {i.name: i for i in graph.initializer}

    new_inits: list[Any] = []
    dq_of: dict[str, str] = {}  # tensor -> its dequantized replacement
    pending: dict[str, list[Any]] = {}  # tensor -> the Q/DQ nodes producing its replacement
    activations = weights = 0

    def activation(tensor: str) -> str:
        nonlocal activations
        if tensor in dq_of:
            return dq_of[tensor]
        if tensor not in thresholds:
            raise HarnessError(f"FP8 Q/DQ: no calibrated range for activation '{tensor}'")
        scale, zero = f"{tensor}_fp8_scale", f"{tensor}_fp8_zero_point"
        new_inits.extend([numpy_helper.from_array(np.array(fp8_scale(thresholds[tensor]), dtype=np.float32), scale),
                          _fp8_tensor(zero, np.zeros((), np.float32))])
        q, dq = f"{tensor}_fp8_q", f"{tensor}_fp8_dq"
        pending[tensor] = [
            helper.make_node("QuantizeLinear", [tensor, scale, zero], [q], name=f"{tensor}_QuantizeLinear_fp8"),
            helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=f"{tensor}_DequantizeLinear_fp8")]
        dq_of[tensor] = dq
        activations += 1
        return dq

    def weight(tensor: str, node: Any) -> str:
        nonlocal weights
        if tensor in dq_of:
            return dq_of[tensor]
        array = numpy_helper.to_array(initializers[tensor])
        if array.dtype != np.float32:
            raise HarnessError(f"FP8 Q/DQ: weight '{tensor}' is {array.dtype}, expected float32")
        axis = _weight_axis(node, array)
        scaled, scale = _per_channel(array, axis)
        q, s, z = f"{tensor}_fp8", f"{tensor}_fp8_scale", f"{tensor}_fp8_zero_point"
        new_inits.extend([_fp8_tensor(q, scaled), numpy_helper.from_array(scale, s),
                          _fp8_tensor(z, np.zeros(scale.shape, np.float32))])
        dq = f"{tensor}_fp8_dq"
        pending[tensor] = [helper.make_node("DequantizeLinear", [q, s, z], [dq],
                                            name=f"{tensor}_DequantizeLinear_fp8", axis=axis)]
        dq_of[tensor] = dq
        weights += 1
        return dq

    nodes: list[Any] = []
    emitted: set[str] = set()
    for node in graph.node:
        if node.name in chosen:
            inputs = list(node.input)
            if inputs[0] not in initializers:  # a constant left operand stays float (no calibrated range)
                inputs[0] = activation(inputs[0])
            if len(inputs) > 1 and inputs[1]:  # the weight: per channel when constant, else an activation
                inputs[1] = weight(inputs[1], node) if inputs[1] in initializers else activation(inputs[1])
            for tensor in [t for t in pending if t not in emitted]:
                nodes.extend(pending[tensor])
                emitted.add(tensor)
            del node.input[:]
            node.input.extend(inputs)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    # A weight initializer now read only through its FP8 copy is dropped (it would double the file).
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used or i.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError: a bug here, named as such
        raise HarnessError(f"the FP8 Q/DQ model of {Path(model_in).name} is not valid ONNX: {exc}") from exc
    Path(model_out).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_out))
    return Fp8Summary(quantized_nodes=tuple(n.name for n in weighted if n.name in chosen),
                      excluded_nodes=tuple(sorted(names - chosen)), activations=activations, weights=weights,
                      opset=FP8_OPSET)


def count_fp8_qdq(path: Path) -> dict[str, int]:
    """FP8 QuantizeLinear / DequantizeLinear nodes of ``path`` (zero point of type FLOAT8E4M3FN)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    fp8 = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT8E4M3FN}
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for node in model.graph.node:
        if node.op_type in counts and len(node.input) > 2 and node.input[2] in fp8:
            counts[node.op_type] += 1
    return counts


__all__ = ["FP8_E4M3_MAX", "FP8_OPSET", "ORT_FP8_OPTIMIZATION", "WEIGHTED_OPS", "Fp8Summary", "count_fp8_qdq",
           "e4m3", "fp8_scale",
           "quantizable_nodes", "write_fp8_qdq"]
