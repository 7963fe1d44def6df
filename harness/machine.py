"""One probe of the facts that decide which backend x precision can run on this machine.

``probe_machine()`` imports each library lazily and never fails because one is missing: it records
``None`` and why. Every availability rule (``Backend.unavailable_reason(precision, facts)``) is a
pure function of :class:`MachineFacts`, so the rules can be tested with made-up machines, and
config validation, preflight, ``harness hw`` and activation all ask the same rule.
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MachineFacts:
    """Everything the availability rules look at (probed, or made up in tests)."""

    torch_version: str | None = None
    torch_cuda_available: bool = False
    torch_cuda_note: str | None = None  # why torch cannot use CUDA (None when it can)
    onnxruntime_version: str | None = None
    ort_providers: tuple[str, ...] | None = None  # None: onnxruntime is not importable
    tensorrt_version: str | None = None
    tensorrt_error: str | None = None  # why ``import tensorrt`` failed (None when it worked)
    libnvinfer: str | None = None  # the libnvinfer soname the dynamic loader can open
    gpu_visible: bool = False
    gpu_cc: tuple[int, int] | None = None  # compute capability of GPU 0
    gpu_name: str | None = None

    @property
    def no_gpu_reason(self) -> str:
        return f"no NVIDIA GPU visible ({self.torch_cuda_note or 'torch.cuda.is_available() is False'})"


def probe_torch_cuda() -> tuple[str | None, bool, str | None, str | None, tuple[int, int] | None]:
    """(torch version, CUDA usable, why not, GPU 0 name, GPU 0 compute capability)."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return None, False, "torch is not installed", None, None
    version = str(torch.__version__)
    try:
        available = bool(torch.cuda.is_available())
    except Exception as err:  # noqa: BLE001 - driver problems surface here
        return version, False, f"torch.cuda.is_available() failed: {err}", None, None
    if not available:
        note = "torch.cuda.is_available() is False"
        if getattr(torch.version, "cuda", None) is None:
            note += f" (this torch {version} is a CPU-only build)"
        return version, False, note, None, None
    major, minor = torch.cuda.get_device_capability(0)
    return version, True, None, str(torch.cuda.get_device_name(0)), (int(major), int(minor))


def probe_onnxruntime() -> tuple[str | None, tuple[str, ...] | None]:
    """(version, available providers); (None, None) when onnxruntime is not importable."""
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        return None, None
    try:
        providers: tuple[str, ...] | None = tuple(ort.get_available_providers())
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


def probe_machine() -> MachineFacts:
    """Probe this machine once (each library imported lazily; nothing missing is fatal)."""
    torch_version, cuda, cuda_note, gpu_name, gpu_cc = probe_torch_cuda()
    ort_version, providers = probe_onnxruntime()
    trt_version, trt_error = probe_tensorrt()
    return MachineFacts(
        torch_version=torch_version,
        torch_cuda_available=cuda,
        torch_cuda_note=cuda_note,
        onnxruntime_version=ort_version,
        ort_providers=providers,
        tensorrt_version=trt_version,
        tensorrt_error=trt_error,
        libnvinfer=probe_libnvinfer() if providers and "TensorrtExecutionProvider" in providers else None,
        gpu_visible=cuda,
        gpu_cc=gpu_cc,
        gpu_name=gpu_name,
    )
