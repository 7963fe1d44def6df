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
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from harness.errors import HarnessError
from harness.fingerprint import dict_hash

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


#: Result keys added in wave 2: written only when measured, so a result without them has exactly the
#: keys stored since the first release (and old rows round-trip unchanged).
OPTIONAL_RESULT_KEYS = frozenset({"layer_profile", "predictions", "calibration", "node", "int8_precision"})


@dataclass(frozen=True)
class CellResult:
    """The measurements of a finished cell (the ``result`` JSON of the database)."""

    accuracy: dict[str, Any] | None = None  # top1, top1_1000, samples, batch_size
    accuracy_note: str | None = None
    timings: list[dict[str, Any]] = field(default_factory=list)  # TimingResult.to_dict per definition
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
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    @property
    def top1(self) -> float | None:
        return (self.accuracy or {}).get("top1")

    def median_ms(self) -> dict[str, float]:
        """Median batch latency per timing definition."""
        return {t["definition"]: t["stats"]["median_ms"] for t in self.timings}


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
