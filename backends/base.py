"""The one small interface every backend implements.

Modelled on Polygraphy's runners: a backend turns a model artifact into a
*session* (``activate``), the session runs batches (``infer``), and is released
(``close``).  A backend knows nothing about sweeps, datasets or reports; it
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
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, NoReturn, Protocol, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from backends.names import PRECISIONS  # noqa: F401 - re-exported: the precisions a backend may declare
from harness.errors import HarnessError, UnsupportedCombination

if TYPE_CHECKING:  # pragma: no cover
    from calib.trt_calibrator import CalibratorCore
    from harness.machine import MachineFacts



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
    """Calibration data and artifacts for INT8 (implemented by ``calib.source.CalibrationData``).

    Every method builds lazily and caches; artifacts carry provenance. Time spent building is
    added to the caller's ``phases`` as ``calibrate`` (zero when a cached artifact is reused).
    """

    @property
    def provenance(self) -> dict[str, Any]: ...

    @property
    def provenance_hash(self) -> str: ...

    def qdq_onnx(self, target: Literal["cpu", "tensorrt"], phases: PhaseTimes) -> Path:
        """Q/DQ INT8 ONNX model for ``target`` (ONNX Runtime quantize_static, QDQ, per-channel)."""
        ...

    def ort_trt_table(self, cache_dir: Path, phases: PhaseTimes) -> Path:
        """TensorRT EP calibration table written into ``cache_dir``."""
        ...

    def trt_calibrator_core(self, batch_size: int, input_shape: tuple[int, ...], *,
                            cache_dir: Path | None = None, buffer_factory: Any = None,
                            tensorrt_version: str | None = None, phases: PhaseTimes) -> CalibratorCore:
        """The native TensorRT calibrator core over full batches (calibration runs inside the build)."""
        ...

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Preprocessed calibration images, float32 NCHW on the host."""
        ...


class UnavailableCalibration:
    """Stands in for calibration that could not be set up: every method raises the original error,
    so only the int8 sessions that ask for calibration fail."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def _raise(self) -> NoReturn:
        raise self.error

    @property
    def provenance(self) -> dict[str, Any]:
        self._raise()

    @property
    def provenance_hash(self) -> str:
        self._raise()

    def qdq_onnx(self, target: Literal["cpu", "tensorrt"], phases: PhaseTimes) -> Path:
        self._raise()

    def ort_trt_table(self, cache_dir: Path, phases: PhaseTimes) -> Path:
        self._raise()

    def trt_calibrator_core(self, batch_size: int, input_shape: tuple[int, ...], *,
                            cache_dir: Path | None = None, buffer_factory: Any = None,
                            tensorrt_version: str | None = None, phases: PhaseTimes) -> CalibratorCore:
        self._raise()

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        self._raise()


@dataclass
class ModelArtifact:
    """A model as handed to a backend: the eval-mode torch module plus lazy forms."""

    name: str
    module: torch.nn.Module
    input_shape: tuple[int, int, int]
    num_outputs: int
    content_hash: str
    onnx: Callable[[], Path]
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
    #: Seconds this activation spent per phase (calibrate, build, ...); zero-cost when caches were reused.
    prep_phases: dict[str, float] = field(default_factory=dict)


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

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def layer_profile(self, batch: torch.Tensor) -> LayerProfile | None:
        """The per-layer view of one pass over ``batch`` (in the stored ``layer_profile`` layout), or
        None when this backend has no profiler. Called in its own pass, never inside a timing window."""
        return None


class BackendOptions(BaseModel):
    """A backend's options (``backend_options.<name>`` in the config); unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _options_error(backend: str, options_type: type[BackendOptions], exc: ValidationError) -> HarnessError:
    allowed = ", ".join(options_type.model_fields) or "(none)"
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"backend_options.{backend}: unknown option '{where}'; allowed: {allowed}")
        else:
            parts.append(f"backend_options.{backend}.{where}: {err['msg']} (got {err.get('input')!r})")
    return HarnessError("; ".join(parts))


OptionsT = TypeVar("OptionsT", bound=BackendOptions)

#: A per-layer profile as stored in a cell result (source, batch_size, layers, by_op_type, ...).
LayerProfile = dict[str, Any]


class Backend(abc.ABC, Generic[OptionsT]):
    """Factory of sessions for one runtime; ``OptionsT`` is its typed ``Options`` model."""

    name: ClassVar[str]
    devices: ClassVar[frozenset[str]]  # where its sessions may run: {"cpu"}, {"cuda"} or both
    precisions: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    options: OptionsT

    def __init__(self, options: Mapping[str, Any] | BackendOptions | None = None) -> None:
        self.options = self.parse_options(options)  # type: ignore[assignment]

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any] | BackendOptions | None) -> BackendOptions:
        """The typed options; a :class:`HarnessError` naming the bad option (and the allowed ones)."""
        if isinstance(raw, cls.Options):
            return raw
        if isinstance(raw, BackendOptions):
            raw = raw.model_dump()
        if raw is not None and not isinstance(raw, Mapping):
            raise HarnessError(f"backend_options.{cls.name}: expected a mapping of option names to values, "
                               f"got {raw!r}")
        try:
            return cls.Options.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise _options_error(cls.name, cls.Options, exc) from None

    @classmethod
    def unavailable_reason(cls, precision: str, facts: MachineFacts) -> str | None:
        """THE rule for this backend x precision: None when it can run on a machine with ``facts``,
        else why not. A pure function of ``facts``: it never probes (callers without facts probe the
        machine once, :func:`harness.machine.probe_machine`, and pass them); subclasses extend it."""
        if precision not in cls.precisions:
            return f"backend '{cls.name}' cannot run precision '{precision}'; it supports: {', '.join(cls.precisions)}"
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

        All expensive work (export, calibration, engine build) happens here, never inside a timed
        loop. The activation times its own phases in a fresh ``PhaseTimes`` (passing it to the
        calibration source) and returns them as ``session.info.prep_phases``.
        """
