"""The availability rules of every backend, with made-up machines (ported from the old harness/hw.py).

Each rule is ``Backend.unavailable_reason(precision, facts)``; ``harness hw`` shows
exactly these answers. These tests need the backends with the new signature (branches core + gpu):
they pass only after the merge.
"""

from __future__ import annotations

import pytest

from harness import hw
from harness.machine import MachineFacts
from tests.facts import gpu_facts

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


def _table(facts: MachineFacts) -> dict[tuple[str, str], hw.Availability]:
    rows = hw.availability_matrix(facts)
    table = {(a.backend, a.precision): a for a in rows}
    assert len(rows) == len(table) == 5 * len(PRECISIONS)
    return table




def test_cpu_only_machine_rules() -> None:
    t = _table(
        MachineFacts(
            torch_version="2.14.1",
            torch_cuda_available=False,
            torch_cuda_note="torch.cuda.is_available() is False",
            onnxruntime_version="1.32.0",
            ort_providers=("CPUExecutionProvider",),
        )
    )
    assert t["torch", "fp32"].ok and not t["torch", "fp16"].ok and not t["torch", "bf16"].ok
    assert "no NVIDIA GPU visible" in (t["torch", "fp16"].reason or "")
    assert t["ort-cpu", "fp32"].ok and t["ort-cpu", "int8"].ok
    assert t["ort-cpu", "fp8"].ok  # E4M3 Q/DQ emulated by the CPU EP: an accuracy reference
    assert not t["ort-cpu", "fp16"].ok and not t["ort-cpu", "bf16"].ok
    assert "CUDAExecutionProvider" in (t["ort-cuda", "fp16"].reason or "")
    assert "TensorrtExecutionProvider" in (t["ort-trt", "int8"].reason or "")
    assert "tensorrt is not installed" in (t["trt-native", "fp16"].reason or "")


def test_a100_with_trt10() -> None:
    t = _table(gpu_facts(onnxruntime_version="1.22.0", tensorrt_version="10.9.0.34"))
    assert t["torch", "fp16"].ok and t["torch", "bf16"].ok
    assert not t["torch", "int8"].ok
    assert t["ort-cuda", "fp32"].ok and t["ort-cuda", "fp16"].ok and t["ort-cuda", "int8"].ok
    assert not t["ort-cuda", "bf16"].ok
    for p in ("tf32", "fp16", "int8"):
        assert t["ort-trt", p].ok, t["ort-trt", p].reason
    assert not t["ort-trt", "bf16"].ok
    for p in PRECISIONS:
        if p != "fp8":
            assert t["trt-native", p].ok, t["trt-native", p].reason
    # FP8 tensor cores start at sm_89: refused on an A100, naming its compute capability, in one line
    reason = t["trt-native", "fp8"].reason or ""
    assert not t["trt-native", "fp8"].ok and "compute capability 8.0 (Ampere)" in reason and "\n" not in reason
    assert not t["ort-cuda", "fp8"].ok and not t["ort-trt", "fp8"].ok and not t["torch", "fp8"].ok
    # tf32 (FP32 with TF32 math) where it can be chosen; the TensorRT EP cannot switch TF32 off, so on
    # Ampere its only FP32 is tf32: "fp32" is refused, never TF32 under an IEEE label
    assert t["torch", "tf32"].ok and t["ort-cuda", "tf32"].ok and t["trt-native", "tf32"].ok
    assert not t["ort-trt", "fp32"].ok and "use precision tf32" in (t["ort-trt", "fp32"].reason or "")
    assert not t["ort-cpu", "tf32"].ok


def test_v100_with_trt_10_4() -> None:
    t = _table(gpu_facts(gpu_cc=(7, 0), gpu_name="Tesla V100-SXM2-32GB"))
    assert t["torch", "fp16"].ok
    # no emulated bf16: torch bf16 needs compute capability >= 8.0 (the contract's consistency rule)
    assert not t["torch", "bf16"].ok and "8.0" in (t["torch", "bf16"].reason or "")
    assert t["trt-native", "fp16"].ok
    assert not t["trt-native", "bf16"].ok and "8.0" in (t["trt-native", "bf16"].reason or "")
    assert t["trt-native", "int8"].ok and t["ort-trt", "int8"].ok


def test_v100_with_newer_trt_is_refused() -> None:
    t = _table(gpu_facts(gpu_cc=(7, 0), tensorrt_version="10.15.1.29", onnxruntime_version="1.22.0"))
    for p in PRECISIONS:
        assert not t["trt-native", p].ok
    assert "sm_70" in (t["trt-native", "fp32"].reason or "")
    assert "sm_70" in (t["ort-trt", "fp32"].reason or "")


def test_ort_trt_needs_libnvinfer() -> None:
    t = _table(gpu_facts(libnvinfer=None, tensorrt_version=None, tensorrt_error="tensorrt is not installed"))
    assert not t["ort-trt", "fp16"].ok and "libnvinfer.so.10" in (t["ort-trt", "fp16"].reason or "")
    assert t["ort-cuda", "fp16"].ok


def test_h200_with_trt11_lists_fp8() -> None:
    t = _table(gpu_facts(onnxruntime_version="1.32.0", ort_providers=("CPUExecutionProvider",), libnvinfer=None,
                         tensorrt_version="11.4.0.106", gpu_cc=(9, 0), gpu_name="NVIDIA H200"))
    for p in ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"):
        assert t["trt-native", p].ok, t["trt-native", p].reason
    assert t["ort-cpu", "fp8"].ok


def test_ort_trt_with_tensorrt_11_is_refused() -> None:
    """No PyPI onnxruntime-gpu links TensorRT 11: with TRT 11 the TensorRT EP cannot load."""
    t = _table(gpu_facts(onnxruntime_version="1.27.0", tensorrt_version="11.4.0.106", libnvinfer=None, gpu_cc=(9, 0)))
    assert not t["ort-trt", "fp32"].ok
    assert t["trt-native", "int8"].ok


def test_tensorrt_without_torch_cuda() -> None:
    t = _table(
        gpu_facts(
            torch_cuda_available=False,
            torch_cuda_note="torch.cuda.is_available() is False (this torch 2.14.1 is a CPU-only build)",
        )
    )
    assert not t["trt-native", "fp32"].ok
    assert not t["torch", "fp16"].ok


def test_missing_libraries() -> None:
    t = _table(MachineFacts())
    for p in PRECISIONS:
        assert not t["torch", p].ok and "torch" in (t["torch", p].reason or "")
        assert not t["ort-cpu", p].ok and "onnxruntime" in (t["ort-cpu", p].reason or "")
        assert not t["trt-native", p].ok


@pytest.mark.parametrize("precision", ["int3", "fp64"])
def test_unknown_precision_gets_a_reason(precision: str) -> None:
    rows = hw.availability_matrix(gpu_facts(), precisions=(precision,))
    assert all(not a.ok for a in rows)


def test_tf32_needs_ampere_and_says_so() -> None:
    t = _table(gpu_facts(gpu_cc=(7, 5), gpu_name="Tesla T4"))
    for backend in ("torch", "ort-cuda", "trt-native"):
        reason = t[backend, "tf32"].reason or ""
        assert not t[backend, "tf32"].ok and "compute capability >= 8.0" in reason, (backend, reason)
        assert t[backend, "fp32"].ok
    assert "Tesla T4 has 7.5" in (t["torch", "tf32"].reason or "")
