"""The pure TensorRT build plan: precision -> builder flags, which ONNX form to parse, profiles.

Shared by ``trt-native`` (which builds with the TensorRT API) and ``ort-trt`` (which hands the same
plan to ONNX Runtime's TensorRT EP as provider options). Nothing here imports TensorRT.

Rules the plans encode (from the TensorRT 10/11 release notes and migration guide):

* TRT 10 is weakly typed by default: fp16/bf16 come from ``BuilderFlag.FP16``/``BF16`` on the FP32
  ONNX. INT8 sets ``INT8`` *and* ``FP16`` (INT8 alone leaves every non-INT8 layer in FP32), for the
  calibrator path (implicit) and for a Q/DQ model (explicit) alike.
* Strongly typed builds (TRT 11 always; TRT 10 with ``strongly_typed``; fp8 on every version, since
  ``BuilderFlag.FP8`` is weak typing, removed in 11): no precision flags, the network is created with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` and every layer computes in its ONNX type. So the
  harness converts the ONNX itself (:mod:`backends.typed_onnx`): fp16/bf16 build from an FP16/BF16
  model; INT8 and FP8 Q/DQ models get their float parts in FP16 (``float_type``), as TRT 10's
  ``INT8 | FP16`` would run them, so INT8 on TRT 10 and on TRT 11 compute alike. The plans of a
  strongly typed TRT 10.x build and of TRT 11 are the same.
* Optimization profiles (``profiles`` option): ``per-batch`` (default) builds one profile per timed
  batch size ``b`` with ``opt = max = b`` and ``min`` = the smallest batch size (or
  ``profile_min_batch``), so batch-1 latency comes from kernels tuned for batch 1; ``shared``
  builds one ``min / opt = max / max`` profile. No engine is ever built inside a timed loop; a batch
  above the largest batch size is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from backends.base import PRECISIONS, PhaseTimes
from backends.trt_api import is_strongly_typed, trt_version_tuple
from harness.errors import HarnessError, UnsupportedCombination

INT8_MODES: tuple[str, ...] = ("auto", "implicit", "explicit")
#: The ONNX a plan parses: the FP32 export, an FP16/BF16 conversion of it, the INT8 or the FP8 Q/DQ model.
ONNX_SOURCES: tuple[str, ...] = ("fp32", "fp16", "bf16", "qdq", "fp8-qdq")
#: The half precision the non-quantized layers of a strongly typed Q/DQ build run in (TRT 10's FP16 flag).
QDQ_FLOAT_TYPE = "fp16"
PROFILE_MODES: tuple[str, ...] = ("per-batch", "shared")
ProfileMode = Literal["per-batch", "shared"]

DEFAULT_WORKSPACE_MIB = 4096
DEFAULT_OPT_LEVEL = 3
DEFAULT_CALIBRATION_BATCH = 32

Profile = tuple[int, int, int]


def profile_for(batch_sizes: Iterable[int], min_batch: int | None = None) -> Profile:
    """``(min, opt, max)`` batch of one optimization profile covering every sweep batch size."""
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


def profiles_for(
    batch_sizes: Iterable[int], mode: str = "per-batch", min_batch: int | None = None
) -> tuple[Profile, ...]:
    """The optimization profiles to build: one per batch size (``opt = max = b``) or one shared."""
    if mode not in PROFILE_MODES:
        raise HarnessError(f"profiles must be one of {', '.join(PROFILE_MODES)}, got '{mode}'")
    low, _, high = profile_for(batch_sizes, min_batch)
    if mode == "shared":
        return ((low, high, high),)
    return tuple((low, b, b) for b in sorted({int(b) for b in batch_sizes}))


def profile_index(profiles: tuple[Profile, ...], batch: int) -> int:
    """Index of the profile to run ``batch`` with: the tightest one whose range holds it."""
    fitting = [(hi, i) for i, (lo, _, hi) in enumerate(profiles) if lo <= batch <= hi]
    if not fitting:
        low, high = min(p[0] for p in profiles), max(p[2] for p in profiles)
        raise HarnessError(
            f"batch size {batch} is outside the engine's profiles [{low}, {high}]; TensorRT engines are never "
            "rebuilt during a run: include it in the sweep's batch sizes"
        )
    return min(fitting)[1]


def resolve_int8_mode(int8_mode: str, trt_version: str, strongly_typed: bool = False) -> str:
    """``implicit`` (calibrator) or ``explicit`` (Q/DQ ONNX) for this TensorRT version (and build mode)."""
    from harness.gpu.capabilities import trt_default_int8_mode

    if int8_mode not in INT8_MODES:
        raise HarnessError(f"int8 mode must be one of {', '.join(INT8_MODES)}, got '{int8_mode}'")
    if int8_mode == "auto":
        mode = "explicit" if strongly_typed else trt_default_int8_mode(trt_version)
    else:
        mode = int8_mode
    if mode == "implicit" and is_strongly_typed(trt_version):
        raise UnsupportedCombination(
            f"implicit (calibrator) INT8 was removed in TensorRT 11 (found {trt_version}: no "
            "IInt8EntropyCalibrator2, BuilderFlag.INT8 or int8_calibrator); use int8 mode 'explicit' (Q/DQ ONNX)"
        )
    if mode == "implicit" and strongly_typed:
        raise UnsupportedCombination(
            "implicit (calibrator) INT8 needs a weakly typed network (BuilderFlag.INT8); a strongly typed build "
            "uses int8 mode 'explicit' (Q/DQ ONNX)")
    return mode


@dataclass(frozen=True)
class BuildPlan:
    """What to build: flags by ``BuilderFlag`` member name, which ONNX form to parse, the profiles."""

    precision: str
    trt_version: str
    strongly_typed: bool
    flags: tuple[str, ...]
    onnx_source: str  # "fp32" | "fp16" | "bf16" | "qdq"
    use_calibrator: bool
    profile: Profile  # (min, opt, max) envelope of every profile
    int8_mode: str | None = None  # "implicit" | "explicit" for int8
    notes: tuple[str, ...] = ()
    profiles: tuple[Profile, ...] = ()  # the optimization profiles, in build order; () = (profile,)
    profile_mode: str = "shared"
    #: What the ONNX's non-quantized layers are typed as ("fp32": the export; TensorRT's flags decide when weak).
    float_type: str = "fp32"
    #: ``NetworkDefinitionCreationFlag`` member names the network is created with.
    network_flags: tuple[str, ...] = ()

    @property
    def build_mode(self) -> str:
        return "strongly-typed" if self.strongly_typed else "weakly-typed"

    @property
    def sparse(self) -> bool:
        return "SPARSE_WEIGHTS" in self.flags

    @property
    def all_profiles(self) -> tuple[Profile, ...]:
        return self.profiles or (self.profile,)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = list(self.flags)
        data["profile"] = list(self.profile)
        data["profiles"] = [list(p) for p in self.all_profiles]
        data["notes"] = list(self.notes)
        data["network_flags"] = list(self.network_flags)
        data["build_mode"] = self.build_mode
        return data


def plan_build(
    precision: str,
    trt_version: str,
    int8_mode: str = "auto",
    has_calibration: bool = False,
    sparse: bool = False,
    batch_sizes: Iterable[int] = (1,),
    *,
    strongly_typed: bool | None = None,
    compute_capability: tuple[int, int] | None = None,
    profile_min: int | None = None,
    profile_mode: str = "shared",
) -> BuildPlan:
    """The build for ``precision`` on TensorRT ``trt_version``; raises for impossible requests.

    ``strongly_typed``: build a strongly typed network (None: the version's default, True from
    TensorRT 11 on; fp8 always). ``compute_capability``: also check the GPU (capabilities rules).
    No plan needs a user-supplied ONNX: the typed models come from :func:`onnx_for_plan`.
    """
    if precision not in PRECISIONS:
        raise UnsupportedCombination(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    sizes = tuple(batch_sizes)
    profile = profile_for(sizes, profile_min)
    profiles = profiles_for(sizes, profile_mode, profile_min)
    major = trt_version_tuple(trt_version)[0]
    if major < 10:
        raise UnsupportedCombination(f"TensorRT {trt_version} is too old: the harness needs TensorRT 10 or newer")
    if strongly_typed is False and is_strongly_typed(trt_version):
        raise UnsupportedCombination(f"TensorRT {trt_version} builds strongly typed networks only (weak typing was "
                                     "removed in 11); drop strongly_typed: false")
    notes: list[str] = []
    strong = bool(strongly_typed) or is_strongly_typed(trt_version)
    if precision == "fp8" and not strong:
        strong = True
        notes.append("fp8 builds strongly typed on every TensorRT version (BuilderFlag.FP8 is weak typing, "
                     "removed in TensorRT 11)")
    if precision != "int8" and int8_mode not in INT8_MODES:
        raise HarnessError(f"int8 mode must be one of {', '.join(INT8_MODES)}, got '{int8_mode}'")
    mode = resolve_int8_mode(int8_mode, trt_version, strong) if precision == "int8" else None

    if compute_capability is not None:
        from harness.gpu.capabilities import trt_precision_support

        support = trt_precision_support(trt_version, compute_capability)[f"int8-{mode}" if mode else precision]
        if not support.ok:
            raise UnsupportedCombination(f"TensorRT {precision}: {support.reason}")

    flags: list[str] = []
    use_calibrator = False
    float_type = "fp32"
    if precision in ("int8", "fp8") and not has_calibration:
        raise HarnessError(f"TensorRT {precision} needs calibration data (the sweep provides it from the train "
                           "split); none was given")
    if precision == "fp32":
        source = "fp32"
    elif precision == "tf32":
        flags.append("TF32")  # TensorRT's default, made explicit: fp32 builds clear it
        source = "fp32"
    elif precision in ("fp16", "bf16"):
        if strong:
            source = float_type = precision  # converted by the harness (backends.typed_onnx)
        else:
            flags.append(precision.upper())
            source = "fp32"
    elif precision == "fp8":
        source, float_type = "fp8-qdq", QDQ_FLOAT_TYPE
    elif mode == "implicit":
        flags += ["INT8", "FP16"]
        source = "fp32"
        use_calibrator = True
    else:  # explicit INT8
        source = "qdq"
        if strong:
            float_type = QDQ_FLOAT_TYPE
        else:
            flags += ["INT8", "FP16"]  # Q/DQ networks need the INT8 flag on weak TRT 10; FP16 for the rest
    if source in ("qdq", "fp8-qdq") and strong:
        notes.append(f"strongly typed Q/DQ network: its non-quantized layers run in {float_type.upper()} "
                     "(the Q/DQ model's float parts converted), as TensorRT 10's INT8 | FP16 flags run them")
    if sparse:
        flags.append("SPARSE_WEIGHTS")
        if precision in ("fp32", "tf32"):
            notes.append("2:4 sparse tactics need reduced precision (fp16/bf16/int8/fp8); fp32 builds stay dense")
    return BuildPlan(
        precision=precision, trt_version=trt_version, strongly_typed=strong, flags=tuple(flags), onnx_source=source,
        use_calibrator=use_calibrator, profile=profile, int8_mode=mode, notes=tuple(notes), profiles=profiles,
        profile_mode=profile_mode, float_type=float_type, network_flags=("STRONGLY_TYPED",) if strong else (),
    )


def onnx_for_plan(plan: BuildPlan, artifact: Any, typed_onnx: str | None, phases: PhaseTimes, *,
                  cache_dir: Path | None = None, record: dict[str, Any] | None = None) -> Path:
    """The ONNX file ``plan`` parses: the FP32 export, a Q/DQ model, or an FP16/BF16 model.

    The Q/DQ models come from the calibration source (which times its own ``calibrate`` phase).
    A strongly typed plan's FP16/BF16 model, or the FP16 form of its Q/DQ model, is converted here
    (:func:`backends.typed_onnx.half_precision_onnx`, cached under ``cache_dir``, timed as
    ``convert``) unless ``typed_onnx`` (the backend's ``<precision>_onnx`` option) names a file to use
    instead. What was converted, and into which types, goes to ``record`` (the session details).
    """
    from backends.typed_onnx import half_precision_onnx

    def converted(src: Path, qdq: bool, source_provenance: dict[str, Any] | None = None) -> Path:
        if cache_dir is None:
            raise HarnessError("a strongly typed build converts its ONNX model and needs a cache directory")
        with phases.timed("convert"):
            typed = half_precision_onnx(src, plan.float_type, cache_dir, qdq=qdq,
                                        source_provenance=source_provenance)
        if record is not None:
            record["typed_onnx"] = typed.to_dict()
        return typed.path

    if plan.onnx_source in ("qdq", "fp8-qdq"):
        if artifact.calibration is None:
            raise HarnessError(f"TensorRT {plan.precision} (explicit) needs calibration data for the Q/DQ model; "
                               "none was given")
        target = "fp8" if plan.onnx_source == "fp8-qdq" else "tensorrt"
        path = Path(artifact.calibration.qdq_onnx(target, phases))
        if plan.float_type == "fp32":
            return path
        return converted(path, qdq=True, source_provenance={"calibration": artifact.calibration.provenance_hash,
                                                            "target": target})
    if plan.onnx_source in ("fp16", "bf16"):
        if typed_onnx and typed_onnx != "convert":
            path = Path(typed_onnx)
            if not path.is_file():
                raise HarnessError(f"option '{plan.onnx_source}_onnx': {path} is not a file")
            if record is not None:
                record["typed_onnx"] = {"path": str(path), "dtype": plan.onnx_source, "provenance": "user-supplied"}
            return path
        return converted(Path(artifact.onnx()), qdq=False)
    return Path(artifact.onnx())


__all__ = [
    "BuildPlan", "DEFAULT_CALIBRATION_BATCH", "DEFAULT_OPT_LEVEL", "DEFAULT_WORKSPACE_MIB", "INT8_MODES",
    "ONNX_SOURCES", "QDQ_FLOAT_TYPE", "PROFILE_MODES", "Profile", "ProfileMode", "onnx_for_plan", "plan_build",
    "profile_for",
    "profile_index", "profiles_for", "resolve_int8_mode",
]
