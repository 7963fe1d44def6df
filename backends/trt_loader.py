"""ONNX + build plan -> cached, verified TensorRT engine bytes (the Polygraphy "loader" step).

* :func:`build_serialized_engine` wires a plan into the TensorRT builder API; it takes the
  ``tensorrt`` module as an argument so tests can hand it a strict fake generated from the real
  bindings' symbol lists.
* :func:`load_or_build` returns a deserialized engine for a cache key: engines and the timing cache
  are written atomically with a sidecar (size + sha256) and verified on load; a missing, truncated,
  mismatching or undeserializable file is rebuilt and the reason is recorded in the session details
  (``cache_warnings``), never a failed cell.
* The implicit-INT8 calibrator comes from the calibration source (``trt_calibrator_core``), keyed by
  its provenance; its native cache is what ``ort-trt`` can reuse for identical scales.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from backends.base import PhaseTimes
from backends.trt_api import WEAK_TYPING_FLAGS, checked, log_tail
from backends.trt_plan import DEFAULT_CALIBRATION_BATCH, DEFAULT_OPT_LEVEL, DEFAULT_WORKSPACE_MIB, BuildPlan
from harness.store.engine_cache import EngineCacheKey, discard, read_verified, write_verified
from harness.errors import HarnessError, UnsupportedCombination
from harness.onnx_export import INPUT_NAME

# trt-api: Builder.create_network, Builder.create_builder_config, Builder.create_optimization_profile
# trt-api: Builder.build_serialized_network, INetworkDefinition.num_inputs, INetworkDefinition.get_input
# trt-api: OnnxParser.parse_from_file, OnnxParser.num_errors, OnnxParser.get_error, ParserError.desc
# trt-api: ParserError.node_name, IBuilderConfig.set_memory_pool_limit, IBuilderConfig.builder_optimization_level
# trt-api: IBuilderConfig.set_flag, IBuilderConfig.clear_flag, BuilderFlag.TF32, IBuilderConfig.profiling_verbosity, IOptimizationProfile.set_shape
# trt-api: IBuilderConfig.add_optimization_profile, IBuilderConfig.set_calibration_profile
# trt-api: IBuilderConfig.int8_calibrator, IBuilderConfig.create_timing_cache, IBuilderConfig.set_timing_cache
# trt-api: ITimingCache.serialize, Runtime.deserialize_cuda_engine, ICudaEngine.create_engine_inspector
# trt-api: EngineInspector.get_engine_information, EngineInspector.execution_context
# trt-api: ICudaEngine.create_execution_context, IExecutionContext.set_optimization_profile_async
# trt-api: IExecutionContext.set_input_shape


@dataclass(frozen=True)
class BuilderSettings:
    """Builder options outside the plan; all of them go into the engine cache key."""

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
        if plan.network_flags:  # only then: every weakly typed engine keeps its cache key
            options["network_flags"] = list(plan.network_flags)
            options["float_type"] = plan.float_type
        if plan.profiles and plan.profiles != (plan.profile,):
            options["profiles"] = [list(p) for p in plan.profiles]
        if plan.use_calibrator:
            options["calibration_batch"] = self.calibration_batch
        return options


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


def network_creation_flags(trt: ModuleType, names: Sequence[str]) -> int:
    """The ``create_network`` bit mask of ``NetworkDefinitionCreationFlag`` members ``names``."""
    value = 0
    for name in names:
        value |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return value


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
    # Explicit batch is the only mode from TRT 10 on; STRONGLY_TYPED makes every layer compute in its ONNX
    # type (the default of TRT 11, set there too so that 10.x and 11 strongly typed plans build alike).
    network = builder.create_network(network_creation_flags(trt, plan.network_flags))
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
    if plan.precision == "fp32":
        # TensorRT builds FP32 convolutions and matmuls as TF32 on Ampere and newer unless told not to:
        # an fp32 cell must compute in FP32 (IEEE single precision).
        config.clear_flag(_builder_flag(trt, "TF32", plan.trt_version))
    config.profiling_verbosity = (
        trt.ProfilingVerbosity.DETAILED if settings.detailed else trt.ProfilingVerbosity.LAYER_NAMES_ONLY
    )

    shape = tuple(int(d) for d in input_shape)
    for expected, (low, opt, high) in enumerate(plan.all_profiles):
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (low, *shape), (opt, *shape), (high, *shape))
        index = config.add_optimization_profile(profile)
        if index != expected:  # -1 when TensorRT rejects the profile
            raise HarnessError(
                f"TensorRT add_optimization_profile returned {index} for profile {expected} "
                f"(min/opt/max batch {low}/{opt}/{high}): the profile was rejected"
            )

    if plan.use_calibrator:
        b = int(settings.calibration_batch)
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(INPUT_NAME, (b, *shape), (b, *shape), (b, *shape))
        checked(config.set_calibration_profile(calib_profile), "set_calibration_profile", f"batch {b}")
        config.int8_calibrator = calibrator

    notes: list[str] = []
    cache = config.create_timing_cache(timing_cache or b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        notes.append("stored timing cache did not match this TensorRT/GPU; started an empty one")
        cache = config.create_timing_cache(b"")
        checked(config.set_timing_cache(cache, ignore_mismatch=False), "set_timing_cache", "empty cache")

    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as exc:  # pybind surfaces some build failures as exceptions
        raise HarnessError(f"TensorRT build of {Path(onnx_path).name} failed: {exc}; log: {log_tail(logger)}") from exc
    if serialized is None:
        raise HarnessError(
            f"TensorRT could not build an engine from {Path(onnx_path).name} "
            f"({plan.precision}, flags {list(plan.flags)}); log: {log_tail(logger)}"
        )
    return BuildOutput(engine=bytes(serialized), timing_cache=bytes(cache.serialize()), notes=notes)


# ------------------------------------------------------------------------------------- the loader


@dataclass
class LoadedEngine:
    engine_bytes: bytes
    runtime: Any
    engine: Any
    details: dict[str, Any]


@dataclass(frozen=True)
class EnginePaths:
    engine: Path
    meta: Path
    layers: Path
    timing: Path

    @classmethod
    def for_key(cls, key: EngineCacheKey, root: Path, timing: Path) -> EnginePaths:
        return cls(key.path(root, ".engine"), key.path(root, ".json"), key.path(root, ".layers.json"), timing)


def calibrator_core(artifact: Any, trt_version: str, root: Path, batch: int, phases: PhaseTimes) -> Any:
    """The calibration source's provenance-keyed calibrator core (its cache lives under ``root/calib``)."""
    from calib.trt_calibrator import cuda_buffer_factory

    if artifact.calibration is None:
        raise HarnessError("implicit INT8 needs calibration data; none was given")
    return artifact.calibration.trt_calibrator_core(
        batch, artifact.input_shape, cache_dir=root / "calib", buffer_factory=cuda_buffer_factory,
        tensorrt_version=trt_version, phases=phases,
    )


def load_or_build(
    trt: ModuleType,
    logger: Any,
    plan: BuildPlan,
    settings: BuilderSettings,
    artifact: Any,
    onnx_path: Path,
    key: EngineCacheKey,
    paths: EnginePaths,
    root: Path,
    phases: PhaseTimes,
    *,
    make_calibrator: Any = None,
) -> LoadedEngine:
    """A deserialized engine for ``key``: the verified cached one, else a fresh build (cached)."""
    details: dict[str, Any] = {}
    warnings: list[str] = []
    runtime = trt.Runtime(logger)
    cached = read_verified(paths.engine)
    if cached.problem:
        warnings.append(f"engine cache: {cached.problem}; rebuilt")
    if cached.data is not None:
        engine = runtime.deserialize_cuda_engine(cached.data)
        if engine is not None:
            details["engine_cache"] = "hit"
            if paths.meta.is_file():
                try:
                    details["original_build_s"] = json.loads(paths.meta.read_text()).get("build_s")
                except ValueError:
                    warnings.append(f"engine metadata {paths.meta.name} is unreadable")
            if warnings:
                details["cache_warnings"] = warnings
            return LoadedEngine(cached.data, runtime, engine, details)
        discard(paths.engine)
        warnings.append(f"engine cache: TensorRT could not deserialize {paths.engine.name}; rebuilt")
    details["engine_cache"] = "rebuilt" if warnings else "miss"
    discard(paths.layers)  # describes an engine that no longer exists

    timing = read_verified(paths.timing)
    if timing.problem:
        warnings.append(f"timing cache: {timing.problem}; started an empty one")

    core = calibrator = None
    if plan.use_calibrator:
        if make_calibrator is None:
            from calib.trt_calibrator import make_entropy_calibrator as make_calibrator
        core = calibrator_core(artifact, plan.trt_version, root, settings.calibration_batch, phases)
        calibrator = make_calibrator(core, trt)
    start = time.perf_counter()
    try:
        out = build_serialized_engine(trt, onnx_path, plan, settings, artifact.input_shape, logger=logger,
                                      timing_cache=timing.data, calibrator=calibrator)
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
            "batches_served": core.batches_served,
            "cache_read": core.cache_read,
            "cache": str(core.cache_path) if core.cache_path is not None else None,
        }
    write_verified(paths.engine, out.engine)
    write_verified(paths.timing, out.timing_cache)
    meta = {"key": key.to_dict(), "plan": plan.to_dict(), "build_s": build_s, "engine_bytes": len(out.engine),
            "notes": out.notes}
    write_verified(paths.meta, json.dumps(meta, indent=2, sort_keys=True).encode())
    details["build_s"] = build_s
    if out.notes:
        details["build_notes"] = out.notes
    if warnings:
        details["cache_warnings"] = warnings
    engine = runtime.deserialize_cuda_engine(out.engine)
    if engine is None:
        raise HarnessError(f"TensorRT could not deserialize the engine it just built; log: {log_tail(logger)}")
    return LoadedEngine(out.engine, runtime, engine, details)


#: The layout of the cached inspector file: one JSON text per optimization profile.
INSPECTOR_CACHE_FORMAT = "per-profile-with-context-v1"


def engine_information(trt: ModuleType, engine: Any, opt_shapes: Sequence[tuple[int, ...]], input_name: str,
                       stream_handle: int) -> list[str]:
    """The engine inspector's JSON once per optimization profile, each read with an execution context on
    that profile at its opt input shape (``opt_shapes[i]`` for profile ``i``).

    Without a context the inspector shows shape-dependent values as -1 and no format information
    (NvInferRuntime.h, ``IEngineInspector::setExecutionContext``): every layer's precision would read
    "unknown". Polygraphy attaches a context the same way. The caller synchronizes ``stream_handle``.
    """
    texts: list[str] = []
    for index, shape in enumerate(opt_shapes):
        context = engine.create_execution_context()
        if context is None:
            raise HarnessError("TensorRT could not create an execution context for the engine inspector")
        if index:
            checked(context.set_optimization_profile_async(index, stream_handle), "set_optimization_profile_async",
                    f"profile {index}")
        checked(context.set_input_shape(input_name, tuple(shape)), "set_input_shape", f"{input_name} {tuple(shape)}")
        inspector = engine.create_engine_inspector()
        inspector.execution_context = context
        texts.append(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        del inspector, context  # the inspector refers to the context: drop it first
    return texts


def inspect_engine(trt: ModuleType, engine: Any, path: Path, opt_shapes: Sequence[tuple[int, ...]],
                   input_name: str, stream_handle: int) -> list[str]:
    """:func:`engine_information` for ``engine``, cached (verified) at ``path``; a cache in an older layout
    (read without a context) is read again."""
    cached = read_verified(path)
    if cached.data is not None:
        try:
            stored = json.loads(cached.data)
        except ValueError:
            stored = None
        if (isinstance(stored, dict) and stored.get("format") == INSPECTOR_CACHE_FORMAT
                and len(stored.get("profiles") or []) == len(opt_shapes)):
            return [str(t) for t in stored["profiles"]]
    texts = engine_information(trt, engine, opt_shapes, input_name, stream_handle)
    write_verified(path, json.dumps({"format": INSPECTOR_CACHE_FORMAT, "profiles": texts}).encode())
    return texts


__all__ = ["BuildOutput", "BuilderSettings", "EnginePaths", "LoadedEngine", "build_serialized_engine",
           "calibrator_core", "engine_information", "inspect_engine", "load_or_build", "network_creation_flags"]
