"""NVML queries (package ``nvidia-ml-py``, module ``pynvml``): module access, device mapping,
snapshots and the device inventory. The sampling monitor is :mod:`harness.gpu.nvml_monitor`.

Everything here imports ``pynvml`` lazily and accepts an injected module (``nvml=``) so that tests
can pass a fake with the handful of functions used. Newer NVML names are tried first and the older
ones used as fallback (CUDA 13 deprecates ``...ClocksThrottleReasons`` and
``nvmlDeviceGetTemperature``); every per-field query tolerates ``NVMLError_NotSupported`` and
similar per-device refusals by recording ``None``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

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
CLOCK_SM = 1
CLOCK_MEM = 2
TEMPERATURE_GPU = 0
# Error codes after which nothing else will work either: propagate instead of recording None.
_FATAL_ERROR_CODES = frozenset({1, 9, 12, 15, 16, 18})  # uninitialized, driver not loaded,
# library not found, GPU is lost, reset required, RM version mismatch


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


def error_base(nvml: Any) -> type[BaseException]:
    base = getattr(nvml, "NVMLError", None)
    return base if isinstance(base, type) and issubclass(base, BaseException) else Exception


def init_nvml(nvml: Any) -> None:
    """``nvmlInit`` turned into BackendUnavailable with a clear message."""
    try:
        nvml.nvmlInit()
    except error_base(nvml) as err:
        raise BackendUnavailable(
            f"NVML could not be initialised ({err}): no NVIDIA driver is loaded or no GPU is visible "
            "to this process (in Docker, run with --gpus all or the compose GPU reservation)."
        ) from err


def shutdown_nvml(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except error_base(nvml):
        pass


def nvml_unavailable_reason(nvml: Any | None = None) -> str | None:
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
    except error_base(module) as err:
        return f"NVML is initialised but cannot count devices ({err})."
    finally:
        shutdown_nvml(module)
    if count == 0:
        return "NVML is initialised but reports no NVIDIA GPU."
    return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Query:
    """Per-field NVML calls that turn per-device refusals into ``None``."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.error = error_base(nvml)

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


#: NVML UUID prefixes: a full GPU's UUID starts with ``GPU-``, a MIG instance's with ``MIG-``.
UUID_PREFIXES: tuple[str, ...] = ("GPU-", "MIG-")


class DeviceNotMapped(BackendUnavailable):
    """NVML has no device matching the one the benchmark runs on (so device checks cannot cover it)."""


def nvml_device_for_torch(device_index: int) -> int | str:
    """The NVML device behind torch's CUDA device ``device_index``: an NVML index or a UUID.

    Torch numbers devices after ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER`` (fastest first by
    default); NVML numbers all GPUs in PCI order. The UUID from torch's device properties names the
    same device in both, but torch prints it without NVML's ``GPU-``/``MIG-`` prefix, and whether it
    is a full GPU or a MIG instance is not known here: :func:`resolve_device` tries both prefixes.
    Without a UUID, ``CUDA_VISIBLE_DEVICES`` is mapped by hand.
    """
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(device_index), "uuid", None)
    except Exception:  # noqa: BLE001 - no torch / no CUDA: fall back to the environment
        uuid = None
    if uuid is not None and str(uuid):
        return str(uuid)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if 0 <= device_index < len(entries):
            entry = entries[device_index]
            return int(entry) if entry.isdigit() else entry
    return device_index


def bare_uuid(uuid: str) -> str:
    """``"MIG-abc"`` / ``"GPU-abc"`` / ``"abc"`` -> ``"abc"`` (the form torch prints)."""
    for prefix in UUID_PREFIXES:
        if uuid.startswith(prefix):
            return uuid[len(prefix) :]
    return uuid


def uuid_candidates(device: str) -> tuple[str, ...]:
    """The NVML UUIDs ``device`` may stand for: itself when prefixed, else ``GPU-`` then ``MIG-``."""
    if device.startswith(UUID_PREFIXES):
        return (device,)
    return tuple(prefix + device for prefix in UUID_PREFIXES)


@dataclass(frozen=True)
class ResolvedDevice:
    """An NVML device found for a benchmark device.

    ``handle`` and ``index`` are the *full GPU*'s: clocks, power and energy exist only there (on a
    MIG instance NVML reports them for the whole GPU). ``mig_uuid`` is set when the benchmark runs
    on a MIG instance of that GPU.
    """

    handle: Any
    index: int
    uuid: str | None
    mig_uuid: str | None = None

    @property
    def is_mig(self) -> bool:
        return self.mig_uuid is not None


def _resolved(nvml: Any, q: Query, handle: Any, uuid: str) -> ResolvedDevice:
    flag = q.call("nvmlDeviceIsMigDeviceHandle", handle)  # pynvml returns a ctypes c_uint
    is_mig = bool(int(getattr(flag, "value", flag) or 0)) or uuid.startswith("MIG-")
    parent = q.call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle) if is_mig else None
    gpu = handle if parent is None else parent
    index = q.call("nvmlDeviceGetIndex", gpu)
    gpu_uuid = q.call("nvmlDeviceGetUUID", gpu) if is_mig else uuid
    return ResolvedDevice(
        handle=gpu,
        index=-1 if index is None else int(index),
        uuid=None if gpu_uuid is None else _text(gpu_uuid),
        mig_uuid=uuid if is_mig else None,
    )


def _find_mig_instance(nvml: Any, q: Query, wanted: str) -> ResolvedDevice | None:
    """Walk the MIG instances of every MIG-enabled GPU (drivers that do not resolve MIG UUIDs)."""
    count = q.call("nvmlDeviceGetCount") or 0
    for index in range(int(count)):
        gpu = q.call("nvmlDeviceGetHandleByIndex", index)
        if gpu is None or not _enabled(q.call("nvmlDeviceGetMigMode", gpu)):
            continue
        for slot in range(int(q.call("nvmlDeviceGetMaxMigDeviceCount", gpu) or 0)):
            mig = q.call("nvmlDeviceGetMigDeviceHandleByIndex", gpu, slot)
            uuid = None if mig is None else q.call("nvmlDeviceGetUUID", mig)
            if uuid is not None and bare_uuid(_text(uuid)) == wanted:
                gpu_uuid = q.call("nvmlDeviceGetUUID", gpu)
                return ResolvedDevice(gpu, index, None if gpu_uuid is None else _text(gpu_uuid), _text(uuid))
    return None


def resolve_device(nvml: Any, device: int | str) -> ResolvedDevice:
    """The NVML device for an NVML index or a UUID (prefixed or as torch prints it; full GPU or MIG).

    Raises :class:`DeviceNotMapped` (a BackendUnavailable) naming every UUID tried when none matches.
    """
    q = Query(nvml)
    if isinstance(device, int):
        try:
            return ResolvedDevice(nvml.nvmlDeviceGetHandleByIndex(device), device, None)
        except q.error as err:
            if getattr(err, "value", None) in _FATAL_ERROR_CODES:
                raise
            raise DeviceNotMapped(f"NVML has no GPU {device} ({err}).") from err
    tried: list[str] = []
    for uuid in uuid_candidates(device):
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        except q.error as err:
            if getattr(err, "value", None) in _FATAL_ERROR_CODES:
                raise
            tried.append(f"{uuid} ({err})")
            continue
        return _resolved(nvml, q, handle, uuid)
    found = _find_mig_instance(nvml, q, bare_uuid(device))
    if found is not None:
        return found
    raise DeviceNotMapped(
        "NVML has no device " + " or ".join(tried) + "; NVML and CUDA see different devices "
        "(container device list, CUDA_VISIBLE_DEVICES?)"
    )


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


def _process_name(q: Query, pid: int) -> str | None:
    name = q.call("nvmlSystemGetProcessName", pid)
    if name:
        return Path(_text(name)).name
    try:  # PIDs from NVML may belong to another PID namespace (containers): best effort only
        return Path(f"/proc/{pid}/comm").read_text().strip() or None
    except OSError:
        return None


def _processes(q: Query, handle: Any, own_pids: frozenset[int]) -> list[GpuProcess]:
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


def clock_reasons(q: Query, handle: Any) -> list[str] | None:
    mask = q.first(("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"), handle)
    return None if mask is None else decode_clock_event_reasons(int(mask))


def _temperature(q: Query, handle: Any) -> int | None:
    sensor = q.const("NVML_TEMPERATURE_GPU", TEMPERATURE_GPU)
    value = q.first(("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"), handle, sensor)
    if value is None:
        return None
    value = getattr(value, "temperature", value)  # some versions return the v1 struct
    return int(value)


def power_w(q: Query, handle: Any) -> float | None:
    mw = q.call("nvmlDeviceGetPowerUsage", handle)
    return None if mw is None else mw / 1000.0


def take_snapshot(
    index: int,
    handle: Any,
    nvml: Any,
    own_pids: frozenset[int] = frozenset(),
) -> DeviceSnapshot:
    """Query one device (NVML must already be initialised)."""
    q = Query(nvml)
    sm = q.const("NVML_CLOCK_SM", CLOCK_SM)
    mem = q.const("NVML_CLOCK_MEM", CLOCK_MEM)
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
        clock_event_reasons=clock_reasons(q, handle),
        temperature_c=_temperature(q, handle),
        power_w=power_w(q, handle),
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
        q = Query(module)
        driver = q.call("nvmlSystemGetDriverVersion")
        cuda = q.first(("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"))
        sm = q.const("NVML_CLOCK_SM", CLOCK_SM)
        mem = q.const("NVML_CLOCK_MEM", CLOCK_MEM)
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
