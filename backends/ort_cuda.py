"""ONNX Runtime on the CUDA execution provider: fp32 ONNX, an FP16 conversion of it, or the Q/DQ model.

One GPU timing definition (issue 8): every ONNX Runtime GPU session (ort-cuda and ort-trt) hands
ONNX Runtime a torch CUDA stream as the provider's ``user_compute_stream`` and exposes it as
:attr:`OrtGpuSession.cuda_stream`.

* ``compute``: ``run(stage(host))`` binds a torch CUDA input and a preallocated torch CUDA output
  through IOBinding and calls ``run_with_iobinding`` with the run option
  ``disable_synchronize_execution_providers=1``: the call enqueues on the user stream and does not
  wait for the device, so the CUDA events the harness records on :attr:`cuda_stream` bracket device
  work exactly as around TensorRT's ``execute_async_v3`` (REFERENCE.md section 10).
* ``e2e``: ``infer(host)`` is a plain ``session.run`` with numpy in and out (copies and
  synchronisation included).

Every session records the same ``timing_definition`` / ``compute_timer`` facts as trt-native.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from pydantic import Field

from backends.base import Backend, ModelArtifact, PhaseTimes, Session, SessionInfo
from backends.gpu_common import (
    GpuBackendOptions,
    admit,
    fp16_onnx,
    ort_gpu_reason,
    timing_facts,
)
from backends.layer_profile import ort_session_profile
from backends.ort_common import (
    INPUT_NAME,
    OUTPUT_NAME,
    captured_native_log,
    create_session,
    ep_failure,
    ep_failure_type,
    import_ort,
)
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.machine import MachineFacts

PROVIDER = "CUDAExecutionProvider"
#: What an FP32 ONNX computes in on the CUDA EP, by precision (its use_tf32 option is per session).
FP32_MATH = {"fp32": "ieee (CUDA EP use_tf32=0)", "tf32": "tf32 (CUDA EP use_tf32=1)"}
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
    use_tf32: bool | None = None,
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
    if use_tf32 is not None:  # the CUDA EP computes FP32 convolutions/matmuls as TF32 on Ampere+ by default
        options["use_tf32"] = ort_bool(use_tf32)
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

    def __init__(self, session: Any, info: SessionInfo, *, device_id: int, stream: Any, run_options: Any,
                 num_outputs: int, profile: tuple[int, int] | None = None, device: torch.device | None = None) -> None:
        self._session = session
        self._ep_fail = ep_failure_type()
        self.info = info
        self.info.details.update(timing_facts())
        self._device_id = device_id
        self._device = device if device is not None else torch.device("cuda", device_id)
        self._stream = stream
        self._run_options = run_options
        self._num_outputs = num_outputs
        self._outputs: dict[int, torch.Tensor] = {}
        self.min_batch, self.max_batch = profile if profile is not None else (1, None)

    @property
    def cuda_stream(self) -> Any:
        """The torch CUDA stream ONNX Runtime computes on (its ``user_compute_stream``)."""
        return self._stream

    def layer_profile(self, batch: torch.Tensor) -> dict[str, Any] | None:
        # Profiling through the TensorRT EP would build a second engine: that session has no profile.
        if "TensorrtExecutionProvider" in (self.info.details.get("providers") or ()):
            return None
        return ort_session_profile(self.info.details, batch)

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
        with torch.cuda.stream(self._stream):
            x = host.to(self._device, dtype=torch.float32).contiguous()
            out = self._output_for(b)
        self._stream.synchronize()
        binding = self._session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", self._device_id, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", self._device_id, np.float32, tuple(out.shape), out.data_ptr())
        return OrtStaged(input=x, output=out, binding=binding)

    def run(self, staged: OrtStaged) -> torch.Tensor:
        try:
            self._session.run_with_iobinding(staged.binding, self._run_options)  # enqueues on the user stream
        except self._ep_fail as exc:
            raise ep_failure(exc, self.info.details.get("providers")) from None
        return staged.output

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        self._check_batch(int(host.shape[0]))
        x = np.ascontiguousarray(host.numpy(), dtype=np.float32)
        try:
            out = self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        except self._ep_fail as exc:  # fallback is off: never a CUDA/CPU result recorded as this provider's
            raise ep_failure(exc, self.info.details.get("providers")) from None
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def warm(self, batch_sizes: tuple[int, ...], input_shape: tuple[int, ...]) -> None:
        """One compute-path call per batch size (cuDNN algorithm search, TensorRT engine builds)."""
        for b in sorted(set(batch_sizes)):
            self.run(self.stage(torch.zeros((b, *input_shape), dtype=torch.float32)))
        self._stream.synchronize()

    def close(self) -> None:
        self._stream.synchronize()
        self._outputs.clear()
        self._session = None


def compute_run_options(ort: Any) -> Any:
    """Run options of the compute path: no provider synchronisation at the end of the run."""
    options = ort.RunOptions()
    options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    return options


def user_stream(device_id: int) -> torch.cuda.Stream:
    """The torch stream handed to ONNX Runtime as ``user_compute_stream`` (needs a GPU)."""
    return torch.cuda.Stream(device=device_id)


class OrtCudaOptions(GpuBackendOptions):
    device_id: int = Field(0, ge=0)
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kSameAsRequested"
    gpu_mem_limit: int | None = Field(None, gt=0)


def ort_cuda_reason(precision: str, facts: MachineFacts) -> str | None:
    """Why ort-cuda cannot run ``precision`` here (None: it can), from the facts only."""
    reason = ort_gpu_reason(facts, PROVIDER)
    if reason is None and precision == "tf32" and facts.gpu_cc is not None and tuple(facts.gpu_cc) < (8, 0):
        cc = facts.gpu_cc
        return (f"tf32 needs compute capability >= 8.0 (Ampere); {facts.gpu_name or 'GPU 0'} has {cc[0]}.{cc[1]}")
    return reason


class OrtCudaBackend(Backend[OrtCudaOptions]):
    """ONNX Runtime's CUDA EP on a user compute stream (options: :class:`OrtCudaOptions`)."""

    name: ClassVar[str] = "ort-cuda"
    devices: ClassVar[frozenset[str]] = frozenset({"cuda"})
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "tf32", "fp16", "int8")
    description: ClassVar[str] = (
        "ONNX Runtime, CUDA execution provider (fp32, tf32 = fp32 with use_tf32; fp16 via an FP16 ONNX; int8 via Q/DQ, "
        "where Q/DQ ops run as separate kernels)"
    )
    Options: ClassVar[type[OrtCudaOptions]] = OrtCudaOptions
    options: OrtCudaOptions

    @classmethod
    def unavailable_reason(cls, precision: str, facts: MachineFacts) -> str | None:
        return super().unavailable_reason(precision, facts) or ort_cuda_reason(precision, facts)

    def _model(self, artifact: ModelArtifact, precision: str, phases: PhaseTimes) -> Path:
        if precision == "int8":
            if artifact.calibration is None:
                raise HarnessError(
                    f"{self.name} int8 needs calibration data; the sweep provides it from the train split"
                )
            # symmetric int8 activations, float biases: the GPU flavour (the source times "calibrate")
            return Path(artifact.calibration.qdq_onnx("tensorrt", phases))
        if precision == "fp16":
            with phases.timed("export"):
                return fp16_onnx(artifact.onnx())
        return Path(artifact.onnx())

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        admit(self, precision)
        phases = PhaseTimes()
        o = self.options
        path = self._model(artifact, precision, phases)
        ort = import_ort()
        stream = user_stream(o.device_id)
        options = ort_cuda_provider_options(
            device_id=o.device_id, stream_handle=stream.cuda_stream,
            cudnn_conv_algo_search=o.cudnn_conv_algo_search, arena_extend_strategy=o.arena_extend_strategy,
            gpu_mem_limit=o.gpu_mem_limit, use_tf32={"fp32": False, "tf32": True}.get(precision),
        )
        log: list[str] = []
        with phases.timed("build"):
            session = create_session(path, [(PROVIDER, options)], log=log)
            info = SessionInfo(
                backend=self.name, precision=precision, device="cuda", artifact_bytes=path.stat().st_size,
                details={"providers": session.get_providers(), "onnx": path.name, "onnx_path": str(path),
                         "onnxruntime": ort.__version__,
                         "provider_options": options, "ort_log": log,
                         **({"fp32_math": FP32_MATH[precision]} if precision in FP32_MATH else {})},
            )
            gpu_session = OrtGpuSession(session, info, device_id=o.device_id, stream=stream,
                                        run_options=compute_run_options(ort), num_outputs=artifact.num_outputs)
            with captured_native_log(log):
                gpu_session.warm(tuple(batch_sizes), artifact.input_shape)
        info.prep_phases = dict(phases.seconds)
        return gpu_session


__all__ = ["OrtCudaBackend", "OrtCudaOptions", "OrtGpuSession", "OrtStaged", "compute_run_options", "ort_bool",
           "ort_cuda_provider_options", "ort_cuda_reason", "user_stream"]
