"""Architecture table, tensor-core precisions, TensorRT precision rules and the ORT<->TRT pairing."""

from __future__ import annotations

import pytest

from harness.gpu import capabilities as caps

V100, T4, A100, A10, L4, H100, B200, RTX5090 = (7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)


@pytest.mark.parametrize(
    ("cc", "name"),
    [
        (V100, "Volta"),
        ((7, 2), "Volta"),
        (T4, "Turing"),
        (A100, "Ampere"),
        (A10, "Ampere"),
        ((8, 7), "Ampere"),
        (L4, "Ada"),
        (H100, "Hopper"),
        (B200, "Blackwell"),
        ((10, 3), "Blackwell"),
        (RTX5090, "Blackwell"),
        ((12, 1), "Blackwell"),
    ],
)
def test_architecture_names(cc: tuple[int, int], name: str) -> None:
    assert caps.architecture_name(cc) == name


def test_unknown_capability_is_a_labelled_guess() -> None:
    assert caps.architecture_name((9, 5)).startswith("Hopper (sm_95")
    assert caps.architecture_name((3, 5)) == "unknown (sm_35)"


def test_tensor_core_table() -> None:
    v100 = caps.tensor_core_precisions(V100)
    assert v100["fp16"] and not v100["int8"] and not v100["bf16"] and not v100["tf32"]
    assert not v100["sparsity_2_4"] and not v100["fp8"] and not v100["fp4"]
    assert caps.tensor_core_precisions((7, 2))["int8"]  # Xavier
    t4 = caps.tensor_core_precisions(T4)
    assert t4["int8"] and t4["fp16"] and not t4["bf16"] and not t4["sparsity_2_4"]
    a100 = caps.tensor_core_precisions(A100)
    assert a100["bf16"] and a100["tf32"] and a100["int8"] and a100["sparsity_2_4"] and not a100["fp8"]
    assert caps.tensor_core_precisions(L4)["fp8"] and not caps.tensor_core_precisions(L4)["fp4"]
    assert caps.tensor_core_precisions(H100)["fp8"] and not caps.tensor_core_precisions(H100)["fp4"]
    assert caps.tensor_core_precisions(B200)["fp4"] and caps.tensor_core_precisions(RTX5090)["fp4"]
    assert list(a100) == list(caps.TENSOR_CORE_PRECISIONS)


def test_parse_version() -> None:
    assert caps.parse_version("10.15.1.29") == (10, 15, 1, 29)
    assert caps.parse_version("1.20.1+cu12") == (1, 20, 1)
    assert caps.parse_version("2.5.0a0+872d972e41") == (2, 5, 0)
    assert caps.parse_version("11") == (11,)
    with pytest.raises(ValueError):
        caps.parse_version("latest")


# ---------------------------------------------------------------------------------- TensorRT


def test_support_is_an_ok_reason_pair() -> None:
    ok, reason = caps.trt_precision_support("10.4.0", A100)["fp16"]
    assert ok is True and "BuilderFlag.FP16" in reason
    assert set(caps.trt_precision_support("10.4.0", A100)) == set(caps.TRT_PRECISIONS)


def test_v100_last_supported_trt_is_10_4() -> None:
    ok = caps.trt_precision_support("10.4.0", V100)
    assert all(s.ok for k, s in ok.items() if k not in ("bf16", "tf32", "fp8"))  # Ampere; fp8 Ada
    assert not ok["tf32"].ok and "compute capability >= 8.0" in ok["tf32"].reason
    for version in ("10.5.0", "10.15.1.29", "11.4.0"):
        rules = caps.trt_precision_support(version, V100)
        assert not any(s.ok for s in rules.values()), version
        assert "sm_70" in rules["fp32"].reason and "10.4" in rules["fp32"].reason
    # newer GPUs are fine on new TRT
    assert caps.trt_precision_support("10.15.1.29", A100)["fp32"].ok


def test_trt_older_than_10_is_refused() -> None:
    rules = caps.trt_precision_support("8.6.1", A100)
    assert not rules["fp32"].ok and "TensorRT 10" in rules["fp32"].reason


def test_pre_volta_is_refused() -> None:
    assert not caps.trt_precision_support("10.4.0", (6, 1))["fp32"].ok


def test_bf16_needs_ampere() -> None:
    for cc in (V100, T4):
        s = caps.trt_precision_support("10.4.0", cc)["bf16"]
        assert not s.ok and "compute capability >= 8.0" in s.reason
    assert caps.trt_precision_support("10.15.1", A100)["bf16"].ok
    assert "converts to BF16" in caps.trt_precision_support("11.4", H100)["bf16"].reason


def test_int8_on_v100_works_without_int8_tensor_cores() -> None:
    rules = caps.trt_precision_support("10.4.0", V100)
    assert rules["int8"].ok and rules["int8-implicit"].ok and rules["int8-explicit"].ok
    assert "no INT8 tensor cores" in rules["int8"].reason
    assert "no INT8 tensor cores" not in caps.trt_precision_support("10.4.0", T4)["int8"].reason


def test_implicit_int8_deprecated_in_10_1_and_removed_in_11() -> None:
    assert "deprecated" not in caps.trt_precision_support("10.0.1", A100)["int8-implicit"].reason
    s10 = caps.trt_precision_support("10.15.1.29", A100)["int8-implicit"]
    assert s10.ok and "deprecated since TensorRT 10.1" in s10.reason
    s11 = caps.trt_precision_support("11.0.0", A100)
    assert not s11["int8-implicit"].ok and "removed in TensorRT 11" in s11["int8-implicit"].reason
    assert s11["int8-explicit"].ok and "Q/DQ" in s11["int8-explicit"].reason
    assert s11["int8"].ok and "explicit" in s11["int8"].reason and "implicit" not in s11["int8"].reason
    assert "implicit or explicit" in caps.trt_precision_support("10.4.0", A100)["int8"].reason


def test_fp16_on_trt11_builds_from_an_onnx_the_harness_converts() -> None:
    s = caps.trt_precision_support("11.4.0", A100)["fp16"]
    assert s.ok and "converts to FP16" in s.reason and "strongly typed" in s.reason and "FP32 inputs" in s.reason


@pytest.mark.parametrize("version", ["10.4.0", "10.8.0.43", "11.4.0.106"])
def test_fp8_needs_ada_or_newer_and_names_the_gpu(version: str) -> None:
    for cc in (T4, A100, A10):
        s = caps.trt_precision_support(version, cc)["fp8"]
        assert not s.ok and f"compute capability {caps.cc_text(cc)}" in s.reason and ">= 8.9" in s.reason
    for cc in (L4, H100, B200):
        s = caps.trt_precision_support(version, cc)["fp8"]
        assert s.ok and "E4M3" in s.reason and "strongly typed" in s.reason


def test_default_int8_mode() -> None:
    assert caps.trt_default_int8_mode("10.4.0") == "implicit"
    assert caps.trt_default_int8_mode("10.15.1.29") == "implicit"
    assert caps.trt_default_int8_mode("11.0.0") == "explicit"


# ---------------------------------------------------------------------------------- ORT <-> TRT


@pytest.mark.parametrize(
    ("ort", "trt"),
    [("1.18.0", "10.0.1"), ("1.19.2", "10.2.0"), ("1.20.1", "10.4.0"), ("1.21.0", "10.8.0.43"), ("1.22.0", "10.9.0.34")],
)
def test_recorded_pairs_match(ort: str, trt: str) -> None:
    check = caps.check_ort_trt_pair(ort, trt)
    assert check.ok is True, check.reason
    assert check.expected_trt == ".".join(trt.split(".")[:2])


def test_v100_pairing_is_ort_1_20() -> None:
    assert caps.expected_trt_for_ort("1.20.1") == "10.4"
    assert caps.ORT_TRT_PAIRING[(1, 20)] == caps.TRT_LAST_FOR_VOLTA


def test_mismatched_pairs() -> None:
    check = caps.check_ort_trt_pair("1.20.1", "10.15.1.29")
    assert check.ok is False and check.expected_trt == "10.4" and "onnxruntime-gpu" in check.reason
    assert caps.check_ort_trt_pair("1.17.3", "10.0.1").ok is False


@pytest.mark.parametrize("ort", ["1.20.1", "1.22.0", "1.27.0", "1.30.1"])
def test_no_pypi_onnxruntime_links_trt11(ort: str) -> None:
    """Issue 9: the PyPI 1.27 wheel links libnvinfer.so.10 (and libcudart.so.13), never TensorRT 11."""
    check = caps.check_ort_trt_pair(ort, "11.4.0.106")
    assert check.ok is False and "no PyPI onnxruntime-gpu links TensorRT 11" in check.reason
    assert "libnvinfer.so.10" in check.reason
    assert caps.ort_libnvinfer_major(ort) == 10
    assert caps.expected_trt_for_ort(ort) is not None and caps.expected_trt_for_ort(ort).startswith("10.")
    assert not hasattr(caps, "ORT_FIRST_FOR_TRT11")


def test_ort_1_27_links_cuda_13() -> None:
    check = caps.check_ort_trt_pair("1.27.0", "10.15.1")
    assert check.ok is None and "libcudart.so.13" in check.reason
    assert "libcudart.so.13" in caps.check_ort_trt_pair("1.27.0", "11.0.0").reason


def test_unrecorded_pair_is_unknown_not_wrong() -> None:
    check = caps.check_ort_trt_pair("1.24.1", "10.13.0")
    assert check.ok is None and "no recorded" in check.reason
    assert caps.expected_trt_for_ort("1.24.1") == "10.x"
    assert caps.expected_trt_for_ort("1.17.0") is None


def test_ort_gpu_note_with_trt11() -> None:
    note = caps.ort_gpu_note("11.4.0.106", ("CPUExecutionProvider",))
    assert note is not None and "ort-cuda and ort-trt" in note and "trt11 image" in note
    assert caps.ort_gpu_note("10.8.0.43", ("CPUExecutionProvider",)) is None
    assert caps.ort_gpu_note(None, None) is None
