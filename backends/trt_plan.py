"""The pure TensorRT build plan: precision -> builder flags, which ONNX form to parse, profiles.

Shared by ``trt-native`` (which builds with the TensorRT API) and ``ort-trt`` (which hands the same
plan to ONNX Runtime's TensorRT EP as provider options). Nothing here imports TensorRT.

Rules the plans encode (from the TensorRT 10/11 release notes and migration guide):

* TRT 10 is weakly typed: fp16/bf16 come from ``BuilderFlag.FP16``/``BF16`` on the FP32 ONNX.
  INT8 sets ``INT8`` *and* ``FP16`` (INT8 alone leaves every non-INT8 layer in FP32), for the
  calibrator path (implicit) and for a Q/DQ model (explicit) alike.
* TRT 11 is strongly typed only: no precision flags exist; FP16 needs an FP16 ONNX model and INT8 a
  Q/DQ model. Asking for fp16 with only an FP32 ONNX is an error, never a silent FP32 build.
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
ONNX_SOURCES: tuple[str, ...] = ("fp32", "fp16", "bf16", "qdq")
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


def resolve_int8_mode(int8_mode: str, trt_version: str) -> str:
    """``implicit`` (calibrator) or ``explicit`` (Q/DQ ONNX) for this TensorRT version."""
    from harness.gpu.capabilities import trt_default_int8_mode

    if int8_mode not in INT8_MODES:
        raise HarnessError(f"int8 mode must be one of {', '.join(INT8_MODES)}, got '{int8_mode}'")
    mode = trt_default_int8_mode(trt_version) if int8_mode == "auto" else int8_mode
    if mode == "implicit" and is_strongly_typed(trt_version):
        raise UnsupportedCombination(
            f"implicit (calibrator) INT8 was removed in TensorRT 11 (found {trt_version}: no "
            "IInt8EntropyCalibrator2, BuilderFlag.INT8 or int8_calibrator); use int8 mode 'explicit' (Q/DQ ONNX)"
        )
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
    profile_mode: str = "shared",
) -> BuildPlan:
    """The build for ``precision`` on TensorRT ``trt_version``; raises for impossible requests.

    ``typed_onnx``: an ONNX model already in ``precision`` (FP16/BF16) is available; TensorRT 11
    needs one for fp16/bf16. ``compute_capability``: also check the GPU (capabilities rules).
    """
    if precision not in PRECISIONS:
        raise UnsupportedCombination(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    sizes = tuple(batch_sizes)
    profile = profile_for(sizes, profile_min)
    profiles = profiles_for(sizes, profile_mode, profile_min)
    major = trt_version_tuple(trt_version)[0]
    if major < 10:
        raise UnsupportedCombination(f"TensorRT {trt_version} is too old: the harness needs TensorRT 10 or newer")
    strong = is_strongly_typed(trt_version)
    if precision != "int8" and int8_mode not in INT8_MODES:
        raise HarnessError(f"int8 mode must be one of {', '.join(INT8_MODES)}, got '{int8_mode}'")
    mode = resolve_int8_mode(int8_mode, trt_version) if precision == "int8" else None

    if compute_capability is not None:
        from harness.gpu.capabilities import trt_precision_support

        support = trt_precision_support(trt_version, compute_capability)[f"int8-{mode}" if mode else precision]
        if not support.ok:
            raise UnsupportedCombination(f"TensorRT {precision}: {support.reason}")

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
                    f"would build FP32; set the option '{precision}_onnx' (a path"
                    + (", or 'convert'" if precision == "fp16" else "") + ")"
                )
            source = precision
        else:
            flags.append(precision.upper())
            source = "fp32"
    else:  # int8
        if not has_calibration:
            raise HarnessError(
                "TensorRT int8 needs calibration data (the sweep provides it from the train split); none was given"
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
        precision=precision, trt_version=trt_version, strongly_typed=strong, flags=tuple(flags), onnx_source=source,
        use_calibrator=use_calibrator, profile=profile, int8_mode=mode, notes=tuple(notes), profiles=profiles,
        profile_mode=profile_mode,
    )


def onnx_for_plan(plan: BuildPlan, artifact: Any, typed_onnx: str | None, phases: PhaseTimes) -> Path:
    """The ONNX file ``plan`` parses: the FP32 export, the Q/DQ model, or an FP16/BF16 model.

    ``typed_onnx`` is the backend's ``<precision>_onnx`` option: a path, or ``convert`` (fp16 only:
    converted from the FP32 export, timed as ``export``). The Q/DQ model comes from the calibration
    source, which times its own ``calibrate`` phase in ``phases``.
    """
    if plan.onnx_source == "qdq":
        if artifact.calibration is None:
            raise HarnessError("TensorRT int8 (explicit) needs calibration data for the Q/DQ model; none was given")
        return Path(artifact.calibration.qdq_onnx("tensorrt", phases))
    if plan.onnx_source in ("fp16", "bf16"):
        if typed_onnx == "convert" and plan.onnx_source == "fp16":
            from backends.gpu_common import fp16_onnx

            with phases.timed("export"):
                return fp16_onnx(artifact.onnx())
        if not typed_onnx:
            raise UnsupportedCombination(f"no {plan.onnx_source} ONNX model given (option '{plan.onnx_source}_onnx')")
        path = Path(typed_onnx)
        if not path.is_file():
            raise HarnessError(f"option '{plan.onnx_source}_onnx': {path} is not a file")
        return path
    return Path(artifact.onnx())


__all__ = [
    "BuildPlan", "DEFAULT_CALIBRATION_BATCH", "DEFAULT_OPT_LEVEL", "DEFAULT_WORKSPACE_MIB", "INT8_MODES",
    "ONNX_SOURCES", "PROFILE_MODES", "Profile", "ProfileMode", "onnx_for_plan", "plan_build", "profile_for",
    "profile_index", "profiles_for", "resolve_int8_mode",
]
