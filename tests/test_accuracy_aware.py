"""The calibration source of an int8 variant: the budget Q/DQ model, cached, healing, explicit only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from backends.base import PhaseTimes
from calib import CalibrationData, CalibrationSet
from calib.accuracy_aware import AccuracyAwareCalibration
from harness.config import Int8Settings
from harness.data.registry import ImageSplit, scan_image_folder
from harness.errors import HarnessError
from harness.onnx_export import export_onnx
from harness.store.fingerprint import model_content_hash
from tests.test_sensitivity import SIDE, OutlierNet


def _split(root: Path, split: str) -> ImageSplit:
    classes, samples = scan_image_folder(root / split)
    return ImageSplit("outliers", split, root / split, classes, samples, None)


def _write_images(root: Path, per_class: dict[str, int], seed: int) -> None:
    """An image folder for OutlierNet: class = 2 * (green > mid) + (blue > mid); red is noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label in range(4):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(n):
                rgb = np.empty((SIDE, SIDE, 3), dtype=np.uint8)
                rgb[..., 0] = rng.integers(0, 256, (SIDE, SIDE))
                for channel, bit in ((1, label // 2), (2, label % 2)):
                    rgb[..., channel] = np.clip(128 + (2 * bit - 1) * 64 + rng.normal(0, 12, (SIDE, SIDE)), 0, 255)
                Image.fromarray(rgb).save(folder / f"{i}.png")


def outlier_transform(image: object) -> torch.Tensor:
    """Red becomes +-500 noise, green and blue +-0.5 signal: 8-bit per-tensor quantization erases the signal."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0 - 0.5).permute(2, 0, 1).contiguous()
    x[0] *= 1000.0
    return x


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("aware")
    _write_images(tmp / "data", {"train": 30, "val": 5}, seed=0)
    model = OutlierNet().eval()
    onnx_path = export_onnx(model, (3, SIDE, SIDE), content_hash=model_content_hash(model), cache_dir=tmp,
                            name="outlier").path
    train, val = _split(tmp / "data", "train"), _split(tmp / "data", "val")
    calib_set = CalibrationSet.from_splits(train, val, count=32, seed=0)

    def make(settings: Int8Settings) -> AccuracyAwareCalibration:
        inner = CalibrationData(lambda: onnx_path, calib_set, outlier_transform, "minmax", tmp / "cache")
        return AccuracyAwareCalibration(inner, settings, train)

    return make, val


def _initializer_free_fp32_nodes(path: Path) -> set[str]:
    graph = onnx.load(str(path)).graph
    dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in graph.node if n.op_type in ("Conv", "Gemm") and not any(i in dq for i in n.input)}


def test_budget_model_keeps_the_named_nodes_in_fp32_and_is_cached(source) -> None:
    make, val = source
    settings = Int8Settings(max_accuracy_drop=0.5, sensitivity=True, holdout=80)
    aware = make(settings)
    phases = PhaseTimes()
    path = aware.qdq_onnx("cpu", phases)
    analysis = aware.stored()["cpu"]
    kept = [e["node"] for e in analysis["mixed_precision"]["excluded"]]
    assert kept == ["/first/Conv"] and _initializer_free_fp32_nodes(path) == set(kept)
    assert analysis["mixed_precision"]["within_budget"] is True
    assert analysis["sensitivity"]["int8_drop_points"] > 3.0 and analysis["sensitivity"]["rows"][0]["node"] == kept[0]
    assert phases.seconds["calibrate"] > 0 and analysis["sensitivity"]["data"]["count"] == 80
    val_files = {str(p) for p, _ in val.samples}
    assert not val_files & set(aware.calibration_set.relative_paths())
    # a second source: reused from the cache, no time spent
    again = make(settings)
    phases2 = PhaseTimes()
    assert again.qdq_onnx("cpu", phases2) == path and phases2.seconds.get("calibrate", 0.0) == 0.0
    assert again.stored()["cpu"] == analysis
    # damage the budget model: rebuilt, with a note
    path.write_bytes(path.read_bytes()[:200])
    healed = make(settings)
    assert healed.qdq_onnx("cpu", PhaseTimes()) == path
    assert any("corrupt" in n and "rebuilding it" in n for n in healed.notes)
    onnx.checker.check_model(str(path))
    # damage the cached analysis: analysed again, with a note
    analysis_file = next((Path(aware.inner.cache_dir) / "calib").glob("sensitivity-*.json"))
    analysis_file.write_text("{")
    again2 = make(settings)
    assert again2.qdq_onnx("cpu", PhaseTimes()) == path and again2.stored()["cpu"] == analysis
    assert any("sensitivity analysis" in n and "rebuilt it" in n for n in again2.notes)
    # another budget is another artifact with another provenance
    assert make(Int8Settings(max_accuracy_drop=5.0, holdout=40)).provenance_hash != aware.provenance_hash


def far_outlier_transform(image: object) -> torch.Tensor:
    """Red becomes +-1e6 noise: beyond even FP8's range relative to the +-0.5 signal (see test_sensitivity)."""
    x = outlier_transform(image)
    x[0] *= 2000.0
    return x


def test_an_fp8_budget_keeps_the_harmful_node_in_float(tmp_path: Path) -> None:
    """What a trt-native or ort-cpu fp8 cell with ``int8: {max_accuracy_drop: 0.5}`` runs: the FP8 Q/DQ model
    with the node the budget names left in float, analysed on held-out train images like INT8."""
    from calib.fp8_qdq import count_fp8_qdq

    _write_images(tmp_path / "data", {"train": 30, "val": 5}, seed=1)
    model = OutlierNet().eval()
    onnx_path = export_onnx(model, (3, SIDE, SIDE), content_hash=model_content_hash(model), cache_dir=tmp_path,
                            name="outlier").path
    train, val = _split(tmp_path / "data", "train"), _split(tmp_path / "data", "val")
    inner = CalibrationData(lambda: onnx_path, CalibrationSet.from_splits(train, val, count=32, seed=0),
                            far_outlier_transform, "minmax", tmp_path / "cache")
    aware = AccuracyAwareCalibration(inner, Int8Settings(max_accuracy_drop=0.5, holdout=80), train)
    path = aware.qdq_onnx("fp8", PhaseTimes())
    analysis = aware.stored()["fp8"]
    kept = [e["node"] for e in analysis["mixed_precision"]["excluded"]]
    assert analysis["sensitivity"]["precision"] == "fp8" and analysis["sensitivity"]["int8_drop_points"] > 30
    assert kept == ["/first/Conv"] and analysis["mixed_precision"]["within_budget"] is True
    assert _initializer_free_fp32_nodes(path) == set(kept)
    assert count_fp8_qdq(path)["QuantizeLinear"] == 2  # mid and head stay FP8
    plain = inner.qdq_onnx("fp8", PhaseTimes())  # plain FP8: every weighted node quantized
    assert plain != path and count_fp8_qdq(plain)["QuantizeLinear"] == 3


def test_a_budget_refuses_implicit_int8(source) -> None:
    make, _ = source
    aware = make(Int8Settings(max_accuracy_drop=0.5))
    with pytest.raises(HarnessError, match="int8_mode: explicit"):
        aware.ort_trt_table(Path("/nonexistent"), PhaseTimes())
    with pytest.raises(HarnessError, match="int8_mode: explicit"):
        aware.trt_calibrator_core(8, (3, SIDE, SIDE))


def test_compare_pairs_plain_fp32_with_an_int8_variant_and_shows_the_kept_nodes(tmp_path: Path) -> None:
    from harness.analysis.compare import compare_store
    from harness.analysis.compare_render import detail_lines, to_markdown
    from harness.measure.timing import TimingResult, TimingSettings
    from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow
    from harness.store.results import ResultStore

    def cell(precision: str, ms: float, int8: dict | None, stored: dict | None) -> CellOutcome:
        rng = np.random.default_rng(int(ms * 10))
        reps = [[int(v) for v in rng.normal(ms * 1e6, 0.02 * ms * 1e6, 30)] for _ in range(3)]
        timing = TimingResult("compute", "perf_counter_ns", 8, TimingSettings(repeats=3, iterations=30), reps)
        ident = CellIdentity(model="m", weights="pretrained", dataset="shapes", dataset_size=None, pruner="none",
                             amount=0.0, prune_options={}, backend="ort-cpu", precision=precision, batch_size=8,
                             calibration={"method": "entropy"} if precision == "int8" else None, int8=int8)
        return CellOutcome.ok(ident, CellResult(accuracy={"top1": 0.9, "samples": 100}, timings=[TimingWindow.from_dict(timing.to_dict())],
                                                device="cpu", int8_precision=stored))

    analysis = {"cpu": {"sensitivity": {"rows": [{"node": "/first/Conv", "op_type": "Conv", "harm_points": 79.0,
                                                  "snr_db": 45.0}]},
                        "mixed_precision": {"excluded": [{"node": "/first/Conv", "reason": "rank 1 by sensitivity"}]}}}
    plain_key = CellIdentity(model="m", weights="pretrained", dataset="shapes", dataset_size=None, pruner="none",
                             amount=0.0, prune_options={}, backend="ort-cpu", precision="int8", batch_size=8,
                             calibration={"method": "entropy"}).key
    with ResultStore(tmp_path / "results.db") as store:
        store.put(cell("fp32", 4.0, None, None))
        variant = cell("int8", 2.0, {"max_accuracy_drop": 0.5}, analysis)
        store.put(variant)
        assert variant.key != plain_key  # a variant is its own cell; plain int8 keeps today's key
        result = compare_store(store, "precision=fp32", "precision=int8")
    assert [r.status for r in result.rows] == ["paired"]
    text = "\n".join(detail_lines(result))
    assert "nodes kept in FP32 by the accuracy budget: /first/Conv (rank 1 by sensitivity)" in text
    assert "qdq-fp32-nodes:1" in to_markdown(result)
