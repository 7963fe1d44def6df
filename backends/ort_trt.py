"""ONNX Runtime with the TensorRT execution provider (the thesis's backend, done carefully).

* Providers: TensorRT EP first, CUDA EP second (ONNX Runtime places nodes TensorRT cannot run on
  the CUDA EP). ``check_providers`` fails the run when the TensorRT EP did not load, and an
  activation that leaves no engine file behind fails too (the thesis recorded size 0 instead).
* One explicit profile (``trt_profile_min/opt/max_shapes``: min=min(batch sizes),
  opt=max=max(batch sizes)); one inference per sweep batch size runs inside ``activate`` and is
  recorded as phase ``build``, so no engine is built while timing.
* Engine caches live in ``<cache_dir>/ort-trt/<key>``, one directory per
  :class:`~harness.engine_cache.EngineCacheKey` (ONNX hash, precision, INT8 mode, calibration
  data, TensorRT version, GPU, builder options); the timing cache in
  ``<cache_dir>/ort-trt/timing/<TRT+GPU key>`` is shared by every model on that TRT and GPU.
* INT8: on TensorRT <= 10 either the calibration table written by ONNX Runtime's calibrator into
  the per-key engine directory, on the FP32 ONNX (``int8_mode`` implicit, the default there), or
  the Q/DQ model (``explicit``; never with a table). TensorRT 11 has Q/DQ only. The provider flags
  follow :func:`backends.trt_native.plan_build` (INT8 together with FP16 on TRT 10; no precision
  flags on strongly typed TRT 11).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import torch

from backends.base import Backend, ModelArtifact, Session, SessionInfo
from backends.gpu_common import (
    admit,
    bool_option,
    detect_tensorrt_version,
    fp16_onnx,
    gpu_identity,
    qdq_model,
)
from backends.ort_common import INPUT_NAME, create_session, import_ort
from backends.ort_cuda import (
    OrtGpuSession,
    gpu_provider_reason,
    ort_bool,
    ort_cuda_provider_options,
)
from backends.trt_native import (
    DEFAULT_OPT_LEVEL,
    DEFAULT_WORKSPACE_MIB,
    BuildPlan,
    plan_build,
)
from harness.engine_cache import EngineCacheKey, TimingCacheKey
from harness.errors import BackendUnavailable, HarnessError, UnsupportedCombination
from harness.fingerprint import file_hash
from harness.gpu.capabilities import check_ort_trt_pair

PROVIDER = "TensorrtExecutionProvider"
FALLBACK_PROVIDER = "CUDAExecutionProvider"


def profile_shapes(input_name: str, batch: int, input_shape: tuple[int, ...]) -> str:
    """ONNX Runtime's profile-shape syntax: ``input:8x3x224x224``."""
    return f"{input_name}:" + "x".join(str(int(d)) for d in (batch, *input_shape))


def ort_trt_provider_options(
    plan: BuildPlan,
    *,
    engine_dir: Path,
    timing_dir: Path,
    input_shape: tuple[int, ...],
    input_name: str = INPUT_NAME,
    calibration_table_name: str | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_MIB << 20,
    opt_level: int = DEFAULT_OPT_LEVEL,
    detailed_build_log: bool = False,
    device_id: int = 0,
    stream_handle: int | None = None,
) -> dict[str, str]:
    """TensorrtExecutionProvider options for ``plan`` (REFERENCE.md section 5); all values strings.

    ``calibration_table_name`` is a bare file name inside ``engine_dir`` (ONNX Runtime reads the
    table from the engine cache path); it is required for a calibrator plan and refused otherwise,
    so a Q/DQ model never gets a table.
    """
    if plan.onnx_source == "bf16" or "BF16" in plan.flags:
        raise UnsupportedCombination("ort-trt runs fp32, fp16 and int8; bf16 is not offered")
    if plan.use_calibrator:
        if not calibration_table_name:
            raise HarnessError("ort-trt int8 (implicit) needs the calibration table written by ONNX Runtime")
        if Path(calibration_table_name).name != calibration_table_name:
            raise HarnessError(
                f"calibration table name must be a bare file name inside the engine cache directory, "
                f"got '{calibration_table_name}'"
            )
    elif calibration_table_name:
        raise HarnessError(
            f"a calibration table was given for a {plan.onnx_source} model; "
            "ONNX Runtime must never get a table for a Q/DQ model (or for a non-int8 build)"
        )
    if not 0 <= int(opt_level) <= 5:
        raise HarnessError(f"trt_builder_optimization_level must be 0-5, got {opt_level}")
    low, opt, high = plan.profile
    options: dict[str, str] = {
        "device_id": str(int(device_id)),
        "trt_fp16_enable": ort_bool("FP16" in plan.flags),
        "trt_int8_enable": ort_bool("INT8" in plan.flags),
        "trt_engine_cache_enable": ort_bool(True),
        "trt_engine_cache_path": str(Path(engine_dir).resolve()),
        "trt_timing_cache_enable": ort_bool(True),
        "trt_timing_cache_path": str(Path(timing_dir).resolve()),
        "trt_max_workspace_size": str(int(workspace_bytes)),
        "trt_builder_optimization_level": str(int(opt_level)),
        "trt_sparsity_enable": ort_bool(plan.sparse),
        "trt_profile_min_shapes": profile_shapes(input_name, low, input_shape),
        "trt_profile_opt_shapes": profile_shapes(input_name, opt, input_shape),
        "trt_profile_max_shapes": profile_shapes(input_name, high, input_shape),
        "trt_detailed_build_log": ort_bool(detailed_build_log),
    }
    if plan.use_calibrator:
        options["trt_int8_calibration_table_name"] = str(calibration_table_name)
        options["trt_int8_use_native_calibration_table"] = ort_bool(False)  # ORT-written table, not TRT's
    if stream_handle is not None:
        options["has_user_compute_stream"] = ort_bool(True)
        options["user_compute_stream"] = str(int(stream_handle))
    return options


def engine_files(engine_dir: Path) -> list[Path]:
    """The serialized TensorRT engines ONNX Runtime left in ``engine_dir``."""
    return sorted(p for p in Path(engine_dir).glob("*.engine") if p.is_file())


class OrtTensorrtBackend(Backend):
    """Options: ``device_id`` (0), ``workspace_mib`` (4096), ``opt_level`` (0-5, 3), ``detailed_build_log``
    (False), ``profile_min_batch``, ``fp16_onnx`` (TensorRT 11: a path or ``convert``),
    ``user_stream`` (False: the TRT EP's user stream is opt-in), ``trt_version`` (override detection)."""

    name: ClassVar[str] = "ort-trt"
    device: ClassVar[str] = "cuda"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    description: ClassVar[str] = "ONNX Runtime, TensorRT execution provider (CUDA EP for the rest), engines cached"
    options_known: ClassVar[tuple[str, ...]] = (
        "device_id", "workspace_mib", "opt_level", "detailed_build_log", "profile_min_batch", "fp16_onnx",
        "user_stream", "trt_version",
    )

    @classmethod
    def unavailable_reason(cls, precision: str) -> str | None:
        reason = gpu_provider_reason(PROVIDER)
        if reason is not None:
            return reason
        return gpu_provider_reason(FALLBACK_PROVIDER)

    def _trt_version(self, ort_version: str) -> tuple[str, str]:
        override = self.options.get("trt_version")
        if override:
            return str(override), "option trt_version"
        found = detect_tensorrt_version(ort_version)
        if found is None:
            raise BackendUnavailable(
                f"cannot tell which TensorRT onnxruntime {ort_version} uses (no tensorrt module or wheel, no recorded "
                "pairing); set the ort-trt option trt_version"
            )
        return found.version, found.source

    def _model(self, plan: BuildPlan, artifact: ModelArtifact) -> Path:
        if plan.onnx_source == "qdq":
            assert artifact.calibration is not None
            return qdq_model(artifact.calibration, "tensorrt")  # the source times its own "calibrate"
        if plan.onnx_source == "fp16":
            choice = str(self.options.get("fp16_onnx") or "")
            if choice == "convert":
                with artifact.phases.timed("export"):
                    return fp16_onnx(artifact.onnx())
            path = Path(choice)
            if not path.is_file():
                raise HarnessError(f"option 'fp16_onnx': {choice!r} is not a file (or use 'convert')")
            return path
        return artifact.onnx()

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        admit(self, precision)
        ort_version = import_ort().__version__
        trt_version, trt_source = self._trt_version(ort_version)
        device_id = int(self.options.get("device_id", 0))
        gpu = gpu_identity(device_id)
        profile_min = self.options.get("profile_min_batch")
        plan = plan_build(
            precision, trt_version, artifact.int8_mode, artifact.calibration is not None, artifact.sparse_weights,
            batch_sizes, typed_onnx=bool(self.options.get("fp16_onnx")), compute_capability=gpu.compute_capability,
            profile_min=int(profile_min) if profile_min is not None else None,
        )
        model = self._model(plan, artifact)
        workspace = int(self.options.get("workspace_mib", DEFAULT_WORKSPACE_MIB)) << 20
        opt_level = int(self.options.get("opt_level", DEFAULT_OPT_LEVEL))
        key = EngineCacheKey.for_build(
            self.name, file_hash(model), precision, plan.int8_mode, artifact.calibration, trt_version, gpu,
            {
                "onnxruntime": ort_version, "workspace_bytes": workspace, "opt_level": opt_level,
                "flags": sorted(plan.flags), "sparse": plan.sparse, "onnx_source": plan.onnx_source,
                "profile": list(plan.profile),
            },
        )
        root = Path(cache_dir) / self.name
        engine_dir = key.path(root, "")
        timing_dir = TimingCacheKey(trt_version, gpu.name, gpu.compute_capability).path(root / "timing", "")
        engine_dir.mkdir(parents=True, exist_ok=True)
        timing_dir.mkdir(parents=True, exist_ok=True)

        table_name = None
        if plan.use_calibrator:
            assert artifact.calibration is not None
            table = Path(artifact.calibration.ort_trt_table(engine_dir))  # timed by the source as "calibrate"
            if table.parent.resolve() != engine_dir.resolve():
                shutil.copy2(table, engine_dir / table.name)
            table_name = table.name

        stream = torch.cuda.Stream(device=device_id) if bool_option(self.options.get("user_stream", False)) else None
        stream_handle = stream.cuda_stream if stream is not None else None
        trt_options = ort_trt_provider_options(
            plan, engine_dir=engine_dir, timing_dir=timing_dir, input_shape=artifact.input_shape,
            calibration_table_name=table_name, workspace_bytes=workspace, opt_level=opt_level,
            detailed_build_log=bool_option(self.options.get("detailed_build_log", False)), device_id=device_id,
            stream_handle=stream_handle,
        )
        cuda_options = ort_cuda_provider_options(device_id=device_id, stream_handle=stream_handle)
        cached_before = {p.name for p in engine_files(engine_dir)}

        with artifact.phases.timed("build"):
            session = create_session(model, [(PROVIDER, trt_options), (FALLBACK_PROVIDER, cuda_options)])
            info = SessionInfo(backend=self.name, precision=precision, device="cuda", details={})
            gpu_session = OrtGpuSession(session, info, device_id=device_id, stream=stream,
                                        num_outputs=artifact.num_outputs, profile=(plan.profile[0], plan.profile[2]))
            gpu_session.warm(tuple(batch_sizes), artifact.input_shape)

        engines = engine_files(engine_dir)
        if not engines:
            gpu_session.close()
            raise HarnessError(
                f"the TensorRT EP built no engine for {model.name} in {engine_dir}: TensorRT took no part of the graph "
                "(every node ran on the CUDA EP); this is not a TensorRT result"
            )
        info.artifact_bytes = sum(p.stat().st_size for p in engines)
        info.details.update({
            "providers": session.get_providers(), "onnx": model.name, "onnxruntime": ort_version,
            "tensorrt": trt_version, "tensorrt_version_source": trt_source, "gpu": gpu.name,
            "compute_capability": list(gpu.compute_capability), "plan": plan.to_dict(),
            "engine_key": key.digest(), "engine_dir": str(engine_dir),
            "engines": [p.name for p in engines],
            "engine_cache": "hit" if cached_before and {p.name for p in engines} <= cached_before else "miss",
            "ort_trt_pairing": check_ort_trt_pair(ort_version, trt_version).reason,
            "provider_options": trt_options,
            "compute_timer": "cuda events on user_compute_stream" if stream is not None
            else "perf_counter around synchronous run_with_iobinding",
        })
        if len(engines) > 1:
            info.details["partitioned"] = (
                f"{len(engines)} TensorRT engines: ONNX Runtime split the graph; nodes between them ran on the CUDA EP"
            )
        return gpu_session


__all__ = ["OrtTensorrtBackend", "engine_files", "ort_trt_provider_options", "profile_shapes"]
