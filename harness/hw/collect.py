"""Collect the ``harness hw`` report: host, packages, GPUs (NVML, else torch) and backend availability.

Library facts come from :func:`harness.machine.probe_machine` (one probe, shared with config
validation and preflight); this module adds what only the report shows: host resources, package
versions, every GPU with its clocks, and warnings. Nothing missing is fatal: it is recorded with why.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.gpu import capabilities as caps
from harness.gpu.nvml_query import DeviceInfo, list_devices, load_nvml
from harness.hw.availability import AvailabilityRule, availability_matrix
from harness.hw.records import GpuReport, HostInfo, HwReport
from harness.machine import MachineFacts, probe_libnvinfer, probe_machine

#: Distribution names whose versions the report lists (first installed one wins per key).
PACKAGE_DISTS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime", "ort-nightly-gpu", "ort-nightly"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings"),
    "pynvml": ("nvidia-ml-py", "pynvml"),
    "numpy": ("numpy",),
}


# ---------------------------------------------------------------------------------- host facts


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def collect_host() -> HostInfo:
    cpu_model = None
    cpuinfo = _read("/proc/cpuinfo")
    if cpuinfo:
        for line in cpuinfo.splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_total = None
    meminfo = _read("/proc/meminfo")
    if meminfo:
        for line in meminfo.splitlines():
            if line.startswith("MemTotal:"):
                memory_total = int(line.split()[1]) / 2**20  # kB -> GiB
    limit = None
    raw = _read("/sys/fs/cgroup/memory.max") or _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if raw and raw.strip().isdigit():
        value = int(raw.strip()) / 2**30
        if memory_total is None or value < memory_total:
            limit = value
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return HostInfo(
        cpu_model=cpu_model or platform.processor() or platform.machine() or "unknown",
        cpu_count=os.cpu_count(),
        cpu_usable=usable,
        memory_total_gib=None if memory_total is None else round(memory_total, 2),
        memory_limit_gib=None if limit is None else round(limit, 2),
        os=platform.platform(),
        machine=platform.machine(),
    )


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, dists in PACKAGE_DISTS.items():
        out[key] = None
        for dist in dists:
            try:
                out[key] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# ---------------------------------------------------------------------------------- GPUs


def torch_cuda_version() -> str | None:
    """The CUDA runtime torch was built for (None: CPU-only build or no torch)."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return None
    return getattr(torch.version, "cuda", None)


def gpus_from_torch() -> list[GpuReport]:
    """Every GPU torch sees (call only when ``facts.torch_cuda_available``)."""
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        cc = (int(props.major), int(props.minor))
        out.append(
            GpuReport(
                index=i,
                name=str(props.name),
                compute_capability=cc,
                architecture=caps.architecture_name(cc),
                memory_total_mib=props.total_memory / 2**20,
                driver_version=None,
                cuda_driver_version=None,
                sm_clock_mhz=None,
                sm_clock_max_mhz=None,
                mem_clock_mhz=None,
                mem_clock_max_mhz=None,
                tensor_cores=caps.tensor_core_precisions(cc),
                source="torch",
            )
        )
    return out


def gpus_from_nvml(devices: list[DeviceInfo]) -> list[GpuReport]:
    out = []
    for d in devices:
        cc = d.compute_capability
        out.append(
            GpuReport(
                index=d.index,
                name=d.name,
                compute_capability=cc,
                architecture=None if cc is None else caps.architecture_name(cc),
                memory_total_mib=d.memory_total_mib,
                driver_version=d.driver_version,
                cuda_driver_version=d.cuda_driver_version,
                sm_clock_mhz=d.sm_clock_mhz,
                sm_clock_max_mhz=d.sm_clock_max_mhz,
                mem_clock_mhz=d.mem_clock_mhz,
                mem_clock_max_mhz=d.mem_clock_max_mhz,
                tensor_cores={} if cc is None else caps.tensor_core_precisions(cc),
                source="nvml",
                mig_enabled=d.mig_enabled,
            )
        )
    return out


# ---------------------------------------------------------------------------------- the report


def _library_warnings(facts: MachineFacts) -> list[str]:
    out: list[str] = []
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        out.append(
            "both onnxruntime and onnxruntime-gpu are installed; they provide the same module: "
            "uninstall both and install one"
        )
    if facts.onnxruntime_version and facts.tensorrt_version and facts.ort_providers and (
        "TensorrtExecutionProvider" in facts.ort_providers
    ):
        pair = caps.check_ort_trt_pair(facts.onnxruntime_version, facts.tensorrt_version)
        if pair.ok is not True:
            out.append(pair.reason)
    note = caps.ort_gpu_note(facts.tensorrt_version, facts.ort_providers)
    if note is not None:
        out.append(note)
    return out


def _gpu_warnings(gpus: list[GpuReport], torch_gpus: int, facts: MachineFacts) -> list[str]:
    out: list[str] = []
    if gpus and torch_gpus and len(gpus) != torch_gpus:
        out.append(
            f"NVML sees {len(gpus)} GPU(s) but torch sees {torch_gpus} (CUDA_VISIBLE_DEVICES?); "
            "GPU indices in this report are NVML's"
        )
    if gpus and not facts.torch_cuda_available:
        out.append(f"NVML sees a GPU but torch cannot use it: {facts.torch_cuda_note}")
    if len({g.compute_capability for g in gpus}) > 1:
        out.append("GPUs of different compute capabilities: availability below describes GPU 0")
    if any(g.mig_enabled for g in gpus):
        out.append(
            "MIG mode is enabled: a run sees a GPU slice (MIG-... device), and NVML power/energy cover the whole GPU"
        )
    cc = facts.gpu_cc or next((g.compute_capability for g in gpus if g.compute_capability), None)
    if cc is not None and not caps.tensor_core_precisions(cc)["int8"]:
        out.append(
            f"compute capability {caps.cc_text(cc)} has no INT8 tensor cores: INT8 is usually no faster than FP16 here"
        )
    return out


def collect_hw_report(
    *,
    nvml: Any | None = None,
    use_nvml: bool = True,
    facts: MachineFacts | None = None,
    rules: Mapping[str, AvailabilityRule] | None = None,
) -> HwReport:
    """Probe this machine (``facts``/``rules``/``nvml`` injectable for tests; nothing missing is fatal)."""
    facts = probe_machine() if facts is None else facts
    warnings = _library_warnings(facts)

    gpus: list[GpuReport] = []
    nvml_note: str | None = None
    if use_nvml:
        try:
            gpus = gpus_from_nvml(list_devices(load_nvml(nvml)))
        except Exception as err:  # noqa: BLE001 - BackendUnavailable or an NVML failure
            nvml_note = str(err)
    torch_gpus = gpus_from_torch() if facts.torch_cuda_available else []
    if not gpus:
        gpus = torch_gpus
    gpu_note = None
    if not gpus:
        parts = [facts.torch_cuda_note or "torch.cuda.is_available() is False"]
        if nvml_note:
            parts.append(f"NVML: {nvml_note.rstrip('.')}")
        gpu_note = "no NVIDIA GPU visible (" + "; ".join(parts) + "); CPU backends only"
    warnings += _gpu_warnings(gpus, len(torch_gpus), facts)

    return HwReport(
        host=collect_host(),
        python_version=sys.version.split()[0],
        packages=package_versions(),
        ort_providers=None if facts.ort_providers is None else list(facts.ort_providers),
        torch_cuda_available=facts.torch_cuda_available,
        torch_cuda_version=torch_cuda_version(),
        gpus=gpus,
        gpu_note=gpu_note,
        tensorrt_version=facts.tensorrt_version,
        libnvinfer=facts.libnvinfer or probe_libnvinfer(),
        backend_availability=availability_matrix(facts, rules),
        warnings=warnings,
        image=os.environ.get("HARNESS_IMAGE") or None,
    )
