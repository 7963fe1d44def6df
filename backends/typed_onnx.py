"""Half-precision ONNX models for strongly typed TensorRT builds: converted here, cached with provenance.

A strongly typed network (TensorRT 11 always; 10.x with ``strongly_typed``) computes each layer in
the type its ONNX tensors carry: an FP32 ONNX builds FP32 whatever precision was asked. So fp16/bf16
need an FP16/BF16 ONNX, and a Q/DQ model (INT8 or FP8) runs its non-quantized layers in FP16 only
when its float parts are FP16 (what TensorRT 10's ``INT8 | FP16`` flags give a weakly typed build,
so TensorRT 10 and 11 INT8 cells compute alike). NVIDIA's documented route is ModelOpt AutoCast;
this module uses it when installed, else onnxconverter-common's float16 conversion (ONNX Runtime
ships a copy, ``onnxruntime.transformers.float16``, used first: onnxconverter-common 1.16.0 declares an
FP16 graph output, despite ``keep_io_types``, when the node producing it is kept in FP32), in both
cases keeping:

* FP32 graph inputs and outputs (``keep_io_types``: callers feed and read float32);
* the numerically sensitive ops in FP32 (:data:`KEEP_FP32_OPS`: the ONNX forms of the ops
  ``torch.autocast`` runs in float32, e.g. exp, log, pow, softmax, the norms and reductions).

BF16 without ModelOpt: the float16 converter decides which nodes go to half precision, then every
FP16 tensor is relabelled BF16 (initializers re-rounded from their FP32 originals with ``ml_dtypes``),
at opset 22, the first whose Conv/Gemm accept bfloat16. A Q/DQ model is converted with the float16
converter at opset 19 (the first whose Q/DQ accept FP16 scales); AutoCast is ModelOpt's converter for
float graphs (its quantizer converts its own Q/DQ models, ``high_precision_dtype``).

Each result is cached under ``<cache>/typed-onnx/`` keyed by its provenance (source sha256, type,
converter and version, options) with a checksum sidecar (:mod:`harness.store.cache_files`); a damaged
file is rebuilt with a note, never a failed cell.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.store import cache_files
from harness.errors import BackendUnavailable, HarnessError
from harness.store.fingerprint import dict_hash, file_hash

HalfType = Literal["fp16", "bf16"]
HALF_TYPES: tuple[str, ...] = ("fp16", "bf16")
#: Bump when a conversion's output changes for the same inputs.
TYPED_ONNX_FORMAT = 1
#: The ops kept in FP32: torch.autocast's float32 list (CUDA) as ONNX ops.
KEEP_FP32_OPS: tuple[str, ...] = (
    "Exp", "Log", "Pow", "Reciprocal", "Sqrt", "Softplus", "Softmax", "LogSoftmax", "LayerNormalization",
    "GroupNormalization", "InstanceNormalization", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSumExp", "ReduceSumSquare", "CumSum", "Acos", "Asin", "Cosh", "Sinh", "Tan",
)
#: FP16's largest finite value: the converter clamps initializers there (onnxconverter-common's own default
#: is 1e4, which would clip legitimate weights).
FP16_MAX = 65504.0
QDQ_OPSET = 19  # Q/DQ with FP16 scales
BF16_OPSET = 22  # Conv, Gemm, ... with bfloat16
CONVERTER_HINT = ("converting ONNX to FP16/BF16 needs nvidia-modelopt[onnx] (AutoCast) or onnxconverter-common "
                  "(pip install onnxconverter-common; onnxruntime also ships a copy)")



def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a vendored copy has no distribution
        return "unknown"


def _float16_module() -> tuple[Any, str] | None:
    """onnxconverter-common's float16 module (or ONNX Runtime's copy), with its name and version."""
    for module, dist in (("onnxruntime.transformers.float16", "onnxruntime"),
                         ("onnxconverter_common.float16", "onnxconverter-common")):
        try:
            return importlib.import_module(module), f"{dist} {_version(dist)}"
        except ImportError:
            continue
    return None


def _autocast() -> tuple[Callable[..., Any], str] | None:
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except Exception:  # noqa: BLE001 - ModelOpt missing, or present without its onnx extra
        return None
    return convert_to_mixed_precision, f"nvidia-modelopt {_version('nvidia-modelopt')}"


def converter_for(qdq: bool, prefer_modelopt: bool = True) -> str | None:
    """Which converter :func:`half_precision_onnx` would use (``modelopt-autocast``, ``float16``), or None."""
    if prefer_modelopt and not qdq and _autocast() is not None:
        return "modelopt-autocast"
    return "float16" if _float16_module() is not None else None


def check_converter(qdq: bool = False) -> None:
    """Raise the one-line error of a machine that cannot convert (before any other work)."""
    if converter_for(qdq) is None:
        raise BackendUnavailable(CONVERTER_HINT)


@dataclass(frozen=True)
class TypedOnnx:
    """A converted model and what it is."""

    path: Path
    dtype: str
    provenance: dict[str, Any]
    reused: bool
    node_types: dict[str, dict[str, int]] = field(default_factory=dict)
    rebuilt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "dtype": self.dtype, "provenance": dict(self.provenance),
                "cache": "hit" if self.reused else "built", "node_types": self.node_types,
                **({"rebuilt": self.rebuilt} if self.rebuilt else {})}


# ----------------------------------------------------------------------------------- graph helpers


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _at_least(model: Any, opset: int) -> Any:
    import onnx

    if _opset(model) >= opset:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises several types for unsupported adapters
        raise HarnessError(f"could not convert the model from opset {_opset(model)} to {opset}: "
                           f"{type(exc).__name__}: {exc}") from exc
    converted.ir_version = max(converted.ir_version, 9)
    return converted


_ELEM_NAMES = {1: "fp32", 10: "fp16", 16: "bf16", 3: "int8", 2: "uint8", 17: "fp8", 11: "fp64", 6: "int32",
               7: "int64", 9: "bool"}


def node_types(model: Any) -> dict[str, dict[str, int]]:
    """``{"compute": {type: nodes}, "quantized": {type: weighted nodes}}`` of a model: each compute node
    (every node but Q/DQ, Cast, Identity, Constant) by the type of its first output, and each weighted
    node (Conv, ConvTranspose, Gemm, MatMul) fed by a DequantizeLinear by the quantized type behind it."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the summary is reporting; an uninferable graph reports what it has
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    producer = {o: n for n in g.node for o in n.output}
    compute: Counter[str] = Counter()
    quantized: Counter[str] = Counter()
    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity", "Constant"):
            continue
        compute[_ELEM_NAMES.get(types.get(node.output[0], 0), "unknown")] += 1
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and node.input:
            dq = producer.get(node.input[0])
            if dq is not None and dq.op_type == "DequantizeLinear":
                quantized[_ELEM_NAMES.get(types.get(dq.input[0], 0), "unknown")] += 1
    return {"compute": dict(sorted(compute.items())), "quantized": dict(sorted(quantized.items()))}


def _topological(model: Any) -> Any:
    """``model`` with its nodes in dependency order (the float16 converter appends its input casts last,
    which ONNX Runtime accepts and the ONNX checker, like TensorRT's parser, does not)."""
    g = model.graph
    known = {i.name for i in g.initializer} | {i.name for i in g.input} | {""}
    pending, ordered = list(g.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise HarnessError(f"the converted graph has a cycle or a missing input near node {pending[0].name!r}")
        for node in ready:
            ordered.append(node)
            known.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del g.node[:]
    g.node.extend(ordered)
    return model


def _relabel_bf16(half: Any, original: Any) -> Any:
    """The FP16 model ``half`` with every FP16 tensor turned BF16 (initializers from ``original``'s FP32)."""
    from ml_dtypes import bfloat16
    from onnx import TensorProto, helper, numpy_helper

    fp32 = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer if i.data_type == TensorProto.FLOAT}

    def to_bf16(tensor: Any) -> Any:
        source = fp32.get(tensor.name)
        values = source if source is not None else numpy_helper.to_array(tensor).astype(np.float32)
        data = np.asarray(values, dtype=np.float32).astype(bfloat16)
        return helper.make_tensor(tensor.name, TensorProto.BFLOAT16, list(data.shape), data.tobytes(), raw=True)

    g = half.graph
    for i, tensor in enumerate(g.initializer):
        if tensor.data_type == TensorProto.FLOAT16:
            g.initializer[i].CopyFrom(to_bf16(tensor))
    for node in g.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.BFLOAT16
            elif attr.type == attr.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                attr.t.CopyFrom(to_bf16(attr.t))
    for info in [*g.value_info, *g.input, *g.output]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
            info.type.tensor_type.elem_type = TensorProto.BFLOAT16
    return half


def _convert(src: Path, dtype: str, qdq: bool, converter: str) -> Any:
    import onnx

    model = onnx.load(str(src))
    if converter == "modelopt-autocast":
        autocast = _autocast()
        assert autocast is not None
        convert, _ = autocast
        logging.getLogger("modelopt").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return convert(str(src), low_precision_type=dtype, keep_io_types=True,
                           op_types_to_exclude=list(KEEP_FP32_OPS))
    found = _float16_module()
    if found is None:
        raise BackendUnavailable(CONVERTER_HINT)
    module, _ = found
    target = QDQ_OPSET if qdq else 0
    if dtype == "bf16":
        target = max(target, BF16_OPSET)
    model = _at_least(model, target) if target else model
    block = sorted(set(module.DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32_OPS))
    half = _topological(module.convert_float_to_float16(model, keep_io_types=True, max_finite_val=FP16_MAX,
                                                        op_block_list=block))
    return _float32_io(_relabel_bf16(half, model) if dtype == "bf16" else half)


def _float32_io(model: Any) -> Any:
    """Refuse a converted model whose graph inputs or outputs are not float32 (callers feed and read float32)."""
    from onnx import TensorProto

    wrong = [v.name for v in [*model.graph.input, *model.graph.output]
             if v.type.tensor_type.elem_type not in (TensorProto.FLOAT, 0)]
    if wrong:
        raise HarnessError(f"the converter left graph inputs/outputs {', '.join(wrong)} in half precision "
                           "(keep_io_types was not honoured)")
    return model


def half_precision_onnx(src: Path, dtype: str, cache_dir: Path, *, qdq: bool = False, prefer_modelopt: bool = True,
                        source_provenance: dict[str, Any] | None = None,
                        on_rebuild: cache_files.OnRebuild | None = None) -> TypedOnnx:
    """The ``dtype`` (fp16/bf16) form of the ONNX model ``src``, built or reused from ``cache_dir``.

    ``qdq``: ``src`` is a Q/DQ model (its float parts are converted, the quantized ones kept).
    ``source_provenance``: what ``src`` itself was made from (e.g. its calibration), recorded and keyed.
    """
    if dtype not in HALF_TYPES:
        raise HarnessError(f"half precision must be one of {', '.join(HALF_TYPES)}, got '{dtype}'")
    src = Path(src)
    converter = converter_for(qdq, prefer_modelopt)
    if converter is None:
        raise BackendUnavailable(CONVERTER_HINT)
    version = (_autocast() if converter == "modelopt-autocast" else _float16_module())[1]  # type: ignore[index]
    provenance = {
        "format": TYPED_ONNX_FORMAT, "source": src.name, "source_sha256": file_hash(src), "dtype": dtype,
        "qdq": qdq, "converter": converter, "converter_version": version, "keep_io_types": True,
        "keep_fp32_ops": list(KEEP_FP32_OPS), "source_provenance": source_provenance or {},
    }
    directory = Path(cache_dir) / "typed-onnx"
    path = directory / f"{src.stem[:60]}.{dtype}-{dict_hash(provenance)[:16]}.onnx"
    note = None
    reason = cache_files.damaged(path)
    if reason is None and path.exists() and cache_files.read_meta(path).get("provenance") == provenance:
        import onnx

        return TypedOnnx(path, dtype, provenance, reused=True,
                         node_types=cache_files.read_meta(path).get("node_types") or node_types(onnx.load(str(path))))
    if reason is not None:
        note = cache_files.rebuilt_note(f"{dtype} ONNX", path, reason)
        cache_files.discard(path)
    try:
        converted = _convert(src, dtype, qdq, converter)
    except (HarnessError, BackendUnavailable):
        raise
    except Exception as exc:  # the converters raise plain exceptions on graphs they cannot handle
        raise HarnessError(f"{converter} could not convert {src.name} to {dtype}: {type(exc).__name__}: {exc}") from exc
    import onnx

    try:
        onnx.checker.check_model(converted)
    except Exception as exc:  # ValidationError
        raise HarnessError(f"the {dtype} model {converter} made of {src.name} is not valid ONNX: {exc}") from exc
    types = node_types(converted)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".onnx", delete=False) as tmp:
        tmp.write(converted.SerializeToString())
    cache_files.commit(Path(tmp.name), path, {"provenance": provenance, "node_types": types})
    if note is not None:
        cache_files.report_rebuild(note, on_rebuild)
    return TypedOnnx(path, dtype, provenance, reused=False, node_types=types, rebuilt=note)


__all__ = ["CONVERTER_HINT", "HALF_TYPES", "KEEP_FP32_OPS", "TypedOnnx", "check_converter", "converter_for",
           "half_precision_onnx", "node_types"]
