"""Cache keys for TensorRT engines and timing caches.

TensorRT engines and timing caches are specific to the TensorRT version and the GPU (an engine built by
another version or for another GPU does not load); calibration caches are keyed by their own provenance in ``calib/``.
Every key here hashes a canonical JSON form of its fields, so the digest does not depend on dict
order, and every field that can change what TensorRT builds changes the digest. Options that do
not change the engine (``cuda_graph``: a runtime choice) are dropped from the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

#: Bump when the engine files or their meaning change; old entries then miss instead of loading.
ENGINE_CACHE_FORMAT = 1

#: Builder options that never change the built engine and are therefore not part of the key.
IGNORED_BUILDER_OPTIONS: frozenset[str] = frozenset({"cuda_graph"})


def _canonical(value: Any) -> Any:
    """A JSON-ready form with a single spelling per value (tuples as lists, paths as strings)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value else "nan"  # NaN never equals itself
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    raise TypeError(f"cache key value of type {type(value).__name__} has no canonical form: {value!r}")


def _digest(data: Mapping[str, Any]) -> str:
    text = json.dumps(_canonical(data), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything that decides which engine TensorRT builds (directly, or through ORT's TRT EP)."""

    backend: str  # "trt-native" | "ort-trt"
    onnx_hash: str  # content hash of the ONNX file actually built (fp32, fp16 or Q/DQ)
    precision: str
    int8_mode: str | None  # "implicit" | "explicit" | None (not int8)
    calibration_hash: str | None  # provenance hash of the calibration data (int8), else None
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    #: workspace, sparse, optimization level, profile (min/opt/max batch), verbosity, ...
    builder_options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def for_build(cls, backend: str, onnx_hash: str, precision: str, int8_mode: str | None,
                  calibration: Any, trt_version: str, gpu: Any, builder_options: Mapping[str, Any]) -> EngineCacheKey:
        """The key of one build: the calibration's provenance counts only for int8 and fp8."""
        return cls(
            backend=backend, onnx_hash=onnx_hash, precision=precision, int8_mode=int8_mode,
            calibration_hash=(calibration.provenance_hash if precision in ("int8", "fp8") and calibration is not None
                              else None),
            trt_version=trt_version, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
            builder_options=builder_options,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENGINE_CACHE_FORMAT,
            "backend": self.backend,
            "onnx_hash": self.onnx_hash,
            "precision": self.precision,
            "int8_mode": self.int8_mode,
            "calibration_hash": self.calibration_hash,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "builder_options": {
                k: _canonical(v) for k, v in sorted(self.builder_options.items()) if k not in IGNORED_BUILDER_OPTIONS
            },
        }

    def digest(self) -> str:
        """sha256 (hex) of the canonical form; stable across processes and dict orders."""
        return _digest(self.to_dict())

    def stem(self) -> str:
        """A readable, unique file stem: ``fp16-sm80-<24 hex>``, ``int8-implicit-sm70-<24 hex>``."""
        mode = f"-{self.int8_mode}" if self.int8_mode else ""
        cc = f"sm{self.compute_capability[0]}{self.compute_capability[1]}"
        return f"{_slug(self.precision)}{mode}-{cc}-{self.digest()[:24]}"

    def path(self, cache_dir: Path, suffix: str = ".engine") -> Path:
        """``cache_dir/<stem><suffix>``; with ``suffix=""`` a per-key directory name."""
        return Path(cache_dir) / f"{self.stem()}{suffix}"


@dataclass(frozen=True)
class TimingCacheKey:
    """TensorRT timing caches hold per-tactic timings: valid for one TRT version on one GPU."""

    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENGINE_CACHE_FORMAT,
            "kind": "timing-cache",
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
        }

    def digest(self) -> str:
        return _digest(self.to_dict())

    def stem(self) -> str:
        cc = f"sm{self.compute_capability[0]}{self.compute_capability[1]}"
        return f"timing-trt{_slug(self.trt_version)}-{cc}-{self.digest()[:16]}"

    def path(self, cache_dir: Path, suffix: str = ".cache") -> Path:
        return Path(cache_dir) / f"{self.stem()}{suffix}"


# ------------------------------------------------------------------------- verified (healing) files


def sidecar_path(path: Path) -> Path:
    """``<file>.sha256.json``: size and content hash of ``path`` as written."""
    return Path(path).with_name(Path(path).name + ".sha256.json")


def write_verified(path: Path, data: bytes) -> None:
    """Write ``data`` atomically, then its sidecar (size + sha256); a reader trusts only a matching pair."""
    from harness.store.atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path(path).unlink(missing_ok=True)  # never a sidecar that vouches for a half-replaced file
    atomic_write_bytes(path, data)
    meta = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_bytes(sidecar_path(path), json.dumps(meta, sort_keys=True).encode())


@dataclass(frozen=True)
class VerifiedRead:
    """What :func:`read_verified` found: the bytes when they match their sidecar, else why not."""

    data: bytes | None
    problem: str | None  # None: ok or simply absent ("missing" is not a problem for a first build)
    present: bool

    @property
    def ok(self) -> bool:
        return self.data is not None


def read_verified(path: Path) -> VerifiedRead:
    """The file's bytes if it and its sidecar agree (size, sha256); a damaged pair is deleted."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        side.unlink(missing_ok=True)
        return VerifiedRead(None, None, False)
    data = path.read_bytes()
    problem: str | None = None
    try:
        meta = json.loads(side.read_text())
        if int(meta["size"]) != len(data):
            problem = f"{path.name} is {len(data)} bytes, its sidecar says {meta['size']} (truncated?)"
        elif meta["sha256"] != hashlib.sha256(data).hexdigest():
            problem = f"{path.name} does not match the sha256 in its sidecar (damaged)"
    except FileNotFoundError:
        problem = f"{path.name} has no sidecar {side.name} (written by an older harness or torn)"
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"the sidecar of {path.name} is unreadable ({exc})"
    if problem is not None:
        discard(path)
        return VerifiedRead(None, problem, True)
    return VerifiedRead(data, None, True)


def discard(path: Path) -> None:
    """Remove a cache file and its sidecar (a damaged or unusable entry is rebuilt, never trusted)."""
    for p in (Path(path), sidecar_path(Path(path))):
        try:
            p.unlink()
        except OSError:  # absent, or a read-only volume: the rebuild overwrites it atomically anyway
            pass


__all__ = ["ENGINE_CACHE_FORMAT", "EngineCacheKey", "IGNORED_BUILDER_OPTIONS", "TimingCacheKey", "VerifiedRead",
           "discard", "read_verified", "sidecar_path", "write_verified"]
