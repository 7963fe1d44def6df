"""Which device a cell ran on, named once: the lock name of its timing windows, the ``device_name`` of
its result and the GPU facts of its ``node`` all come from :func:`current_gpu`."""

from __future__ import annotations

import platform
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    uuid: str | None  # NVML's form, "GPU-..." (torch reports it without the prefix); None on old torch


def current_gpu() -> GpuIdentity | None:
    """The current CUDA device as torch sees it (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    raw = getattr(props, "uuid", None)  # torch >= 2.2 has it
    text = str(raw) if raw is not None else ""
    uuid = None if not text else (text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
    return GpuIdentity(name=str(props.name), uuid=uuid)


def lock_device_id(device: str) -> str:
    """The lock name of a session's device: "cpu", or the current GPU's UUID (its name if torch
    reports no UUID): indices differ between processes with different CUDA_VISIBLE_DEVICES."""
    gpu = current_gpu() if device == "cuda" else None
    if gpu is None:
        return "cpu"
    return gpu.uuid or gpu.name


def device_name(device: str) -> str:
    """The GPU's name for a CUDA cell, else the host's processor."""
    gpu = current_gpu() if device == "cuda" else None
    if gpu is not None:
        return gpu.name
    return platform.processor() or platform.machine()


def node_facts(executor: str, device: str | None, **extra: Any) -> dict[str, Any]:
    """Where a cell ran (``node`` of its result): hostname, the GPU's name and UUID for a CUDA cell,
    the executor, plus executor-specific ``extra`` keys."""
    gpu = current_gpu() if device == "cuda" else None
    return {"hostname": socket.gethostname(), "gpu_name": gpu.name if gpu else None,
            "gpu_uuid": gpu.uuid if gpu else None, "executor": executor, **extra}
