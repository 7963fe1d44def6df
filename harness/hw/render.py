"""Render the ``harness hw`` report as rich tables (the console is the caller's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.gpu import capabilities as caps
from harness.hw.records import HwReport

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def _host_table(report: HwReport) -> Any:
    from rich.table import Table
    from rich.text import Text

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
    if report.image:
        host.add_row("image", report.image)
    host.add_row("Python", report.python_version)
    for name, version in report.packages.items():
        host.add_row(name, Text(version) if version else Text("not installed", style="dim"))
    host.add_row("ORT providers", ", ".join(report.ort_providers) if report.ort_providers else "-")
    host.add_row("torch CUDA", f"{report.torch_cuda_available} (built for CUDA {_fmt(report.torch_cuda_version)})")
    host.add_row("libnvinfer", report.libnvinfer or "-")
    return host


def _gpu_tables(report: HwReport) -> list[Any]:
    from rich.table import Table

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
    tc = Table(title="Tensor-core precisions")
    tc.add_column("#")
    for p in caps.TENSOR_CORE_PRECISIONS:
        tc.add_column(p)
    for g in report.gpus:
        tc.add_row(str(g.index), *("yes" if g.tensor_cores.get(p) else "no" for p in caps.TENSOR_CORE_PRECISIONS))
    return [gpus, tc]


def _availability_tables(report: HwReport) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    backends = list(dict.fromkeys(a.backend for a in report.backend_availability))
    precisions = list(dict.fromkeys(a.precision for a in report.backend_availability))
    matrix = Table(title="Backend availability")
    matrix.add_column("backend", style="bold")
    for p in precisions:
        matrix.add_column(p)
    for b in backends:
        cells = [
            Text("yes", style="green") if report.availability(b, p).ok else Text("no", style="red") for p in precisions
        ]
        matrix.add_row(b, *cells)

    reasons = Table(title="Why not")
    reasons.add_column("backend")
    reasons.add_column("precision")
    reasons.add_column("reason", overflow="fold")
    for a in report.backend_availability:
        if not a.ok:
            reasons.add_row(a.backend, a.precision, Text(a.reason or ""))
    return [matrix, reasons]


def render_hw_report(report: HwReport, console: Console) -> None:
    """Print the report on ``console`` (the only output channel used). User text prints literally."""
    from rich.text import Text

    console.print(_host_table(report))
    if not report.gpus:
        console.print(Text(report.gpu_note or "no NVIDIA GPU visible", style="bold yellow"))
    else:
        for table in _gpu_tables(report):
            console.print(table)
    for table in _availability_tables(report):
        console.print(table)
    for w in report.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), w))
