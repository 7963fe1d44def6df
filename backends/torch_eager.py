"""PyTorch eager backend: fp32 on CPU; fp32/tf32/fp16/bf16 on CUDA under inference_mode, each call under
its session's FP32 maths (:class:`MathMode`), optionally replayed from CUDA graphs (``cuda_graphs``)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import model_validator

from backends.base import Backend, BackendOptions, ModelArtifact, PhaseTimes, Session, SessionInfo
from backends.torch_graphs import CapturedCall, GraphCapture
from harness.compression.sizes import state_dict_bytes
from harness.errors import BackendUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from harness.machine import MachineFacts

_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: bf16 runs natively (no emulation) from Ampere on.
BF16_MIN_CC: tuple[int, int] = (8, 0)


#: torch.compile modes that replay CUDA graphs themselves (cudagraph trees): a module compiled so
#: cannot be captured again by ``cuda_graphs``.
COMPILE_MODES_WITH_GRAPHS = frozenset({"reduce-overhead", "max-autotune"})


class TorchOptions(BackendOptions):
    """``backend_options.torch``."""

    device: Literal["cpu", "cuda"] | None = None  # None: cuda when torch sees a GPU, else cpu
    channels_last: bool | None = None  # None: on for cuda, off for cpu
    compile: bool = False  # torch.compile the module (timed as "build")
    compile_mode: str = "max-autotune"
    #: Capture each staged batch's call as a CUDA graph and time its replay (CUDA only): one launch
    #: per call instead of one Python dispatch per operator, so a host-bound model measures the GPU.
    cuda_graphs: bool = False

    @model_validator(mode="after")
    def _graphs_once(self) -> TorchOptions:
        if self.cuda_graphs and self.compile and self.compile_mode in COMPILE_MODES_WITH_GRAPHS:
            raise ValueError(f"cuda_graphs with compile_mode {self.compile_mode!r}: that mode replays CUDA graphs "
                             "itself; use one of them (or compile_mode: max-autotune-no-cudagraphs)")
        return self


@dataclass(frozen=True)
class MathMode:
    """What FP32 convolutions and matmuls compute in for one session: IEEE FP32, or TF32 on tensor
    cores (Ampere and newer). torch keeps this in process-wide switches, and an interleaved unit keeps
    sessions of several precisions alive, so a session sets its mode around *each* call and puts the
    switches back after it: no session relies on what another left behind. The switches are read when
    kernels are chosen on the host, so setting them around the host call is enough (a CUDA graph
    keeps the maths it was captured with)."""

    allow_tf32: bool

    @property
    def label(self) -> str:
        return "tf32" if self.allow_tf32 else "ieee"

    @contextmanager
    def applied(self) -> Iterator[None]:
        switches = _fp32_switches()
        value = self.label if switches[0][1] == "fp32_precision" else self.allow_tf32
        before = [getattr(owner, name) for owner, name in switches]
        try:
            for owner, name in switches:
                setattr(owner, name, value)
            yield
        finally:
            for (owner, name), old in zip(switches, before):
                setattr(owner, name, old)


def _fp32_switches() -> list[tuple[Any, str]]:
    """torch's FP32 maths switches for convolutions and matmuls: the ``fp32_precision`` API where
    torch has it (2.9 and newer; reading the legacy ``allow_tf32`` after the new API was used raises
    there), else the legacy ``allow_tf32`` flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return [(conv, "fp32_precision"), (torch.backends.cuda.matmul, "fp32_precision")]
    return [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]


def math_mode_for(precision: str) -> MathMode:
    """tf32 computes FP32 layers in TF32; fp32 is IEEE; fp16/bf16 keep their few FP32 layers IEEE."""
    return MathMode(allow_tf32=precision == "tf32")


class _NoMath:
    @contextmanager
    def applied(self) -> Iterator[None]:
        yield


class TorchSession(Session):
    """A torch module on one device at one precision. On CUDA each call runs under the session's
    :class:`MathMode`; with ``cuda_graphs`` each staged batch is captured as a CUDA graph
    (:mod:`backends.torch_graphs`) and ``run`` replays it."""

    def __init__(self, module: torch.nn.Module, precision: str, device: str, info: SessionInfo,
                 channels_last: bool, *, math: MathMode | None = None, cuda_graphs: bool = False,
                 stream: torch.cuda.Stream | None = None) -> None:
        self._module = module
        self._dtype = _DTYPES[precision]
        self._device = torch.device(device)
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if stream is None and device == "cuda":
            stream = torch.cuda.current_stream(self._device)
        self._stream = stream
        if math is None and device == "cuda":
            math = math_mode_for(precision)
        self._math: MathMode | _NoMath = math if math is not None else _NoMath()
        if math is not None:
            info.details["fp32_math"] = (f"{math.label} (set around each call: torch's cuDNN convolution and "
                                         "cuBLAS matmul FP32 precision)")
        self._graphs = GraphCapture(self._call, self._device) if cuda_graphs else None
        if self._graphs is not None:
            info.details["cuda_graphs"] = self._graphs.record
        self.info = info

    @property
    def cuda_stream(self) -> torch.cuda.Stream | None:
        return self._stream

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        with self._math.applied(), torch.inference_mode():
            return self._module(x)

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        return host.to(self._device, dtype=self._dtype, memory_format=self._memory_format,
                       non_blocking=host.is_pinned())

    def stage(self, host: torch.Tensor) -> torch.Tensor | CapturedCall:
        staged = self._to_device(host)
        if self._stream is not None:
            self._stream.synchronize()
        if self._graphs is not None:
            return self._graphs.capture(staged)
        return staged

    def run(self, staged: torch.Tensor | CapturedCall) -> torch.Tensor:
        if isinstance(staged, CapturedCall):
            return staged.replay()
        return self._call(staged)

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        x = self._to_device(host)
        if self._graphs is not None:
            return self._graphs.run_copied(x).float().cpu()
        return self._call(x).float().cpu()

    def close(self) -> None:
        if self._graphs is not None:
            self._graphs.release()


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
        if device == "cpu" and opts.cuda_graphs:
            raise BackendUnavailable("backend_options.torch.cuda_graphs needs a CUDA device; this session runs on cpu")
        channels_last = opts.channels_last if opts.channels_last is not None else device == "cuda"
        module = copy.deepcopy(artifact.module).eval().to(device=device, dtype=_DTYPES[precision])
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        details: dict[str, Any] = {"torch": torch.__version__, "channels_last": channels_last}
        if opts.compile:
            with phases.timed("build"):
                module = torch.compile(module, mode=opts.compile_mode)
            details["compile"] = True
            details["compile_mode"] = opts.compile_mode
        info = SessionInfo(backend=self.name, precision=precision, device=device,
                           artifact_bytes=state_dict_bytes(artifact.module), details=details,
                           prep_phases=dict(phases.seconds))
        return TorchSession(module, precision, device, info, channels_last, cuda_graphs=opts.cuda_graphs)
