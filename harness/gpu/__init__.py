"""GPU facts: NVML monitoring (``nvml``) and architecture / TensorRT capability rules (``capabilities``).

Nothing here imports a GPU library at import time.
"""

from __future__ import annotations

from harness.gpu.capabilities import (
    architecture_name,
    check_ort_trt_pair,
    tensor_core_precisions,
    trt_precision_support,
)
from harness.gpu.nvml import (
    DeviceMonitor,
    DeviceSnapshot,
    MonitorResult,
    energy_per_image_mj,
    nvml_available,
    nvml_device_for_torch,
)

__all__ = [
    "DeviceMonitor",
    "DeviceSnapshot",
    "MonitorResult",
    "architecture_name",
    "check_ort_trt_pair",
    "energy_per_image_mj",
    "nvml_available",
    "nvml_device_for_torch",
    "tensor_core_precisions",
    "trt_precision_support",
]
