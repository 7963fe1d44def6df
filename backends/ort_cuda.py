"""ONNX Runtime on the CUDA execution provider: fp32 ONNX, an FP16 conversion of it, or the Q/DQ model.

Timing definitions for ONNX Runtime on a GPU:

* ``compute``: ``run(stage(host))`` binds a torch CUDA input and a preallocated torch CUDA output
  through IOBinding and calls ``session.run_with_iobinding``. That call is synchronous: ONNX
  Runtime synchronises its execution providers' streams before returning (unless a run option
  disables it). The session therefore hands ONNX Runtime a torch stream as the provider's
  ``user_compute_stream`` and exposes it as :attr:`OrtGpuSession.cuda_stream`, so the CUDA events
  recorded around each call measure device time on the stream ORT computes on; since the call
  also blocks the host, that interval additionally contains ORT's per-call host overhead (much as
  a perf_counter around the call would). Without a user stream (``user_stream: false``, and by
  default on ort-trt) ``cuda_stream`` is None and the harness times ``compute`` with perf_counter
  around the synchronous call.
* ``e2e``: ``infer(host)`` is a plain ``session.run`` with numpy in and out (copies included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from backends.base import Backend, ModelArtifact, Session, SessionInfo
from backends.gpu_common import (
    admit,
    bool_option,
    cuda_unavailable_reason,
    fp16_onnx,
    qdq_model,
)
from backends.ort_common import (
    INPUT_NAME,
    OUTPUT_NAME,
    create_session,
    import_ort,
    provider_unavailable_reason,
)
from harness.errors import HarnessError

PROVIDER = "CUDAExecutionProvider"
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
ARENA_STRATEGIES = ("kNextPowerOfTwo", "kSameAsRequested")


def ort_bool(value: bool) -> str:
    """ONNX Runtime's Python provider options take booleans as the strings 'True' / 'False'."""
    return "True" if value else "False"


def ort_cuda_provider_options(
    *,
    device_id: int = 0,
    stream_handle: int | None = None,
    cudnn_conv_algo_search: str = "EXHAUSTIVE",
    arena_extend_strategy: str = "kSameAsRequested",
    gpu_mem_limit: int | None = None,
    do_copy_in_default_stream: bool = True,
) -> dict[str, str]:
    """CUDAExecutionProvider options, every value a string as ONNX Runtime parses them."""
    if cudnn_conv_algo_search not in CONV_ALGO_SEARCH:
        raise HarnessError(f"cudnn_conv_algo_search must be one of {', '.join(CONV_ALGO_SEARCH)}")
    if arena_extend_strategy not in ARENA_STRATEGIES:
        raise HarnessError(f"arena_extend_strategy must be one of {', '.join(ARENA_STRATEGIES)}")
    options = {
        "device_id": str(int(device_id)),
        "cudnn_conv_algo_search": cudnn_conv_algo_search,
        "do_copy_in_default_stream": ort_bool(do_copy_in_default_stream),
        "arena_extend_strategy": arena_extend_strategy,
    }
    if gpu_mem_limit is not None:
        options["gpu_mem_limit"] = str(int(gpu_mem_limit))
    if stream_handle is not None:
        options["has_user_compute_stream"] = ort_bool(True)
        options["user_compute_stream"] = str(int(stream_handle))
    return options


@dataclass
class OrtStaged:
    """A staged batch: torch CUDA input and output, and the IOBinding that ties them to the session."""

    input: torch.Tensor
    output: torch.Tensor
    binding: Any

    @property
    def shape(self) -> torch.Size:
        return self.input.shape


class OrtGpuSession(Session):
    """An ONNX Runtime session on a CUDA-based provider, timed through IOBinding."""

    def __init__(self, session: Any, info: SessionInfo, *, device_id: int, stream: torch.cuda.Stream | None,
                 num_outputs: int, profile: tuple[int, int] | None = None) -> None:
        self._session = session
        self.info = info
        self._device_id = device_id
        self._device = torch.device("cuda", device_id)
        self._stream = stream
        self._num_outputs = num_outputs
        self._outputs: dict[int, torch.Tensor] = {}
        self.min_batch, self.max_batch = profile if profile is not None else (1, None)

    @property
    def cuda_stream(self) -> torch.cuda.Stream | None:
        return self._stream

    def _check_batch(self, b: int) -> None:
        if b < self.min_batch or (self.max_batch is not None and b > self.max_batch):
            raise HarnessError(
                f"batch size {b} is outside the TensorRT profile [{self.min_batch}, {self.max_batch}]; "
                "it would rebuild the engine: include it in the sweep's batch sizes"
            )

    def _output_for(self, b: int) -> torch.Tensor:
        out = self._outputs.get(b)
        if out is None:
            out = torch.empty((b, self._num_outputs), dtype=torch.float32, device=self._device)
            self._outputs[b] = out
        return out

    def stage(self, host: torch.Tensor) -> OrtStaged:
        b = int(host.shape[0])
        self._check_batch(b)
        stream = self._stream or torch.cuda.current_stream(self._device)
        with torch.cuda.stream(stream):
            x = host.to(self._device, dtype=torch.float32).contiguous()
            out = self._output_for(b)
        stream.synchronize()
        binding = self._session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", self._device_id, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", self._device_id, np.float32, tuple(out.shape), out.data_ptr())
        return OrtStaged(input=x, output=out, binding=binding)

    def run(self, staged: OrtStaged) -> torch.Tensor:
        self._session.run_with_iobinding(staged.binding)
        return staged.output

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        self._check_batch(int(host.shape[0]))
        x = np.ascontiguousarray(host.numpy(), dtype=np.float32)
        return torch.from_numpy(np.asarray(self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], dtype=np.float32))

    def warm(self, batch_sizes: tuple[int, ...], input_shape: tuple[int, ...]) -> None:
        """One compute-path call per batch size (cuDNN algorithm search, TensorRT engine builds)."""
        for b in sorted(set(batch_sizes)):
            self.run(self.stage(torch.zeros((b, *input_shape), dtype=torch.float32)))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._outputs.clear()
        self._session = None



def gpu_provider_reason(provider: str) -> str | None:
    """None when a CUDA GPU is visible and ONNX Runtime lists ``provider``; else a one-line reason."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        return reason
    return provider_unavailable_reason(provider)


class OrtCudaBackend(Backend):
    """Options: ``device_id`` (0), ``user_stream`` (True), ``cudnn_conv_algo_search`` (EXHAUSTIVE),
    ``arena_extend_strategy`` (kSameAsRequested), ``gpu_mem_limit`` (bytes)."""

    name: ClassVar[str] = "ort-cuda"
    device: ClassVar[str] = "cuda"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    description: ClassVar[str] = (
        "ONNX Runtime, CUDA execution provider (fp32; fp16 via an FP16 ONNX; int8 via Q/DQ, "
        "where Q/DQ ops run as separate kernels)"
    )
    options_known: ClassVar[tuple[str, ...]] = (
        "device_id", "user_stream", "cudnn_conv_algo_search", "arena_extend_strategy", "gpu_mem_limit",
    )

    @classmethod
    def unavailable_reason(cls, precision: str) -> str | None:
        return gpu_provider_reason(PROVIDER)

    def _model(self, artifact: ModelArtifact, precision: str) -> Path:
        if precision == "int8":
            if artifact.calibration is None:
                raise HarnessError(
                    f"{self.name} int8 needs calibration data; the sweep provides it from the train split"
                )
            # symmetric int8 activations, float biases: the GPU flavour (the source times "calibrate")
            return qdq_model(artifact.calibration, "tensorrt")
        if precision == "fp16":
            with artifact.phases.timed("export"):
                return fp16_onnx(artifact.onnx())
        return artifact.onnx()

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        admit(self, precision)
        device_id = int(self.options.get("device_id", 0))
        path = self._model(artifact, precision)
        stream = torch.cuda.Stream(device=device_id) if bool_option(self.options.get("user_stream", True)) else None
        options = ort_cuda_provider_options(
            device_id=device_id,
            stream_handle=stream.cuda_stream if stream is not None else None,
            cudnn_conv_algo_search=str(self.options.get("cudnn_conv_algo_search", "EXHAUSTIVE")),
            arena_extend_strategy=str(self.options.get("arena_extend_strategy", "kSameAsRequested")),
            gpu_mem_limit=self.options.get("gpu_mem_limit"),
        )
        with artifact.phases.timed("build"):
            session = create_session(path, [(PROVIDER, options)])
            info = SessionInfo(
                backend=self.name, precision=precision, device="cuda", artifact_bytes=path.stat().st_size,
                details={"providers": session.get_providers(), "onnx": path.name,
                         "onnxruntime": import_ort().__version__, "provider_options": options,
                         "compute_timer": "cuda events on user_compute_stream" if stream is not None
                         else "perf_counter around synchronous run_with_iobinding"},
            )
            gpu_session = OrtGpuSession(session, info, device_id=device_id, stream=stream,
                                        num_outputs=artifact.num_outputs)
            gpu_session.warm(tuple(batch_sizes), artifact.input_shape)
        return gpu_session


__all__ = ["OrtCudaBackend", "OrtGpuSession", "OrtStaged", "gpu_provider_reason", "ort_bool",
           "ort_cuda_provider_options"]
