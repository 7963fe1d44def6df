"""ONNX Runtime on the CPU execution provider: fp32 ONNX, or the Q/DQ INT8 model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from backends.base import Backend, ModelArtifact, Session, SessionInfo
from backends.ort_common import INPUT_NAME, OUTPUT_NAME, create_session, import_ort, provider_unavailable_reason
from harness.errors import HarnessError

PROVIDER = "CPUExecutionProvider"


class OrtCpuSession(Session):
    def __init__(self, session: Any, info: SessionInfo) -> None:
        self._session = session
        self.info = info

    def stage(self, host: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(host.numpy(), dtype=np.float32)

    def run(self, staged: np.ndarray) -> np.ndarray:
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: staged})[0]

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(self.stage(host)))


def model_for_precision(artifact: ModelArtifact, precision: str, backend: str) -> Path:
    """The ONNX file a precision runs: the plain export, or the calibrated Q/DQ model."""
    if precision == "int8":
        if artifact.calibration is None:
            raise HarnessError(f"{backend} int8 needs calibration data; the sweep provides it from the train split")
        return artifact.calibration.qdq_onnx()
    return artifact.onnx()


class OrtCpuBackend(Backend):
    name: ClassVar[str] = "ort-cpu"
    device: ClassVar[str] = "cpu"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")
    description: ClassVar[str] = "ONNX Runtime, CPU execution provider (fp32; int8 via Q/DQ)"

    @classmethod
    def unavailable_reason(cls, precision: str) -> str | None:
        return provider_unavailable_reason(PROVIDER)

    def activate(self, artifact: ModelArtifact, precision: str, batch_sizes: tuple[int, ...],
                 cache_dir: Path) -> Session:
        self.check_precision(precision)
        path = model_for_precision(artifact, precision, self.name)
        session = create_session(path, [(PROVIDER, {})], intra_op_threads=int(self.options.get("threads", 0)))
        info = SessionInfo(
            backend=self.name, precision=precision, device="cpu", artifact_bytes=path.stat().st_size,
            details={"providers": session.get_providers(), "onnx": path.name,
                     "onnxruntime": import_ort().__version__},
        )
        return OrtCpuSession(session, info)
