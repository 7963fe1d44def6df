"""ONNX Runtime on the CPU execution provider: fp32 ONNX, the Q/DQ INT8 model, or the FP8 (E4M3) one.

FP8 here is an accuracy reference: the CPU EP emulates E4M3 (QuantizeLinear rounds and saturates,
DequantizeLinear widens, the ops run in FP32), so its accuracy is what FP8 hardware computes up to
accumulation order, and its latency says nothing about FP8 hardware. The session says so
(``details["latency_emulated"]``); comparisons and recommendations leave such latencies out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from pydantic import Field

from backends.base import Backend, BackendOptions, ModelArtifact, PhaseTimes, Session, SessionInfo
from backends.layer_profile import ort_session_profile
from backends.ort_common import INPUT_NAME, OUTPUT_NAME, create_session, ep_failure, ep_failure_type, import_ort
from calib.fp8_qdq import ORT_FP8_OPTIMIZATION
from harness.errors import HarnessError

if TYPE_CHECKING:  # pragma: no cover
    from harness.machine import MachineFacts

PROVIDER = "CPUExecutionProvider"


class OrtCpuOptions(BackendOptions):
    """``backend_options.ort-cpu``."""

    threads: int = Field(default=0, ge=0)  # intra-op threads; 0 lets ONNX Runtime choose


class OrtCpuSession(Session):
    def __init__(self, session: Any, info: SessionInfo) -> None:
        self._session = session
        self._ep_fail = ep_failure_type()
        self.info = info

    def stage(self, host: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(host.numpy(), dtype=np.float32)

    def run(self, staged: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([OUTPUT_NAME], {INPUT_NAME: staged})[0]
        except self._ep_fail as exc:  # fallback is off: the cell fails instead of timing another provider
            raise ep_failure(exc, self.info.details.get("providers")) from None

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(self.stage(host)))

    def layer_profile(self, batch: torch.Tensor) -> dict[str, Any]:
        return ort_session_profile(self.info.details, batch)


#: Why an fp8 cell's latency on the CPU EP is not a measurement of FP8 (stored with the session).
FP8_EMULATION_NOTE = ("FP8 is emulated on the CPU (E4M3 rounding around FP32 kernels): the latency is recorded but "
                      "measures the emulation, never FP8 hardware; it is not compared or recommended")


def model_for_precision(artifact: ModelArtifact, precision: str, backend: str, phases: PhaseTimes) -> Path:
    """The ONNX file a precision runs on the CPU: the plain export, or the calibrated Q/DQ model."""
    if precision in ("int8", "fp8"):
        if artifact.calibration is None:
            raise HarnessError(f"{backend} {precision} needs calibration data; the sweep provides it from the train "
                               "split")
        return artifact.calibration.qdq_onnx("fp8" if precision == "fp8" else "cpu", phases)
    return artifact.onnx()


class OrtCpuBackend(Backend[OrtCpuOptions]):
    name: ClassVar[str] = "ort-cpu"
    devices: ClassVar[frozenset[str]] = frozenset({"cpu"})
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8", "fp8")
    description: ClassVar[str] = "ONNX Runtime, CPU execution provider (fp32; int8 via Q/DQ; fp8 emulated)"
    Options: ClassVar[type[BackendOptions]] = OrtCpuOptions
    options: OrtCpuOptions

    @classmethod
    def unavailable_reason(cls, precision: str, facts: MachineFacts) -> str | None:
        if facts.onnxruntime_version is None:
            return "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu"
        if PROVIDER not in (facts.ort_providers or ()):
            return (f"onnxruntime {facts.onnxruntime_version} lists no {PROVIDER} "
                    f"(it has: {', '.join(facts.ort_providers or ()) or 'none'})")
        if precision not in cls.precisions:
            return "ort-cpu runs fp32, int8 and fp8 (emulated) only"
        return None

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        self.check_precision(precision)
        phases = PhaseTimes()
        path = model_for_precision(artifact, precision, self.name, phases)
        optimization = ORT_FP8_OPTIMIZATION if precision == "fp8" else "all"
        log: list[str] = []
        session = create_session(path, [(PROVIDER, {})], intra_op_threads=self.options.threads, log=log,
                                 optimization=optimization)
        details: dict[str, Any] = {
            "providers": session.get_providers(), "onnx": path.name, "onnx_path": str(path),
            "intra_op_threads": self.options.threads, "onnxruntime": import_ort().__version__,
            "graph_optimization": optimization, **({"ort_log": log} if log else {})}
        if precision == "fp8":
            details["latency_emulated"] = FP8_EMULATION_NOTE
        info = SessionInfo(backend=self.name, precision=precision, device="cpu", artifact_bytes=path.stat().st_size,
                           details=details, prep_phases=dict(phases.seconds))
        return OrtCpuSession(session, info)
