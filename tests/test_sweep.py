"""End-to-end sweeps on the embedded offline data (tinycnn on shapes)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from harness.store.results import THESIS_COLUMNS, ResultStore
from harness.sweep.driver import run_sweep
from harness.sweep.observer import SweepObserver
from harness.sweep.plan import plan_cells
from tests.helpers import BROKEN_AT_INFERENCE, TINY_SWEEP, sweep_config

_config = sweep_config


@pytest.mark.slow
def test_sweep_writes_every_cell_with_real_accuracy(tiny_sweep: Path, tmp_path: Path, shared_cache: Path) -> None:
    config = sweep_config(tmp_path, shared_cache, **TINY_SWEEP)
    with ResultStore(tiny_sweep / "results.db") as store:
        records = list(store.records())
    assert len(records) == len(plan_cells(config)) == 3
    assert {r.key for r in records} == {c.identity(config).key for c in plan_cells(config)}
    timing = TINY_SWEEP["timing"]
    for r in records:
        assert r.status == "ok", r.error
        acc = r.result.accuracy
        assert acc["samples"] == 500  # every val image, 50 per class
        assert acc["top1"] > 0.7, "tinycnn should have learned shapes"
        assert {t.definition for t in r.result.timings} == {"compute", "e2e"}
        for t in r.result.timings:
            assert len(t.samples_ns) == timing["repeats"]
            assert all(len(rep) == timing["iterations"] for rep in t.samples_ns)
            assert t.timer == "perf_counter_ns"
        assert r.result.original_size_bytes > 0 and r.result.compressed_size_bytes > 0
    fp32 = {r.identity.backend: r.result.accuracy["top1"] for r in records if r.identity.precision == "fp32"}
    # Same model, same images: fp32 torch and fp32 ONNX Runtime agree on accuracy.
    assert abs(fp32["torch"] - fp32["ort-cpu"]) < 0.01


def test_the_observer_hears_every_cell_of_a_sweep(tmp_path: Path) -> None:
    """Without measuring anything: a sweep whose cells were all finished reports them planned and skipped."""
    import shutil

    from tests.helpers import REPO

    db = tmp_path / "results.db"
    shutil.copy(REPO / "tests" / "data" / "legacy_db" / "results.db", db)
    seen: list[tuple[int, int]] = []

    class Planned(SweepObserver):
        def planned(self, cells: int, skipped: int) -> None:
            seen.append((cells, skipped))

    config = sweep_config(tmp_path, tmp_path / "cache", batch_sizes=[4],
                          backends={"torch": ["fp32"], "ort-cpu": ["fp32", "int8"]},
                          pruners=[{"method": "l1-global", "amounts": [0.5]}],
                          calibration={"method": "minmax", "count": 16, "seed": 0},
                          timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 3, "repeats": 2}, max_eval_samples=40)
    with ResultStore(db) as store:
        assert run_sweep(config, store, Planned(), resume=True) == {"ok": 0, "error": 0, "skipped": 6}
    assert seen == [(6, 6)]


@pytest.mark.slow
def test_resume_skips_finished_and_never_duplicates(tmp_path: Path, shared_cache: Path) -> None:
    config = _config(tmp_path, shared_cache, batch_sizes=[2])
    db = tmp_path / "out" / "results.db"
    with ResultStore(db) as store:
        run_sweep(config, store, resume=False)
        second = run_sweep(config, store, resume=True)
        third = run_sweep(config, store, resume=False)
    assert second == {"ok": 0, "error": 0, "skipped": 2}
    assert third["ok"] == 2
    rows = sqlite3.connect(db).execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM cells").fetchone()
    assert rows == (2, 2)


@pytest.mark.slow
def test_failing_cell_is_recorded_and_others_survive(tmp_path: Path, shared_cache: Path) -> None:
    bad = tmp_path / "bad_model.py"
    bad.write_text(
        "import torch\n"
        "class Bad(torch.nn.Module):\n"
        "    input_size = 32\n"
        "    def forward(self, x):\n"
        "        if torch.onnx.is_in_onnx_export():\n"
        "            raise RuntimeError('boom in export')\n"
        "        return x.mean(dim=(2, 3)) @ torch.ones(3, 10)\n"
        "def build():\n"
        "    return Bad()\n"
    )
    config = _config(tmp_path, shared_cache, models=[f"{bad}:build", "tinycnn"], batch_sizes=[1])
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        records = {(r.identity.model, r.identity.backend): r for r in store.records()}
    assert counts["ok"] == 3 and counts["error"] == 1
    failed = records[(f"{bad}:build", "ort-cpu")]
    assert failed.status == "error"
    assert "boom in export" in failed.error and "Traceback" in failed.traceback
    assert records[(f"{bad}:build", "torch")].status == "ok"
    assert records[("tinycnn", "torch")].status == "ok" and records[("tinycnn", "ort-cpu")].status == "ok"


@pytest.mark.slow
def test_csv_export_has_thesis_columns(tiny_sweep: Path, tmp_path: Path) -> None:
    from harness.store.results import export_csv, export_json

    with ResultStore(tiny_sweep / "results.db") as store:
        n = export_csv(store, tmp_path / "r.csv")
        export_json(store, tmp_path / "r.json")
    every = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert n == len(every) == 6  # 3 cells x (compute, e2e)
    rows = [r for r in every if r["backend"] == "ort-cpu" and r["precision"] == "fp32"]
    assert len(rows) == 2  # compute and e2e
    header = next(csv.reader((tmp_path / "r.csv").open()))
    assert tuple(header[: len(THESIS_COLUMNS)]) == THESIS_COLUMNS
    row = rows[0]
    assert row["Model"] == "tinycnn" and row["Pruner"] == "-" and row["Quantizer"] == "-"
    assert row["backend"] == "ort-cpu" and 70 < float(row["Accuracy"]) <= 100  # percent
    onnx_mb = float(row["Compressed Size"])
    assert 0 < onnx_mb < 5
    assert {r["timing_definition"] for r in rows} == {"compute", "e2e"}
    assert float(row["latency_p99_ms"]) >= float(row["Inference Time (ms)"]) > 0
    assert 0 <= float(row["onnx_max_abs_diff"]) < 1e-3  # the export was checked against PyTorch
    assert json.loads((tmp_path / "r.json").read_text())[0]["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("batch", [7])
def test_only_full_batches_are_timed(tmp_path: Path, shared_cache: Path, batch: int) -> None:
    """500 val images at batch 7 leave a partial batch; timing must still see only full batches."""
    from harness.data.registry import open_split
    from harness.data.stream import StreamingEvalData
    from harness.models import load_model

    config = _config(tmp_path, shared_cache)
    loaded = load_model("tinycnn", weights="pretrained", cache_dir=shared_cache, data_root=config.data_root)
    split = open_split("shapes", "val", data_root=config.data_root, cache_dir=shared_cache)
    data = StreamingEvalData.for_model(loaded, split)
    assert len(data) % batch != 0
    inputs = data.timing_inputs(batch, 200)
    assert all(x.shape[0] == batch for x in inputs)


def _cold_calibration_cache(tmp_path: Path, shared_cache: Path) -> Path:
    """A cache sharing the dataset and tinycnn weights but with no ONNX or calibration artifacts yet."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for sub in ("datasets", "models"):
        (shared_cache / sub).mkdir(exist_ok=True)
        (cache / sub).symlink_to(shared_cache / sub)
    return cache


@pytest.mark.slow
def test_prune_then_quantize_sweep_records_sparsity_sizes_and_int8(tmp_path: Path, shared_cache: Path) -> None:
    """Pruner x amount x backend x precision, including prune-then-quantize, in one sweep."""
    config = _config(tmp_path, _cold_calibration_cache(tmp_path, shared_cache), batch_sizes=[16], backends={"ort-cpu": ["fp32", "int8"]},
                     pruners=[{"method": "l1-global", "amounts": [0.5]}],
                     calibration={"count": 128, "method": "entropy"}, timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 3,
                                                                              "repeats": 1, "definitions": ["compute"]})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        records = {(r.identity.pruner, r.identity.precision): r for r in store.records()}
    assert counts == {"ok": 4, "error": 0, "skipped": 0}
    base32, base8 = records[("none", "fp32")].result, records[("none", "int8")].result
    # INT8 on the CPU provider: real calibration, real accuracy, a smaller file.
    assert abs(base32.top1 - base8.top1) <= 0.02
    assert base8.compressed_size_bytes < 0.5 * base32.compressed_size_bytes
    # The calibration this int8 session built is its own prep time, reported by its activation;
    # the fp32 session of the same step built none.
    assert base8.prep_phases_s["calibrate"] > 0 and base32.prep_phases_s["calibrate"] == 0
    assert set(base8.prep_phases_s) == {"load", "prune", "export", "calibrate", "build"}
    assert records[("none", "int8")].identity.calibration["count"] == 128
    pruned = records[("l1-global", "int8")].result.pruning
    assert abs(pruned["achieved_sparsity"] - 0.5) < 0.01 and pruned["per_layer_sparsity"]
    sizes = pruned["sizes"]
    assert sizes["dense_bytes"] == base32.pruning["sizes"]["dense_bytes"]  # zero-fill saves nothing dense
    assert sizes["gzip_bytes"] < base32.pruning["sizes"]["gzip_bytes"]


@pytest.mark.slow
def test_taylor_removal_uses_train_split_and_lowers_macs(tmp_path: Path, shared_cache: Path) -> None:
    config = _config(tmp_path, shared_cache, batch_sizes=[8], backends={"torch": ["fp32"]},
                     pruners=[{"method": "removal", "importance": "taylor", "amounts": [0.25]},
                              {"method": "2:4"}],
                     timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 3, "repeats": 1})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        records = {r.identity.pruner: r for r in store.records()}
    assert counts["error"] == 0, [r.error for r in records.values()]
    removal = records["removal"].result.pruning
    assert removal["macs_after"] < removal["macs_before"] and removal["params_after"] < removal["params_before"]
    assert records["removal"].result.accuracy["top1"] > 0.1
    assert records["2:4"].result.pruning["pattern_24_verified"] is True


@pytest.mark.slow
def test_calibration_failure_fails_only_int8_cells(tmp_path: Path, shared_cache: Path) -> None:
    """A folder dataset with no train split cannot calibrate: int8 cells fail, fp32 cells still run."""
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "folder" / "val" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (60 * i, 100 if cls == "a" else 10, 20)).save(
                tmp_path / "folder" / "val" / cls / f"{i}.png")
    bad = tmp_path / "two_class.py"
    bad.write_text("import torch\ndef build():\n    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), "
                   "torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
                   "    m.input_size = 32\n    return m\n")
    config = _config(tmp_path, shared_cache, models=[f"{bad}:build"], datasets=["folder"],
                     data_root=tmp_path / "folder", batch_sizes=[4], backends={"ort-cpu": ["fp32", "int8"]},
                     timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 2, "repeats": 1})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        records = {r.identity.precision: r for r in store.records()}
    assert counts["ok"] == 1 and counts["error"] == 1
    assert records["fp32"].status == "ok" and records["fp32"].result.accuracy["samples"] == 8
    assert records["int8"].status == "error" and "train" in records["int8"].error


@pytest.mark.slow
def test_model_that_fails_at_inference_never_stops_the_sweep(tmp_path: Path, shared_cache: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN_AT_INFERENCE)
    config = _config(tmp_path, shared_cache, models=[f"{broken}:build", "tinycnn"], batch_sizes=[2, 4],
                     backends={"torch": ["fp32"]}, timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 2, "repeats": 1})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        records = list(store.records())
    assert counts == {"ok": 2, "error": 2, "skipped": 0}
    errors = [r for r in records if r.status == "error"]
    assert {r.identity.model for r in errors} == {f"{broken}:build"}
    assert all("inference exploded" in r.error for r in errors)


# ----------------------------------------------------------------- units: planning and running without a store


def test_plan_units_groups_cells_by_model_dataset_and_pruning_step(tmp_path: Path, shared_cache: Path) -> None:
    from harness.sweep.plan import plan_units

    config = _config(tmp_path, shared_cache, pruners=[{"method": "l1", "amounts": [0.0, 0.3, 0.6]}])
    units = plan_units(config)
    assert [(u.model, u.dataset, u.prune.method, u.prune.amount) for u in units] == [
        ("tinycnn", "shapes", "none", 0.0), ("tinycnn", "shapes", "l1", 0.3), ("tinycnn", "shapes", "l1", 0.6)]
    assert all(len(u.cells) == 4 for u in units)  # 2 backends x 2 batch sizes
    assert [c for u in units for c in u.cells] == plan_cells(config)
    kept = plan_units(config, skip=lambda c: c.prune.amount == 0.3 or c.backend == "torch")
    assert [(u.prune.amount, len(u.cells)) for u in kept] == [(0.0, 2), (0.6, 2)]


@pytest.mark.slow
def test_run_unit_yields_typed_outcomes_without_a_store(tmp_path: Path, shared_cache: Path) -> None:
    from harness.store.outcome import CellOutcome
    from harness.sweep.plan import plan_units
    from harness.sweep.unit import UnitContext, run_unit

    config = _config(tmp_path, shared_cache, batch_sizes=[4], backends={"ort-cpu": ["fp32"]},
                     timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 0, "iterations": 2, "repeats": 1, "definitions": ["e2e"]})
    (unit,) = plan_units(config)
    outcomes = list(run_unit(unit, UnitContext(config)))
    assert [type(o) for o in outcomes] == [CellOutcome]
    (outcome,) = outcomes
    assert outcome.status == "ok" and outcome.key == unit.cells[0].identity(config).key
    assert outcome.result is not None and outcome.result.top1 > 0.7
    assert outcome.result.prep_phases_s["export"] > 0  # the lazy ONNX export is timed at the step level
    assert not (tmp_path / "out" / "results.db").exists()


def test_old_database_resumes_with_the_same_cell_keys(tmp_path: Path, shared_cache: Path) -> None:
    """The identity (and so the key) of a cell is what the dict-based sweep stored: --resume on an old
    database skips its finished cells."""
    from harness.store.outcome import cell_key

    config = _config(tmp_path, shared_cache, batch_sizes=[2], backends={"torch": ["fp32"]},
                     pruners=[{"method": "l1", "amounts": [0.5], "n": 2}])
    cells = plan_cells(config)
    old = {"model": "tinycnn", "weights": "pretrained", "dataset": "shapes", "dataset_size": None,
           "pruner": "l1", "amount": 0.5, "backend": "torch", "precision": "fp32", "batch_size": 2,
           "prune_options": {"dim": 0, "importance": "l1", "n": 2.0, "round_to": None,
                             "targets": ["conv", "linear", "mha"]}}
    assert cells[1].identity(config).to_dict() == old
    assert cells[1].identity(config).key == cell_key(old)
    none = cells[0].identity(config).to_dict()
    assert none["pruner"] == "none" and none["prune_options"] == {} and "calibration" not in none


@pytest.mark.slow
def test_sweep_streams_evaluation_data_and_records_how(tmp_path: Path, shared_cache: Path) -> None:
    """Accuracy over a streamed split (decoded by a worker process, kept as a uint8 cache that the
    second session reads) is the same as decoding in process, and the result says how it was read."""
    config = _config(tmp_path, shared_cache, batch_sizes=[8], backends={"torch": ["fp32"], "ort-cpu": ["fp32"]},
                     max_eval_samples=40, eval_workers=1, eval_cache=True,
                     timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 0, "iterations": 2, "repeats": 1, "definitions": ["e2e"]})
    plain = _config(tmp_path, shared_cache, batch_sizes=[8], backends={"torch": ["fp32"]}, max_eval_samples=40,
                    out_dir=tmp_path / "plain", timing={"min_seconds": 0, "warmup_seconds": 0, "warmup": 0, "iterations": 2, "repeats": 1,
                                                        "definitions": ["e2e"]})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        run_sweep(config, store, resume=False)
        records = {r.identity.backend: r.result for r in store.records()}
    with ResultStore(tmp_path / "plain" / "results.db") as store:
        run_sweep(plain, store, resume=False)
        (baseline,) = [r.result for r in store.records()]
    assert records["torch"].accuracy["samples"] == 40
    assert records["torch"].accuracy["top1"] == baseline.accuracy["top1"]
    first, second = records["torch"].accuracy["eval_data"], records["ort-cpu"].accuracy["eval_data"]
    assert first["eval_workers"] == 1 and first["eval_cache"].startswith("built: ")
    assert second["eval_cache"].startswith("hit: ")
    assert baseline.accuracy["eval_data"]["eval_workers"] == 0 and "eval_cache" not in baseline.accuracy["eval_data"]
    assert "published" not in records["torch"].accuracy  # shapes is not ImageNet-1k


def test_imagenet_accuracy_is_checked_against_the_published_one(tmp_path: Path, shared_cache: Path) -> None:
    """On ImageNet-1k val with an ImageNet model the accuracy carries torchvision's published figure
    (applicable only over the full 50,000 images, flagged above 0.3 points); elsewhere nothing."""
    import torch
    from PIL import Image

    from harness.accuracy import LabelMapping
    from harness.data.registry import open_split
    from harness.data.stream import StreamingEvalData
    from harness.models import LoadedModel, load_model
    from harness.sweep.unit import _Inputs, published_check

    for k, wnid in enumerate(("n01440764", "n15075141")):  # a miniature ImageNet-1k val: tench, toilet tissue
        (tmp_path / "imagenet" / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (20, 16), (90 * k, 10, 90)).save(tmp_path / "imagenet" / "val" / wnid / "a.JPEG")
    split = open_split("imagenet", "val", data_root=tmp_path, cache_dir=shared_cache)
    model = LoadedModel(name="resnet18", module=torch.nn.Identity(), transform=lambda img: torch.zeros(3, 4, 4),
                        input_shape=(3, 4, 4), num_outputs=1000, label_space="imagenet", weights="pretrained")
    data = StreamingEvalData.for_model(model, split)
    inputs = _Inputs(model, data, LabelMapping.for_model("imagenet", 1000, data.num_classes, data.imagenet_indices),
                     0.0)
    config = _config(tmp_path, shared_cache)
    measured = {"samples": 50_000, "top1": 0.99, "top1_1000": 0.6971, "top5": None, "top5_1000": 0.8907}
    check = published_check(config, inputs, measured)
    assert check["applicable"] and check["published_top1"] == 69.758 and check["flag"] is False
    assert published_check(config, inputs, {**measured, "top1_1000": 0.69})["flag"] is True  # 0.758 points off
    assert published_check(config, inputs, {**measured, "samples": 2})["applicable"] is False
    tiny = load_model("tinycnn", weights="pretrained", cache_dir=shared_cache, data_root=tmp_path / "data")
    shapes = StreamingEvalData.for_model(tiny, open_split("shapes", "val", data_root=tmp_path / "data",
                                                          cache_dir=shared_cache))
    assert published_check(config, _Inputs(tiny, shapes, LabelMapping("direct"), 0.0), measured) is None
