"""Per-tensor activation ranges from calibration data, shared by the Q/DQ model and the TensorRT EP table.

Entropy is TensorRT's 2048-bin KL threshold search (:func:`entropy_threshold`) for every backend:
ONNX Runtime's own entropy calibrator runs on a 128-bin histogram with 128 quantized bins, where the
threshold search has a single candidate (max-abs).  The histograms are collected by ORT's percentile
calibrator, one batch per ``collect_data`` call (bounded memory), and searched here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from calib.ort_base import (
    BatchFactory,
    calibration_method,
    count_or_materialize,
    import_quantization,
    make_reader,
    missing_ort_api,
    ort_calibration,
)
from calib.provenance import DEFAULT_NUM_QUANTIZED_BINS, CalibrationSettings, calibration_settings
from harness.errors import HarnessError


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, num_quantized_bins: int = DEFAULT_NUM_QUANTIZED_BINS,
                      ) -> float:
    """TensorRT's entropy threshold of a histogram of ``|x|`` (``edges`` from 0 up).

    Candidate ``i`` keeps bins ``[0, i)``, folds the outliers into bin ``i - 1`` (reference
    distribution P), and spreads P's first ``i`` bins over ``num_quantized_bins`` levels,
    each level's mass shared equally by its non-empty bins (candidate Q).  The bin-0 spike
    (exact zeros, e.g. after a ReLU) is replaced by bin 1's count, as TensorRT does.  Returns
    the upper edge of the candidate with the least KL(P || Q) (the last of equal minima).
    """
    bins = np.asarray(hist, dtype=np.float64).copy()
    edges = np.asarray(edges, dtype=np.float64)
    n, q = bins.size, int(num_quantized_bins)
    if n <= q:
        return float(edges[-1])
    bins[0] = bins[1]
    total = bins.sum()
    if total <= 0:
        return float(edges[-1])
    # Every candidate at once, from prefix sums (O(candidates x q), no Python loop over candidates).
    # Level k of candidate i holds bins [ceil(k i / q), ceil((k + 1) i / q)), i.e. level(j) = j q // i.
    cum = np.concatenate([[0.0], np.cumsum(bins)])  # cum[m] = sum(bins[:m])
    nz = np.concatenate([[0], np.cumsum(bins != 0)])  # non-empty bins among the first m
    with np.errstate(divide="ignore", invalid="ignore"):
        blogb = np.where(bins > 0, bins * np.log(np.where(bins > 0, bins, 1.0)), 0.0)
    plogp = np.concatenate([[0.0], np.cumsum(blogb)])
    cand = np.arange(q, n + 1)
    bounds = -((-np.arange(q + 1)[None, :] * cand[:, None]) // q)  # ceil(k i / q), shape (C, q + 1)
    mass = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    count = nz[bounds[:, 1:]] - nz[bounds[:, :-1]]
    kept = cum[cand]  # sum(bins[:i]) = the candidate distribution's mass
    outliers = total - kept
    last = bins[cand - 1]
    ref_last = last + outliers  # P's last bin takes the outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(count > 0, mass / np.maximum(count, 1), 1.0)
        cross = np.where(count > 0, mass * (np.log(share) - np.log(kept)[:, None]), 0.0).sum(axis=1)
        share_last = share[:, -1]
        log_q_last = np.log(share_last) - np.log(kept)
        cross = cross + np.where(outliers > 0, outliers * log_q_last, 0.0)
        self_term = (plogp[cand - 1] - np.log(total) * cum[cand - 1]
                     + np.where(ref_last > 0, ref_last * (np.log(ref_last) - np.log(total)), 0.0))
        div = (self_term - cross) / total
    invalid = (kept <= 0) | ((outliers > 0) & (last == 0))  # Q empty, or P's last bin where Q has nothing
    div = np.where(invalid | ~np.isfinite(div), np.inf, div)
    if not np.isfinite(div).any():
        return float(edges[-1])
    best = div.size - 1 - int(np.argmin(div[::-1]))  # the last of equal minima, as TensorRT
    return float(edges[cand[best]])


def compute_tensor_ranges(
    fp32_onnx: Path,
    calib_batches: BatchFactory,
    method: str | CalibrationSettings = "entropy",
    *,
    num_batches: int | None = None,
    work_dir: Path,
    symmetric: bool = True,
    num_bins: int | None = None,
    num_quantized_bins: int | None = None,
    percentile: float | None = None,
) -> Any:
    """Per-tensor ranges of every float tensor of ``fp32_onnx`` (an ORT ``TensorsData``).

    ``symmetric`` gives ``(-t, t)`` ranges (TensorRT); otherwise the threshold is clipped
    to the observed minimum and maximum (a ReLU output keeps ``(0, t)``, for uint8).
    The histogram settings are those of :class:`CalibrationSettings` (2048 bins).
    """
    import_quantization()
    try:
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, create_calibrator
    except ImportError as exc:
        raise missing_ort_api("calibrator this package uses", f"{type(exc).__name__}: {exc}") from None

    settings = calibration_settings(method, num_bins=num_bins, num_quantized_bins=num_quantized_bins,
                                    percentile=percentile)
    factory, length = count_or_materialize(calib_batches, num_batches)
    if length < 1:
        raise HarnessError("no calibration batches: the calibration set is empty")
    reader = make_reader(factory, length)
    # entropy and percentile both collect ORT's histogram of |x| (the percentile calibrator, symmetric);
    # the entropy threshold is then searched here with TensorRT's algorithm.
    collect_method = "minmax" if settings.method == "minmax" else "percentile"
    extra: dict[str, Any] = {"symmetric": True if collect_method == "percentile" else symmetric}
    if collect_method == "percentile":
        extra.update(num_bins=settings.num_bins, percentile=settings.percentile)
    with ort_calibration("calibrate", Path(fp32_onnx).name, settings.method, reader, length):
        calibrator = create_calibrator(
            Path(fp32_onnx),
            None,  # every float tensor: the EP matches table entries by name
            augmented_model_path=str(work_dir / "augmented.onnx"),
            calibrate_method=calibration_method(collect_method),
            extra_options=extra,
        )
        for start in range(length):  # one batch per collect_data call: bounded memory
            reader.set_range(start, start + 1)
            calibrator.collect_data(reader)
        if settings.method == "entropy":
            histograms = calibrator.collector.histogram_dict  # tensor -> (hist, edges, min, max)
            thresholds = {name: entropy_threshold(h[0], h[1], settings.num_quantized_bins)
                          for name, h in histograms.items()}
            observed = {name: (float(h[2]), float(h[3])) for name, h in histograms.items()}
            ranges = None
        else:
            ranges = calibrator.compute_data()
    if ranges is not None:
        thresholds, observed = {}, {}
        for name, data in ranges.items():
            high = float(np.max(data.range_value[1]))
            low_value = float(np.min(data.range_value[0]))
            thresholds[name] = max(abs(low_value), abs(high))
            observed[name] = (low_value, high)
    method_enum = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                   "minmax": CalibrationMethod.MinMax}[settings.method]
    out: dict[str, Any] = {}
    for name, t in thresholds.items():
        low, high = observed[name]
        if symmetric:
            t = min(t, max(abs(low), abs(high))) if settings.method != "minmax" else t
            pair = (-t, t)
        else:
            pair = (max(-t, low), min(t, high))
        out[name] = TensorData(lowest=np.array(pair[0], dtype=np.float32), highest=np.array(pair[1], dtype=np.float32))
    return TensorsData(method_enum, out)


def tensor_thresholds(ranges: Any) -> dict[str, float]:
    """``{tensor: max(|lowest|, |highest|)}`` of an ORT ``TensorsData`` (for checks and reports)."""
    return {name: float(max(abs(float(np.min(d.range_value[0]))), abs(float(np.max(d.range_value[1])))))
            for name, d in ranges.items()}


__all__ = ["compute_tensor_ranges", "entropy_threshold", "tensor_thresholds"]
