"""Native TensorRT INT8 entropy calibration (implicit quantization, TensorRT 10.x only).

TensorRT 10.1 deprecated and TensorRT 11 removed the calibrator classes; with TRT 11
INT8 comes only from an explicit Q/DQ model (``calib.ort_qdq``, target ``tensorrt``).

The logic lives in :class:`CalibratorCore`, a plain class testable without TensorRT
or a GPU; :func:`make_entropy_calibrator` wraps it in a ``trt.IInt8EntropyCalibrator2``
subclass (``tensorrt`` is imported only there).  The device buffer comes from a
``buffer_factory``: in production ``lambda shape: torch.empty(shape, device="cuda")``,
whose ``data_ptr()`` TensorRT reads (this shares PyTorch's CUDA context, no pycuda).

TensorRT calls the four methods from C++; an exception escaping them would cross
that boundary, so the wrapper records it on the core (``core.error``) and tells
TensorRT "no more batches"; the builder's caller must call ``core.raise_if_failed()``
after ``build_serialized_network``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch

from calib.provenance import (
    Provenance,
    atomic_write_bytes,
    library_versions,
    load_if_matching,
    remove_with_sidecar,
    write_with_provenance,
)
from harness.errors import HarnessError, UnsupportedCombination, missing_library
from harness.onnx_export import INPUT_NAME

#: Every ``tensorrt`` attribute this module touches (checked against the TRT 10.x binding symbols).
TRT_API_USED: tuple[str, ...] = (
    "IInt8EntropyCalibrator2",
    "IInt8EntropyCalibrator2.__init__",
    "IInt8EntropyCalibrator2.get_batch_size",
    "IInt8EntropyCalibrator2.get_batch",
    "IInt8EntropyCalibrator2.read_calibration_cache",
    "IInt8EntropyCalibrator2.write_calibration_cache",
)

_TRT_HINT = ("use a TensorRT 10.x container (e.g. nvcr.io/nvidia/tensorrt or nvcr.io/nvidia/pytorch) "
             "or pip install tensorrt-cu12==10.*")


class BufferLike(Protocol):
    """What the calibrator needs of a device buffer (a torch tensor satisfies it)."""

    shape: Any

    def data_ptr(self) -> int: ...

    def copy_(self, src: torch.Tensor) -> Any: ...


BufferFactory = Callable[[tuple[int, ...]], BufferLike]


def cuda_buffer_factory(shape: tuple[int, ...]) -> torch.Tensor:
    """The production buffer: one float32 CUDA tensor in PyTorch's context."""
    return torch.empty(shape, dtype=torch.float32, device="cuda")


class CalibratorCore:
    """Batches, one reusable device buffer, and a provenance-checked calibration cache.

    ``batches`` yields float32 NCHW batches of exactly ``batch_size`` (use
    ``CalibrationSet.batches(..., full_batches_only=True)``); ``input_shape`` is the
    per-image CHW shape (or the full NCHW shape).  With a ``cache_path`` a
    ``provenance`` is required: the cache is read only when its sidecar matches it
    (a corrupt cache raises here, before any build starts), and written with it.
    """

    def __init__(
        self,
        batches: Iterable[torch.Tensor | np.ndarray],
        batch_size: int,
        input_shape: tuple[int, ...],
        buffer_factory: BufferFactory,
        cache_path: Path | None = None,
        *,
        provenance: Provenance | None = None,
        input_name: str = INPUT_NAME,
        rebuild: bool = False,
    ) -> None:
        if batch_size < 1:
            raise HarnessError(f"calibration batch size must be >= 1, got {batch_size}")
        shape = tuple(int(d) for d in input_shape)
        if len(shape) == 4:
            if shape[0] != batch_size:
                raise HarnessError(f"input shape {shape} does not match calibration batch size {batch_size}")
            shape = shape[1:]
        if len(shape) != 3:
            raise HarnessError(f"calibration input shape must be CHW or NCHW, got {tuple(input_shape)}")
        if cache_path is not None and provenance is None:
            raise HarnessError("a TensorRT calibration cache needs a provenance to be keyed on")
        self.batch_size = batch_size
        self.batch_shape: tuple[int, ...] = (batch_size, *shape)
        self.input_name = input_name
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.provenance = provenance
        self.batches_served = 0
        self.cache_written = False
        self.cache_read = False
        self.error: BaseException | None = None
        self._batches: Iterator[torch.Tensor | np.ndarray] = iter(batches)
        self._factory = buffer_factory
        self._buffer: BufferLike | None = None
        self._valid_cache: Path | None = None
        if self.cache_path is not None and provenance is not None:
            if rebuild:
                remove_with_sidecar(self.cache_path)
            else:
                self._valid_cache = load_if_matching(self.cache_path, provenance)

    # -- the four calibrator methods --------------------------------------------------------

    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: list[str] | None = None) -> list[int] | None:
        """Copy the next batch into the device buffer; ``[pointer]``, or None when exhausted."""
        if names is not None and len(names) != 1:
            raise HarnessError(f"the calibrator feeds one input ({self.input_name}); TensorRT asked for {names}")
        if names and self.input_name and names[0] != self.input_name:
            raise HarnessError(f"the calibrator feeds input '{self.input_name}'; TensorRT asked for '{names[0]}'")
        batch = next(self._batches, None)
        if batch is None:
            return None
        tensor = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        if tuple(tensor.shape) != self.batch_shape:
            raise HarnessError(
                f"calibration batch {self.batches_served} has shape {tuple(tensor.shape)}, expected "
                f"{self.batch_shape}; TensorRT's calibrator needs full batches of one size"
            )
        buffer = self.buffer
        buffer.copy_(tensor.to(torch.float32))
        device = getattr(buffer, "device", None)
        if device is not None and getattr(device, "type", "cpu") == "cuda":
            torch.cuda.synchronize(device)  # TensorRT reads the buffer on its own stream
        self.batches_served += 1
        return [int(buffer.data_ptr())]

    def read_calibration_cache(self) -> bytes | None:
        """The cached table, only when it exists with a matching provenance sidecar."""
        if self._valid_cache is None or not self._valid_cache.exists():
            return None
        self.cache_read = True
        return self._valid_cache.read_bytes()

    def write_calibration_cache(self, cache: Any) -> None:
        """Store TensorRT's table atomically, then its provenance sidecar."""
        if self.cache_path is None or self.provenance is None:
            return
        data = bytes(cache)
        if not data:
            raise HarnessError("TensorRT produced an empty calibration cache")
        atomic_write_bytes(self.cache_path, data)
        write_with_provenance(self.cache_path, self.provenance)
        self._valid_cache = self.cache_path
        self.cache_written = True

    # -- helpers ----------------------------------------------------------------------------

    @property
    def buffer(self) -> BufferLike:
        """The device buffer, created once on first use."""
        if self._buffer is None:
            buffer = self._factory(self.batch_shape)
            if tuple(buffer.shape) != self.batch_shape:
                raise HarnessError(f"buffer factory made shape {tuple(buffer.shape)}, expected {self.batch_shape}")
            self._buffer = buffer
        return self._buffer

    @property
    def has_valid_cache(self) -> bool:
        return self._valid_cache is not None

    def guarded(self, fn: Callable[..., Any], *args: Any, fallback: Any = None) -> Any:
        """Call ``fn``; on an exception record it (first one wins) and return ``fallback``."""
        if self.error is not None:
            return fallback
        try:
            return fn(*args)
        except BaseException as exc:  # noqa: BLE001 - must not cross into TensorRT's C++
            self.error = exc
            return fallback

    def raise_if_failed(self) -> None:
        """Re-raise (as HarnessError) an error recorded while TensorRT drove the calibrator."""
        if self.error is None:
            return
        if isinstance(self.error, HarnessError) or not isinstance(self.error, Exception):
            raise self.error
        raise HarnessError(f"INT8 calibration failed: {type(self.error).__name__}: {self.error}") from self.error


def calibration_cache_provenance(
    *,
    model_hash: str,
    calib_file_list_hash: str,
    count: int,
    seed: int,
    batch_size: int,
    input_shape: tuple[int, ...],
    preprocess: str = "",
    tensorrt_version: str | None = None,
) -> Provenance:
    """Provenance of a native TensorRT entropy calibration cache (network, data, TRT version)."""
    versions = library_versions(["torch", "torchvision", "PIL"])
    versions["tensorrt"] = tensorrt_version or library_versions(["tensorrt"])["tensorrt"]
    return Provenance(
        artifact_kind="trt-calib-cache",
        model_hash=model_hash,
        calib_file_list_hash=calib_file_list_hash,
        method="entropy",
        count=count,
        seed=seed,
        versions=versions,
        options={"batch_size": batch_size, "input_shape": list(input_shape), "calibrator": "IInt8EntropyCalibrator2",
                 "preprocess": preprocess},
    )


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise missing_library("tensorrt", "native TensorRT INT8 calibration", _TRT_HINT) from None
    return tensorrt


def make_entropy_calibrator(core: CalibratorCore, trt: ModuleType | None = None) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` that delegates to ``core`` (TensorRT 10.x).

    Keep a reference to the returned object for as long as the builder config uses it.
    """
    trt = trt if trt is not None else import_tensorrt()
    if getattr(trt, "IInt8EntropyCalibrator2", None) is None:
        raise UnsupportedCombination(
            "this TensorRT has no IInt8EntropyCalibrator2 (implicit INT8 calibration was removed in TensorRT 11); "
            "use explicit INT8 from a Q/DQ model (int8_mode=explicit)"
        )

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self, calibrator_core: CalibratorCore) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.core = calibrator_core

        def get_batch_size(self) -> int:
            return int(self.core.guarded(self.core.get_batch_size, fallback=self.core.batch_size))

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            result: list[int] | None = self.core.guarded(self.core.get_batch, names)
            return result

        def read_calibration_cache(self, *_: Any) -> bytes | None:
            result: bytes | None = self.core.guarded(self.core.read_calibration_cache)
            return result

        def write_calibration_cache(self, cache: Any, *_: Any) -> None:
            self.core.guarded(self.core.write_calibration_cache, cache)

    return _EntropyCalibrator(core)


__all__ = ["TRT_API_USED", "BufferLike", "CalibratorCore", "calibration_cache_provenance", "cuda_buffer_factory",
           "import_tensorrt", "make_entropy_calibrator"]
