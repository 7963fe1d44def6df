"""The one small interface every backend implements.

Modelled on Polygraphy's runners: a backend turns a model artifact into a
*session* (activate), the session runs batches (infer), and is closed
(deactivate).  A backend knows nothing about sweeps, datasets or reports; it
receives a :class:`ModelArtifact` whose other forms (ONNX file, Q/DQ model,
calibration data) are lazy loaders built by the caller, so each backend pulls
only what it needs and the expensive steps happen once and are cached.

Two entry points per session define the two timing definitions, the same for
every backend:

* ``compute``: ``run(stage(host))`` with the staged input already where the
  backend computes (device memory on GPU); no copies are timed.
* ``e2e``: ``infer(host)``, a host tensor in and a host tensor out, copies and
  synchronisation included.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from harness.errors import UnsupportedCombination

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")


class PhaseTimes:
    """Wall time spent per preparation phase (load, prune, export, calibrate, build)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def timed(self, phase: str) -> _PhaseContext:
        return _PhaseContext(self, phase)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class _PhaseContext:
    def __init__(self, owner: PhaseTimes, phase: str) -> None:
        self._owner, self._phase, self._start = owner, phase, 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._owner.add(self._phase, time.perf_counter() - self._start)


class CalibrationSource(Protocol):
    """Calibration data and artifacts for INT8 (implemented in ``calib/``).

    Every method builds lazily and caches; artifacts carry provenance.
    """

    @property
    def provenance(self) -> dict[str, Any]: ...

    @property
    def provenance_hash(self) -> str: ...

    def qdq_onnx(self) -> Path:
        """Q/DQ INT8 ONNX model (ONNX Runtime quantize_static, QDQ, per-channel)."""
        ...

    def ort_trt_table(self, cache_dir: Path) -> Path:
        """TensorRT EP calibration table written into ``cache_dir``."""
        ...

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Preprocessed calibration images, float32 NCHW on the host."""
        ...


@dataclass
class ModelArtifact:
    """A model as handed to a backend: the eval-mode torch module plus lazy forms."""

    name: str
    module: torch.nn.Module
    input_shape: tuple[int, int, int]
    num_outputs: int
    content_hash: str
    onnx: Callable[[], Path]
    phases: PhaseTimes = field(default_factory=PhaseTimes)
    calibration: CalibrationSource | None = None
    int8_mode: str = "auto"  # auto | implicit | explicit (TensorRT)
    sparse_weights: bool = False
    notes: dict[str, Any] = field(default_factory=dict)  # what preparing it found (e.g. ONNX export check)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros((batch_size, *self.input_shape), dtype=torch.float32)


@dataclass
class SessionInfo:
    """What actually ran: reported with every result."""

    backend: str
    precision: str
    device: str
    artifact_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Session(abc.ABC):
    """A prepared model on one backend at one precision."""

    info: SessionInfo

    @property
    def device(self) -> str:
        return self.info.device

    @property
    def cuda_stream(self) -> torch.cuda.Stream | None:
        """The stream ``run`` enqueues work on (for CUDA-event timing); None on CPU."""
        return None

    @abc.abstractmethod
    def stage(self, host: torch.Tensor) -> Any:
        """Copy a host batch to where the backend computes (not timed)."""

    @abc.abstractmethod
    def run(self, staged: Any) -> Any:
        """Compute on a staged batch; the output stays where it was computed."""

    @abc.abstractmethod
    def infer(self, host: torch.Tensor) -> torch.Tensor:
        """Host batch in, host logits out (float32), synchronised."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the session's resources."""


class Backend(abc.ABC):
    """Factory of sessions for one runtime."""

    name: ClassVar[str]
    device: ClassVar[str]  # "cpu" or "cuda"
    precisions: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    @classmethod
    def unavailable_reason(cls, precision: str) -> str | None:
        """None when this backend can run ``precision`` on this machine, else why not."""
        return None

    @classmethod
    def check_precision(cls, precision: str) -> None:
        if precision not in cls.precisions:
            raise UnsupportedCombination(
                f"backend '{cls.name}' cannot run precision '{precision}'; "
                f"it supports: {', '.join(cls.precisions)}"
            )

    @abc.abstractmethod
    def activate(
        self,
        artifact: ModelArtifact,
        precision: str,
        batch_sizes: tuple[int, ...],
        cache_dir: Path,
    ) -> Session:
        """Build a session able to run every batch size in ``batch_sizes``.

        All expensive work (export, calibration, engine build) happens here,
        never inside a timed loop; phase times go to ``artifact.phases``.
        """
