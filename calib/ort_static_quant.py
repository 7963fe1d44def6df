"""``quantize_static`` with activation ranges computed by this package, on every onnxruntime an image pins.

ONNX Runtime's ``quantize_static`` calibrates on its own; this package computes the ranges itself
(TensorRT's 2048-bin entropy search, streamed) and needs the quantizer to use exactly those.  Two
routes, picked by what the installed onnxruntime offers (capability, not version string):

* ``calibration-cache``: ``quantize_static(calibration_cache_path=...)`` reads the ranges written by
  ``calibrate.save_tensors_data`` and does not calibrate again (onnxruntime releases of 2026 on).
* ``qdq-quantizer``: older releases (1.20, 1.21) have neither; their ``quantize_static``, after
  calibrating, loads the model with shape inference, checks the arguments and runs ``QDQQuantizer``
  on the ranges.  This route takes those same steps with the package's own ranges, through the
  names ``onnxruntime.quantization.quantize`` itself uses, so the result is what ``quantize_static``
  would write had its calibrator produced these ranges.

Both routes pass ``nodes_to_exclude``.  A missing API is one clear error, never a traceback.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from calib.ort_base import import_quantization, missing_ort_api
from harness.errors import HarnessError

Route = Literal["calibration-cache", "qdq-quantizer"]

#: What the ``qdq-quantizer`` route needs from ``onnxruntime.quantization.quantize``.
QUANTIZER_NAMES: tuple[str, ...] = ("QDQQuantizer", "load_model_with_shape_infer", "check_static_quant_arguments",
                                    "QLinearOpsRegistry", "QDQRegistry")


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise missing_ort_api(name, f"{type(exc).__name__}: {exc}") from None


def quantize_route() -> Route:
    """How the installed onnxruntime is given precomputed ranges (see the module docstring)."""
    q = import_quantization()
    calibrate = _module("onnxruntime.quantization.calibrate")
    if "calibration_cache_path" in inspect.signature(q.quantize_static).parameters and hasattr(
            calibrate, "save_tensors_data"):
        return "calibration-cache"
    quantize = _module("onnxruntime.quantization.quantize")
    missing = [name for name in QUANTIZER_NAMES if not hasattr(quantize, name)]
    if missing:
        raise missing_ort_api("way to quantise with precomputed ranges",
                              "neither quantize_static(calibration_cache_path=...) nor "
                              f"onnxruntime.quantization.quantize.{', '.join(missing)}")
    return "qdq-quantizer"


def quantize_with_ranges(
    model_in: Path,
    model_out: Path,
    ranges: Any,
    calibrate_method: Any,
    options: dict[str, Any],
    *,
    work_dir: Path,
    exclude_nodes: Sequence[str] = (),
    route: Route | None = None,
) -> None:
    """Write the Q/DQ model of ``model_in`` quantised with ``ranges`` (an ORT ``TensorsData``) to ``model_out``.

    ``options`` are ``quantize_static`` keyword arguments (``quant_format`` QDQ, ``per_channel``,
    ``reduce_range``, ``activation_type``, ``weight_type``, ``extra_options``); ``calibrate_method`` is
    the ``CalibrationMethod`` the ranges stand for; ``work_dir`` holds the ranges file of the
    ``calibration-cache`` route.  ``route`` forces a route (default: :func:`quantize_route`).
    """
    q = import_quantization()
    if options.get("quant_format", q.QuantFormat.QDQ) != q.QuantFormat.QDQ:
        raise HarnessError("quantize_with_ranges writes Q/DQ models only (quant_format=QDQ)")
    route = route or quantize_route()
    if route == "calibration-cache":
        calibrate = _module("onnxruntime.quantization.calibrate")
        cache = Path(work_dir) / "ranges.json"
        calibrate.save_tensors_data(ranges, cache)
        q.quantize_static(
            str(model_in),
            str(model_out),
            None,  # the ranges come from the cache file: quantize_static does not calibrate again
            calibrate_method=calibrate_method,
            calibration_cache_path=str(cache),
            nodes_to_exclude=list(exclude_nodes),
            **options,
        )
        return
    quantize = _module("onnxruntime.quantization.quantize")
    model = quantize.load_model_with_shape_infer(Path(model_in))
    # quantize_static's default op types: every op a QOperator or a QDQ quantizer handles.
    op_types = list(set(list(quantize.QLinearOpsRegistry.keys()) + list(quantize.QDQRegistry.keys())))
    quantize.check_static_quant_arguments(q.QuantFormat.QDQ, options["activation_type"], options["weight_type"])
    quantizer = quantize.QDQQuantizer(
        model,
        options["per_channel"],
        options["reduce_range"],
        options["weight_type"],
        options["activation_type"],
        ranges,
        [],  # nodes_to_quantize: every node
        list(exclude_nodes),
        op_types,
        dict(options.get("extra_options") or {}),
    )
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(model_out), False)


__all__ = ["QUANTIZER_NAMES", "Route", "quantize_route", "quantize_with_ranges"]
