"""TensorRT through its own Python API (10.x; 11.x for fp32 and explicit Q/DQ INT8).

The module is split in two:

* pure logic, testable without TensorRT or a GPU: :func:`plan_build` (builder flags, which ONNX
  form to parse, calibrator or not, the optimization profile), :class:`BuilderSettings` (what goes
  into the engine cache key) and :func:`build_serialized_engine`, which takes the ``tensorrt``
  module as an argument so that tests can hand it a fake;
* the thin runtime: :class:`TrtNativeSession` (execution context, torch CUDA buffers, a dedicated
  CUDA stream, optional CUDA graphs) and :class:`TrtNativeBackend`.

Rules that the plans encode (REFERENCE.md sections 3 and 6):

* TRT 10 is weakly typed: fp16/bf16 come from ``BuilderFlag.FP16``/``BF16`` on the FP32 ONNX.
  INT8 sets ``INT8`` *and* ``FP16`` (INT8 alone leaves every non-INT8 layer in FP32), for the
  calibrator path (implicit) and for a Q/DQ model (explicit) alike.
* TRT 11 is strongly typed only: no precision flags exist; FP16 needs an FP16 ONNX model and INT8 a
  Q/DQ model. Asking for fp16 with only an FP32 ONNX is an error, never a silent FP32 build.
* One optimization profile, ``min=min(batch sizes)``, ``opt=max=max(batch sizes)``: no engine is
  built inside a timed loop, and a batch outside the profile is refused (``session.min_batch`` /
  ``session.max_batch`` tell the accuracy pass what it may send).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch

from backends.base import PRECISIONS, Backend, ModelArtifact, Session, SessionInfo
from backends.gpu_common import (
    admit,
    atomic_write_bytes,
    bool_option,
    cuda_unavailable_reason,
    fp16_onnx,
    gpu_identity,
    import_tensorrt,
    qdq_model,
    trt_dtype_to_torch,
    trt_version_tuple,
)
from harness.engine_cache import EngineCacheKey, TimingCacheKey
from harness.errors import BackendUnavailable, HarnessError, UnsupportedCombination
from harness.fingerprint import file_hash
from harness.onnx_export import INPUT_NAME

#: Every ``tensorrt`` attribute path this module uses, spelled as in the symbol lists extracted from
#: the TensorRT bindings wheels (tests/data/trt_symbols/). Checked against 10.4 and 10.15 by tests.
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
    "TensorIOMode.INPUT",
    "DataType.name",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
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

INT8_MODES: tuple[str, ...] = ("auto", "implicit", "explicit")
ONNX_SOURCES: tuple[str, ...] = ("fp32", "fp16", "bf16", "qdq")
#: Flags that exist only in weakly typed TensorRT (<= 10.x).
WEAK_TYPING_FLAGS: frozenset[str] = frozenset({"FP16", "BF16", "INT8"})
STRONGLY_TYPED_MAJOR = 11

DEFAULT_WORKSPACE_MIB = 4096
DEFAULT_OPT_LEVEL = 3
DEFAULT_CALIBRATION_BATCH = 32


# ------------------------------------------------------------------------------------ pure logic


def profile_for(batch_sizes: Iterable[int], min_batch: int | None = None) -> tuple[int, int, int]:
    """``(min, opt, max)`` batch of the one optimization profile covering every sweep batch size."""
    sizes = tuple(int(b) for b in batch_sizes)
    if not sizes:
        raise HarnessError("no batch sizes given: the TensorRT profile must cover the sweep's batch sizes")
    if any(b < 1 for b in sizes):
        raise HarnessError(f"batch sizes must be >= 1, got {sizes}")
    low, high = min(sizes), max(sizes)
    if min_batch is not None:
        if not 1 <= int(min_batch) <= low:
            raise HarnessError(
                f"profile_min_batch must be between 1 and the smallest batch size {low}, got {min_batch}"
            )
        low = int(min_batch)
    return (low, high, high)


def resolve_int8_mode(int8_mode: str, trt_version: str) -> str:
    """``implicit`` (calibrator) or ``explicit`` (Q/DQ ONNX) for this TensorRT version."""
    from harness.gpu.capabilities import trt_default_int8_mode

    if int8_mode not in INT8_MODES:
        raise HarnessError(f"int8 mode must be one of {', '.join(INT8_MODES)}, got '{int8_mode}'")
    mode = trt_default_int8_mode(trt_version) if int8_mode == "auto" else int8_mode
    if mode == "implicit" and trt_version_tuple(trt_version)[0] >= STRONGLY_TYPED_MAJOR:
        raise UnsupportedCombination(
            f"implicit (calibrator) INT8 was removed in TensorRT 11 (found {trt_version}: no "
            "IInt8EntropyCalibrator2, BuilderFlag.INT8 or int8_calibrator); use int8 mode 'explicit' (Q/DQ ONNX)"
        )
    return mode


@dataclass(frozen=True)
class BuildPlan:
    """What to build: flags by ``BuilderFlag`` member name, which ONNX form to parse, the profile."""

    precision: str
    trt_version: str
    strongly_typed: bool
    flags: tuple[str, ...]
    onnx_source: str  # "fp32" | "fp16" | "bf16" | "qdq"
    use_calibrator: bool
    profile: tuple[int, int, int]  # (min, opt, max) batch
    int8_mode: str | None = None  # "implicit" | "explicit" for int8
    notes: tuple[str, ...] = ()

    @property
    def sparse(self) -> bool:
        return "SPARSE_WEIGHTS" in self.flags

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = list(self.flags)
        data["profile"] = list(self.profile)
        data["notes"] = list(self.notes)
        return data


def plan_build(
    precision: str,
    trt_version: str,
    int8_mode: str = "auto",
    has_calibration: bool = False,
    sparse: bool = False,
    batch_sizes: Iterable[int] = (1,),
    *,
    typed_onnx: bool = False,
    compute_capability: tuple[int, int] | None = None,
    profile_min: int | None = None,
) -> BuildPlan:
    """The build for ``precision`` on TensorRT ``trt_version``; raises for impossible requests.

    ``typed_onnx``: an ONNX model already in ``precision`` (FP16/BF16) is available; TensorRT 11
    needs one for fp16/bf16. ``compute_capability``: also check the GPU (capabilities rules).
    """
    if precision not in PRECISIONS:
        raise UnsupportedCombination(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    profile = profile_for(batch_sizes, profile_min)
    major = trt_version_tuple(trt_version)[0]
    if major < 10:
        raise UnsupportedCombination(f"TensorRT {trt_version} is too old: the harness needs TensorRT 10 or newer")
    strong = major >= STRONGLY_TYPED_MAJOR
    if precision != "int8" and int8_mode not in INT8_MODES:
        raise HarnessError(f"int8 mode must be one of {', '.join(INT8_MODES)}, got '{int8_mode}'")
    mode = resolve_int8_mode(int8_mode, trt_version) if precision == "int8" else None

    if compute_capability is not None:
        from harness.gpu.capabilities import trt_precision_support

        support = trt_precision_support(trt_version, compute_capability)[f"int8-{mode}" if mode else precision]
        if not support.ok:
            raise UnsupportedCombination(f"trt-native {precision}: {support.reason}")

    flags: list[str] = []
    notes: list[str] = []
    use_calibrator = False
    if precision == "fp32":
        source = "fp32"
    elif precision in ("fp16", "bf16"):
        if strong:
            if not typed_onnx:
                raise UnsupportedCombination(
                    f"{precision} on TensorRT {trt_version} needs a {precision.upper()} ONNX model: TensorRT 11 builds "
                    f"strongly typed networks only (BuilderFlag.{precision.upper()} was removed), so the FP32 ONNX "
                    f"would build FP32; set the trt-native option '{precision}_onnx' (a path"
                    + (", or 'convert'" if precision == "fp16" else "") + ")"
                )
            source = precision
        else:
            flags.append(precision.upper())
            source = "fp32"
    else:  # int8
        if not has_calibration:
            raise HarnessError(
                "trt-native int8 needs calibration data (the sweep provides it from the train split); none was given"
            )
        if mode == "implicit":
            flags += ["INT8", "FP16"]
            source = "fp32"
            use_calibrator = True
        else:
            source = "qdq"
            if not strong:
                flags += ["INT8", "FP16"]  # Q/DQ networks need the INT8 flag on TRT 10; FP16 for the rest
            else:
                notes.append("strongly typed Q/DQ network: layers outside Q/DQ pairs run in the ONNX model's type")
    if sparse:
        flags.append("SPARSE_WEIGHTS")
        if precision == "fp32":
            notes.append("2:4 sparse tactics need reduced precision (fp16/bf16/int8); fp32 builds stay dense")
    return BuildPlan(
        precision=precision,
        trt_version=trt_version,
        strongly_typed=strong,
        flags=tuple(flags),
        onnx_source=source,
        use_calibrator=use_calibrator,
        profile=profile,
        int8_mode=mode,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class BuilderSettings:
    """Builder options outside the plan; all of them but ``cuda_graph`` go into the cache key."""

    workspace_bytes: int = DEFAULT_WORKSPACE_MIB << 20
    opt_level: int = DEFAULT_OPT_LEVEL
    detailed: bool = True  # ProfilingVerbosity.DETAILED (engine inspector with per-layer types)
    calibration_batch: int = DEFAULT_CALIBRATION_BATCH

    def __post_init__(self) -> None:
        if self.workspace_bytes <= 0:
            raise HarnessError(f"TensorRT workspace must be positive, got {self.workspace_bytes} bytes")
        if not 0 <= self.opt_level <= 5:
            raise HarnessError(f"TensorRT builder optimization level must be 0-5, got {self.opt_level}")
        if self.calibration_batch < 1:
            raise HarnessError(f"calibration batch size must be >= 1, got {self.calibration_batch}")

    def key_options(self, plan: BuildPlan) -> dict[str, Any]:
        options: dict[str, Any] = {
            "workspace_bytes": self.workspace_bytes,
            "opt_level": self.opt_level,
            "profiling_verbosity": "detailed" if self.detailed else "layer_names_only",
            "flags": sorted(plan.flags),
            "sparse": plan.sparse,
            "onnx_source": plan.onnx_source,
            "profile": list(plan.profile),
        }
        if plan.use_calibrator:
            options["calibration_batch"] = self.calibration_batch
        return options


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


def _log_tail(logger: Any, n: int = 8) -> str:
    messages = list(getattr(logger, "messages", ()))[-n:]
    return " | ".join(m.replace("\n", " ") for m in messages) if messages else "(no TensorRT log messages captured)"


@dataclass
class BuildOutput:
    engine: bytes
    timing_cache: bytes
    notes: list[str] = field(default_factory=list)


def _builder_flag(trt: ModuleType, name: str, trt_version: str) -> Any:
    try:
        return getattr(trt.BuilderFlag, name)
    except AttributeError:
        raise UnsupportedCombination(
            f"TensorRT {trt_version} has no BuilderFlag.{name}"
            + (" (TensorRT 11 removed weak typing)" if name in WEAK_TYPING_FLAGS else "")
        ) from None


def build_serialized_engine(
    trt: ModuleType,
    onnx_path: Path,
    plan: BuildPlan,
    settings: BuilderSettings,
    input_shape: tuple[int, ...],
    *,
    logger: Any,
    timing_cache: bytes | None = None,
    calibrator: Any = None,
) -> BuildOutput:
    """Parse ``onnx_path`` and build a serialized engine for ``plan`` (TensorRT 10.x/11.x API)."""
    if plan.use_calibrator and calibrator is None:
        raise HarnessError("implicit INT8 build needs a calibrator")
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TRT 10; strongly typed in 11
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"{err.node_name() or '?'}: {err.desc()}")
        raise HarnessError(
            f"TensorRT could not parse {Path(onnx_path).name}: " + "; ".join(errors or ["unknown error"])
        )
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [INPUT_NAME]:
        raise HarnessError(
            f"{Path(onnx_path).name} has inputs {inputs}; the harness exports exactly one named '{INPUT_NAME}'"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_bytes))
    config.builder_optimization_level = int(settings.opt_level)
    for name in plan.flags:
        config.set_flag(_builder_flag(trt, name, plan.trt_version))
    config.profiling_verbosity = (
        trt.ProfilingVerbosity.DETAILED if settings.detailed else trt.ProfilingVerbosity.LAYER_NAMES_ONLY
    )

    shape = tuple(int(d) for d in input_shape)
    low, opt, high = plan.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (low, *shape), (opt, *shape), (high, *shape))
    config.add_optimization_profile(profile)

    if plan.use_calibrator:
        b = int(settings.calibration_batch)
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(INPUT_NAME, (b, *shape), (b, *shape), (b, *shape))
        config.set_calibration_profile(calib_profile)
        config.int8_calibrator = calibrator

    notes: list[str] = []
    cache = config.create_timing_cache(timing_cache or b"")
    if config.set_timing_cache(cache, ignore_mismatch=False) is False:  # bool in C++; be lenient with None
        notes.append("stored timing cache did not match this TensorRT/GPU; started an empty one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as exc:  # pybind surfaces some build failures as exceptions
        raise HarnessError(f"TensorRT build of {Path(onnx_path).name} failed: {exc}; log: {_log_tail(logger)}") from exc
    if serialized is None:
        raise HarnessError(
            f"TensorRT could not build an engine from {Path(onnx_path).name} "
            f"({plan.precision}, flags {list(plan.flags)}); log: {_log_tail(logger)}"
        )
    return BuildOutput(engine=bytes(serialized), timing_cache=bytes(cache.serialize()), notes=notes)


@dataclass(frozen=True)
class IoSpec:
    name: str
    is_input: bool
    dtype: torch.dtype


def engine_io(trt: ModuleType, engine: Any) -> list[IoSpec]:
    """Inputs and outputs of a deserialized engine, with their torch buffer types."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        specs.append(IoSpec(name=name, is_input=is_input, dtype=trt_dtype_to_torch(engine.get_tensor_dtype(name))))
    return specs


# ------------------------------------------------------------------------------------------ runtime


class TrtNativeSession(Session):
    """One execution context on a dedicated CUDA stream; buffers are torch CUDA tensors.

    ``run`` enqueues on :attr:`cuda_stream` and does not synchronise; its output tensor is reused
    by the next ``run`` with the same batch size. With ``cuda_graph`` every sweep batch size is
    captured once (after a warm call) and staged inputs of that size share the graph's input
    buffer: the batch staged last is the one computed.
    """

    def __init__(
        self,
        *,
        trt: ModuleType,
        runtime: Any,
        engine: Any,
        info: SessionInfo,
        input_shape: tuple[int, ...],
        profile: tuple[int, int, int],
        batch_sizes: tuple[int, ...],
        cuda_graph: bool,
    ) -> None:
        self.info = info
        self._runtime = runtime  # keep alive: the engine needs its runtime
        self._engine = engine
        io = engine_io(trt, engine)
        ins = [s for s in io if s.is_input]
        outs = [s for s in io if not s.is_input]
        if len(ins) != 1 or len(outs) != 1:
            raise HarnessError(f"engine has inputs {[s.name for s in ins]} and outputs {[s.name for s in outs]}; "
                               "the harness expects one of each")
        self._in, self._out = ins[0], outs[0]
        self._shape = tuple(input_shape)
        self.min_batch, _, self.max_batch = profile
        self._device = torch.device("cuda", torch.cuda.current_device())
        self._stream = torch.cuda.Stream(device=self._device)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise HarnessError("TensorRT could not create an execution context (out of GPU memory?)")
        self._outputs: dict[int, torch.Tensor] = {}
        self._bound: int | None = None
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._graph_inputs: dict[int, torch.Tensor] = {}
        with torch.cuda.stream(self._stream):
            for b in sorted(set(batch_sizes)):
                self._check_batch(b)
                x = torch.zeros((b, *self._shape), dtype=self._in.dtype, device=self._device)
                self._execute(x)  # warm call: flushes deferred setup before any timing or capture
                if cuda_graph:
                    self._capture(b, x)
        self._stream.synchronize()

    @property
    def cuda_stream(self) -> torch.cuda.Stream:
        return self._stream

    def _check_batch(self, b: int) -> None:
        if not self.min_batch <= b <= self.max_batch:
            raise HarnessError(
                f"batch size {b} is outside the engine's profile [{self.min_batch}, {self.max_batch}]; "
                "TensorRT engines are never rebuilt during a run: include it in the sweep's batch sizes"
            )

    def _output_for(self, b: int) -> torch.Tensor:
        out = self._outputs.get(b)
        if out is None:
            out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._out.name))
            if any(d < 0 for d in out_shape):
                raise HarnessError(f"output shape {out_shape} is unresolved for batch {b}")
            out = torch.empty(out_shape, dtype=self._out.dtype, device=self._device)
            self._outputs[b] = out
        return out

    def _bind(self, b: int) -> torch.Tensor:
        if self._bound != b:
            if not self._context.set_input_shape(self._in.name, (b, *self._shape)):
                raise HarnessError(f"TensorRT refused input shape {(b, *self._shape)}")
            self._bound = b
        out = self._output_for(b)
        self._context.set_tensor_address(self._out.name, out.data_ptr())
        return out

    def _execute(self, x: torch.Tensor) -> torch.Tensor:
        out = self._bind(int(x.shape[0]))
        self._context.set_tensor_address(self._in.name, x.data_ptr())
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise HarnessError("TensorRT execute_async_v3 failed")
        return out

    def _capture(self, b: int, x: torch.Tensor) -> None:
        self._graph_inputs[b] = x
        self._execute(x)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
            self._context.execute_async_v3(self._stream.cuda_stream)
        self._graphs[b] = graph
        self._bound = None  # the next plain call re-binds shapes and addresses

    def stage(self, host: torch.Tensor) -> torch.Tensor:
        b = int(host.shape[0])
        self._check_batch(b)
        with torch.cuda.stream(self._stream):
            target = self._graph_inputs.get(b)
            if target is not None:
                target.copy_(host)
                staged = target
            else:
                staged = host.to(self._device, dtype=self._in.dtype)
        self._stream.synchronize()
        return staged

    def run(self, staged: torch.Tensor) -> torch.Tensor:
        b = int(staged.shape[0])
        graph = self._graphs.get(b)
        if graph is None:
            self._check_batch(b)
            return self._execute(staged)
        with torch.cuda.stream(self._stream):
            fixed = self._graph_inputs[b]
            if staged.data_ptr() != fixed.data_ptr():
                fixed.copy_(staged, non_blocking=True)
            graph.replay()
        return self._outputs[b]

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        b = int(host.shape[0])
        self._check_batch(b)
        with torch.cuda.stream(self._stream):
            graph_input = self._graph_inputs.get(b)
            if graph_input is not None:
                graph_input.copy_(host, non_blocking=host.is_pinned())
                y = self.run(graph_input)
            else:
                x = host.to(self._device, dtype=self._in.dtype, non_blocking=host.is_pinned())
                y = self._execute(x)
            result = y.to("cpu", dtype=torch.float32)
        self._stream.synchronize()
        return result

    def close(self) -> None:
        self._stream.synchronize()
        self._graphs.clear()
        self._graph_inputs.clear()
        self._outputs.clear()
        self._context = None
        self._engine = None
        self._runtime = None


class TrtNativeBackend(Backend):
    """TensorRT engines built by the harness from the exported ONNX model.

    Options: ``workspace_mib`` (4096), ``opt_level`` (0-5, 3), ``inspect`` (True: DETAILED
    profiling verbosity and the engine-inspector summary), ``cuda_graph`` (False),
    ``calibration_batch_size`` (32), ``profile_min_batch`` (default: the smallest sweep batch),
    ``fp16_onnx`` / ``bf16_onnx`` (TensorRT 11 only: a path, or ``convert`` for fp16), ``log_level``.
    """

    name: ClassVar[str] = "trt-native"
    device: ClassVar[str] = "cuda"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "bf16", "int8")
    description: ClassVar[str] = "TensorRT Python API (10.x; 11.x strongly typed), engines cached per TRT/GPU"
    options_known: ClassVar[tuple[str, ...]] = (
        "workspace_mib", "opt_level", "inspect", "cuda_graph", "calibration_batch_size", "profile_min_batch",
        "fp16_onnx", "bf16_onnx", "log_level",
    )

    @classmethod
    def unavailable_reason(cls, precision: str) -> str | None:
        reason = cuda_unavailable_reason()
        if reason is not None:
            return reason
        try:
            trt = import_tensorrt()
        except BackendUnavailable as exc:
            return str(exc)
        from harness.gpu.capabilities import trt_precision_support

        gpu = gpu_identity(torch.cuda.current_device())
        support = trt_precision_support(str(trt.__version__), gpu.compute_capability).get(precision)
        if support is not None and not support.ok:
            return f"{precision} on {gpu.name}: {support.reason}"
        return None

    # -- option helpers

    def _settings(self) -> BuilderSettings:
        return BuilderSettings(
            workspace_bytes=int(self.options.get("workspace_mib", DEFAULT_WORKSPACE_MIB)) << 20,
            opt_level=int(self.options.get("opt_level", DEFAULT_OPT_LEVEL)),
            detailed=bool_option(self.options.get("inspect", True)),
            calibration_batch=int(self.options.get("calibration_batch_size", DEFAULT_CALIBRATION_BATCH)),
        )

    def _typed_onnx_option(self, precision: str) -> str | None:
        value = self.options.get(f"{precision}_onnx")
        return str(value) if value not in (None, "") else None

    def _onnx_for(self, plan: BuildPlan, artifact: ModelArtifact) -> Path:
        if plan.onnx_source == "qdq":
            assert artifact.calibration is not None
            return qdq_model(artifact.calibration, "tensorrt")  # the source times its own "calibrate"
        if plan.onnx_source in ("fp16", "bf16"):
            choice = self._typed_onnx_option(plan.onnx_source)
            if choice == "convert" and plan.onnx_source == "fp16":
                with artifact.phases.timed("export"):
                    return fp16_onnx(artifact.onnx())
            if choice is None:
                raise UnsupportedCombination(
                    f"no {plan.onnx_source} ONNX model given (option '{plan.onnx_source}_onnx')"
                )
            path = Path(choice)
            if not path.is_file():
                raise HarnessError(f"option '{plan.onnx_source}_onnx': {path} is not a file")
            return path
        return artifact.onnx()

    def _calibrator_core(self, artifact: ModelArtifact, trt_version: str, root: Path, batch: int) -> Any:
        """The calibrator's core: the source's provenance-keyed one when it offers it."""
        from calib.trt_calibrator import CalibratorCore, cuda_buffer_factory

        calibration = artifact.calibration
        assert calibration is not None
        make_core = getattr(calibration, "trt_calibrator_core", None)
        if make_core is not None:
            return make_core(batch, artifact.input_shape, cache_dir=root / "calib", buffer_factory=cuda_buffer_factory,
                             tensorrt_version=trt_version)
        # a bare CalibrationSource: no provenance to key a calibration cache on, so none is kept
        return CalibratorCore(calibration.batches(batch), batch, artifact.input_shape, cuda_buffer_factory)

    # -- activate

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        admit(self, precision)
        trt = import_tensorrt()
        trt_version = str(trt.__version__)
        gpu = gpu_identity(torch.cuda.current_device())
        profile_min = self.options.get("profile_min_batch")
        plan = plan_build(
            precision, trt_version, artifact.int8_mode, artifact.calibration is not None, artifact.sparse_weights,
            batch_sizes, typed_onnx=self._typed_onnx_option(precision) is not None,
            compute_capability=gpu.compute_capability,
            profile_min=int(profile_min) if profile_min is not None else None,
        )
        settings = self._settings()
        onnx_path = self._onnx_for(plan, artifact)
        key = EngineCacheKey.for_build(
            self.name, file_hash(onnx_path), precision, plan.int8_mode, artifact.calibration, trt_version, gpu,
            settings.key_options(plan),
        )
        root = Path(cache_dir) / self.name
        engine_path, meta_path = key.path(root, ".engine"), key.path(root, ".json")
        timing_path = TimingCacheKey(trt_version, gpu.name, gpu.compute_capability).path(root / "timing")
        logger = make_capturing_logger(trt, str(self.options.get("log_level", "WARNING")))
        details: dict[str, Any] = {
            "tensorrt": trt_version, "gpu": gpu.name, "compute_capability": list(gpu.compute_capability),
            "plan": plan.to_dict(), "onnx": onnx_path.name, "engine_key": key.digest(), "engine": str(engine_path),
            "cuda_graph": bool_option(self.options.get("cuda_graph", False)),
        }

        with artifact.phases.timed("build"):
            engine_bytes, runtime, engine = self._load_or_build(
                trt, logger, plan, settings, artifact, onnx_path, key, engine_path, meta_path, timing_path, root,
                details,
            )
            if settings.detailed:
                layers_path = key.path(root, ".layers.json")
                if details["engine_cache"] != "hit":
                    layers_path.unlink(missing_ok=True)  # describes an engine that no longer exists
                details["layers"] = self._inspect(trt, engine, layers_path)
            info = SessionInfo(backend=self.name, precision=precision, device="cuda",
                               artifact_bytes=len(engine_bytes), details=details)
            session = TrtNativeSession(
                trt=trt, runtime=runtime, engine=engine, info=info, input_shape=artifact.input_shape,
                profile=plan.profile, batch_sizes=tuple(batch_sizes), cuda_graph=details["cuda_graph"],
            )
        return session

    def _load_or_build(self, trt: ModuleType, logger: Any, plan: BuildPlan, settings: BuilderSettings,
                       artifact: ModelArtifact, onnx_path: Path, key: EngineCacheKey,
                       engine_path: Path, meta_path: Path, timing_path: Path, root: Path,
                       details: dict[str, Any]) -> tuple[bytes, Any, Any]:
        runtime = trt.Runtime(logger)
        if engine_path.is_file():
            engine_bytes = engine_path.read_bytes()
            engine = runtime.deserialize_cuda_engine(engine_bytes)
            if engine is not None:
                details["engine_cache"] = "hit"
                if meta_path.is_file():
                    details["original_build_s"] = json.loads(meta_path.read_text()).get("build_s")
                return engine_bytes, runtime, engine
            engine_path.unlink(missing_ok=True)  # stale or torn: rebuild below
            details["engine_cache"] = "unreadable, rebuilt"
        else:
            details["engine_cache"] = "miss"

        core = calibrator = None
        if plan.use_calibrator:
            from calib.trt_calibrator import make_entropy_calibrator

            core = self._calibrator_core(artifact, plan.trt_version, root, settings.calibration_batch)
            calibrator = make_entropy_calibrator(core, trt)
        start = time.perf_counter()
        try:
            out = build_serialized_engine(
                trt, onnx_path, plan, settings, artifact.input_shape, logger=logger,
                timing_cache=timing_path.read_bytes() if timing_path.is_file() else None, calibrator=calibrator,
            )
        except HarnessError:
            if core is not None:
                core.raise_if_failed()  # an error inside the calibrator is the real cause
            raise
        build_s = time.perf_counter() - start
        if core is not None:
            core.raise_if_failed()
            details["calibration"] = {
                "calibrator": "IInt8EntropyCalibrator2 (time inside the build)",
                "batch_size": settings.calibration_batch,
                "batches_served": getattr(core, "batches_served", None),
                "cache_read": getattr(core, "cache_read", None),
            }
        atomic_write_bytes(engine_path, out.engine)
        atomic_write_bytes(timing_path, out.timing_cache)
        meta = {"key": key.to_dict(), "plan": plan.to_dict(), "build_s": build_s, "engine_bytes": len(out.engine),
                "notes": out.notes}
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        details["build_s"] = build_s
        if out.notes:
            details["build_notes"] = out.notes
        engine = runtime.deserialize_cuda_engine(out.engine)
        if engine is None:
            raise HarnessError(f"TensorRT could not deserialize the engine it just built; log: {_log_tail(logger)}")
        return out.engine, runtime, engine

    @staticmethod
    def _inspect(trt: ModuleType, engine: Any, path: Path) -> dict[str, Any]:
        from backends.trt_inspect import summarize

        if path.is_file():
            text = path.read_text()
        else:
            inspector = engine.create_engine_inspector()
            text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            atomic_write_bytes(path, text.encode())
        summary = summarize(text).to_dict()
        summary["json"] = str(path)
        return summary


__all__ = [
    "BuildOutput", "BuildPlan", "BuilderSettings", "INT8_MODES", "IoSpec", "TRT10_ONLY_API", "TRT_API_USED",
    "TrtNativeBackend", "TrtNativeSession", "build_serialized_engine", "engine_io", "make_capturing_logger",
    "plan_build", "profile_for", "resolve_int8_mode",
]
