"""What every ONNX Runtime calibration artifact (Q/DQ model, TensorRT EP table) shares.

ONNX Runtime's quantization tools imported with one clear error when they are missing, the
streaming ``CalibrationDataReader``, and the wrapper that runs an ORT calibration step quietly and
turns its failures into one :class:`~harness.errors.HarnessError`.

Calibration data is streamed: ORT's histogram calibrators keep *every* intermediate tensor of one
``collect_data`` call in memory and fail on a last batch of a different size, so the reader is
driven one batch per ``collect_data`` call and the histograms are merged batch by batch.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from calib.provenance import check_method
from harness.errors import HarnessError, missing_library
from harness.onnx_export import INPUT_NAME

#: A callable returning a fresh iterator of float32 NCHW batches (arrays or tensors).
BatchFactory = Callable[[], Iterator[Any]]

#: The oldest onnxruntime whose quantization tools this package is tested with (the oldest an image pins).
MIN_ONNXRUNTIME = "1.20"
ORT_HINT = "pip install 'pq-harness[ort-cpu]' (onnxruntime) or 'pq-harness[ort-gpu]' (onnxruntime-gpu)"


def import_quantization() -> Any:
    """``onnxruntime.quantization``, or a one-line error saying how to install it."""
    try:
        from onnxruntime import quantization
    except ImportError:
        raise missing_library("onnxruntime", "INT8 calibration", ORT_HINT) from None
    return quantization


def onnxruntime_version() -> str:
    import onnxruntime

    return str(getattr(onnxruntime, "__version__", "unknown"))


def missing_ort_api(what: str, detail: str) -> HarnessError:
    """One clear error for an ONNX Runtime that lacks an API this package needs."""
    return HarnessError(f"onnxruntime {onnxruntime_version()} has no {what} ({detail}); "
                        f"install onnxruntime>={MIN_ONNXRUNTIME}: {ORT_HINT}")


def calibration_method(method: str) -> Any:
    """The ``onnxruntime.quantization.CalibrationMethod`` member for ``entropy|minmax|percentile``."""
    q = import_quantization()
    return {
        "entropy": q.CalibrationMethod.Entropy,
        "minmax": q.CalibrationMethod.MinMax,
        "percentile": q.CalibrationMethod.Percentile,
    }[check_method(method)]


def as_numpy(batch: Any) -> np.ndarray:
    """A float32 C-contiguous NCHW array from a torch tensor or array."""
    if hasattr(batch, "detach"):
        batch = batch.detach().cpu().numpy()
    array = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
    if array.ndim != 4:
        raise HarnessError(f"calibration batches must be NCHW; got shape {array.shape}")
    return array


def _make_reader_class() -> type:
    q = import_quantization()

    class StreamingReader(q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        """Feeds ``{input_name: batch}``; ``set_range`` windows let ORT collect one chunk at a time.

        ``quantize_static`` calls ``set_range(start, end)`` with consecutive windows;
        the reader keeps one iterator and yields the next ``end - start`` batches.
        """

        def __init__(self, batches: BatchFactory, num_batches: int, input_name: str = INPUT_NAME) -> None:
            self._factory, self._len, self._name = batches, num_batches, input_name
            self._iter: Iterator[Any] | None = None
            self._pos, self._end = 0, num_batches
            self.seen = 0

        def __len__(self) -> int:
            return self._len

        def set_range(self, start_index: int, end_index: int) -> None:
            if start_index == 0 or self._iter is None:
                self._iter, self._pos = iter(self._factory()), 0
            if start_index != self._pos:
                raise HarnessError(f"calibration reader asked for batches {start_index}.. at position {self._pos}")
            self._end = end_index

        def rewind(self) -> None:
            self._iter, self._pos, self._end = iter(self._factory()), 0, self._len

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._iter is None:
                self.rewind()
            if self._pos >= self._end:
                return None
            batch = next(self._iter, None)  # type: ignore[arg-type]
            if batch is None:
                return None
            self._pos += 1
            self.seen += 1
            return {self._name: as_numpy(batch)}

    return StreamingReader


def make_reader(batches: BatchFactory, num_batches: int, input_name: str = INPUT_NAME) -> Any:
    """A ``CalibrationDataReader`` over ``batches()`` (``num_batches`` long)."""
    return _make_reader_class()(batches, num_batches, input_name)


@contextlib.contextmanager
def ort_calibration(action: str, model_name: str, method: str, reader: Any, length: int) -> Iterator[None]:
    """Run an ONNX Runtime calibration step quietly (its calibrators print progress), turn its
    errors into one clear HarnessError, and check that every calibration batch was consumed."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"ONNX Runtime could not {action} {model_name} ({method}): "
                           f"{type(exc).__name__}: {exc}") from exc
    if reader.seen != length:
        raise HarnessError(f"calibration used {reader.seen} of {length} batches; the batch source ended early")


def count_or_materialize(batches: BatchFactory, num_batches: int | None) -> tuple[BatchFactory, int]:
    """``(factory, length)``: when the length is unknown the batches are held in memory once."""
    if num_batches is not None:
        return batches, num_batches
    held = [as_numpy(b) for b in batches()]
    return (lambda: iter(held)), len(held)


__all__ = ["MIN_ONNXRUNTIME", "ORT_HINT", "BatchFactory", "as_numpy", "calibration_method", "count_or_materialize",
           "import_quantization", "make_reader", "missing_ort_api", "onnxruntime_version", "ort_calibration"]
