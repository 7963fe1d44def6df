"""PyTorch eager backend: fp32 on CPU; fp32/fp16/bf16 on CUDA under inference_mode."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import torch

from backends.base import Backend, ModelArtifact, Session, SessionInfo
from harness.errors import BackendUnavailable
from harness.sizes import state_dict_bytes

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cuda_unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no NVIDIA GPU visible (torch.cuda.is_available() is False)"
    return None


class TorchSession(Session):
    def __init__(self, module: torch.nn.Module, precision: str, device: str, info: SessionInfo,
                 channels_last: bool) -> None:
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


class TorchBackend(Backend):
    name: ClassVar[str] = "torch"
    device: ClassVar[str] = "cpu|cuda"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "bf16")
    description: ClassVar[str] = "PyTorch eager (fp32 on CPU; fp32/fp16/bf16 on CUDA)"

    @classmethod
    def unavailable_reason(cls, precision: str) -> str | None:
        if precision == "fp32":
            return None
        reason = cuda_unavailable_reason()
        if reason is not None:
            return f"{precision} on torch needs a CUDA GPU ({reason}); use fp32 on CPU"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "bf16 needs compute capability >= 8.0"
        return None

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        self.check_precision(precision)
        device = self.options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu" and precision != "fp32":
            raise BackendUnavailable(f"torch {precision} needs a CUDA GPU; use fp32 on CPU")
        channels_last = bool(self.options.get("channels_last", device == "cuda"))
        module = copy.deepcopy(artifact.module).eval().to(device=device, dtype=_DTYPES[precision])
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        details: dict[str, Any] = {"torch": torch.__version__, "channels_last": channels_last}
        if self.options.get("compile"):
            with artifact.phases.timed("build"):
                module = torch.compile(module, mode=self.options.get("compile_mode", "max-autotune"))
            details["compile"] = True
        info = SessionInfo(backend=self.name, precision=precision, device=device,
                           artifact_bytes=state_dict_bytes(artifact.module), details=details)
        return TorchSession(module, precision, device, info, channels_last)
