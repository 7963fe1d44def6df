"""Made-up machines for the availability rules and hw warnings (shared by their tests)."""

from __future__ import annotations

from harness.machine import MachineFacts


def gpu_facts(**kw: object) -> MachineFacts:
    """An A100 with TensorRT 10.4 and onnxruntime-gpu 1.20 (the V100/A100 image pairing); override any field."""
    base: dict[str, object] = dict(
        torch_version="2.5.0a0",
        torch_cuda_available=True,
        onnxruntime_version="1.20.1",
        ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        tensorrt_version="10.4.0",
        libnvinfer="libnvinfer.so.10",
        gpu_visible=True,
        gpu_cc=(8, 0),
        gpu_name="NVIDIA A100-SXM4-40GB",
    )
    base.update(kw)
    return MachineFacts(**base)  # type: ignore[arg-type]
