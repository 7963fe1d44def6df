"""``harness hw``: what this machine has, and which backend x precision combinations can run on it.

``collect_hw_report()`` never fails because a library or the GPU is missing: it records ``None``
and says why. GPU facts come from NVML (``pynvml``) when it works, else from ``torch.cuda``.
``backend_availability(facts)`` holds the rules and is a pure function of ``BackendFacts``, so the
rules can be tested with made-up GPUs.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.gpu import capabilities as caps
from harness.gpu.nvml import DeviceInfo, list_devices, load_nvml

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

BACKENDS: tuple[str, ...] = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "trt-native")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")

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

ORT_GPU_HINT = (
    "install onnxruntime-gpu matching the CUDA/TensorRT of this machine (e.g. onnxruntime-gpu==1.20.* for "
    "TensorRT 10.4 / CUDA 12.x) and uninstall the CPU-only onnxruntime package"
)


# ---------------------------------------------------------------------------------- report types


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


@dataclass
class Availability:
    backend: str
    precision: str
    ok: bool
    reason: str


@dataclass
class BackendFacts:
    """Everything the availability rules look at (collected, or made up in tests)."""

    torch_version: str | None = None
    torch_cuda_available: bool = False
    torch_cuda_note: str | None = None
    onnxruntime_version: str | None = None
    ort_providers: list[str] | None = None
    tensorrt_version: str | None = None
    tensorrt_error: str | None = None
    libnvinfer: str | None = None
    gpu_visible: bool = False
    gpu_cc: tuple[int, int] | None = None
    gpu_name: str | None = None


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

    def availability(self, backend: str, precision: str) -> Availability:
        for item in self.backend_availability:
            if item.backend == backend and item.precision == precision:
                return item
        raise KeyError((backend, precision))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_json(report: HwReport, indent: int = 2) -> str:
    return json.dumps(report.to_dict(), indent=indent, sort_keys=False)


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


# ---------------------------------------------------------------------------------- library probes


def probe_torch() -> tuple[str | None, bool, str | None, str | None, list[GpuReport]]:
    """(version, cuda available, note, CUDA runtime version, GPUs seen by torch)."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return None, False, "torch is not installed", None, []
    version = str(torch.__version__)
    cuda_version = getattr(torch.version, "cuda", None)
    try:
        available = bool(torch.cuda.is_available())
    except Exception as err:  # noqa: BLE001 - driver problems surface here
        return version, False, f"torch.cuda.is_available() failed: {err}", cuda_version, []
    if not available:
        note = "torch.cuda.is_available() is False"
        if cuda_version is None:
            note += f" (this torch {version} is a CPU-only build)"
        return version, False, note, cuda_version, []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        cc = (int(props.major), int(props.minor))
        gpus.append(
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
    return version, True, None, cuda_version, gpus


def probe_onnxruntime() -> tuple[str | None, list[str] | None]:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        return None, None
    try:
        providers = list(ort.get_available_providers())
    except Exception:  # noqa: BLE001
        providers = None
    return str(getattr(ort, "__version__", None) or ""), providers


def probe_tensorrt() -> tuple[str | None, str | None]:
    """(version, error): imports ``tensorrt`` (which loads libnvinfer)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as err:
        if err.name == "tensorrt":
            return None, "tensorrt is not installed"
        return None, f"tensorrt is installed but fails to import: {err}"
    except Exception as err:  # noqa: BLE001 - e.g. OSError: libnvinfer.so.10 not found
        return None, f"tensorrt is installed but fails to import: {err}"
    return str(getattr(trt, "__version__", "unknown")), None


def probe_libnvinfer(majors: tuple[int, ...] = (10, 11)) -> str | None:
    """The libnvinfer soname the dynamic loader can open (what ORT's TensorRT EP needs)."""
    for major in majors:
        name = f"libnvinfer.so.{major}"
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


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
            )
        )
    return out


# ---------------------------------------------------------------------------------- rules


def _no_gpu_reason(facts: BackendFacts) -> str:
    return f"no NVIDIA GPU visible ({facts.torch_cuda_note or 'torch.cuda.is_available() is False'})"


def _major_mismatch(pair: caps.PairCheck | None, trt_version: str | None) -> bool:
    """ORT's TensorRT EP was built for another TensorRT major: its library will not load."""
    if pair is None or pair.ok is not False or not pair.expected_trt or not trt_version:
        return False
    return pair.expected_trt.split(".")[0] != str(caps.parse_version(trt_version)[0])


def backend_availability(facts: BackendFacts) -> list[Availability]:
    """Usable? and why not, for every backend x precision (see the module docstring)."""
    out: list[Availability] = []

    def add(backend: str, precision: str, ok: bool, reason: str) -> None:
        out.append(Availability(backend, precision, ok, reason))

    cc = facts.gpu_cc
    gpu_label = f"{facts.gpu_name or 'GPU'} (cc {caps.cc_text(cc)})" if cc else (facts.gpu_name or "GPU")

    # torch
    if facts.torch_version is None:
        for p in PRECISIONS:
            add("torch", p, False, "torch is not installed")
    else:
        add("torch", "fp32", True, "CUDA" if facts.torch_cuda_available else "CPU")
        for p in ("fp16", "bf16"):
            if not facts.torch_cuda_available:
                add("torch", p, False, f"torch on CPU runs fp32 only: {_no_gpu_reason(facts)}")
            elif p == "bf16" and cc is not None and cc < (8, 0):
                add("torch", p, False, f"bf16 needs compute capability >= 8.0; {gpu_label} has {caps.cc_text(cc)}")
            else:
                add("torch", p, True, f"CUDA, {gpu_label}")
        add("torch", "int8", False, "int8 is not offered on the torch backend: use ort-cpu, ort-cuda, ort-trt or trt-native")

    # onnxruntime
    providers = facts.ort_providers or []
    if facts.onnxruntime_version is None:
        for b in ("ort-cpu", "ort-cuda", "ort-trt"):
            for p in PRECISIONS:
                add(b, p, False, "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu")
    else:
        # ort-cpu
        cpu_ok = "CPUExecutionProvider" in providers
        for p in PRECISIONS:
            if not cpu_ok:
                add("ort-cpu", p, False, "onnxruntime lists no CPUExecutionProvider")
            elif p == "fp32":
                add("ort-cpu", p, True, "CPUExecutionProvider")
            elif p == "int8":
                add("ort-cpu", p, True, "CPUExecutionProvider with a statically quantized (Q/DQ) model")
            else:
                add("ort-cpu", p, False, "ort-cpu runs fp32 and int8 only")

        # ort-cuda
        for p in PRECISIONS:
            if "CUDAExecutionProvider" not in providers:
                add("ort-cuda", p, False, f"onnxruntime has no CUDAExecutionProvider: {ORT_GPU_HINT}")
            elif not facts.gpu_visible:
                add("ort-cuda", p, False, _no_gpu_reason(facts))
            elif p == "fp32":
                add("ort-cuda", p, True, "CUDAExecutionProvider")
            elif p == "fp16":
                add("ort-cuda", p, True, "CUDAExecutionProvider with an FP16-converted model")
            elif p == "int8":
                add(
                    "ort-cuda",
                    p,
                    True,
                    "via a Q/DQ model (the CUDA EP has few INT8 kernels: expect little speed-up)",
                )
            else:
                add("ort-cuda", p, False, "bf16 is not offered on ort-cuda")

        # ort-trt
        trt_major_for_ort = 11 if caps.parse_version(facts.onnxruntime_version or "0.0")[:2] >= caps.ORT_FIRST_FOR_TRT11 else 10
        trt_rules = (
            caps.trt_precision_support(facts.tensorrt_version, cc)
            if facts.tensorrt_version and cc is not None
            else None
        )
        pair = (
            caps.check_ort_trt_pair(facts.onnxruntime_version, facts.tensorrt_version)
            if facts.tensorrt_version and facts.onnxruntime_version
            else None
        )
        for p in PRECISIONS:
            if "TensorrtExecutionProvider" not in providers:
                add("ort-trt", p, False, f"onnxruntime has no TensorrtExecutionProvider: {ORT_GPU_HINT}")
            elif facts.libnvinfer is None:
                add(
                    "ort-trt",
                    p,
                    False,
                    f"TensorRT's libnvinfer.so.{trt_major_for_ort} cannot be loaded: install TensorRT "
                    f"{trt_major_for_ort}.x (or put its lib directory on LD_LIBRARY_PATH); without it ORT "
                    "silently falls back to CUDA",
                )
            elif not facts.gpu_visible:
                add("ort-trt", p, False, _no_gpu_reason(facts))
            elif p == "bf16":
                add("ort-trt", p, False, "bf16 is not offered on ort-trt (use trt-native)")
            elif _major_mismatch(pair, facts.tensorrt_version):
                assert pair is not None
                add("ort-trt", p, False, pair.reason)
            elif trt_rules is not None and not trt_rules[p].ok:
                add("ort-trt", p, False, trt_rules[p].reason)
            elif p == "int8" and trt_major_for_ort >= 11:
                add("ort-trt", p, True, "TensorRT 11 via ORT: needs a Q/DQ model (calibration tables no longer apply)")
            else:
                note = "TensorrtExecutionProvider"
                if p == "int8":
                    note += " with a calibration table or a Q/DQ model"
                    if cc is not None and not caps.tensor_core_precisions(cc)["int8"]:
                        note += f"; note: {gpu_label} has no INT8 tensor cores, so INT8 is usually no faster than FP16"
                if pair is not None and pair.ok is not True:
                    note += f" (warning: {pair.reason})"
                add("ort-trt", p, True, note)

    # trt-native
    for p in PRECISIONS:
        if facts.tensorrt_version is None:
            add("trt-native", p, False, facts.tensorrt_error or "tensorrt is not installed")
        elif not facts.gpu_visible or not facts.torch_cuda_available:
            reason = _no_gpu_reason(facts)
            if facts.gpu_visible:
                reason = f"trt-native uses torch CUDA tensors as device buffers: {facts.torch_cuda_note}"
            add("trt-native", p, False, reason)
        elif cc is None:
            add("trt-native", p, True, "compute capability unknown: precision rules not checked")
        else:
            rule = caps.trt_precision_support(facts.tensorrt_version, cc)[p]
            add("trt-native", p, rule.ok, rule.reason)
    return out


# ---------------------------------------------------------------------------------- collection


def collect_hw_report(*, nvml: Any | None = None, use_nvml: bool = True) -> HwReport:
    """Probe this machine (lazily importing each library; nothing missing is fatal)."""
    warnings: list[str] = []
    packages = package_versions()
    torch_version, torch_cuda, torch_note, torch_cuda_version, torch_gpus = probe_torch()
    ort_version, ort_providers = probe_onnxruntime()
    trt_version, trt_error = probe_tensorrt()
    if trt_version is None and packages.get("tensorrt") and trt_error is None:
        trt_error = "tensorrt is not installed"
    libnvinfer = probe_libnvinfer()

    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        warnings.append(
            "both onnxruntime and onnxruntime-gpu are installed; they provide the same module: "
            "uninstall both and install one"
        )

    gpus: list[GpuReport] = []
    nvml_note: str | None = None
    if use_nvml:
        try:
            gpus = gpus_from_nvml(list_devices(load_nvml(nvml)))
        except Exception as err:  # noqa: BLE001 - BackendUnavailable or an NVML failure
            nvml_note = str(err)
    if not gpus and torch_gpus:
        gpus = torch_gpus
    if gpus and torch_gpus and len(gpus) != len(torch_gpus):
        warnings.append(
            f"NVML sees {len(gpus)} GPU(s) but torch sees {len(torch_gpus)} (CUDA_VISIBLE_DEVICES?); "
            "GPU indices in this report are NVML's"
        )

    gpu_note = None
    if not gpus:
        parts = [torch_note or "torch.cuda.is_available() is False"]
        if nvml_note:
            parts.append(f"NVML: {nvml_note.rstrip('.')}")
        gpu_note = "no NVIDIA GPU visible (" + "; ".join(parts) + "); CPU backends only"
    elif not torch_cuda:
        warnings.append(f"NVML sees a GPU but torch cannot use it: {torch_note}")

    first = gpus[0] if gpus else None
    facts = BackendFacts(
        torch_version=torch_version,
        torch_cuda_available=torch_cuda,
        torch_cuda_note=torch_note,
        onnxruntime_version=ort_version,
        ort_providers=ort_providers,
        tensorrt_version=trt_version,
        tensorrt_error=trt_error,
        libnvinfer=libnvinfer,
        gpu_visible=bool(gpus),
        gpu_cc=None if first is None else first.compute_capability,
        gpu_name=None if first is None else first.name,
    )
    if ort_version and trt_version:
        pair = caps.check_ort_trt_pair(ort_version, trt_version)
        if pair.ok is not True:
            warnings.append(pair.reason)
    if len({g.compute_capability for g in gpus}) > 1:
        warnings.append("GPUs of different compute capabilities: availability below describes GPU 0")

    return HwReport(
        host=collect_host(),
        python_version=sys.version.split()[0],
        packages=packages,
        ort_providers=ort_providers,
        torch_cuda_available=torch_cuda,
        torch_cuda_version=torch_cuda_version,
        gpus=gpus,
        gpu_note=gpu_note,
        tensorrt_version=trt_version,
        libnvinfer=libnvinfer,
        backend_availability=backend_availability(facts),
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------- rendering


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def render_hw_report(report: HwReport, console: Console) -> None:
    """Print the report as rich tables on ``console`` (the only output channel used)."""
    from rich.table import Table

    host = Table(title="Host", show_header=False)
    host.add_column("key", style="bold")
    host.add_column("value")
    h = report.host
    host.add_row("CPU", h.cpu_model)
    host.add_row("cores", f"{_fmt(h.cpu_count)} ({_fmt(h.cpu_usable)} usable)")
    mem = "-" if h.memory_total_gib is None else f"{h.memory_total_gib:.1f} GiB"
    if h.memory_limit_gib is not None:
        mem += f" (cgroup limit {h.memory_limit_gib:.1f} GiB)"
    host.add_row("memory", mem)
    host.add_row("OS", h.os)
    host.add_row("Python", report.python_version)
    for name, version in report.packages.items():
        host.add_row(name, version or "[dim]not installed[/dim]")
    host.add_row("ORT providers", ", ".join(report.ort_providers) if report.ort_providers else "-")
    host.add_row("torch CUDA", f"{report.torch_cuda_available} (built for CUDA {_fmt(report.torch_cuda_version)})")
    host.add_row("libnvinfer", report.libnvinfer or "-")
    console.print(host)

    if not report.gpus:
        console.print(f"[bold yellow]{report.gpu_note}[/bold yellow]")
    else:
        gpus = Table(title="GPUs")
        for col in ("#", "name", "cc", "arch", "memory", "driver", "CUDA drv", "SM MHz (cur/max)", "mem MHz (cur/max)"):
            gpus.add_column(col)
        for g in report.gpus:
            gpus.add_row(
                str(g.index),
                g.name or "-",
                "-" if g.compute_capability is None else caps.cc_text(g.compute_capability),
                g.architecture or "-",
                "-" if g.memory_total_mib is None else f"{g.memory_total_mib / 1024:.1f} GiB",
                g.driver_version or "-",
                g.cuda_driver_version or "-",
                f"{_fmt(g.sm_clock_mhz)}/{_fmt(g.sm_clock_max_mhz)}",
                f"{_fmt(g.mem_clock_mhz)}/{_fmt(g.mem_clock_max_mhz)}",
            )
        console.print(gpus)
        tc = Table(title="Tensor-core precisions")
        tc.add_column("#")
        for p in caps.TENSOR_CORE_PRECISIONS:
            tc.add_column(p)
        for g in report.gpus:
            tc.add_row(str(g.index), *("yes" if g.tensor_cores.get(p) else "no" for p in caps.TENSOR_CORE_PRECISIONS))
        console.print(tc)

    matrix = Table(title="Backend availability")
    matrix.add_column("backend", style="bold")
    for p in PRECISIONS:
        matrix.add_column(p)
    for b in BACKENDS:
        cells = []
        for p in PRECISIONS:
            a = report.availability(b, p)
            cells.append("[green]yes[/green]" if a.ok else "[red]no[/red]")
        matrix.add_row(b, *cells)
    console.print(matrix)

    reasons = Table(title="Why / how", show_lines=False)
    reasons.add_column("backend")
    reasons.add_column("precision")
    reasons.add_column("")
    reasons.add_column("reason", overflow="fold")
    for a in report.backend_availability:
        reasons.add_row(a.backend, a.precision, "ok" if a.ok else "no", a.reason)
    console.print(reasons)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
