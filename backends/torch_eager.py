"""PyTorch eager backend: fp32 on CPU; fp32/fp16/bf16 on CUDA under inference_mode."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from backends.base import Backend, BackendOptions, ModelArtifact, PhaseTimes, Session, SessionInfo
from harness.errors import BackendUnavailable
from harness.compression.sizes import state_dict_bytes

if TYPE_CHECKING:  # pragma: no cover
    from harness.machine import MachineFacts

_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: bf16 runs natively (no emulation) from Ampere on.
BF16_MIN_CC: tuple[int, int] = (8, 0)


class TorchOptions(BackendOptions):
    """``backend_options.torch``."""

    device: Literal["cpu", "cuda"] | None = None  # None: cuda when torch sees a GPU, else cpu
    channels_last: bool | None = None  # None: on for cuda, off for cpu
    compile: bool = False  # torch.compile the module (timed as "build")
    compile_mode: str = "max-autotune"


def strict_fp32(allow_tf32: bool = False) -> Callable[[], None]:
    """Switch torch's TF32 paths off (cuDNN convolutions default to TF32 on Ampere and newer; matmuls may be
    set so), or on with ``allow_tf32``; returns the function that restores the flags as they were."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32

    def restore() -> None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before

    return restore


class TorchSession(Session):
    def __init__(self, module: torch.nn.Module, precision: str, device: str, info: SessionInfo,
                 channels_last: bool) -> None:
        self._restore_math: Callable[[], None] | None = None
        if device == "cuda" and precision == "fp32":  # fp32 means IEEE FP32, not TF32, for this session
            self._restore_math = strict_fp32()
            info.details["fp32_math"] = "ieee (torch cudnn.allow_tf32 and cuda.matmul.allow_tf32 off)"
        elif precision == "tf32":
            self._restore_math = strict_fp32(allow_tf32=True)
            info.details["fp32_math"] = "tf32 (torch cudnn.allow_tf32 and cuda.matmul.allow_tf32 on)"
        self._module = module
        self._dtype = _DTYPES[precision]
        self._device = torch.device(device)
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._stream = torch.cuda.current_stream(self._device) if device == "cuda" else None
        self.info = info

    @property
    def cuda_stream(self) -> torch.cuda.Stream | None:
        return self._stream

    def stage(self, host: torch.Tensor) -> torch.Tensor:
        staged = host.to(self._device, dtype=self._dtype, memory_format=self._memory_format)
        if self._stream is not None:
            self._stream.synchronize()
        return staged

    def run(self, staged: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._module(staged)

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = host.to(self._device, dtype=self._dtype, memory_format=self._memory_format,
                        non_blocking=host.is_pinned())
            return self._module(x).float().cpu()

    def close(self) -> None:
        if self._restore_math is not None:
            self._restore_math()
            self._restore_math = None


class TorchBackend(Backend[TorchOptions]):
    name: ClassVar[str] = "torch"
    devices: ClassVar[frozenset[str]] = frozenset({"cpu", "cuda"})
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "tf32", "fp16", "bf16")
    description: ClassVar[str] = "PyTorch eager (fp32 on CPU; fp32/tf32/fp16/bf16 on CUDA)"
    Options: ClassVar[type[BackendOptions]] = TorchOptions
    options: TorchOptions

    @classmethod
    def unavailable_reason(cls, precision: str, facts: MachineFacts) -> str | None:
        if facts.torch_version is None:
            return "torch is not installed"
        if precision == "int8":
            return "int8 is not offered on the torch backend: use ort-cpu, ort-cuda, ort-trt or trt-native"
        if precision == "fp8":
            return ("fp8 is not offered on the torch backend: use trt-native (sm_89+) or ort-cpu (emulated, "
                    "accuracy only)")
        reason = super().unavailable_reason(precision, facts)
        if reason is not None or precision == "fp32":
            return reason
        if not facts.torch_cuda_available:
            return f"{precision} on torch needs a CUDA GPU ({facts.no_gpu_reason}); use fp32 on CPU"
        cc = facts.gpu_cc
        if precision in ("bf16", "tf32") and cc is not None and tuple(cc) < BF16_MIN_CC:
            return (f"{precision} needs compute capability >= {BF16_MIN_CC[0]}.{BF16_MIN_CC[1]} (Ampere); "
                    f"{facts.gpu_name or 'GPU 0'} has {cc[0]}.{cc[1]}")
        return None

    @classmethod
    def uses_cuda(cls, precision: str, options: Mapping[str, Any] | BackendOptions | None = None) -> bool | None:
        device = cls.parse_options(options).device  # type: ignore[attr-defined]
        if device is not None:
            return device == "cuda"
        return True if precision != "fp32" else None  # fp16/bf16 run on CUDA only; fp32 follows the GPU

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        self.check_precision(precision)
        phases = PhaseTimes()
        opts = self.options
        device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu" and precision != "fp32":
            raise BackendUnavailable(f"torch {precision} needs a CUDA GPU; use fp32 on CPU")
        channels_last = opts.channels_last if opts.channels_last is not None else device == "cuda"
        module = copy.deepcopy(artifact.module).eval().to(device=device, dtype=_DTYPES[precision])
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        details: dict[str, Any] = {"torch": torch.__version__, "channels_last": channels_last}
        if opts.compile:
            with phases.timed("build"):
                module = torch.compile(module, mode=opts.compile_mode)
            details["compile"] = True
        info = SessionInfo(backend=self.name, precision=precision, device=device,
                           artifact_bytes=state_dict_bytes(artifact.module), details=details,
                           prep_phases=dict(phases.seconds))
        return TorchSession(module, precision, device, info, channels_last)
