"""The ``trt-native`` backend: TensorRT engines built by the harness through TensorRT's own Python API.

The work is split the way Polygraphy splits it:

* :mod:`backends.trt_api`: the API names used and the TensorRT 11 boundary;
* :mod:`backends.trt_plan`: the pure build plan (precision -> flags, ONNX form, profiles);
* :mod:`backends.trt_loader`: ONNX + plan -> verified, cached engine bytes (timing cache, calibrator);
* :mod:`backends.trt_runner`: the session that only runs (contexts, CUDA graphs, profiling pass);
* :mod:`backends.trt_inspect`: the engine inspector's JSON, precision counts.

This module holds the backend: options, the availability rule, and ``activate`` wiring the pieces.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field

from backends.base import Backend, ModelArtifact, PhaseTimes, Session, SessionInfo
from backends.gpu_common import (
    GpuBackendOptions,
    admit,
    gpu_identity,
)
from backends.trt_api import import_tensorrt, make_capturing_logger
from backends.trt_loader import BuilderSettings, EnginePaths, inspect_engine, load_or_build
from backends.trt_plan import (
    DEFAULT_CALIBRATION_BATCH,
    DEFAULT_OPT_LEVEL,
    DEFAULT_WORKSPACE_MIB,
    onnx_for_plan,
    plan_build,
    profile_index,
)
from backends.trt_runner import TrtNativeSession
from backends.typed_onnx import check_converter
from harness.store.engine_cache import EngineCacheKey, TimingCacheKey
from harness.store.fingerprint import file_hash
from harness.onnx_export import INPUT_NAME

if TYPE_CHECKING:
    from harness.machine import MachineFacts

# trt-api: __version__


class TrtNativeOptions(GpuBackendOptions):
    workspace_mib: int = Field(DEFAULT_WORKSPACE_MIB, gt=0)
    opt_level: int = Field(DEFAULT_OPT_LEVEL, ge=0, le=5)
    inspect: bool = True  # ProfilingVerbosity.DETAILED and the engine-inspector summary
    cuda_graph: bool = False
    calibration_batch_size: int = Field(DEFAULT_CALIBRATION_BATCH, ge=1)
    profile_min_batch: int | None = Field(None, ge=1)
    profiles: Literal["per-batch", "shared"] = "per-batch"
    # Build strongly typed networks on TensorRT 10.x too (TensorRT 11 always does; false there is refused):
    # fp16/bf16 and the float parts of Q/DQ models are then converted by the harness (backends.typed_onnx).
    strongly_typed: bool | None = None
    fp16_onnx: str | None = None  # strongly typed: an FP16 ONNX to use instead of the converted one (a path)
    bf16_onnx: str | None = None  # strongly typed: a BF16 ONNX to use instead of the converted one (a path)
    log_level: Literal["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"] = "WARNING"


def trt_native_reason(precision: str, facts: MachineFacts) -> str | None:
    """Why trt-native cannot run ``precision`` on this machine (None: it can), from the facts only."""
    if facts.tensorrt_version is None:
        return facts.tensorrt_error or "tensorrt is not installed"
    if not facts.gpu_visible:
        return facts.no_gpu_reason
    if not facts.torch_cuda_available:
        return f"trt-native uses torch CUDA tensors as device buffers: {facts.torch_cuda_note}"
    if facts.gpu_cc is None:
        return None  # compute capability unknown: precision rules not checked
    from harness.gpu.capabilities import trt_precision_support

    rule = trt_precision_support(facts.tensorrt_version, facts.gpu_cc)[precision]
    return None if rule.ok else rule.reason


class TrtNativeBackend(Backend[TrtNativeOptions]):
    """TensorRT engines built by the harness from the exported ONNX model (options: :class:`TrtNativeOptions`)."""

    name: ClassVar[str] = "trt-native"
    devices: ClassVar[frozenset[str]] = frozenset({"cuda"})
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
    description: ClassVar[str] = "TensorRT Python API (10.x; 11.x strongly typed), engines cached per TRT/GPU"
    Options: ClassVar[type[TrtNativeOptions]] = TrtNativeOptions
    options: TrtNativeOptions

    @classmethod
    def unavailable_reason(cls, precision: str, facts: MachineFacts) -> str | None:
        return super().unavailable_reason(precision, facts) or trt_native_reason(precision, facts)

    def _settings(self) -> BuilderSettings:
        o = self.options
        return BuilderSettings(workspace_bytes=o.workspace_mib << 20, opt_level=o.opt_level, detailed=o.inspect,
                               calibration_batch=o.calibration_batch_size)

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        admit(self, precision)
        phases = PhaseTimes()
        o = self.options
        trt = import_tensorrt()
        trt_version = str(trt.__version__)
        gpu = gpu_identity(torch.cuda.current_device())
        typed_onnx = {"fp16": o.fp16_onnx, "bf16": o.bf16_onnx}.get(precision)
        plan = plan_build(
            precision, trt_version, artifact.int8_mode, artifact.calibration is not None, artifact.sparse_weights,
            batch_sizes, strongly_typed=o.strongly_typed, compute_capability=gpu.compute_capability,
            profile_min=o.profile_min_batch, profile_mode=o.profiles,
        )
        if plan.float_type != "fp32" and not (typed_onnx and typed_onnx != "convert"):
            check_converter(qdq=plan.onnx_source != precision)  # before any export or calibration
        settings = self._settings()
        typed_record: dict[str, Any] = {}
        onnx_path = onnx_for_plan(plan, artifact, typed_onnx, phases, cache_dir=Path(cache_dir), record=typed_record)
        key = EngineCacheKey.for_build(
            self.name, file_hash(onnx_path), precision, plan.int8_mode, artifact.calibration, trt_version, gpu,
            settings.key_options(plan),
        )
        root = Path(cache_dir) / self.name
        timing = TimingCacheKey(trt_version, gpu.name, gpu.compute_capability).path(root / "timing")
        paths = EnginePaths.for_key(key, root, timing)
        logger = make_capturing_logger(trt, o.log_level)

        with phases.timed("build"):
            loaded = load_or_build(trt, logger, plan, settings, artifact, onnx_path, key, paths, root, phases)
            details: dict[str, Any] = {
                "tensorrt": trt_version, "gpu": gpu.name, "compute_capability": list(gpu.compute_capability),
                "plan": plan.to_dict(), "onnx": onnx_path.name, "engine_key": key.digest(),
                "build_mode": plan.build_mode, **typed_record,
                "engine": str(paths.engine), "cuda_graph": o.cuda_graph, "profiles": o.profiles,
                **loaded.details,
            }
            summary = None
            if settings.detailed:
                from backends.trt_inspect import engine_summary, precision_counts, summarize

                stream = torch.cuda.current_stream()
                texts = inspect_engine(trt, loaded.engine, paths.layers,
                                       [(opt, *artifact.input_shape) for _, opt, _ in plan.all_profiles], INPUT_NAME,
                                       stream.cuda_stream)
                stream.synchronize()
                summary = {i: summarize(text, profile=i) for i, text in enumerate(texts)}
                # profile 0's layers (each profile has its own copy of the graph: never count them all)
                details["layers"] = {**engine_summary(texts[0], precision), "json": str(paths.layers)}
                if len(texts) > 1:
                    details["layers_by_batch"] = {
                        str(b): {"profile": i, "precision_counts": precision_counts(summary[i])}
                        for b in sorted(set(batch_sizes)) for i in [profile_index(plan.all_profiles, b)]}
                if details["layers"].get("int8_fallback"):
                    details["int8_fallback"] = True
                    details.setdefault("warnings", []).append(details["layers"]["int8_fallback_warning"])
            info = SessionInfo(backend=self.name, precision=precision, device="cuda",
                               artifact_bytes=len(loaded.engine_bytes), details=details)
            session = TrtNativeSession(
                trt=trt, runtime=loaded.runtime, engine=loaded.engine, info=info, input_shape=artifact.input_shape,
                profiles=plan.all_profiles, batch_sizes=tuple(batch_sizes), cuda_graph=o.cuda_graph, layers=summary,
            )
        info.prep_phases = dict(phases.seconds)
        return session


__all__ = ["TrtNativeBackend", "TrtNativeOptions", "trt_native_reason"]
