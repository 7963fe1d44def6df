"""Helpers shared by the GPU backends (ort-cuda, ort-trt, trt-native).

Nothing here touches a GPU at import time: TensorRT and ONNX Runtime pieces are imported lazily.
The availability rules are pure functions of :class:`harness.machine.MachineFacts` (no probing).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from backends.base import BackendOptions
from harness.store.atomic import atomic_write_bytes
from harness.errors import BackendUnavailable, HarnessError
from harness.store.fingerprint import file_hash

if TYPE_CHECKING:
    from harness.machine import MachineFacts

ORT_GPU_HINT = (
    "install onnxruntime-gpu matching the CUDA/TensorRT of this machine (e.g. onnxruntime-gpu==1.20.* for "
    "TensorRT 10.4 / CUDA 12.x) and uninstall the CPU-only onnxruntime package"
)

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


# ------------------------------------------------------------------------------------------ options


class GpuBackendOptions(BackendOptions):
    """Options shared by the GPU backends' typed option models (unknown keys refused, frozen)."""


# ------------------------------------------------------------------------------------- availability


def ort_gpu_reason(facts: MachineFacts, provider: str) -> str | None:
    """Why ONNX Runtime cannot run ``provider`` on a GPU here (None: it can), from the probed facts."""
    if facts.onnxruntime_version is None:
        return "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu"
    if provider not in (facts.ort_providers or ()):
        return f"onnxruntime has no {provider}: {ORT_GPU_HINT}"
    if not facts.gpu_visible:
        return facts.no_gpu_reason
    if not facts.torch_cuda_available:
        return f"the ONNX Runtime GPU backends stage buffers as torch CUDA tensors: {facts.torch_cuda_note}"
    return None


def admit(backend: Any, precision: str, facts: MachineFacts | None = None) -> None:
    """The check every GPU backend runs first in ``activate``: the backend's own rule for this machine."""
    if facts is None:
        from harness.machine import probe_machine

        facts = probe_machine()
    reason = backend.unavailable_reason(precision, facts)
    if reason is not None:
        raise BackendUnavailable(f"backend '{backend.name}' cannot run {precision} here: {reason}")


# ------------------------------------------------------------------------------------- CUDA / GPU


@dataclass(frozen=True)
class GpuIdentity:
    index: int
    name: str
    compute_capability: tuple[int, int]


def gpu_identity(index: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device ``index`` (needs a GPU)."""
    cc = torch.cuda.get_device_capability(index)
    return GpuIdentity(index=index, name=torch.cuda.get_device_name(index), compute_capability=(cc[0], cc[1]))


#: What every GPU session records as ``details["gpu_timing"]``: comparisons of GPU
#: cells refuse to mix sessions whose ``gpu_timing`` differs.
GPU_TIMING_ID = "cuda-events-on-session-stream/v1"
CUDA_EVENT_TIMER = "cuda-events-on-session-stream"


def timing_facts() -> dict[str, Any]:
    """``{"gpu_timing": {...}}``: the one GPU timing definition every GPU session meets."""
    return {"gpu_timing": {
        "id": GPU_TIMING_ID,
        "compute_timer": CUDA_EVENT_TIMER,
        "compute": "device time between CUDA events recorded on session.cuda_stream around run(staged); "
                   "run only enqueues (no host synchronisation inside)",
        "e2e": "host tensor in, host float32 logits out, synchronised (perf_counter)",
    }}


# ---------------------------------------------------------------------------------------- TensorRT


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
    "CUDA_EVENT_TIMER", "FP16_CONVERTER_HINT", "GPU_TIMING_ID", "GpuBackendOptions",
    "GpuIdentity", "ORT_GPU_HINT", "TRT_DTYPE_TO_TORCH", "TrtVersion", "admit",
    "atomic_write_bytes", "detect_tensorrt_version", "fp16_onnx", "fp16_onnx_path", "gpu_identity",
    "ort_gpu_reason", "timing_facts", "trt_dtype_to_torch",
]
