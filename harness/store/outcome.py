"""What one sweep cell produces, typed: its identity, status, result fields or error.

Shared by the sweep (which builds outcomes), the result store (which commits and reads them),
the exports and the reports. ``to_dict`` gives exactly the JSON stored in the database since the
first release (same keys), and ``from_dict`` reads old databases back; keys this version does not
know are kept in ``extra`` so nothing is lost on a round trip.
"""

from __future__ import annotations

import base64
import traceback as tb_module
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from harness.errors import HarnessError
from harness.measure import stats
from harness.measure.launch import LaunchCheck
from harness.store.fingerprint import dict_hash

CellStatus = Literal["ok", "error"]


def cell_key(identity: dict[str, Any]) -> str:
    """Stable key of a cell: a hash of its identity mapping (the database's primary key)."""
    return dict_hash(identity)[:24]


@dataclass(frozen=True)
class CellIdentity:
    """What identifies a cell (model, weights, dataset, pruning, backend, precision, batch size,
    and the calibration settings for int8)."""

    model: str
    weights: str
    dataset: str
    dataset_size: str | None
    pruner: str
    amount: float
    prune_options: dict[str, Any]
    backend: str
    precision: str
    batch_size: int
    calibration: dict[str, Any] | None = None  # int8 cells only
    # Written only when set, so cells without them keep the keys stored since the first release:
    recover: dict[str, Any] | None = None  # the pruner's recovery options (a fine-tune after pruning)
    int8: dict[str, Any] | None = None  # an int8 variant: sensitivity, max_accuracy_drop, held-out set
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model, "weights": self.weights, "dataset": self.dataset,
            "dataset_size": self.dataset_size, "pruner": self.pruner, "amount": self.amount,
            "prune_options": self.prune_options, "backend": self.backend, "precision": self.precision,
            "batch_size": self.batch_size,
        }
        for name in ("calibration", "recover", "int8"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellIdentity:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            model=data["model"], weights=data.get("weights", "pretrained"), dataset=data["dataset"],
            dataset_size=data.get("dataset_size"), pruner=data["pruner"], amount=data["amount"],
            prune_options=data.get("prune_options") or {}, backend=data["backend"], precision=data["precision"],
            batch_size=data["batch_size"], calibration=data.get("calibration"), recover=data.get("recover"),
            int8=data.get("int8"), extra={k: v for k, v in data.items() if k not in known},
        )

    @property
    def key(self) -> str:
        return cell_key(self.to_dict())

    @property
    def label(self) -> str:
        """One line for humans, e.g. ``resnet18 l1@0.5 ort-cpu int8 b32``."""
        return (f"{self.model} {self.pruner}@{self.amount:g} {self.backend} {self.precision} "
                f"b{self.batch_size}")


#: Timing keys a window may lack: old databases predate them, and energy is measured on GPUs only.
OPTIONAL_TIMING_KEYS = ("samples_ns", "energy_mj_per_image", "ci", "stability", "window", "host_load",
                        "until_stable", "energy", "launch")


@dataclass(frozen=True)
class Uncertainty:
    """A window's median CI and stability verdict, as stored or, for windows stored without them,
    computed from its raw samples (``source`` says which)."""

    ci: stats.MedianCI | None
    stable: bool | None
    reasons: tuple[str, ...]
    source: Literal["stored", "computed from samples_ns", "none"]

    @property
    def ci_ms(self) -> tuple[float, float] | None:
        return None if self.ci is None else (self.ci.low_ms, self.ci.high_ms)

    @property
    def instability(self) -> str:
        return "; ".join(self.reasons)


def _stored_ci(data: Any) -> stats.MedianCI | None:
    if not isinstance(data, dict):
        return None
    names = [f.name for f in fields(stats.MedianCI)]
    if not all(n in data for n in names):
        return None
    return stats.MedianCI(**{n: data[n] for n in names})


@dataclass(frozen=True)
class TimingWindow:
    """One timing definition of a cell, as measured: the loop's settings, its statistics, the raw
    samples per repeat, and (when measured) the CI of the median, the stability verdict, the window's
    lock and host load, until-stable convergence and energy. Immutable; ``to_dict`` is the stored JSON."""

    definition: str
    timer: str
    batch_size: int
    config: dict[str, Any]
    stats: dict[str, Any]  # median_ms, mean_ms, min_ms, p90/p95/p99_ms, stdev_ms, cv, throughput_ips, samples
    samples_ns: list[list[int]] | None = None
    energy_mj_per_image: float | None = None
    ci: dict[str, Any] | None = None
    stability: dict[str, Any] | None = None
    window: dict[str, Any] | None = None
    host_load: dict[str, Any] | None = None
    until_stable: dict[str, Any] | None = None
    #: How the energy per image was measured (:class:`harness.measure.energy.WindowEnergy`; GPU windows only).
    energy: dict[str, Any] | None = None
    #: Host issue time against device time (:class:`harness.measure.launch.LaunchCheck`; CUDA-event windows only).
    launch: dict[str, Any] | None = None
    #: Optional keys the stored entry lacks (old databases; energy off the GPU): never written back.
    absent: frozenset[str] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def median_ms(self) -> float:
        return self.stats["median_ms"]

    @property
    def throughput_ips(self) -> float | None:
        return self.stats.get("throughput_ips")

    @property
    def launch_check(self) -> LaunchCheck | None:
        """The host-bound check of a GPU window (None: not a CUDA-event window, or stored before it existed)."""
        return LaunchCheck.from_dict(self.launch)

    @property
    def host_bound(self) -> bool:
        check = self.launch_check
        return check is not None and check.host_bound

    def uncertainty(self, device: str | None, device_warnings: Sequence[str] = (),
                    ci: stats.MedianCI | None = None) -> Uncertainty:
        """The CI and stability verdict: the stored ones, else computed from the raw samples (the one
        place this rule lives). ``ci``: a CI the caller bootstrapped itself (a comparison's), used
        instead of the stored one."""
        ci = ci or _stored_ci(self.ci)
        stored = self.stability if isinstance(self.stability, dict) and "stable" in self.stability else None
        if stored is not None and ci is not None:
            return Uncertainty(ci, bool(stored["stable"]), tuple(stored.get("reasons") or []), "stored")
        if not self.samples_ns:
            if stored is not None:
                return Uncertainty(ci, bool(stored["stable"]), tuple(stored.get("reasons") or []), "stored")
            return Uncertainty(ci, None, (), "none")
        ci = ci or stats.median_ci(self.samples_ns, batch_size=self.batch_size)
        if stored is not None:
            return Uncertainty(ci, bool(stored["stable"]), tuple(stored.get("reasons") or []), "stored")
        verdict = stats.assess_stability(self.samples_ns, "cuda" if device == "cuda" else "cpu", ci=ci,
                                         device_warnings=list(device_warnings))
        return Uncertainty(ci, verdict.stable, tuple(verdict.reasons), "computed from samples_ns")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"definition": self.definition, "timer": self.timer, "batch_size": self.batch_size,
                               "config": self.config, "stats": self.stats}
        for key in OPTIONAL_TIMING_KEYS:
            if key not in self.absent:
                out[key] = getattr(self, key)
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingWindow:
        known = {f.name for f in fields(cls)} - {"extra", "absent"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   absent=frozenset(k for k in OPTIONAL_TIMING_KEYS if k not in data),
                   extra={k: v for k, v in data.items() if k not in known})


#: Result keys written only when measured, so a result without them has exactly the keys stored by
#: the first release (and old rows round-trip unchanged).
OPTIONAL_RESULT_KEYS = frozenset({"layer_profile", "predictions", "calibration", "node", "int8_precision"})


@dataclass(frozen=True)
class CellResult:
    """The measurements of a finished cell (the ``result`` JSON of the database)."""

    accuracy: dict[str, Any] | None = None  # top1, top1_1000, samples, batch_size
    accuracy_note: str | None = None
    timings: list[TimingWindow] = field(default_factory=list)  # one per timing definition
    original_size_bytes: int | None = None
    compressed_size_bytes: int | None = None
    pruning: dict[str, Any] | None = None  # PruneReport.to_dict plus "sizes"
    prep_phases_s: dict[str, float] = field(default_factory=dict)
    prep_time_s: float | None = None
    session: dict[str, Any] | None = None  # backend, precision, device, details
    device: str | None = None
    device_name: str | None = None
    device_report: dict[str, Any] | None = None
    device_warnings: list[str] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)
    harness_commit: str | None = None
    timing_config: dict[str, Any] | None = None
    artifact_notes: dict[str, Any] = field(default_factory=dict)
    # Per-layer view from a separate profiling pass: source, batch_size, layers, by_op_type (or None).
    layer_profile: dict[str, Any] | None = None
    # Top-1 predicted output index per evaluation image, in split order (see decode_predictions).
    predictions: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None  # int8 cells: the calibration source's provenance
    node: dict[str, Any] | None = None  # hostname, gpu_name, gpu_uuid, executor (+ executor details)
    # int8 variants: per Q/DQ flavour, the sensitivity table and the nodes kept in FP32 (and why)
    int8_precision: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name != "extra" and not (f.name in OPTIONAL_RESULT_KEYS and getattr(self, f.name) is None)}
        out["timings"] = [t.to_dict() for t in self.timings]
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values["timings"] = [TimingWindow.from_dict(t) for t in values.get("timings") or []]
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def timing(self, definition: str) -> TimingWindow | None:
        """The window of one timing definition (None when the cell has none)."""
        return next((t for t in self.timings if t.definition == definition), None)

    @property
    def top1(self) -> float | None:
        return (self.accuracy or {}).get("top1")

    def median_ms(self) -> dict[str, float]:
        """Median batch latency per timing definition."""
        return {t.definition: t.median_ms for t in self.timings}


def latency_is_emulated(result: CellResult | None) -> str | None:
    """Why ``result``'s latency measures an emulation rather than the precision it names (e.g. FP8 run as
    E4M3 rounding around FP32 kernels on ONNX Runtime's CPU EP), or None. Such a latency is recorded and
    shown, never compared, ranked or recommended: the one rule compare, report and recommend ask."""
    if result is None:
        return None
    note = ((result.session or {}).get("details") or {}).get("latency_emulated")
    return str(note) if note else None


PREDICTIONS_ENCODING = "int32-zlib-base64"


def encode_predictions(indices: Any) -> dict[str, Any]:
    """Top-1 output indices as stored (a cell result's ``predictions``); inverse of :func:`decode_predictions`."""
    array = np.asarray(indices, dtype="<i4")
    data = base64.b64encode(zlib.compress(array.tobytes(), 6)).decode("ascii")
    return {"encoding": PREDICTIONS_ENCODING, "count": int(array.size), "data": data}


def decode_predictions(d: dict[str, Any]) -> np.ndarray:
    """The int32 array of a result's ``predictions`` ({"encoding": "int32-zlib-base64", "count", "data"})."""
    encoding = d.get("encoding")
    if encoding != PREDICTIONS_ENCODING:
        raise HarnessError(f"predictions encoded as {encoding!r}; this version reads int32-zlib-base64")
    array = np.frombuffer(zlib.decompress(base64.b64decode(d["data"])), dtype="<i4").astype(np.int32)
    if array.size != d.get("count"):
        raise HarnessError(f"predictions hold {array.size} values, their count says {d.get('count')}")
    return array


@dataclass(frozen=True)
class CellOutcome:
    """One cell as the sweep produced it and the store keeps it."""

    identity: CellIdentity
    status: CellStatus
    result: CellResult | None = None
    error: str | None = None
    traceback: str | None = None
    finished_at: float | None = None  # set by the store
    key: str = ""  # the database key; computed from the identity when not given

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.identity.key)

    @classmethod
    def ok(cls, identity: CellIdentity, result: CellResult) -> CellOutcome:
        return cls(identity=identity, status="ok", result=result)

    @classmethod
    def failed(cls, identity: CellIdentity, exc: BaseException) -> CellOutcome:
        """A failed cell: a one-line message (a HarnessError's own text) and the full traceback."""
        message = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
        trace = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
        return cls(identity=identity, status="error", error=message, traceback=trace)

    def summary(self) -> dict[str, Any]:
        """What a progress display shows: accuracy and median ms per definition, or the error."""
        if self.status != "ok" or self.result is None:
            return {"error": self.error}
        return {"accuracy": self.result.top1, **self.result.median_ms()}
