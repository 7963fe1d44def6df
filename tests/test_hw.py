"""``harness hw`` logic: the real report on this GPU-less machine, and the availability rules with made-up GPUs."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from harness import hw
from harness.hw import BackendFacts, backend_availability
from tests.test_nvml import FakeNvml


def _table(facts: BackendFacts) -> dict[tuple[str, str], hw.Availability]:
    rows = backend_availability(facts)
    table = {(a.backend, a.precision): a for a in rows}
    assert len(rows) == len(table) == len(hw.BACKENDS) * len(hw.PRECISIONS)
    return table


def _render(report: hw.HwReport) -> str:
    console = Console(record=True, width=200, color_system=None)
    hw.render_hw_report(report, console)
    return console.export_text()


@pytest.fixture(scope="module")
def real_report() -> hw.HwReport:
    return hw.collect_hw_report()


# ---------------------------------------------------------------------------------- the real machine


def test_real_report_without_gpu(real_report: hw.HwReport) -> None:
    if real_report.gpus:  # pragma: no cover - this test documents the GPU-less CI machine
        pytest.skip("this machine has a GPU")
    r = real_report
    assert r.gpu_note is not None and r.gpu_note.startswith("no NVIDIA GPU visible")
    assert "torch.cuda.is_available() is False" in r.gpu_note
    assert r.host.cpu_count and r.host.cpu_count >= 1
    assert r.host.cpu_model
    assert r.python_version.count(".") == 2
    assert r.packages["torch"] is not None
    assert set(hw.PACKAGE_DISTS) <= set(r.packages)

    torch_fp32 = r.availability("torch", "fp32")
    assert torch_fp32.ok and torch_fp32.reason == "CPU"
    fp16 = r.availability("torch", "fp16")
    assert not fp16.ok and "torch on CPU runs fp32 only" in fp16.reason and "no NVIDIA GPU visible" in fp16.reason
    assert not r.availability("torch", "int8").ok
    for p in hw.PRECISIONS:
        assert not r.availability("trt-native", p).ok
        assert not r.availability("ort-trt", p).ok
        assert not r.availability("ort-cuda", p).ok


def test_real_report_cpu_backends(real_report: hw.HwReport) -> None:
    if real_report.packages["onnxruntime"] is None:  # pragma: no cover
        pytest.skip("onnxruntime not installed")
    assert real_report.ort_providers and "CPUExecutionProvider" in real_report.ort_providers
    assert real_report.availability("ort-cpu", "fp32").ok
    assert real_report.availability("ort-cpu", "int8").ok
    assert not real_report.availability("ort-cpu", "fp16").ok
    if "CUDAExecutionProvider" not in real_report.ort_providers:
        assert "install onnxruntime-gpu" in real_report.availability("ort-cuda", "fp32").reason
    if real_report.tensorrt_version is None:
        assert "tensorrt" in real_report.availability("trt-native", "fp32").reason


def test_real_report_json_and_render(real_report: hw.HwReport) -> None:
    data = json.loads(hw.to_json(real_report))
    assert data["gpus"] == [] or real_report.gpus
    assert {"host", "packages", "backend_availability", "gpu_note", "ort_providers"} <= set(data)
    assert len(data["backend_availability"]) == 20
    text = _render(real_report)
    assert "Backend availability" in text and "Host" in text
    if not real_report.gpus:
        assert "no NVIDIA GPU visible" in text
        assert "CPU backends only" in text


# ---------------------------------------------------------------------------------- injected NVML


def test_report_with_fake_nvml_gpu() -> None:
    fake = FakeNvml(name="NVIDIA A100-SXM4-40GB", cc=(8, 0), sm_clock=1410, sm_max=1410, count=1)
    report = hw.collect_hw_report(nvml=fake)
    assert len(report.gpus) == 1
    g = report.gpus[0]
    assert g.source == "nvml" and g.name == "NVIDIA A100-SXM4-40GB"
    assert g.compute_capability == (8, 0) and g.architecture == "Ampere"
    assert g.tensor_cores["bf16"] and g.tensor_cores["int8"] and not g.tensor_cores["fp8"]
    assert g.driver_version == "560.35.03" and g.cuda_driver_version == "12.6"
    assert report.gpu_note is None
    if not report.torch_cuda_available:  # this machine: NVML (fake) sees a GPU, torch cannot
        assert any("torch cannot use it" in w for w in report.warnings)
        assert not report.availability("torch", "fp16").ok
    text = _render(report)
    assert "NVIDIA A100-SXM4-40GB" in text and "Tensor-core precisions" in text and "Ampere" in text


# ---------------------------------------------------------------------------------- rules with made-up facts


def _gpu_facts(**kw: object) -> BackendFacts:
    base: dict[str, object] = dict(
        torch_version="2.5.0a0",
        torch_cuda_available=True,
        onnxruntime_version="1.20.1",
        ort_providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        tensorrt_version="10.4.0",
        libnvinfer="libnvinfer.so.10",
        gpu_visible=True,
        gpu_cc=(8, 0),
        gpu_name="NVIDIA A100-SXM4-40GB",
    )
    base.update(kw)
    return BackendFacts(**base)  # type: ignore[arg-type]


def test_cpu_only_machine_rules() -> None:
    t = _table(
        BackendFacts(
            torch_version="2.14.1",
            torch_cuda_available=False,
            torch_cuda_note="torch.cuda.is_available() is False",
            onnxruntime_version="1.32.0",
            ort_providers=["CPUExecutionProvider"],
        )
    )
    assert t["torch", "fp32"].ok and not t["torch", "fp16"].ok
    assert t["torch", "bf16"].reason.startswith("torch on CPU runs fp32 only")
    assert "no NVIDIA GPU visible (torch.cuda.is_available() is False)" in t["torch", "fp16"].reason
    assert t["ort-cpu", "fp32"].ok and t["ort-cpu", "int8"].ok
    assert not t["ort-cpu", "fp16"].ok and not t["ort-cpu", "bf16"].ok
    assert "onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu" in t["ort-cuda", "fp16"].reason
    assert "onnxruntime has no TensorrtExecutionProvider: install onnxruntime-gpu" in t["ort-trt", "int8"].reason
    assert t["trt-native", "fp16"].reason == "tensorrt is not installed"


def test_a100_with_trt10() -> None:
    t = _table(_gpu_facts(onnxruntime_version="1.22.0", tensorrt_version="10.9.0.34"))
    assert t["torch", "fp16"].ok and t["torch", "bf16"].ok
    assert not t["torch", "int8"].ok and "not offered on the torch backend" in t["torch", "int8"].reason
    assert t["ort-cuda", "fp32"].ok and t["ort-cuda", "fp16"].ok and t["ort-cuda", "int8"].ok
    assert not t["ort-cuda", "bf16"].ok
    for p in ("fp32", "fp16", "int8"):
        assert t["ort-trt", p].ok, t["ort-trt", p].reason
        assert "warning" not in t["ort-trt", p].reason
    assert not t["ort-trt", "bf16"].ok
    for p in hw.PRECISIONS:
        assert t["trt-native", p].ok, t["trt-native", p].reason
    assert "calibrator" in t["trt-native", "int8"].reason or "implicit" in t["trt-native", "int8"].reason


def test_v100_with_trt_10_4() -> None:
    t = _table(_gpu_facts(gpu_cc=(7, 0), gpu_name="Tesla V100-SXM2-32GB"))
    assert t["torch", "fp16"].ok
    assert not t["torch", "bf16"].ok and "bf16 needs compute capability >= 8.0" in t["torch", "bf16"].reason
    assert t["trt-native", "fp16"].ok
    assert not t["trt-native", "bf16"].ok and "bf16 needs compute capability >= 8.0" in t["trt-native", "bf16"].reason
    assert t["trt-native", "int8"].ok and "no INT8 tensor cores" in t["trt-native", "int8"].reason
    assert t["ort-trt", "int8"].ok and "no INT8 tensor cores" in t["ort-trt", "int8"].reason


def test_v100_with_newer_trt_is_refused() -> None:
    t = _table(_gpu_facts(gpu_cc=(7, 0), tensorrt_version="10.15.1.29", onnxruntime_version="1.22.0"))
    for p in hw.PRECISIONS:
        assert not t["trt-native", p].ok
    assert "sm_70" in t["trt-native", "fp32"].reason
    assert "sm_70" in t["ort-trt", "fp32"].reason


def test_ort_trt_needs_libnvinfer() -> None:
    t = _table(_gpu_facts(libnvinfer=None, tensorrt_version=None, tensorrt_error="tensorrt is not installed"))
    assert not t["ort-trt", "fp16"].ok and "libnvinfer.so.10" in t["ort-trt", "fp16"].reason
    assert "falls back to CUDA" in t["ort-trt", "fp16"].reason
    assert t["ort-cuda", "fp16"].ok
    t11 = _table(_gpu_facts(libnvinfer=None, onnxruntime_version="1.27.0", tensorrt_version=None))
    assert "libnvinfer.so.11" in t11["ort-trt", "fp32"].reason


def test_ort_trt_major_mismatch_is_refused() -> None:
    t = _table(_gpu_facts(onnxruntime_version="1.27.0", tensorrt_version="10.15.1.29"))
    assert not t["ort-trt", "fp32"].ok and "targets TensorRT 11" in t["ort-trt", "fp32"].reason


def test_ort_trt_minor_mismatch_is_a_warning() -> None:
    t = _table(_gpu_facts(onnxruntime_version="1.20.1", tensorrt_version="10.8.0.43"))
    assert t["ort-trt", "fp16"].ok and "warning" in t["ort-trt", "fp16"].reason and "10.4" in t["ort-trt", "fp16"].reason


def test_trt11_rules() -> None:
    t = _table(_gpu_facts(onnxruntime_version="1.28.0", tensorrt_version="11.4.0.106", libnvinfer="libnvinfer.so.11", gpu_cc=(9, 0)))
    assert t["trt-native", "int8"].ok and "explicit" in t["trt-native", "int8"].reason
    assert t["trt-native", "fp16"].ok and "FP16 ONNX" in t["trt-native", "fp16"].reason
    assert t["ort-trt", "int8"].ok and "Q/DQ" in t["ort-trt", "int8"].reason


def test_tensorrt_without_torch_cuda() -> None:
    t = _table(
        _gpu_facts(
            torch_cuda_available=False,
            torch_cuda_note="torch.cuda.is_available() is False (this torch 2.14.1 is a CPU-only build)",
        )
    )
    assert not t["trt-native", "fp32"].ok and "torch CUDA tensors" in t["trt-native", "fp32"].reason
    assert not t["torch", "fp16"].ok


def test_missing_libraries() -> None:
    t = _table(BackendFacts())
    for p in hw.PRECISIONS:
        assert t["torch", p].reason == "torch is not installed"
        assert "onnxruntime is not installed" in t["ort-cpu", p].reason
        assert not t["trt-native", p].ok
