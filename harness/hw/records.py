"""The types of the ``harness hw`` report (plain dataclasses; ``to_json`` for ``--json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class HostInfo:
    cpu_model: str
    cpu_count: int | None
    cpu_usable: int | None
    memory_total_gib: float | None
    memory_limit_gib: float | None
    os: str
    machine: str


@dataclass
class GpuReport:
    index: int
    name: str | None
    compute_capability: tuple[int, int] | None
    architecture: str | None
    memory_total_mib: float | None
    driver_version: str | None
    cuda_driver_version: str | None
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    mem_clock_mhz: int | None
    mem_clock_max_mhz: int | None
    tensor_cores: dict[str, bool]
    source: str  # "nvml" or "torch"
    mig_enabled: bool | None = None


@dataclass
class Availability:
    """One backend x precision: ``reason`` is None when it can run here (the backend's own rule)."""

    backend: str
    precision: str
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "ok": self.ok, "reason": self.reason}


@dataclass
class HwReport:
    host: HostInfo
    python_version: str
    packages: dict[str, str | None]
    ort_providers: list[str] | None
    torch_cuda_available: bool
    torch_cuda_version: str | None
    gpus: list[GpuReport]
    gpu_note: str | None
    tensorrt_version: str | None
    libnvinfer: str | None
    backend_availability: list[Availability]
    warnings: list[str] = field(default_factory=list)
    image: str | None = None  # the container image variant (HARNESS_IMAGE), None outside the images

    def availability(self, backend: str, precision: str) -> Availability:
        for item in self.backend_availability:
            if item.backend == backend and item.precision == precision:
                return item
        raise KeyError((backend, precision))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["backend_availability"] = [a.to_dict() for a in self.backend_availability]
        return data


def to_json(report: HwReport, indent: int = 2) -> str:
    return json.dumps(report.to_dict(), indent=indent, sort_keys=False, default=str)
