"""A fake pynvml (the NVML calls the harness makes), shared by the NVML and hw tests."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

# ---------------------------------------------------------------------------------- a fake pynvml


class NVMLError(Exception):
    value = 999

    def __str__(self) -> str:
        return type(self).__name__.replace("NVMLError_", "")


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's names
    value = 3


class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801
    value = 9


class NVMLError_FunctionNotFound(NVMLError):  # noqa: N801
    value = 13


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
    value = 15


class NVMLError_NotFound(NVMLError):  # noqa: N801
    value = 6


class FakeNvml:
    """Just enough of pynvml, with the return shapes of nvidia-ml-py 12/13 (V100-like defaults)."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(
        self,
        *,
        name: str = "Tesla V100-SXM2-32GB",
        cc: tuple[int, int] = (7, 0),
        new_api: bool = True,
        energy: bool = True,
        power_w: float | None = 250.0,
        reasons: int = 0x0,
        sm_clock: int = 1530,
        sm_max: int = 1530,
        processes: tuple[tuple[int, int], ...] = (),
        mig: int | None = None,
        ecc: int | None = 1,
        temperature: int | None = 45,
        init_error: type[NVMLError] | None = None,
        clock: Any = None,
        count: int = 1,
    ) -> None:
        self.name = name
        self.cc = cc
        self.new_api = new_api
        self.energy = energy
        self.power_w = power_w
        self.reasons = reasons
        self.sm_clock = sm_clock
        self.sm_max = sm_max
        self.processes = processes
        self.mig = mig
        self.ecc = ecc
        self.temperature = temperature
        self.init_error = init_error
        self.clock = clock or time.perf_counter
        self.count = count
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: list[str] = []

    # lifecycle
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error()
        self.init_calls += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return SimpleNamespace(index=index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        if uuid != "GPU-3f1c2a9e-0000-1111-2222-333344445555":
            raise NVMLError_NotFound()
        return SimpleNamespace(index=3)

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        return handle.index

    # system
    def nvmlSystemGetDriverVersion(self) -> str:
        return "560.35.03"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12060

    def nvmlSystemGetProcessName(self, pid: int) -> bytes:
        return b"/usr/bin/python3"

    # device
    def nvmlDeviceGetName(self, handle: Any) -> bytes:  # older pynvml returns bytes
        return self.name.encode()

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return "GPU-3f1c2a9e-0000-1111-2222-333344445555"

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self.cc

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int:
        return self.sm_clock if clock == self.NVML_CLOCK_SM else 877

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock: int) -> int:
        return self.sm_max if clock == self.NVML_CLOCK_SM else 877

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        self.calls.append("events")
        if not self.new_api:
            raise NVMLError_FunctionNotFound()
        return self.reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        self.calls.append("throttle")
        return self.reasons

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int) -> int:
        self.calls.append("tempV")
        if not self.new_api:
            raise NVMLError_FunctionNotFound()
        if self.temperature is None:
            raise NVMLError_NotSupported()
        return self.temperature

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self.calls.append("temp")
        if self.temperature is None:
            raise NVMLError_NotSupported()
        return self.temperature

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        if self.power_w is None:
            raise NVMLError_NotSupported()
        return int(self.power_w * 1000)  # milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return 300_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if not self.energy:
            raise NVMLError_NotSupported()
        # mJ since "driver load": constant power times the fake clock
        return int(5_000_000 + (self.power_w or 0.0) * 1000 * self.clock())

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        return SimpleNamespace(total=32 * 2**30, used=2 * 2**30, free=30 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        return SimpleNamespace(gpu=97, memory=41)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in self.processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        return []

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        if self.mig is None:
            raise NVMLError_NotSupported()  # V100: no MIG
        return [self.mig, self.mig]

    def nvmlDeviceGetEccMode(self, handle: Any) -> list[int]:
        if self.ecc is None:
            raise NVMLError_NotSupported()
        return [self.ecc, self.ecc]

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        return 1

    def nvmlDeviceGetPerformanceState(self, handle: Any) -> int:
        return 0
