"""Helpers shared by the GPU backends (ort-cuda, ort-trt, trt-native).

Nothing here touches a GPU at import time: TensorRT and ONNX Runtime pieces are
imported lazily, and every function that needs CUDA says so in its name or
docstring.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from harness.atomic import atomic_write_bytes
from harness.errors import BackendUnavailable, HarnessError
from harness.fingerprint import file_hash

CONTAINER_HINT = "run inside the GPU container: docker compose run harness ..."
TENSORRT_MISSING = f"tensorrt is not installed; {CONTAINER_HINT}"

#: TensorRT ``DataType`` member names -> torch dtypes (FP8/INT4/FP4 have no plain torch buffer here).
TRT_DTYPE_TO_TORCH: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
}

_NUMPY_TO_TORCH: dict[np.dtype[Any], torch.dtype] = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.bool_): torch.bool,
}
_TORCH_TO_NUMPY: dict[torch.dtype, np.dtype[Any]] = {v: k for k, v in _NUMPY_TO_TORCH.items()}


def trt_dtype_to_torch(dtype: Any) -> torch.dtype:
    """A TensorRT ``DataType`` (or its member name, e.g. ``"HALF"``) as a torch dtype."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", str(dtype))
    name = name.rsplit(".", 1)[-1].upper()
    try:
        return TRT_DTYPE_TO_TORCH[name]
    except KeyError:
        raise HarnessError(
            f"TensorRT tensor type {name} has no torch buffer type in the harness "
            f"(supported: {', '.join(TRT_DTYPE_TO_TORCH)})"
        ) from None


def numpy_dtype_to_torch(dtype: Any) -> torch.dtype:
    key = np.dtype(dtype)
    try:
        return _NUMPY_TO_TORCH[key]
    except KeyError:
        raise HarnessError(f"numpy dtype {key} has no torch equivalent in the harness") from None


def torch_dtype_to_numpy(dtype: torch.dtype) -> np.dtype[Any]:
    try:
        return _TORCH_TO_NUMPY[dtype]
    except KeyError:
        raise HarnessError(f"torch dtype {dtype} has no numpy equivalent in the harness") from None


# ------------------------------------------------------------------------------------- CUDA / GPU


def cuda_unavailable_reason() -> str | None:
    """None when PyTorch sees a CUDA GPU, else a one-line reason."""
    if not torch.cuda.is_available():
        return f"no NVIDIA GPU visible (torch.cuda.is_available() is False); {CONTAINER_HINT}"
    return None


@dataclass(frozen=True)
class GpuIdentity:
    index: int
    name: str
    compute_capability: tuple[int, int]


def gpu_identity(index: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``index`` (needs a GPU)."""
    cc = torch.cuda.get_device_capability(index)
    return GpuIdentity(index=index, name=torch.cuda.get_device_name(index), compute_capability=(cc[0], cc[1]))


# ---------------------------------------------------------------------------------------- TensorRT


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or BackendUnavailable naming the container to use."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(TENSORRT_MISSING) from None
    return tensorrt


def tensorrt_unavailable_reason() -> str | None:
    try:
        import_tensorrt()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def trt_version_tuple(text: str) -> tuple[int, int]:
    """``"10.15.1.29"`` -> (10, 15); ``"11.x"`` -> (11, 0)."""
    from harness.gpu.capabilities import parse_version

    try:
        parts = parse_version(text)
    except ValueError:
        raise HarnessError(f"not a TensorRT version: {text!r}") from None
    return (parts[0], parts[1] if len(parts) > 1 else 0)


_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu12-libs", "tensorrt-cu13-libs",
                      "tensorrt-libs")


@dataclass(frozen=True)
class TrtVersion:
    version: str
    source: str  # "tensorrt module" | "<distribution> distribution" | "pairing table for onnxruntime X"


def detect_tensorrt_version(ort_version: str | None = None) -> TrtVersion | None:
    """The TensorRT version on this machine, best source first.

    The ``tensorrt`` module when importable; else an installed TensorRT wheel's metadata; else (for
    ONNX Runtime's TensorRT EP) the TensorRT version that ``ort_version`` is built against.
    """
    try:
        import tensorrt

        return TrtVersion(str(tensorrt.__version__), "tensorrt module")
    except ImportError:
        pass
    for dist in _TRT_DISTRIBUTIONS:
        try:
            return TrtVersion(importlib.metadata.version(dist), f"{dist} distribution")
        except importlib.metadata.PackageNotFoundError:
            continue
    if ort_version is not None:
        from harness.gpu.capabilities import expected_trt_for_ort

        expected = expected_trt_for_ort(ort_version)
        if expected is not None:
            return TrtVersion(expected, f"pairing table for onnxruntime {ort_version}")
    return None


def check_options(backend: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse option names a backend does not know (a typo would otherwise be silently ignored)."""
    allowed = set(known)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise HarnessError(
            f"unknown option(s) for backend '{backend}': {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def admit(backend: Any, precision: str) -> None:
    """The checks every GPU backend runs first in ``activate``: precision, option names, machine."""
    backend.check_precision(precision)
    check_options(backend.name, backend.options, backend.options_known)
    reason = backend.unavailable_reason(precision)
    if reason is not None:
        raise BackendUnavailable(f"backend '{backend.name}' cannot run here: {reason}")


def bool_option(value: Any) -> bool:
    """A backend option read as a boolean (``"true"``/``"1"``/``"yes"``/``"on"`` strings count as true)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def qdq_model(calibration: Any, target: str = "tensorrt") -> Path:
    """The calibration source's Q/DQ model for ``target`` when it offers flavours, else its only one.

    ``calib.source.CalibrationData.qdq_onnx(target)`` builds symmetric int8 activations with float
    biases for ``"tensorrt"`` (what TensorRT's explicit quantization accepts) and uint8/int32-bias
    models for ``"cpu"``. The source records its own ``calibrate`` phase time.
    """
    try:
        accepts_target = "target" in inspect.signature(calibration.qdq_onnx).parameters
    except (TypeError, ValueError):
        accepts_target = False
    return Path(calibration.qdq_onnx(target) if accepts_target else calibration.qdq_onnx())


# ------------------------------------------------------------------------------------------ files


FP16_CONVERTER_HINT = (
    "the FP16 ONNX conversion needs onnxruntime.transformers.float16 (shipped with onnxruntime / "
    "onnxruntime-gpu) or the onnxconverter-common package (pip install onnxconverter-common)"
)


def _fp16_converter() -> Any:
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16
    except ImportError:
        pass
    try:
        from onnxconverter_common.float16 import convert_float_to_float16

        return convert_float_to_float16
    except ImportError:
        raise BackendUnavailable(FP16_CONVERTER_HINT) from None


def fp16_onnx_path(src: Path, src_hash: str) -> Path:
    """Where the FP16 form of ``src`` is cached: next to it, keyed by the source's content hash."""
    return src.with_name(f"{src.stem}.fp16-{src_hash[:16]}.onnx")


def fp16_onnx(src: Path) -> Path:
    """An FP16 copy of the FP32 ONNX model ``src`` (float32 inputs/outputs kept), cached next to it.

    Uses ``convert_float_to_float16(model, keep_io_types=True)`` from ONNX Runtime's transformer
    tools, else from onnxconverter-common.
    """
    src_hash = file_hash(src)
    dst = fp16_onnx_path(src, src_hash)
    if dst.exists():
        return dst
    convert = _fp16_converter()
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("the FP16 ONNX conversion needs the 'onnx' package (pip install onnx)") from None
    model = onnx.load(str(src))
    try:
        converted = convert(model, keep_io_types=True)
    except Exception as exc:  # converter raises plain Exceptions on unsupported graphs
        raise HarnessError(f"FP16 conversion of {src.name} failed: {exc}") from exc
    atomic_write_bytes(dst, converted.SerializeToString())
    return dst


__all__ = [
    "CONTAINER_HINT", "FP16_CONVERTER_HINT", "GpuIdentity", "TENSORRT_MISSING", "TRT_DTYPE_TO_TORCH", "TrtVersion",
    "atomic_write_bytes", "bool_option", "check_options", "cuda_unavailable_reason", "detect_tensorrt_version",
    "fp16_onnx", "fp16_onnx_path", "gpu_identity", "import_tensorrt", "numpy_dtype_to_torch", "qdq_model",
    "tensorrt_unavailable_reason", "torch_dtype_to_numpy", "trt_dtype_to_torch", "trt_version_tuple",
]
