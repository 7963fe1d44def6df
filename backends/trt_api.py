"""The TensorRT API the harness uses, and the one place that knows where TensorRT 11 changed it.

* :data:`TRT_API_USED`: every ``tensorrt`` attribute path the TensorRT modules use, spelled as in the
  symbol lists extracted from the TensorRT bindings wheels (tests/data/trt_symbols/); tests check it
  against every 10.x list, and that exactly :data:`TRT10_ONLY_API` is missing from 11.x.
* :func:`is_strongly_typed`: the TensorRT 11 boundary (weak typing and implicit INT8 removed).
* The ``tensorrt`` import (lazy, with a one-line error naming the container) and a capturing logger.
"""

from __future__ import annotations

from collections import deque
from types import ModuleType
from typing import Any

from harness.errors import BackendUnavailable, HarnessError

CONTAINER_HINT = "run inside the GPU container: docker compose run harness ..."
TENSORRT_MISSING = f"tensorrt is not installed; {CONTAINER_HINT}"

TRT_API_USED: tuple[str, ...] = (
    "__version__",
    # logging
    "ILogger",
    "ILogger.__init__",
    "ILogger.log",
    "ILogger.Severity.INTERNAL_ERROR",
    "ILogger.Severity.ERROR",
    "ILogger.Severity.WARNING",
    "ILogger.Severity.INFO",
    "ILogger.Severity.VERBOSE",
    # builder, network, parser
    "Builder",
    "Builder.create_network",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "Builder.create_builder_config",
    "Builder.create_optimization_profile",
    "Builder.build_serialized_network",
    "INetworkDefinition.num_inputs",
    "INetworkDefinition.get_input",
    "ITensor.name",
    "OnnxParser",
    "OnnxParser.parse_from_file",
    "OnnxParser.num_errors",
    "OnnxParser.get_error",
    "ParserError.desc",
    "ParserError.node_name",
    # builder config
    "IBuilderConfig.set_memory_pool_limit",
    "MemoryPoolType.WORKSPACE",
    "IBuilderConfig.builder_optimization_level",
    "IBuilderConfig.set_flag",
    "IBuilderConfig.clear_flag",
    "BuilderFlag.TF32",
    "BuilderFlag.FP16",
    "BuilderFlag.BF16",
    "BuilderFlag.INT8",
    "BuilderFlag.SPARSE_WEIGHTS",
    "IBuilderConfig.profiling_verbosity",
    "ProfilingVerbosity.DETAILED",
    "ProfilingVerbosity.LAYER_NAMES_ONLY",
    "IOptimizationProfile.set_shape",
    "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.set_calibration_profile",
    "IBuilderConfig.int8_calibrator",
    "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache",
    "ITimingCache.serialize",
    "IHostMemory",
    # runtime
    "Runtime",
    "Runtime.deserialize_cuda_engine",
    "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.create_execution_context",
    "ICudaEngine.create_engine_inspector",
    "EngineInspector.execution_context",
    "TensorIOMode.INPUT",
    "DataType.name",
    "IExecutionContext.set_optimization_profile_async",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
    "IExecutionContext.profiler",
    "IProfiler",
    "IProfiler.__init__",
    "IProfiler.report_layer_time",
    "EngineInspector.get_engine_information",
    "LayerInformationFormat.JSON",
)

#: The part of :data:`TRT_API_USED` that TensorRT 11 removed (weak typing, implicit INT8). The code
#: reaches these only through plans that TRT 11 never produces.
TRT10_ONLY_API: frozenset[str] = frozenset({
    "BuilderFlag.FP16",
    "BuilderFlag.BF16",
    "BuilderFlag.INT8",
    "IBuilderConfig.set_calibration_profile",
    "IBuilderConfig.int8_calibrator",
})

#: The first TensorRT major version that builds strongly typed networks only.
STRONGLY_TYPED_MAJOR = 11
#: Builder flags that exist only in weakly typed TensorRT (<= 10.x).
WEAK_TYPING_FLAGS: frozenset[str] = frozenset({"FP16", "BF16", "INT8"})


def trt_version_tuple(text: str) -> tuple[int, int]:
    """``"10.15.1.29"`` -> (10, 15); ``"11.x"`` -> (11, 0)."""
    from harness.gpu.capabilities import parse_version

    try:
        parts = parse_version(text)
    except ValueError:
        raise HarnessError(f"not a TensorRT version: {text!r}") from None
    return (parts[0], parts[1] if len(parts) > 1 else 0)


def is_strongly_typed(trt_version: str) -> bool:
    """True from TensorRT 11 on: no precision flags, no calibrator; types come from the ONNX model."""
    return trt_version_tuple(trt_version)[0] >= STRONGLY_TYPED_MAJOR


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or BackendUnavailable naming the container to use."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(TENSORRT_MISSING) from None
    return trt


def tensorrt_version(trt: ModuleType) -> str:
    return str(trt.__version__)


def make_capturing_logger(trt: ModuleType, min_severity: str = "WARNING", keep: int = 200) -> Any:
    """A ``trt.ILogger`` that keeps the last ``keep`` messages at ``min_severity`` or worse."""
    threshold = int(getattr(trt.ILogger.Severity, min_severity.upper()))

    class CapturingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: deque[str] = deque(maxlen=keep)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= threshold:
                self.messages.append(f"[{getattr(severity, 'name', severity)}] {msg}")

    return CapturingLogger()


def log_tail(logger: Any, n: int = 8) -> str:
    """The last ``n`` captured TensorRT messages on one line."""
    messages = list(getattr(logger, "messages", ()))[-n:]
    return " | ".join(m.replace("\n", " ") for m in messages) if messages else "(no TensorRT log messages captured)"


def checked(ok: Any, call: str, detail: str = "") -> None:
    """Fail loudly when a TensorRT call that reports success as a bool returned False (or None)."""
    if ok is False or ok is None:
        raise HarnessError(f"TensorRT {call} returned False" + (f" ({detail})" if detail else ""))


__all__ = [
    "CONTAINER_HINT", "STRONGLY_TYPED_MAJOR", "TENSORRT_MISSING", "TRT10_ONLY_API", "TRT_API_USED",
    "WEAK_TYPING_FLAGS", "checked", "import_tensorrt", "is_strongly_typed", "log_tail", "make_capturing_logger",
    "tensorrt_version", "trt_version_tuple",
]
