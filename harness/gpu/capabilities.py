"""GPU architectures, their tensor-core precisions, and what TensorRT / ONNX Runtime allow where.

Pure data and rules (no GPU access); sources: NVIDIA TensorRT release notes and migration guide,
the ONNX Runtime TensorRT EP requirements, CUDA compute-capability tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

ComputeCapability = tuple[int, int]

#: Tensor-core precisions reported for every GPU, in display order.
TENSOR_CORE_PRECISIONS: tuple[str, ...] = ("fp16", "bf16", "tf32", "int8", "fp8", "fp4", "sparsity_2_4")

#: First compute capability whose tensor cores run each precision.
#: INT8 tensor cores start with Xavier (7.2) and Turing (7.5): V100 (7.0) has none.
TENSOR_CORE_MIN_CC: dict[str, ComputeCapability] = {
    "fp16": (7, 0),
    "int8": (7, 2),
    "bf16": (8, 0),
    "tf32": (8, 0),
    "sparsity_2_4": (8, 0),
    "fp8": (8, 9),
    "fp4": (10, 0),
}


@dataclass(frozen=True)
class Architecture:
    cc: ComputeCapability
    name: str
    examples: str


ARCHITECTURES: dict[ComputeCapability, Architecture] = {
    a.cc: a
    for a in (
        Architecture((7, 0), "Volta", "V100, Titan V"),
        Architecture((7, 2), "Volta", "Jetson AGX Xavier"),
        Architecture((7, 5), "Turing", "T4, RTX 20xx"),
        Architecture((8, 0), "Ampere", "A100, A30"),
        Architecture((8, 6), "Ampere", "A10, A40, RTX 30xx"),
        Architecture((8, 7), "Ampere", "Jetson Orin"),
        Architecture((8, 9), "Ada", "L4, L40S, RTX 40xx"),
        Architecture((9, 0), "Hopper", "H100, H200"),
        Architecture((10, 0), "Blackwell", "B200, GB200"),
        Architecture((10, 3), "Blackwell", "B300, GB300"),
        Architecture((11, 0), "Blackwell", "Jetson Thor"),
        Architecture((12, 0), "Blackwell", "RTX 50xx, RTX PRO 6000"),
        Architecture((12, 1), "Blackwell", "DGX Spark (GB10)"),
    )
}

_MAJOR_NAMES = {6: "Pascal", 7: "Volta/Turing", 8: "Ampere/Ada", 9: "Hopper", 10: "Blackwell", 11: "Blackwell", 12: "Blackwell"}


def cc_text(cc: ComputeCapability) -> str:
    return f"{cc[0]}.{cc[1]}"


def architecture_name(cc: ComputeCapability) -> str:
    """``"Ampere"`` for (8, 0); a best guess by major version for capabilities not in the table."""
    if cc in ARCHITECTURES:
        return ARCHITECTURES[cc].name
    guess = _MAJOR_NAMES.get(cc[0])
    return f"{guess} (sm_{cc[0]}{cc[1]}, not in table)" if guess else f"unknown (sm_{cc[0]}{cc[1]})"


def tensor_core_precisions(cc: ComputeCapability) -> dict[str, bool]:
    """Which precisions this compute capability's tensor cores run (FP32 never uses them)."""
    return {p: cc >= TENSOR_CORE_MIN_CC[p] for p in TENSOR_CORE_PRECISIONS}


# ---------------------------------------------------------------------------------- TensorRT rules


class Support(NamedTuple):
    """``(ok, reason)``; ``reason`` explains a refusal, or how the precision is obtained when ok."""

    ok: bool
    reason: str


TrtPrecision = Literal["fp32", "tf32", "fp16", "bf16", "int8", "int8-implicit", "int8-explicit", "fp8"]
TRT_PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "int8", "int8-implicit", "int8-explicit", "fp8")

#: TensorRT 10.5 dropped Volta (sm_70): 10.4 is the last release for V100.
TRT_LAST_FOR_VOLTA: tuple[int, int] = (10, 4)
#: Implicit (calibrator) INT8 was deprecated in TRT 10.1 and removed in TRT 11.0.
TRT_IMPLICIT_INT8_DEPRECATED: tuple[int, int] = (10, 1)
TRT_STRONGLY_TYPED_ONLY: int = 11


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.15.1.29"`` -> (10, 15, 1, 29); ``"1.20.1+cu12"`` -> (1, 20, 1); ignores suffixes."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.group() != piece:
            break
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def _major_minor(text: str) -> tuple[int, int]:
    v = parse_version(text)
    return (v[0], v[1] if len(v) > 1 else 0)


def trt_default_int8_mode(trt_version: str) -> Literal["implicit", "explicit"]:
    """Calibrator INT8 (the thesis's path) on TRT 10; Q/DQ on TRT 11, where calibrators are gone."""
    return "explicit" if _major_minor(trt_version)[0] >= TRT_STRONGLY_TYPED_ONLY else "implicit"


def trt_precision_support(trt_version: str, cc: ComputeCapability) -> dict[str, Support]:
    """Per precision: can TensorRT ``trt_version`` build it for compute capability ``cc``, and how.

    Keys: ``fp32``, ``fp16``, ``bf16``, ``int8`` (either mode), ``int8-implicit`` (calibrator),
    ``int8-explicit`` (Q/DQ ONNX), ``fp8`` (E4M3 Q/DQ ONNX, strongly typed on every version).
    """
    ver = _major_minor(trt_version)
    major = ver[0]
    gpu = f"compute capability {cc_text(cc)} ({architecture_name(cc)})"

    blocked: str | None = None
    if major < 10:
        blocked = f"the harness needs TensorRT 10 or newer (found {trt_version})"
    elif cc < (7, 0):
        blocked = f"{gpu} is not supported: the harness needs compute capability 7.0 (Volta) or newer"
    elif cc == (7, 0) and ver > TRT_LAST_FOR_VOLTA:
        blocked = (
            f"TensorRT {trt_version} does not support sm_70 (V100): TensorRT 10.5 dropped Volta, "
            "10.4 is the last; use the V100 image (docker/Dockerfile.v100)"
        )
    if blocked is not None:
        return {p: Support(False, blocked) for p in TRT_PRECISIONS}

    strong = major >= TRT_STRONGLY_TYPED_ONLY
    out: dict[str, Support] = {"fp32": Support(True, "always available (BuilderFlag.TF32 cleared: IEEE FP32)")}
    out["tf32"] = (Support(True, "BuilderFlag.TF32 on an FP32 ONNX model") if cc >= TENSOR_CORE_MIN_CC["tf32"]
                   else Support(False, f"tf32 needs compute capability >= 8.0 (Ampere); this GPU is {gpu}"))

    converted = ("an ONNX model the harness converts to {} (ModelOpt AutoCast, else onnxconverter-common's float16 "
                 "conversion; FP32 inputs/outputs and numerically sensitive ops kept in FP32)")
    if strong:
        out["fp16"] = Support(True, f"TensorRT {major} builds strongly typed networks only (BuilderFlag.FP16 was "
                                    "removed): " + converted.format("FP16"))
    else:
        out["fp16"] = Support(True, "BuilderFlag.FP16 on an FP32 ONNX model (or, strongly typed: "
                                    + converted.format("FP16") + ")")

    if cc < (8, 0):
        out["bf16"] = Support(False, f"bf16 needs compute capability >= 8.0 (Ampere); this GPU is {gpu}")
    elif strong:
        out["bf16"] = Support(True, f"TensorRT {major}, strongly typed: " + converted.format("BF16"))
    else:
        out["bf16"] = Support(True, "BuilderFlag.BF16 on an FP32 ONNX model (or, strongly typed: "
                                    + converted.format("BF16") + ")")

    no_int8_tc = cc < TENSOR_CORE_MIN_CC["int8"]
    tc_note = (
        f"; note: {gpu} has no INT8 tensor cores, so INT8 is usually no faster than FP16" if no_int8_tc else ""
    )
    if strong:
        out["int8-implicit"] = Support(
            False,
            f"implicit (calibrator) INT8 was removed in TensorRT 11 (no IInt8*Calibrator, "
            f"BuilderFlag.INT8 or int8_calibrator in {trt_version}); use explicit Q/DQ INT8",
        )
    else:
        deprecated = " (deprecated since TensorRT 10.1, removed in 11)" if ver >= TRT_IMPLICIT_INT8_DEPRECATED else ""
        out["int8-implicit"] = Support(
            True, f"calibrator (IInt8EntropyCalibrator2 + BuilderFlag.INT8){deprecated}{tc_note}"
        )
    out["int8-explicit"] = Support(
        True,
        "explicit quantization: needs a Q/DQ ONNX model"
        + (" (strongly typed network)" if strong else "")
        + tc_note,
    )
    modes = [m for m in ("implicit", "explicit") if out[f"int8-{m}"].ok]
    out["int8"] = Support(True, "int8 via " + " or ".join(modes) + " quantization" + tc_note)
    if cc < TENSOR_CORE_MIN_CC["fp8"]:
        out["fp8"] = Support(False, f"fp8 needs FP8 tensor cores, compute capability >= "
                                    f"{cc_text(TENSOR_CORE_MIN_CC['fp8'])} (Ada, Hopper and newer); this GPU is {gpu}")
    else:
        out["fp8"] = Support(True, "explicit FP8 (E4M3) Q/DQ ONNX model, strongly typed network (non-quantized "
                                   "layers in FP16)")
    return out


# ---------------------------------------------------------------------------------- ORT <-> TRT


#: PyPI onnxruntime-gpu (major, minor) -> the TensorRT (major, minor) its TensorRT EP is built against.
ORT_TRT_PAIRING: dict[tuple[int, int], tuple[int, int]] = {
    (1, 18): (10, 0),
    (1, 19): (10, 2),
    (1, 20): (10, 4),  # CUDA 12.0-12.6: the V100 pairing
    (1, 21): (10, 8),
    (1, 22): (10, 9),
}
#: The first onnxruntime-gpu whose TensorRT EP links TensorRT 10.
ORT_FIRST_FOR_TRT10: tuple[int, int] = (1, 18)
#: The TensorRT major every PyPI onnxruntime-gpu wheel from 1.18 on links (``libnvinfer.so.10``).
#: ONNX Runtime's sources support TensorRT 11 from 1.27, but no PyPI wheel links it: read from the
#: wheels themselves, the 1.27 wheel links ``libnvinfer.so.10`` and ``libcudart.so.13``.
#: TensorRT 11 with ONNX Runtime needs a source build; the trt11 image therefore has no ORT GPU backends.
PYPI_ORT_TRT_MAJOR: int = 10
#: CUDA major of the PyPI onnxruntime-gpu wheels recorded from their linked ``libcudart`` (others unknown).
PYPI_ORT_CUDA_MAJOR: dict[tuple[int, int], int] = {(1, 27): 13}


class PairCheck(NamedTuple):
    """``ok`` is None when the pairing is not recorded (check the ORT release notes)."""

    ok: bool | None
    expected_trt: str | None
    reason: str


def ort_libnvinfer_major(ort_version: str | None) -> int:
    """The ``libnvinfer.so.<major>`` a PyPI onnxruntime-gpu's TensorRT EP loads (10: none loads 11)."""
    return PYPI_ORT_TRT_MAJOR


def expected_trt_for_ort(ort_version: str) -> str | None:
    """``"10.4"`` for ORT 1.20 (recorded); ``"10.x"`` for other PyPI wheels from 1.18 on; None before."""
    ort = _major_minor(ort_version)
    if ort in ORT_TRT_PAIRING:
        return cc_text(ORT_TRT_PAIRING[ort])
    if ort >= ORT_FIRST_FOR_TRT10:
        return f"{PYPI_ORT_TRT_MAJOR}.x"
    return None


def check_ort_trt_pair(ort_version: str, trt_version: str) -> PairCheck:
    """Does PyPI onnxruntime-gpu ``ort_version``'s TensorRT EP match TensorRT ``trt_version``?

    ``ok`` is True for a recorded pairing, False for a known mismatch (another TensorRT major, or a
    recorded minor that differs), None when the TensorRT minor the wheel was built against is unknown.
    """
    ort = _major_minor(ort_version)
    trt = _major_minor(trt_version)
    if ort < ORT_FIRST_FOR_TRT10:
        return PairCheck(False, None, f"onnxruntime {ort_version} predates TensorRT 10 (ORT 1.18 is the first for TRT 10.0)")
    cuda = PYPI_ORT_CUDA_MAJOR.get(ort)
    cuda_note = f" (its wheel also links CUDA {cuda}: libcudart.so.{cuda})" if cuda else ""
    if trt[0] != PYPI_ORT_TRT_MAJOR:
        return PairCheck(
            False,
            expected_trt_for_ort(ort_version),
            f"no PyPI onnxruntime-gpu links TensorRT {trt[0]}: onnxruntime-gpu {ort_version}'s TensorRT EP loads "
            f"libnvinfer.so.{PYPI_ORT_TRT_MAJOR}{cuda_note}, so with TensorRT {trt_version} ort-trt cannot load "
            "(TensorRT 11 with ONNX Runtime needs an ONNX Runtime built from source against it)",
        )
    if ort in ORT_TRT_PAIRING:
        want = ORT_TRT_PAIRING[ort]
        if trt == want:
            return PairCheck(True, cc_text(want), f"onnxruntime {ort_version} is built against TensorRT {cc_text(want)}")
        return PairCheck(
            False,
            cc_text(want),
            f"onnxruntime {ort_version}'s TensorRT EP is built against TensorRT {cc_text(want)}, "
            f"found TensorRT {trt_version}; install the onnxruntime-gpu that matches the container's TensorRT",
        )
    return PairCheck(
        None,
        expected_trt_for_ort(ort_version),
        f"no recorded TensorRT {PYPI_ORT_TRT_MAJOR} minor for onnxruntime {ort_version}{cuda_note} (this harness "
        "records 1.18-1.22); check the ONNX Runtime TensorRT EP requirements",
    )


def ort_gpu_note(trt_version: str | None, ort_providers: tuple[str, ...] | list[str] | None) -> str | None:
    """Why ONNX Runtime's GPU backends are absent next to TensorRT 11 (None when that is not the case)."""
    if not trt_version or _major_minor(trt_version)[0] < TRT_STRONGLY_TYPED_ONLY:
        return None
    if ort_providers and "TensorrtExecutionProvider" in ort_providers:
        return None
    return (
        f"TensorRT {trt_version}: no PyPI onnxruntime-gpu links TensorRT 11 (their TensorRT EP loads "
        "libnvinfer.so.10), so ort-cuda and ort-trt are not offered with TensorRT 11 (the trt11 image drops "
        "them); use the a100 image (TensorRT 10) for the ONNX Runtime GPU backends"
    )
