"""ONNX Runtime with the TensorRT execution provider (the thesis's backend, done carefully).

* The build plan and the ONNX choice are trt-native's (:mod:`backends.trt_plan`): the same flags
  (INT8 with FP16 on TRT 10, none on strongly typed TRT 11), the same ONNX form for a precision.
* Providers: TensorRT EP first, CUDA EP second; an activation that leaves no engine file behind fails
  (the thesis recorded size 0 instead). Both EPs compute on one torch stream (``user_compute_stream``)
  and the compute path runs without provider synchronisation, so CUDA events time it as they time
  trt-native (see :mod:`backends.ort_cuda`).
* One profile (``trt_profile_min/opt/max_shapes``: min=min(batch sizes), opt=max=max(batch sizes));
  one inference per sweep batch size runs inside ``activate`` (phase ``build``), so no engine is
  built while timing.
* Engine caches: ``<cache_dir>/ort-trt/<key>/`` per :class:`~harness.store.engine_cache.EngineCacheKey`;
  the timing cache ``<cache_dir>/ort-trt/timing/<TRT+GPU key>/`` is shared by every model.
* INT8 on TRT <= 10 (implicit): ONE ONNX Runtime calibration table per model and calibration
  identity, in ``<cache_dir>/ort-trt/calib-tables/<onnx>-<calibration>/``, copied into each engine
  directory (the EP reads it from ``trt_engine_cache_path``); or, with ``native_calibration_table``,
  the cache written by TensorRT's own calibrator for trt-native (``trt_int8_use_native_calibration_table=1``),
  so EP and native engines use identical scales. ``details["calibration_table"]`` says which.
  Explicit INT8 uses the Q/DQ model and never a table. TensorRT 11 has Q/DQ only.
* When ``tensorrt`` is importable, the engines the EP wrote are read back with TensorRT's engine
  inspector (``details["ep_engines"]``). No provider option of the pinned onnxruntime-gpu wheels
  asks for ``ProfilingVerbosity.DETAILED`` (``trt_detailed_build_log`` logs the build,
  ``trt_dump_ep_context_model`` wraps the same engine), so the EP's engines are expected to carry
  layer names only: each summary says so (``detailed``, ``precision_counts_comparable``) and
  compare uses precision counts of detailed engines only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from backends.base import Backend, ModelArtifact, PhaseTimes, Session, SessionInfo
from backends.gpu_common import (
    GpuBackendOptions,
    admit,
    detect_tensorrt_version,
    gpu_identity,
    ort_gpu_reason,
)
from backends.ort_common import INPUT_NAME, captured_native_log, create_session, import_ort
from backends.ort_cuda import OrtGpuSession, compute_run_options, ort_bool, ort_cuda_provider_options, user_stream
from backends.trt_plan import (
    DEFAULT_CALIBRATION_BATCH,
    DEFAULT_OPT_LEVEL,
    DEFAULT_WORKSPACE_MIB,
    BuildPlan,
    onnx_for_plan,
    plan_build,
)
from harness.store.engine_cache import EngineCacheKey, TimingCacheKey
from harness.errors import BackendUnavailable, HarnessError, UnsupportedCombination
from harness.store.fingerprint import file_hash
from harness.gpu import capabilities as caps

if TYPE_CHECKING:
    from harness.machine import MachineFacts

# trt-api: Runtime.deserialize_cuda_engine, ICudaEngine.create_engine_inspector
# trt-api: EngineInspector.get_engine_information, ICudaEngine.num_io_tensors, ICudaEngine.get_tensor_name
# trt-api: ICudaEngine.get_tensor_mode, TensorIOMode.INPUT

PROVIDER = "TensorrtExecutionProvider"
#: From Ampere on, TensorRT computes FP32 layers in TF32 unless its TF32 flag is cleared, and the
#: TensorRT EP has no option that clears it: "fp32" there would be TF32 compared with IEEE FP32 cells.
TF32_MIN_CC: tuple[int, int] = (8, 0)
#: What the TensorRT EP logs when TensorRT turned a requested precision off (the engine is then built
#: without it): such a session is refused, never timed as that precision.
PRECISION_OFF_MESSAGES: dict[str, str] = {
    "int8": "platform doesn't support fast native int8",
    "fp16": "platform doesn't support fast native fp16",
}


def fp32_refusal(gpu_name: str | None, cc: tuple[int, ...]) -> str:
    """Why ort-trt does not offer fp32 on an Ampere-or-newer GPU (one line)."""
    return (f"ort-trt fp32 would compute in TF32 on {gpu_name or 'this GPU'} (compute capability "
            f"{cc[0]}.{cc[1]}): the TensorRT EP has no option to clear TensorRT's TF32 flag; use precision tf32 "
            "(what it computes), or trt-native / ort-cuda fp32 for IEEE FP32")
FALLBACK_PROVIDER = "CUDAExecutionProvider"
NATIVE_TABLE_NAME = "trt-native-calibration.cache"


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
    native_calibration_table: bool = False,
    workspace_bytes: int = DEFAULT_WORKSPACE_MIB << 20,
    opt_level: int = DEFAULT_OPT_LEVEL,
    detailed_build_log: bool = False,
    device_id: int = 0,
    stream_handle: int | None = None,
) -> dict[str, str]:
    """TensorrtExecutionProvider options for ``plan`` (REFERENCE.md section 5); all values strings.

    ``calibration_table_name`` is a bare file name inside ``engine_dir`` (ONNX Runtime reads the
    table from the engine cache path); it is required for a calibrator plan and refused otherwise,
    so a Q/DQ model never gets a table. ``native_calibration_table``: the table was written by
    TensorRT's own calibrator (``trt_int8_use_native_calibration_table=1``).
    """
    if plan.onnx_source == "bf16" or "BF16" in plan.flags:
        raise UnsupportedCombination("ort-trt runs fp32, fp16 and int8; bf16 is not offered")
    if plan.use_calibrator:
        if not calibration_table_name:
            raise HarnessError("ort-trt int8 (implicit) needs a calibration table (ONNX Runtime's or TensorRT's)")
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
        options["trt_int8_use_native_calibration_table"] = ort_bool(native_calibration_table)
    if stream_handle is not None:
        # The binding's own key list has no ``has_user_compute_stream`` (it would raise "Invalid TensorRT
        # EP option" and the session would fall back): ``user_compute_stream`` alone sets it.
        options["user_compute_stream"] = str(int(stream_handle))
    return options


def engine_files(engine_dir: Path) -> list[Path]:
    """The serialized TensorRT engines ONNX Runtime left in ``engine_dir``."""
    return sorted(p for p in Path(engine_dir).glob("*.engine") if p.is_file())


def _major_mismatch(pair: caps.PairCheck | None, trt_version: str | None) -> bool:
    """ORT's TensorRT EP was built for another TensorRT major: its library will not load."""
    if pair is None or pair.ok is not False or not pair.expected_trt or not trt_version:
        return False
    return pair.expected_trt.split(".")[0] != str(caps.parse_version(trt_version)[0])


def ort_trt_reason(precision: str, facts: MachineFacts) -> str | None:
    """Why ort-trt cannot run ``precision`` here (None: it can), from the facts only."""
    reason = ort_gpu_reason(facts, PROVIDER)
    if reason is not None:
        return reason
    if facts.libnvinfer is None:
        major = caps.ort_libnvinfer_major(facts.onnxruntime_version)
        return (f"TensorRT's libnvinfer.so.{major} cannot be loaded: install TensorRT {major}.x (or put its lib "
                "directory on LD_LIBRARY_PATH); without it ORT silently falls back to CUDA")
    if FALLBACK_PROVIDER not in (facts.ort_providers or ()):
        return f"onnxruntime has no {FALLBACK_PROVIDER} (ort-trt places what TensorRT cannot run there)"
    if precision == "bf16":
        return "bf16 is not offered on ort-trt (use trt-native)"
    if precision == "fp32" and facts.gpu_cc is not None and tuple(facts.gpu_cc) >= TF32_MIN_CC:
        return fp32_refusal(facts.gpu_name, tuple(facts.gpu_cc))
    if facts.tensorrt_version and facts.onnxruntime_version:
        pair = caps.check_ort_trt_pair(facts.onnxruntime_version, facts.tensorrt_version)
        if _major_mismatch(pair, facts.tensorrt_version):
            return pair.reason
    if facts.tensorrt_version and facts.gpu_cc is not None:
        rule = caps.trt_precision_support(facts.tensorrt_version, facts.gpu_cc)[precision]
        if not rule.ok:
            return rule.reason
    return None


class OrtTrtOptions(GpuBackendOptions):
    device_id: int = Field(0, ge=0)
    workspace_mib: int = Field(DEFAULT_WORKSPACE_MIB, gt=0)
    opt_level: int = Field(DEFAULT_OPT_LEVEL, ge=0, le=5)
    detailed_build_log: bool = False
    profile_min_batch: int | None = Field(None, ge=1)
    fp16_onnx: str | None = None  # TensorRT 11: a path, or "convert"
    trt_version: str | None = None  # override detection
    native_calibration_table: bool = False  # use trt-native's calibrator cache (identical scales)
    calibration_batch_size: int = Field(DEFAULT_CALIBRATION_BATCH, ge=1)  # must match trt-native's for the cache
    inspect: bool = True  # read the EP's engines with TensorRT's inspector when tensorrt is importable


class OrtTensorrtBackend(Backend[OrtTrtOptions]):
    """ONNX Runtime's TensorRT EP (options: :class:`OrtTrtOptions`)."""

    name: ClassVar[str] = "ort-trt"
    devices: ClassVar[frozenset[str]] = frozenset({"cuda"})
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "tf32", "fp16", "int8")
    description: ClassVar[str] = ("ONNX Runtime, TensorRT execution provider (CUDA EP for the rest), engines cached; "
                                  "fp32 (IEEE) only below Ampere, tf32 from Ampere on")
    Options: ClassVar[type[OrtTrtOptions]] = OrtTrtOptions
    options: OrtTrtOptions

    @classmethod
    def unavailable_reason(cls, precision: str, facts: MachineFacts) -> str | None:
        return super().unavailable_reason(precision, facts) or ort_trt_reason(precision, facts)

    def _trt_version(self, ort_version: str) -> tuple[str, str]:
        if self.options.trt_version:
            return self.options.trt_version, "option trt_version"
        found = detect_tensorrt_version(ort_version)
        if found is None:
            raise BackendUnavailable(
                f"cannot tell which TensorRT onnxruntime {ort_version} uses (no tensorrt module or wheel, no recorded "
                "pairing); set the ort-trt option trt_version"
            )
        return found.version, found.source

    def _calibration_table(self, artifact: ModelArtifact, model: Path, trt_version: str,
                           cache_dir: Path, phases: PhaseTimes) -> CalibrationTable:
        """The table an implicit INT8 build reads: TensorRT's own calibrator cache when asked for and
        present, else ONNX Runtime's. Chosen before the engine key is made, so the key names the table
        that was really used.

        Both tables are keyed on the un-optimized ONNX's tensor names. The session optimizes the graph
        first, but the TensorRT EP's nodes get only the basic, provider-independent passes, which remove
        tensors and never name new ones, so every tensor the EP sees still has its entry."""
        calibration = artifact.calibration
        assert calibration is not None
        if self.options.native_calibration_table:
            native = native_calibration_cache(artifact, trt_version, cache_dir, self.options.calibration_batch_size,
                                              phases)
            if native is not None:
                return CalibrationTable(native, NATIVE_TABLE_NAME, True, {"kind": "tensorrt-native",
                                                                          "source": str(native)})
            fallback = ("no TensorRT calibrator cache for this calibration yet (run trt-native int8 with the same "
                        "calibration_batch_size first); used ONNX Runtime's table")
        else:
            fallback = None
        shared = shared_table_dir(Path(cache_dir) / self.name, file_hash(model), calibration.provenance_hash)
        table = Path(calibration.ort_trt_table(shared, phases))  # built once per model x calibration
        used: dict[str, Any] = {"kind": "onnxruntime", "source": str(table)}
        if fallback:
            used["note"] = fallback
        return CalibrationTable(table, table.name, False, used)

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        admit(self, precision)
        phases = PhaseTimes()
        o = self.options
        ort = import_ort()
        ort_version = ort.__version__
        trt_version, trt_source = self._trt_version(ort_version)
        gpu = gpu_identity(o.device_id)
        plan = plan_build(
            precision, trt_version, artifact.int8_mode, artifact.calibration is not None, artifact.sparse_weights,
            batch_sizes, compute_capability=gpu.compute_capability,
            profile_min=o.profile_min_batch, profile_mode="shared",
        )
        if precision == "fp32" and tuple(gpu.compute_capability) >= TF32_MIN_CC:
            raise UnsupportedCombination(fp32_refusal(gpu.name, tuple(gpu.compute_capability)))
        model = onnx_for_plan(plan, artifact, o.fp16_onnx, phases, cache_dir=Path(cache_dir))
        workspace = o.workspace_mib << 20
        table = (self._calibration_table(artifact, model, trt_version, Path(cache_dir), phases)
                 if plan.use_calibrator else None)
        key_options = engine_key_options(plan, table, onnxruntime=ort_version, workspace_bytes=workspace,
                                         opt_level=o.opt_level)
        key = EngineCacheKey.for_build(self.name, file_hash(model), precision, plan.int8_mode, artifact.calibration,
                                       trt_version, gpu, key_options)
        root = Path(cache_dir) / self.name
        engine_dir = key.path(root, "")
        timing_dir = TimingCacheKey(trt_version, gpu.name, gpu.compute_capability).path(root / "timing", "")
        engine_dir.mkdir(parents=True, exist_ok=True)
        timing_dir.mkdir(parents=True, exist_ok=True)

        details: dict[str, Any] = {}
        if table is not None:
            _place(table.source, engine_dir / table.name)
            details["calibration_table"] = table.used

        stream = user_stream(o.device_id)
        trt_options = ort_trt_provider_options(
            plan, engine_dir=engine_dir, timing_dir=timing_dir, input_shape=artifact.input_shape,
            calibration_table_name=None if table is None else table.name,
            native_calibration_table=table is not None and table.native, workspace_bytes=workspace,
            opt_level=o.opt_level, detailed_build_log=o.detailed_build_log, device_id=o.device_id,
            stream_handle=stream.cuda_stream,
        )
        cuda_options = ort_cuda_provider_options(device_id=o.device_id, stream_handle=stream.cuda_stream,
                                                 use_tf32={"fp32": False, "tf32": True}.get(precision))
        cached_before = {p.name for p in engine_files(engine_dir)}

        log: list[str] = []
        details["ort_log"] = log
        with phases.timed("build"):
            session = create_session(model, [(PROVIDER, trt_options), (FALLBACK_PROVIDER, cuda_options)], log=log)
            info = SessionInfo(backend=self.name, precision=precision, device="cuda", details=details)
            gpu_session = OrtGpuSession(session, info, device_id=o.device_id, stream=stream,
                                        run_options=compute_run_options(ort), num_outputs=artifact.num_outputs,
                                        profile=(plan.profile[0], plan.profile[2]))
            with captured_native_log(log):  # the EP builds its engines on the first run of each shape
                gpu_session.warm(tuple(batch_sizes), artifact.input_shape)
        turned_off = precision_turned_off(precision, log)
        if turned_off is not None:
            gpu_session.close()
            raise HarnessError(turned_off)

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
            "ort_trt_pairing": caps.check_ort_trt_pair(ort_version, trt_version).reason,
            "provider_options": trt_options,
        })
        if precision == "tf32":
            info.details["fp32_math"] = "tf32 (TensorRT's default TF32 flag; the CUDA EP's nodes use_tf32=1)"
        elif precision == "fp32":  # below Ampere: no TF32 hardware, so TensorRT's FP32 is IEEE
            info.details["fp32_math"] = "ieee (no TF32 below compute capability 8.0; the CUDA EP's nodes use_tf32=0)"
        if len(engines) > 1:
            info.details["partitioned"] = (
                f"{len(engines)} TensorRT engines: ONNX Runtime split the graph; nodes between them ran on the CUDA EP"
            )
        if o.inspect:
            info.details["ep_engines"] = inspect_ep_engines(
                engines, precision, (plan.profile[1], *artifact.input_shape), stream.cuda_stream)
            stream.synchronize()
            if any(e.get("int8_fallback") for e in info.details["ep_engines"] if isinstance(e, dict)):
                gpu_session.close()
                raise HarnessError("ort-trt int8: an engine the TensorRT EP built has no INT8 layer (TensorRT chose "
                                   "FP16/FP32 throughout); this would be an FP16/FP32 result recorded as int8")
        info.prep_phases = dict(phases.seconds)
        return gpu_session


def engine_key_options(plan: BuildPlan, table: CalibrationTable | None, **settings: Any) -> dict[str, Any]:
    """What, besides the model, calibration and GPU, makes an EP engine distinct: the build settings
    and, for an implicit INT8 build, which table it really read (TensorRT's own only when it was used)."""
    options: dict[str, Any] = {**settings, "flags": sorted(plan.flags), "sparse": plan.sparse,
                               "onnx_source": plan.onnx_source, "profile": list(plan.profile)}
    if table is not None and table.native:
        options["calibration_table"] = "tensorrt-native"
    return options


@dataclass(frozen=True)
class CalibrationTable:
    """The calibration table of an implicit INT8 build: where it is, its name inside the engine
    directory, whether TensorRT's own calibrator wrote it, and what the cell records about it."""

    source: Path
    name: str
    native: bool
    used: dict[str, Any]


def precision_turned_off(precision: str, log: list[str]) -> str | None:
    """One line when the TensorRT EP logged that TensorRT turned ``precision`` off, else None."""
    message = PRECISION_OFF_MESSAGES.get(precision)
    line = next((line for line in log if message and message in line), None)
    if line is None:
        return None
    return (f"ort-trt {precision}: the TensorRT EP turned {precision.upper()} off ('{message}'), so the engine "
            f"would run in another precision; this GPU cannot run ort-trt {precision}")


def shared_table_dir(root: Path, onnx_hash: str, calibration_hash: str) -> Path:
    """Where the ONE ONNX Runtime calibration table of a model and calibration identity lives."""
    return Path(root) / "calib-tables" / f"{onnx_hash[:16]}-{calibration_hash[:16]}"


def _place(src: Path, dst: Path) -> None:
    """Put the table ``src`` into an engine directory as ``dst`` (a copy: engine dirs may be on other volumes)."""
    if Path(src).resolve() == Path(dst).resolve():
        return
    if dst.is_file() and dst.read_bytes() == Path(src).read_bytes():
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def native_calibration_cache(artifact: ModelArtifact, trt_version: str, cache_dir: Path, batch: int,
                             phases: PhaseTimes) -> Path | None:
    """trt-native's TensorRT calibrator cache for this calibration (same key), when it has been written."""
    from calib.trt_calibrator import cuda_buffer_factory

    assert artifact.calibration is not None
    core = artifact.calibration.trt_calibrator_core(
        batch, artifact.input_shape, cache_dir=Path(cache_dir) / "trt-native" / "calib",
        buffer_factory=cuda_buffer_factory, tensorrt_version=trt_version, phases=phases,
    )
    if core.has_valid_cache and core.cache_path is not None and core.cache_path.is_file():
        return core.cache_path
    return None


def inspect_ep_engines(engines: list[Path], precision: str, opt_shape: tuple[int, ...], stream_handle: int,
                       trt: Any = None) -> list[dict[str, Any]] | str:
    """TensorRT's inspector over the engines the EP wrote (needs ``tensorrt`` in this process), each read
    with an execution context at the EP's opt shape (``opt_shape``, the full input shape).

    The EP builds without ``ProfilingVerbosity.DETAILED`` (none of its provider options sets it), so
    its engines carry layer names only: the summaries say ``schema: "names-only"`` and their precision
    counts are all "other"; they cannot be compared with trt-native's (``precision_counts_comparable``).
    """
    from backends.trt_api import import_tensorrt, make_capturing_logger
    from backends.trt_inspect import engine_summary
    from backends.trt_loader import engine_information

    if trt is None:
        try:
            trt = import_tensorrt()
        except BackendUnavailable:
            return "tensorrt is not importable here: EP engines not inspected"
    runtime = trt.Runtime(make_capturing_logger(trt))
    out: list[dict[str, Any]] = []
    for path in engines:
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            out.append({"engine": path.name, "error": "TensorRT could not deserialize it (plugins or version)"})
            continue
        # a partition's input may not be the model's input: then its shapes stay unresolved (-1)
        input_name = next((engine.get_tensor_name(i) for i in range(engine.num_io_tensors)
                           if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT), INPUT_NAME)
        try:
            (text,) = engine_information(trt, engine, [opt_shape], input_name, stream_handle)
        except HarnessError as exc:  # another partition's input shape: read it without a context
            text = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
            summary: dict[str, Any] = {"inspector_context": f"none ({exc})"}
        else:
            summary = {"inspector_context": f"profile 0 at {list(opt_shape)}"}
        summary.update(engine_summary(text, precision))
        summary["precision_counts_comparable"] = bool(summary.get("detailed"))
        out.append({"engine": path.name, **summary})
    return out


__all__ = ["NATIVE_TABLE_NAME", "CalibrationTable", "engine_key_options", "fp32_refusal", "precision_turned_off", "OrtTensorrtBackend", "OrtTrtOptions", "engine_files", "inspect_ep_engines",
           "native_calibration_cache", "ort_trt_provider_options", "ort_trt_reason", "profile_shapes",
           "shared_table_dir"]
