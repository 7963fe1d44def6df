"""ONNX Runtime on the CPU execution provider: fp32 ONNX, or the Q/DQ INT8 model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from pydantic import Field

from backends.base import Backend, BackendOptions, ModelArtifact, PhaseTimes, Session, SessionInfo
from backends.layer_profile import ort_session_profile
from backends.ort_common import INPUT_NAME, OUTPUT_NAME, create_session, ep_failure, ep_failure_type, import_ort
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


def model_for_precision(artifact: ModelArtifact, precision: str, backend: str, phases: PhaseTimes) -> Path:
    """The ONNX file a precision runs on the CPU: the plain export, or the calibrated Q/DQ model."""
    if precision == "int8":
        if artifact.calibration is None:
            raise HarnessError(f"{backend} int8 needs calibration data; the sweep provides it from the train split")
        return artifact.calibration.qdq_onnx("cpu", phases)
    return artifact.onnx()


class OrtCpuBackend(Backend[OrtCpuOptions]):
    name: ClassVar[str] = "ort-cpu"
    devices: ClassVar[frozenset[str]] = frozenset({"cpu"})
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")
    description: ClassVar[str] = "ONNX Runtime, CPU execution provider (fp32; int8 via Q/DQ)"
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
            return "ort-cpu runs fp32 and int8 only"
        return None

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        self.check_precision(precision)
        phases = PhaseTimes()
        path = model_for_precision(artifact, precision, self.name, phases)
        log: list[str] = []
        session = create_session(path, [(PROVIDER, {})], intra_op_threads=self.options.threads, log=log)
        info = SessionInfo(
            backend=self.name, precision=precision, device="cpu", artifact_bytes=path.stat().st_size,
            details={"providers": session.get_providers(), "onnx": path.name, "onnx_path": str(path),
                     "intra_op_threads": self.options.threads, "onnxruntime": import_ort().__version__,
                     **({"ort_log": log} if log else {})},
            prep_phases=dict(phases.seconds),
        )
        return OrtCpuSession(session, info)
