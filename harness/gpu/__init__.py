"""GPU facts: NVML queries (``nvml_query``), the timed-window monitor (``nvml_monitor``), and
architecture / TensorRT / ONNX Runtime capability rules (``capabilities``).

Nothing here imports a GPU library at import time.
"""

from __future__ import annotations

from harness.gpu.capabilities import (
    architecture_name,
    check_ort_trt_pair,
    tensor_core_precisions,
    trt_precision_support,
)
from harness.gpu.nvml_monitor import DeviceMonitor, MonitorResult, energy_per_image_mj
from harness.gpu.nvml_query import DeviceSnapshot, nvml_device_for_torch, nvml_unavailable_reason

__all__ = [
    "DeviceMonitor",
    "DeviceSnapshot",
    "MonitorResult",
    "architecture_name",
    "check_ort_trt_pair",
    "energy_per_image_mj",
    "nvml_device_for_torch",
    "nvml_unavailable_reason",
    "tensor_core_precisions",
    "trt_precision_support",
]
