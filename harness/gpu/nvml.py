"""A small wrapper over NVML (package ``nvidia-ml-py``, module ``pynvml``).

Everything here imports ``pynvml`` lazily and accepts an injected module (``nvml=``) so that tests
can pass a fake with the handful of functions used. Newer NVML names are tried first and the older
ones used as fallback (CUDA 13 deprecates ``...ClocksThrottleReasons`` and
``nvmlDeviceGetTemperature``); every per-field query tolerates ``NVMLError_NotSupported`` and
similar per-device refusals by recording ``None``.

``DeviceMonitor`` wraps a timed window::

    with DeviceMonitor(0, own_pid=os.getpid()) as mon:
        run_timed_loop()
    mon.result.energy_mj, mon.result.warnings

Energy comes from ``nvmlDeviceGetTotalEnergyConsumption`` (Volta and newer) when supported, else
from a background thread that samples ``nvmlDeviceGetPowerUsage`` and integrates it (trapezoids).
The thread also samples clock-event reasons and the SM clock *during* the window. NVML calls go
through ctypes, which releases the GIL, so the sampler costs the timed loop little; still, keep
``sample_interval_s`` coarse (tens of milliseconds) for Python-heavy loops.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Callable, Literal

from harness.errors import BackendUnavailable, missing_library

NVML_INSTALL_HINT = "install it with `pip install nvidia-ml-py` (module pynvml)."

# nvmlClocksEventReason* bits (same values as the older nvmlClocksThrottleReason*).
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x0000000000000001, "GpuIdle"),
    (0x0000000000000002, "ApplicationsClocksSetting"),
    (0x0000000000000004, "SwPowerCap"),
    (0x0000000000000008, "HwSlowdown"),
    (0x0000000000000010, "SyncBoost"),
    (0x0000000000000020, "SwThermalSlowdown"),
    (0x0000000000000040, "HwThermalSlowdown"),
    (0x0000000000000080, "HwPowerBrakeSlowdown"),
    (0x0000000000000100, "DisplayClockSetting"),
)
#: Reasons that do not mean the timed window ran slower than it could.
BENIGN_CLOCK_REASONS = frozenset({"GpuIdle", "ApplicationsClocksSetting"})

# NVML constants (ABI-stable); read from the module when it has them.
_CLOCK_SM = 1
_CLOCK_MEM = 2
_TEMPERATURE_GPU = 0
# Error codes after which nothing else will work either: propagate instead of recording None.
_FATAL_ERROR_CODES = frozenset({1, 9, 12, 15, 16, 18})  # uninitialized, driver not loaded,
# library not found, GPU is lost, reset required, RM version mismatch

EnergySource = Literal["counter", "power-sampling"]


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the set bits of an ``nvmlClocksEventReason*`` mask (unknown bits as hex)."""
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    known = 0
    for bit, _name in CLOCK_EVENT_REASONS:
        known |= bit
    rest = mask & ~known
    if rest:
        names.append(f"Unknown(0x{rest:x})")
    return names


def energy_per_image_mj(energy_mj: float | None, images: int) -> float | None:
    """Energy per image in millijoules; ``None`` when the energy or the image count is unknown."""
    if energy_mj is None or images <= 0:
        return None
    return energy_mj / images


# ---------------------------------------------------------------------------------- module access


def load_nvml(nvml: ModuleType | Any | None = None) -> Any:
    """The injected module, or ``pynvml`` imported now (BackendUnavailable when missing)."""
    if nvml is not None:
        return nvml
    try:
        import pynvml
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise missing_library("pynvml", "GPU monitoring (clocks, power, energy)", NVML_INSTALL_HINT) from err
    return pynvml


def _error_base(nvml: Any) -> type[BaseException]:
    base = getattr(nvml, "NVMLError", None)
    return base if isinstance(base, type) and issubclass(base, BaseException) else Exception


def init_nvml(nvml: Any) -> None:
    """``nvmlInit`` turned into BackendUnavailable with a clear message."""
    try:
        nvml.nvmlInit()
    except _error_base(nvml) as err:
        raise BackendUnavailable(
            f"NVML could not be initialised ({err}): no NVIDIA driver is loaded or no GPU is visible "
            "to this process (in Docker, run with --gpus all or the compose GPU reservation)."
        ) from err


def shutdown_nvml(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except _error_base(nvml):
        pass


def nvml_available(nvml: Any | None = None) -> str | None:
    """``None`` when NVML can be used and sees at least one GPU, else the reason."""
    try:
        module = load_nvml(nvml)
    except BackendUnavailable as err:
        return str(err)
    try:
        init_nvml(module)
    except BackendUnavailable as err:
        return str(err)
    try:
        count = module.nvmlDeviceGetCount()
    except _error_base(module) as err:
        return f"NVML is initialised but cannot count devices ({err})."
    finally:
        shutdown_nvml(module)
    if count == 0:
        return "NVML is initialised but reports no NVIDIA GPU."
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _Query:
    """Per-field NVML calls that turn per-device refusals into ``None``."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.error = _error_base(nvml)

    def _fatal(self, err: BaseException) -> bool:
        return getattr(err, "value", None) in _FATAL_ERROR_CODES

    def call(self, name: str, *args: Any) -> Any:
        fn = getattr(self.nvml, name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except self.error as err:
            if self._fatal(err):
                raise
            return None

    def first(self, names: tuple[str, ...], *args: Any) -> Any:
        """Try each name in turn (new NVML name first, older fallback after)."""
        for name in names:
            fn = getattr(self.nvml, name, None)
            if fn is None:
                continue
            try:
                return fn(*args)
            except self.error as err:
                if self._fatal(err):
                    raise
                continue
        return None

    def const(self, name: str, default: int) -> int:
        value = getattr(self.nvml, name, default)
        return value if isinstance(value, int) else default


# ---------------------------------------------------------------------------------- device selection


def nvml_device_for_torch(device_index: int) -> int | str:
    """The NVML device (index, or ``"GPU-..."`` UUID) behind torch's CUDA device ``device_index``.

    Torch numbers devices after ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER`` (fastest first by
    default); NVML numbers all GPUs in PCI order. The UUID from torch's device properties names the
    same GPU in both; without it, ``CUDA_VISIBLE_DEVICES`` is mapped by hand.
    """
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(device_index), "uuid", None)
    except Exception:  # noqa: BLE001 - no torch / no CUDA: fall back to the environment
        uuid = None
    if uuid is not None and str(uuid):
        text = str(uuid)
        return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if 0 <= device_index < len(entries):
            entry = entries[device_index]
            return int(entry) if entry.isdigit() else entry
    return device_index


def _handle(nvml: Any, device: int | str) -> tuple[Any, int]:
    """(handle, NVML index) for an NVML index or a ``GPU-``/``MIG-`` UUID."""
    if isinstance(device, str):
        handle = nvml.nvmlDeviceGetHandleByUUID(device)
        index = _Query(nvml).call("nvmlDeviceGetIndex", handle)
        return handle, -1 if index is None else int(index)
    return nvml.nvmlDeviceGetHandleByIndex(device), device


# ---------------------------------------------------------------------------------- snapshots


@dataclass
class GpuProcess:
    pid: int
    name: str | None
    used_memory_mib: float | None


@dataclass
class Utilization:
    gpu_pct: int
    memory_pct: int


@dataclass
class DeviceSnapshot:
    """The state of one GPU at one moment; every field but ``index`` may be ``None`` (not supported)."""

    index: int
    timestamp_s: float
    name: str | None = None
    uuid: str | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    clock_event_reasons: list[str] | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    energy_counter_mj: int | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    other_processes: list[GpuProcess] = field(default_factory=list)
    mig_enabled: bool | None = None
    ecc_enabled: bool | None = None
    persistence_mode: bool | None = None
    perf_state: int | None = None
    utilization: Utilization | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _process_name(q: _Query, pid: int) -> str | None:
    name = q.call("nvmlSystemGetProcessName", pid)
    if name:
        return Path(_text(name)).name
    try:  # PIDs from NVML may belong to another PID namespace (containers): best effort only
        return Path(f"/proc/{pid}/comm").read_text().strip() or None
    except OSError:
        return None


def _processes(q: _Query, handle: Any, own_pids: frozenset[int]) -> list[GpuProcess]:
    seen: dict[int, GpuProcess] = {}
    for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        procs = q.call(fn, handle) or []
        for proc in procs:
            pid = int(getattr(proc, "pid", -1))
            if pid < 0 or pid in own_pids or pid in seen:
                continue
            used = getattr(proc, "usedGpuMemory", None)
            seen[pid] = GpuProcess(
                pid=pid,
                name=_process_name(q, pid),
                used_memory_mib=None if used is None else used / 2**20,
            )
    return sorted(seen.values(), key=lambda p: p.pid)


def _enabled(value: Any) -> bool | None:
    """NVML mode getters return ``[current, pending]`` or an int; 1 means enabled."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    return bool(int(value))


def _clock_reasons(q: _Query, handle: Any) -> list[str] | None:
    mask = q.first(("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"), handle)
    return None if mask is None else decode_clock_event_reasons(int(mask))


def _temperature(q: _Query, handle: Any) -> int | None:
    sensor = q.const("NVML_TEMPERATURE_GPU", _TEMPERATURE_GPU)
    value = q.first(("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"), handle, sensor)
    if value is None:
        return None
    value = getattr(value, "temperature", value)  # some versions return the v1 struct
    return int(value)


def _power_w(q: _Query, handle: Any) -> float | None:
    mw = q.call("nvmlDeviceGetPowerUsage", handle)
    return None if mw is None else mw / 1000.0


def take_snapshot(
    index: int,
    handle: Any,
    nvml: Any,
    own_pids: frozenset[int] = frozenset(),
) -> DeviceSnapshot:
    """Query one device (NVML must already be initialised)."""
    q = _Query(nvml)
    sm = q.const("NVML_CLOCK_SM", _CLOCK_SM)
    mem = q.const("NVML_CLOCK_MEM", _CLOCK_MEM)
    name = q.call("nvmlDeviceGetName", handle)
    uuid = q.call("nvmlDeviceGetUUID", handle)
    meminfo = q.call("nvmlDeviceGetMemoryInfo", handle)
    util = q.call("nvmlDeviceGetUtilizationRates", handle)
    energy = q.call("nvmlDeviceGetTotalEnergyConsumption", handle)
    return DeviceSnapshot(
        index=index,
        timestamp_s=time.time(),
        name=None if name is None else _text(name),
        uuid=None if uuid is None else _text(uuid),
        sm_clock_mhz=q.call("nvmlDeviceGetClockInfo", handle, sm),
        sm_clock_max_mhz=q.call("nvmlDeviceGetMaxClockInfo", handle, sm),
        mem_clock_mhz=q.call("nvmlDeviceGetClockInfo", handle, mem),
        mem_clock_max_mhz=q.call("nvmlDeviceGetMaxClockInfo", handle, mem),
        clock_event_reasons=_clock_reasons(q, handle),
        temperature_c=_temperature(q, handle),
        power_w=_power_w(q, handle),
        energy_counter_mj=None if energy is None else int(energy),
        memory_used_mib=None if meminfo is None else meminfo.used / 2**20,
        memory_total_mib=None if meminfo is None else meminfo.total / 2**20,
        other_processes=_processes(q, handle, own_pids),
        mig_enabled=_enabled(q.call("nvmlDeviceGetMigMode", handle)),
        ecc_enabled=_enabled(q.call("nvmlDeviceGetEccMode", handle)),
        persistence_mode=_enabled(q.call("nvmlDeviceGetPersistenceMode", handle)),
        perf_state=q.call("nvmlDeviceGetPerformanceState", handle),
        utilization=None if util is None else Utilization(gpu_pct=int(util.gpu), memory_pct=int(util.memory)),
    )


# ---------------------------------------------------------------------------------- static device info


@dataclass
class DeviceInfo:
    """What ``harness hw`` reports about one GPU."""

    index: int
    name: str | None
    uuid: str | None
    compute_capability: tuple[int, int] | None
    memory_total_mib: float | None
    driver_version: str | None
    cuda_driver_version: str | None
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    mem_clock_mhz: int | None
    mem_clock_max_mhz: int | None
    power_limit_w: float | None = None
    mig_enabled: bool | None = None
    persistence_mode: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cuda_version_text(value: int | None) -> str | None:
    """NVML's CUDA driver version integer (e.g. 12060) as ``"12.6"``."""
    if value is None:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def list_devices(nvml: Any | None = None) -> list[DeviceInfo]:
    """Every GPU NVML sees (BackendUnavailable when NVML is missing or cannot initialise)."""
    module = load_nvml(nvml)
    init_nvml(module)
    try:
        q = _Query(module)
        driver = q.call("nvmlSystemGetDriverVersion")
        cuda = q.first(("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"))
        sm = q.const("NVML_CLOCK_SM", _CLOCK_SM)
        mem = q.const("NVML_CLOCK_MEM", _CLOCK_MEM)
        devices = []
        for index in range(int(module.nvmlDeviceGetCount())):
            handle = module.nvmlDeviceGetHandleByIndex(index)
            cc = q.call("nvmlDeviceGetCudaComputeCapability", handle)
            meminfo = q.call("nvmlDeviceGetMemoryInfo", handle)
            name = q.call("nvmlDeviceGetName", handle)
            uuid = q.call("nvmlDeviceGetUUID", handle)
            limit = q.call("nvmlDeviceGetEnforcedPowerLimit", handle)
            devices.append(
                DeviceInfo(
                    index=index,
                    name=None if name is None else _text(name),
                    uuid=None if uuid is None else _text(uuid),
                    compute_capability=None if cc is None else (int(cc[0]), int(cc[1])),
                    memory_total_mib=None if meminfo is None else meminfo.total / 2**20,
                    driver_version=None if driver is None else _text(driver),
                    cuda_driver_version=cuda_version_text(cuda),
                    sm_clock_mhz=q.call("nvmlDeviceGetClockInfo", handle, sm),
                    sm_clock_max_mhz=q.call("nvmlDeviceGetMaxClockInfo", handle, sm),
                    mem_clock_mhz=q.call("nvmlDeviceGetClockInfo", handle, mem),
                    mem_clock_max_mhz=q.call("nvmlDeviceGetMaxClockInfo", handle, mem),
                    power_limit_w=None if limit is None else limit / 1000.0,
                    mig_enabled=_enabled(q.call("nvmlDeviceGetMigMode", handle)),
                    persistence_mode=_enabled(q.call("nvmlDeviceGetPersistenceMode", handle)),
                )
            )
        return devices
    finally:
        shutdown_nvml(module)


# ---------------------------------------------------------------------------------- monitoring


def integrate_power_mj(samples: list[tuple[float, float]]) -> float | None:
    """Trapezoid integral of ``(seconds, watts)`` samples, in millijoules (None for < 2 samples)."""
    if len(samples) < 2:
        return None
    total_j = 0.0
    for (t0, p0), (t1, p1) in zip(samples, samples[1:]):
        total_j += (p0 + p1) / 2.0 * max(0.0, t1 - t0)
    return total_j * 1000.0


@dataclass
class MonitorResult:
    index: int
    before: DeviceSnapshot
    after: DeviceSnapshot
    duration_s: float
    energy_mj: float | None
    energy_source: EnergySource | None
    mean_power_w: float | None
    samples: int
    clock_event_reasons_seen: list[str]
    sm_clock_median_mhz: float | None
    warnings: list[str]

    def energy_per_image_mj(self, images: int) -> float | None:
        return energy_per_image_mj(self.energy_mj, images)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Sample:
    t: float
    power_w: float | None
    reasons: list[str] | None
    sm_clock_mhz: int | None


class _Sampler(threading.Thread):
    def __init__(self, poll: Callable[[], _Sample], interval_s: float) -> None:
        super().__init__(name="pq-nvml-sampler", daemon=True)
        self._poll = poll
        self._interval = interval_s
        self._stop_event = threading.Event()
        self.samples: list[_Sample] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                self.samples.append(self._poll())
            except Exception as err:  # noqa: BLE001 - reported as a monitor warning
                self.error = err
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5.0)


class DeviceMonitor:
    """Context manager that measures a timed window on one GPU (see the module docstring).

    ``device`` is an NVML index or a ``GPU-...`` UUID; for a torch device use
    ``DeviceMonitor(nvml_device_for_torch(torch.cuda.current_device()))`` (indices differ under
    ``CUDA_VISIBLE_DEVICES``). ``result.index`` is the NVML index.
    ``own_pid`` (default: this process) and ``extra_own_pids`` are not reported as other processes.
    ``sample_interval_s`` is the power-sampling period used when the energy counter is not
    supported; with the counter, reasons and clocks are sampled every ``reason_interval_s``
    (``None`` disables sampling then).
    """

    def __init__(
        self,
        device: int | str = 0,
        own_pid: int | None = None,
        *,
        nvml: Any | None = None,
        extra_own_pids: tuple[int, ...] = (),
        sample_interval_s: float = 0.02,
        reason_interval_s: float | None = 0.1,
        clock_ratio_threshold: float = 0.9,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.device = device
        self.index = device if isinstance(device, int) else -1
        self.own_pids = frozenset({os.getpid() if own_pid is None else own_pid, *extra_own_pids})
        self._nvml_arg = nvml
        self.sample_interval_s = sample_interval_s
        self.reason_interval_s = reason_interval_s
        self.clock_ratio_threshold = clock_ratio_threshold
        self._clock = clock
        self._nvml: Any = None
        self._handle: Any = None
        self._before: DeviceSnapshot | None = None
        self._t0 = 0.0
        self._energy0: int | None = None
        self._power0: float | None = None
        self._sampler: _Sampler | None = None
        self.result: MonitorResult | None = None

    # -- helpers
    def _poll(self) -> _Sample:
        q = _Query(self._nvml)
        sm = q.const("NVML_CLOCK_SM", _CLOCK_SM)
        return _Sample(
            t=self._clock(),
            power_w=_power_w(q, self._handle),
            reasons=_clock_reasons(q, self._handle),
            sm_clock_mhz=q.call("nvmlDeviceGetClockInfo", self._handle, sm),
        )

    def __enter__(self) -> DeviceMonitor:
        self._nvml = load_nvml(self._nvml_arg)
        init_nvml(self._nvml)
        try:
            self._handle, self.index = _handle(self._nvml, self.device)
        except _error_base(self._nvml) as err:
            shutdown_nvml(self._nvml)
            raise BackendUnavailable(f"NVML has no GPU {self.device!r} ({err}).") from err
        self._before = take_snapshot(self.index, self._handle, self._nvml, self.own_pids)
        q = _Query(self._nvml)
        self._t0 = self._clock()
        energy = q.call("nvmlDeviceGetTotalEnergyConsumption", self._handle)
        self._energy0 = None if energy is None else int(energy)
        self._power0 = _power_w(q, self._handle)
        interval = self.sample_interval_s if self._energy0 is None else self.reason_interval_s
        if interval is not None and interval > 0:
            self._sampler = _Sampler(self._poll, interval)
            self._sampler.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            q = _Query(self._nvml)
            t1 = self._clock()
            energy1 = None if self._energy0 is None else q.call("nvmlDeviceGetTotalEnergyConsumption", self._handle)
            power1 = _power_w(q, self._handle)
            if self._sampler is not None:
                self._sampler.stop()
            after = take_snapshot(self.index, self._handle, self._nvml, self.own_pids)
            assert self._before is not None
            self.result = self._build_result(self._before, after, t1, energy1, power1)
        finally:
            shutdown_nvml(self._nvml)

    def _build_result(
        self,
        before: DeviceSnapshot,
        after: DeviceSnapshot,
        t1: float,
        energy1: int | None,
        power1: float | None,
    ) -> MonitorResult:
        duration = max(0.0, t1 - self._t0)
        samples = self._sampler.samples if self._sampler is not None else []
        warnings: list[str] = []
        if self._sampler is not None and self._sampler.error is not None:
            warnings.append(f"NVML sampling stopped early: {self._sampler.error}")

        # Energy: the counter when supported, else integrated power samples.
        energy_mj: float | None = None
        source: EnergySource | None = None
        if self._energy0 is not None and energy1 is not None and int(energy1) >= self._energy0:
            energy_mj = float(int(energy1) - self._energy0)
            source = "counter"
        else:
            series = [(self._t0, self._power0)] + [(s.t, s.power_w) for s in samples] + [(t1, power1)]
            points = [(t, p) for t, p in series if p is not None and self._t0 <= t <= t1]
            energy_mj = integrate_power_mj(points)
            if energy_mj is not None:
                source = "power-sampling"
                if len(points) < 5:
                    warnings.append(
                        f"energy from only {len(points)} power samples over {duration:.3f} s: "
                        "lengthen the timed window for a usable energy figure"
                    )
            else:
                warnings.append("energy unknown: this GPU reports neither an energy counter nor power usage")
        mean_power = energy_mj / 1000.0 / duration if energy_mj is not None and duration > 0 else None

        # Clock-event reasons seen during and right after the window.
        seen: list[str] = []
        for reasons in [s.reasons for s in samples] + [after.clock_event_reasons]:
            for reason in reasons or []:
                if reason not in seen:
                    seen.append(reason)
        throttles = [r for r in seen if r not in BENIGN_CLOCK_REASONS]
        if throttles:
            warnings.append(
                "GPU clocks were limited during the timed window (" + ", ".join(throttles) + "): "
                "timings and energy may not be representative"
            )

        # SM clock against its maximum, ignoring idle moments.
        busy = [
            s.sm_clock_mhz
            for s in samples
            if s.sm_clock_mhz is not None and "GpuIdle" not in (s.reasons or [])
        ]
        if not busy and after.sm_clock_mhz is not None and "GpuIdle" not in (after.clock_event_reasons or []):
            busy = [after.sm_clock_mhz]
        sm_median = float(statistics.median(busy)) if busy else None
        sm_max = after.sm_clock_max_mhz or before.sm_clock_max_mhz
        if sm_median is not None and sm_max:
            if sm_median < self.clock_ratio_threshold * sm_max:
                warnings.append(
                    f"SM clock {sm_median:.0f} MHz is below {self.clock_ratio_threshold:.0%} of its maximum "
                    f"{sm_max} MHz during the window (power/thermal limit or locked clocks?)"
                )

        # Other processes sharing the GPU.
        others: dict[int, GpuProcess] = {}
        for proc in before.other_processes + after.other_processes:
            others.setdefault(proc.pid, proc)
        if others:
            listed = ", ".join(f"{p.pid} ({p.name or '?'})" for p in others.values())
            warnings.append(
                f"other processes use GPU {self.index}: {listed}; they share its time and power "
                "(inside a container NVML may report host PIDs, including this process's own)"
            )
        if before.mig_enabled or after.mig_enabled:
            warnings.append(
                f"MIG mode is enabled on GPU {self.index}: results describe a GPU slice, and NVML "
                "power/energy cover the whole GPU"
            )

        return MonitorResult(
            index=self.index,
            before=before,
            after=after,
            duration_s=duration,
            energy_mj=energy_mj,
            energy_source=source,
            mean_power_w=mean_power,
            samples=len(samples),
            clock_event_reasons_seen=seen,
            sm_clock_median_mhz=sm_median,
            warnings=warnings,
        )
