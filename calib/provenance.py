"""Provenance of calibration artifacts, stored beside each one as ``<artifact>.provenance.json``.

A calibration artifact (Q/DQ model, TensorRT EP table, native TensorRT cache) is
reused only when its sidecar records exactly the provenance wanted now: same
model, same calibration files, same method and settings, same library versions.
A different provenance means *stale*: the caller rebuilds, never reuses.  A
sidecar that cannot be read, or an artifact whose size or sha256 differs from
what the sidecar recorded (a truncated write, a hand edit), or that its parser
rejects, means *corrupt*: the artifact and its sidecar are deleted and the caller
rebuilds it, with a one-line note (``on_rebuild``, else a ``CacheRebuiltWarning``),
so a damaged cache never fails a cell.

The provenance carries the calibration's identity: method, histogram settings
(``calibration``: num_bins, num_quantized_bins or percentile, algorithm), image
count, seed and the image set's hash.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.store.atomic import atomic_write_bytes
from harness.errors import HarnessError, HarnessNote
from harness.store.fingerprint import dict_hash, file_hash

#: Bump when the layout or meaning of a calibration artifact changes.
#: 2: ONNX Runtime entropy/percentile on a 2048-bin histogram (1 was max-abs labelled "entropy").
CALIB_FORMAT_VERSION = 2

#: TensorRT's entropy calibrator: a 2048-bin histogram of |x|, searched down to 128 quantized bins.
DEFAULT_NUM_BINS = 2048
DEFAULT_NUM_QUANTIZED_BINS = 128
#: ONNX Runtime's documented percentile default.
DEFAULT_PERCENTILE = 99.999

METHODS: tuple[str, ...] = ("entropy", "minmax", "percentile")

ARTIFACT_KINDS: tuple[str, ...] = ("ort-qdq-onnx", "modelopt-qdq-onnx", "ort-trt-table", "trt-calib-cache")

SIDECAR_SUFFIX = ".provenance.json"


def check_method(method: str) -> str:
    """The normalised calibration method name, or a HarnessError naming the choices."""
    name = method.lower().replace("-", "").replace("_", "")
    if name not in METHODS:
        raise HarnessError(f"unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}")
    return name


@dataclass(frozen=True)
class CalibrationSettings:
    """The identity of a calibration method: what decides the thresholds besides the images.

    * ``minmax``: the largest magnitude seen (no histogram).
    * ``entropy``: TensorRT's ``IInt8EntropyCalibrator2`` algorithm (the GTC 2017 KL-divergence
      search, as in NVIDIA's pytorch-quantization ``_compute_amax_entropy``): a histogram of
      ``|x|`` with ``num_bins`` (2048) bins, every candidate threshold from bin
      ``num_quantized_bins`` (128) to the last, each candidate quantised to
      ``num_quantized_bins`` levels; the threshold with the least KL divergence wins.
      ONNX Runtime's own entropy calibrator defaults to 128 bins and 128 quantized bins,
      where the search has a single candidate, the full range: that is max-abs, never used here.
    * ``percentile``: ONNX Runtime's percentile calibrator with its documented settings
      (``num_bins=2048``, ``percentile=99.999``, symmetric: a histogram of ``|x|``).
    """

    method: str
    num_bins: int = DEFAULT_NUM_BINS
    num_quantized_bins: int = DEFAULT_NUM_QUANTIZED_BINS
    percentile: float = DEFAULT_PERCENTILE

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", check_method(self.method))
        if self.num_bins < 2 * self.num_quantized_bins or self.num_quantized_bins < 2:
            raise HarnessError(f"calibration histogram: num_bins ({self.num_bins}) must be at least twice "
                               f"num_quantized_bins ({self.num_quantized_bins}), and that at least 2")
        if not 50.0 < self.percentile <= 100.0:
            raise HarnessError(f"calibration percentile must be in (50, 100], got {self.percentile}")

    def to_dict(self) -> dict[str, Any]:
        """Only the settings the method uses (a minmax table does not depend on num_bins)."""
        data: dict[str, Any] = {"method": self.method}
        if self.method == "entropy":
            data.update(algorithm="tensorrt-entropy-kl", histogram="abs", num_bins=self.num_bins,
                        num_quantized_bins=self.num_quantized_bins)
        elif self.method == "percentile":
            data.update(algorithm="onnxruntime-percentile", histogram="abs", num_bins=self.num_bins,
                        percentile=self.percentile)
        else:
            data.update(algorithm="max-abs")
        return data


def calibration_settings(method: str | CalibrationSettings, **overrides: Any) -> CalibrationSettings:
    """A :class:`CalibrationSettings` from a method name (defaults) or as given."""
    if isinstance(method, CalibrationSettings):
        return method
    return CalibrationSettings(method, **{k: v for k, v in overrides.items() if v is not None})


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """``{module: __version__}`` for each importable module; ``"missing"`` for the others."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            versions[name] = "missing"
            continue
        versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


@dataclass(frozen=True)
class Provenance:
    """Everything a calibration artifact depends on."""

    artifact_kind: str
    model_hash: str
    calib_file_list_hash: str
    method: str
    count: int
    seed: int
    versions: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = CALIB_FORMAT_VERSION
    #: The calibration settings (``CalibrationSettings.to_dict()``); empty: the method's defaults.
    calibration: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", check_method(self.method))
        calibration = dict(self.calibration) or CalibrationSettings(self.method).to_dict()
        if calibration.get("method") != self.method:
            raise HarnessError(f"calibration settings are for '{calibration.get('method')}', "
                               f"the provenance for '{self.method}'")
        object.__setattr__(self, "calibration", json.loads(json.dumps(calibration, sort_keys=True)))
        object.__setattr__(self, "versions", dict(sorted(self.versions.items())))
        # Round-trip through JSON so that equality compares what a sidecar would hold.
        object.__setattr__(self, "options", json.loads(json.dumps(dict(self.options), sort_keys=True)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact_kind": self.artifact_kind,
            "model_hash": self.model_hash,
            "calib_file_list_hash": self.calib_file_list_hash,
            "method": self.method,
            "count": self.count,
            "seed": self.seed,
            "versions": dict(self.versions),
            "options": dict(self.options),
            "format_version": self.format_version,
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        try:
            return cls(
                artifact_kind=str(data["artifact_kind"]),
                model_hash=str(data["model_hash"]),
                calib_file_list_hash=str(data["calib_file_list_hash"]),
                method=str(data["method"]),
                count=int(data["count"]),
                seed=int(data["seed"]),
                versions={str(k): str(v) for k, v in dict(data["versions"]).items()},
                options=dict(data.get("options", {})),
                format_version=int(data["format_version"]),
                calibration=dict(data.get("calibration", {})),
            )
        except (KeyError, TypeError, ValueError, HarnessError) as exc:
            raise ValueError(f"not a calibration provenance record: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Provenance:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("not a calibration provenance record: not a JSON object")
        return cls.from_dict(data)

    def full_hash(self) -> str:
        return dict_hash(self.to_dict())

    def key(self) -> str:
        """Short stable hash, for file names and reports."""
        return self.full_hash()[:16]

    def replace(self, **changes: Any) -> Provenance:
        data = self.to_dict()
        if "method" in changes and "calibration" not in changes:
            data["calibration"] = {}  # another method: its default settings
        data.update(changes)
        return Provenance.from_dict(data)

    def __hash__(self) -> int:
        return hash(self.full_hash())


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def corrupt(path: Path, reason: str) -> HarnessError:
    return HarnessError(f"calibration cache {path} is corrupt ({reason}); delete it or run with --rebuild-calib")


def write_with_provenance(path: Path, provenance: Provenance, **extra: Any) -> Path:
    """Record ``provenance`` plus the artifact's size and sha256 in ``<path>.provenance.json``.

    Call after the artifact itself was written (atomically).  ``extra`` is stored
    alongside for reports (e.g. notes) and is not compared.
    """
    path = Path(path)
    record = {
        "provenance": provenance.to_dict(),
        "key": provenance.key(),
        "artifact": {"name": path.name, "size": path.stat().st_size, "sha256": file_hash(path)},
        "extra": extra,
    }
    atomic_write_bytes(sidecar_path(path), json.dumps(record, indent=2, sort_keys=True, default=str).encode())
    return sidecar_path(path)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar record of ``path``; None if there is none; raises if it is garbled."""
    side = sidecar_path(Path(path))
    if not side.exists():
        return None
    try:
        record = json.loads(side.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        Provenance.from_dict(record["provenance"])
        artifact = record["artifact"]
        int(artifact["size"]), str(artifact["sha256"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise corrupt(Path(path), f"unreadable provenance sidecar {side.name}: {exc}") from exc
    return record


class CacheRebuiltWarning(HarnessNote):
    """A damaged calibration artifact was deleted so that it is rebuilt."""


def load_if_matching(
    path: Path,
    provenance: Provenance,
    *,
    validate: Callable[[Path], None] | None = None,
    on_rebuild: Callable[[str], None] | None = None,
) -> Path | None:
    """``path`` when it exists with a sidecar that matches ``provenance`` and is intact.

    * no sidecar, or no artifact: None (build it);
    * sidecar for a different provenance: None (stale; rebuild, never reuse);
    * garbled sidecar, size/sha256 mismatch, or ``validate`` failing: the artifact and its
      sidecar are deleted, the one-line note (``"calibration cache ... is corrupt (...);
      rebuilding it"``) goes to ``on_rebuild`` (else a :class:`CacheRebuiltWarning`), and
      None is returned, so the caller rebuilds.
    """
    path = Path(path)
    try:
        found = check_matching(path, provenance, validate=validate)
    except HarnessError as exc:
        remove_with_sidecar(path)
        note = str(exc).replace(
            "; delete it or run with --rebuild-calib", "; rebuilding it")
        if on_rebuild is not None:
            on_rebuild(note)
        else:
            warnings.warn(note, CacheRebuiltWarning, stacklevel=2)
        return None
    return found


def check_matching(
    path: Path,
    provenance: Provenance,
    *,
    validate: Callable[[Path], None] | None = None,
) -> Path | None:
    """Like :func:`load_if_matching` but a corrupt artifact raises HarnessError "... is corrupt ..."."""
    path = Path(path)
    record = read_sidecar(path)
    if record is None:
        return None
    if Provenance.from_dict(record["provenance"]) != provenance:
        return None
    if not path.exists():
        return None
    artifact = record["artifact"]
    size = path.stat().st_size
    if size != int(artifact["size"]):
        raise corrupt(path, f"size {size} bytes, the sidecar recorded {artifact['size']}")
    digest = file_hash(path)
    if digest != artifact["sha256"]:
        raise corrupt(path, "sha256 differs from the one recorded in the sidecar")
    if validate is not None:
        try:
            validate(path)
        except Exception as exc:  # any parser error means the file is unusable
            raise corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    return path


def remove_with_sidecar(path: Path) -> None:
    """Delete an artifact and its sidecar (for --rebuild-calib)."""
    Path(path).unlink(missing_ok=True)
    sidecar_path(Path(path)).unlink(missing_ok=True)


def validate_onnx(path: Path) -> None:
    """Raise when ``path`` is not a loadable, well-formed ONNX model."""
    import onnx

    onnx.checker.check_model(str(path))  # parses the file (path form: also > 2 GB models)


class ProvenancedArtifact:
    """An artifact path bound to the provenance it must have (thin OO wrapper over the helpers)."""

    def __init__(self, path: Path, provenance: Provenance,
                 validate: Callable[[Path], None] | None = None) -> None:
        self.path, self.provenance, self.validate = Path(path), provenance, validate

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)

    def load_if_matching(self, on_rebuild: Callable[[str], None] | None = None) -> Path | None:
        return load_if_matching(self.path, self.provenance, validate=self.validate, on_rebuild=on_rebuild)

    def write_with_provenance(self, **extra: Any) -> Path:
        return write_with_provenance(self.path, self.provenance, **extra)

    def remove(self) -> None:
        remove_with_sidecar(self.path)


__all__ = ["ARTIFACT_KINDS", "CALIB_FORMAT_VERSION", "DEFAULT_NUM_BINS", "DEFAULT_NUM_QUANTIZED_BINS",
           "DEFAULT_PERCENTILE", "METHODS", "CacheRebuiltWarning", "CalibrationSettings", "Provenance",
           "ProvenancedArtifact", "atomic_write_bytes", "calibration_settings", "check_matching", "check_method",
           "corrupt", "library_versions", "load_if_matching",
           "read_sidecar", "remove_with_sidecar", "sidecar_path", "validate_onnx", "write_with_provenance"]
