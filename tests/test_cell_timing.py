"""The cell's measurement through the real sweep (tinycnn on shapes): what each timing definition
times, the locked windows and their statistics, measuring until stable, per-layer profiles,
predictions and calibration provenance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import backends
from backends.torch_eager import TorchBackend, TorchSession
from harness.config import load_config
from harness.store.outcome import CellResult, decode_predictions
from harness.sweep.plan import plan_units
from harness.sweep.unit import UnitContext, run_unit
from tests.helpers import sweep_config

#: Every call the recording session saw: (kind, argument type, batch rows, epoch time).
CALLS: list[tuple[str, str, int, float]] = []


class Staged:
    """What the recording session's ``stage`` returns: only ``run`` accepts it."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class RecordingSession(TorchSession):
    def stage(self, host: torch.Tensor) -> Staged:
        return Staged(super().stage(host))

    def run(self, staged: Any) -> torch.Tensor:
        if not isinstance(staged, Staged):
            raise TypeError("run needs a staged batch")
        CALLS.append(("run", "staged", len(staged.tensor), time.time()))
        with torch.inference_mode():
            return self._module(staged.tensor)

    def infer(self, host: torch.Tensor) -> torch.Tensor:
        CALLS.append(("infer", type(host).__name__, len(host), time.time()))
        with torch.inference_mode():
            return self._module(host).float()


class RecordingBackend(TorchBackend):
    name: ClassVar[str] = "torch"

    def activate(self, artifact, precision, batch_sizes, cache_dir):  # noqa: ANN001, ANN201
        inner = super().activate(artifact, precision, batch_sizes, cache_dir)
        return RecordingSession(inner._module, precision, "cpu", inner.info, channels_last=False)


def _config(tmp_path: Path, cache: Path, **extra: object):
    return sweep_config(tmp_path, cache, **{"batch_sizes": [2], "backends": {"torch": ["fp32"]}, "accuracy": False,
                                            "timing": {"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 3, "repeats": 2}, **extra})


def _run(config) -> list:  # noqa: ANN001
    outcomes = [o for unit in plan_units(config) for o in run_unit(unit, UnitContext(config))]
    for o in outcomes:
        assert o.status == "ok", o.traceback
    return outcomes


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PQ_HARNESS_LOCK_DIR", str(tmp_path / "locks"))


@pytest.mark.slow
def test_compute_times_run_on_staged_batches_and_e2e_times_infer_on_host_tensors(
        tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(backends.names.BACKEND_CLASSES, "torch", "tests.test_cell_timing:RecordingBackend")
    CALLS.clear()
    config = _config(tmp_path, shared_cache, batch_sizes=[3])
    (outcome,) = _run(config)
    timings = {t.definition: t for t in outcome.result.timings}
    assert set(timings) == {"compute", "e2e"}
    per_window = (1 + 3) * 2  # (warm-up + iterations) x repeats
    # The cell's two windows are interleaved in one locked block: round r times one repeat of each.
    compute, e2e = timings["compute"], timings["e2e"]
    assert compute.window == e2e.window and compute.window["lock_device"] == "cpu"
    assert compute.extra["interleave"]["block_id"] == e2e.extra["interleave"]["block_id"]
    assert compute.extra["interleave"]["rounds"] == e2e.extra["interleave"]["rounds"] == [0, 1]
    block = [c for c in CALLS if compute.window["start"] <= c[3] <= compute.window["end"]]
    assert len(block) == 2 * per_window
    for definition, kind, arg in (("compute", "run", "staged"), ("e2e", "infer", "Tensor")):
        spans = timings[definition].extra["repeat_times"]
        assert len(spans) == 2
        timed = [c for c in CALLS if any(a <= c[3] <= b for a, b in spans)]
        assert len(timed) == 3 * 2, (definition, timed)  # iterations x repeats; warm-up before each span
        assert {(c[0], c[1], c[2]) for c in timed} == {(kind, arg, 3)}, definition
        assert sum(1 for c in block if c[0] == kind) == per_window


@pytest.mark.slow
def test_each_window_stores_ci_stability_host_load_and_exports_them(tmp_path: Path, shared_cache: Path) -> None:
    from harness.store.results import flat_rows

    (outcome,) = _run(_config(tmp_path, shared_cache, timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 5, "repeats": 3}))
    for t in outcome.result.timings:
        ci, verdict = t.ci, t.stability
        assert ci["low_ms"] <= t.median_ms <= ci["high_ms"]
        assert ci["method"] == "hierarchical" and ci["repeats"] == 3 and ci["samples"] == 15
        assert verdict["stable"] == (not verdict["reasons"]) and verdict["device"] == "cpu"
        assert t.host_load["window_s"] >= 0 and t.until_stable is None
    # Round trip through the stored JSON keeps every new key.
    again = CellResult.from_dict(outcome.result.to_dict())
    assert again.timings[0].window == outcome.result.timings[0].window
    assert again.node is None and outcome.result.node is None  # added once, by the executor that ran the cell
    rows = {r["timing_definition"]: r for r in flat_rows(outcome)}
    for definition, row in rows.items():
        t = outcome.result.timing(definition)
        assert row["latency_median_ci_low_ms"] == t.ci["low_ms"]
        assert row["latency_median_ci_high_ms"] == t.ci["high_ms"]
        assert row["throughput_ci_low_ips"] <= row["throughput_ips"] <= row["throughput_ci_high_ips"]
        assert row["stable"] == t.stability["stable"]
        assert row["instability"] == (t.stability["instability"] or None)
        assert row["ci_method"] == "hierarchical" and row["until_stable_converged"] is None


@pytest.mark.slow
def test_until_stable_adds_repeats_and_records_convergence(tmp_path: Path, shared_cache: Path) -> None:
    timing = {"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 5, "repeats": 3, "definitions": ["compute"],
              "until_stable": {"target_ci_pct": 10_000.0, "max_seconds": 60.0}}
    # A target any measurement meets (this 2-core test machine is shared and noisy): it stops at the
    # minimum of `repeats` repeats, converged, long before the budget.
    (outcome,) = _run(_config(tmp_path, shared_cache, timing=timing))
    (t,) = outcome.result.timings
    until = t.until_stable
    assert until["converged"] is True and until["repeats"] == 3 and "<= target" in until["stop_reason"]
    assert until["ci"]["half_width_pct"] <= 10_000.0 and until["seconds"] < 60.0
    assert len(t.samples_ns) == until["repeats"] == t.config["repeats"]
    # An unreachable target: repeats are added until the budget ends it, and it says it did not converge.
    timing = {"min_seconds": 0, "warmup_seconds": 0, "warmup": 0, "iterations": 1, "repeats": 2, "definitions": ["compute"],
              "until_stable": {"target_ci_pct": 1e-9, "max_seconds": 3.0}}
    (outcome,) = _run(_config(tmp_path, shared_cache, timing=timing))
    (t,) = outcome.result.timings
    until = t.until_stable
    assert until["converged"] is False and "time budget" in until["stop_reason"]
    assert until["seconds"] >= 3.0 and until["repeats"] == len(t.samples_ns) > 2
    assert until["repeats"] < 1000  # stopped by the budget, not by the repeat cap


@pytest.mark.slow
def test_ort_cpu_layer_profiles_predictions_and_int8_calibration(tmp_path: Path, shared_cache: Path) -> None:
    config = _config(tmp_path, shared_cache, accuracy=True, backends={"ort-cpu": ["fp32", "int8"]},
                     timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 0, "iterations": 2, "repeats": 1, "definitions": ["compute"]},
                     calibration={"count": 64})
    outcomes = {o.identity.precision: o.result for o in _run(config)}
    for precision, result in outcomes.items():
        profile = result.layer_profile
        assert profile["source"] == "onnxruntime-profiler" and profile["batch_size"] == 2
        assert profile["timer"] == "host" and any("CPU execution times" in n for n in profile["notes"])
        assert profile["layers"] and all(layer["provider"] == "CPUExecutionProvider" for layer in profile["layers"])
        assert abs(sum(r["share"] for r in profile["by_op_type"]) - 1.0) < 1e-6
        predictions = decode_predictions(result.predictions)
        assert predictions.dtype == np.int32 and len(predictions) == result.accuracy["samples"] == 500
        assert predictions.min() >= 0 and predictions.max() < 10
    fp32_ops = {r["op_type"] for r in outcomes["fp32"].layer_profile["by_op_type"]}
    int8_ops = {r["op_type"] for r in outcomes["int8"].layer_profile["by_op_type"]}
    assert "Conv" in fp32_ops and not any(op.startswith(("QLinear", "Quantize", "Dequantize")) for op in fp32_ops)
    assert int8_ops & {"QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger"}, int8_ops
    # Same images, same model: fp32 and int8 mostly agree on the top-1 prediction.
    agree = float(np.mean(decode_predictions(outcomes["fp32"].predictions)
                          == decode_predictions(outcomes["int8"].predictions)))
    assert agree > 0.8
    assert outcomes["fp32"].calibration is None
    calibration = outcomes["int8"].calibration
    assert calibration["count"] == 64 and calibration["method"] == config.calibration.method
    assert calibration["calibration"] and calibration["calib_file_list_hash"]


@pytest.mark.slow
def test_layer_profiling_can_be_switched_off(tmp_path: Path, shared_cache: Path) -> None:
    config = _config(tmp_path, shared_cache, backends={"ort-cpu": ["fp32"]}, profile_layers=False,
                     timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 0, "iterations": 1, "repeats": 1, "definitions": ["e2e"]})
    (outcome,) = _run(config)
    assert outcome.result.layer_profile is None and outcome.result.predictions is None  # accuracy off


def test_decode_predictions_round_trip_and_refuses_other_encodings() -> None:
    from harness.errors import HarnessError
    from harness.sweep.cell_timing import encode_predictions

    values = np.array([0, 7, 999, 3, 3], dtype=np.int64)
    encoded = encode_predictions(values)
    assert encoded["encoding"] == "int32-zlib-base64" and encoded["count"] == 5
    assert decode_predictions(encoded).tolist() == values.tolist()
    with pytest.raises(HarnessError):
        decode_predictions({**encoded, "encoding": "npy"})
    with pytest.raises(HarnessError):
        decode_predictions({**encoded, "count": 4})


def test_tensorrt_profiler_rows_become_the_stored_layer_profile() -> None:
    from backends.layer_profile import trt_layer_profile

    rows = [{"name": "conv1", "ms": 0.3, "precision": "INT8", "type": "Convolution", "reformat": False},
            {"name": "reformat_in", "ms": 0.1, "precision": "FP32", "type": "Reformat", "reformat": True},
            {"name": "conv2", "ms": 0.6, "precision": "FP16", "type": "Convolution", "reformat": False}]
    profile = trt_layer_profile(rows, 8)
    assert profile["source"] == "tensorrt-iprofiler" and profile["batch_size"] == 8
    assert [layer["name"] for layer in profile["layers"]] == ["conv2", "conv1", "reformat_in"]
    assert profile["layers"][0]["precision"] == "FP16" and profile["layers"][0]["share"] == pytest.approx(0.6)
    (conv, reformat) = profile["by_op_type"]
    assert conv == {"op_type": "Convolution", "ms": pytest.approx(0.9), "share": pytest.approx(0.9), "count": 2}
    assert reformat["count"] == 1 and profile["reformat_layers"] == 1
    assert profile["precision_counts"] == {"INT8": 1, "FP32": 1, "FP16": 1}


def test_until_stable_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="target_ci_pct"):
        load_config(None, {"timing": {"until_stable": {"target_ci_pct": 0, "max_seconds": 5}}})
    with pytest.raises(Exception, match="budget|max_seconds"):
        load_config(None, {"timing": {"until_stable": {"target_ci_pct": 1, "max_seconds": 5, "budget": 1}}})
    config = load_config(None, {"timing": {"until_stable": {"target_ci_pct": 2.5}}})
    assert config.timing.until_stable.target_ci_pct == 2.5 and config.timing.until_stable.max_seconds == 30.0
    assert load_config(None, {}).timing.until_stable is None and load_config(None, {}).profile_layers is True
