"""A pruner added from outside the package (tests/toy_pruner.py, registered here) runs through a real
sweep: config validation, its own options, gradient batches, artifact flags, identity and report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.compression import artifact_flags, methods, needs_gradient_batches, register
from harness.compression.registry import unregister
from harness.config import load_config, prune_specs
from harness.errors import HarnessError
from harness.store.results import ResultStore
from harness.sweep.driver import run_sweep
from tests.toy_pruner import TOY


@pytest.fixture
def toy() -> Iterator[None]:
    register(TOY)  # the one registration line
    yield
    unregister(TOY.method)


def _config(tmp_path: Path, cache: Path, pruner: dict):
    return load_config(None, {
        "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [4],
        "backends": {"torch": ["fp32"], "ort-cpu": ["fp32"]}, "pruners": [pruner],
        "calibration": {"method": "minmax", "count": 16, "seed": 0},
        "timing": {"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 2, "repeats": 2}, "max_eval_samples": 40, "profile_layers": False,
        "cache_dir": cache, "data_root": tmp_path / "data", "out_dir": tmp_path / "out"})


def test_an_unregistered_method_is_a_config_error_naming_the_registered_ones(tmp_path: Path) -> None:
    assert "toy-floor" not in methods()
    with pytest.raises(HarnessError, match=r"pruners\.0\.method: unknown pruning method 'toy-floor'.*removal"):
        _config(tmp_path, tmp_path / "cache", {"method": "toy-floor", "amounts": [0.5]})


def test_the_toy_pruners_options_are_validated_by_its_own_model(tmp_path: Path, toy: None) -> None:
    with pytest.raises(HarnessError, match=r"pruners\.0\.importance: unknown key"):
        _config(tmp_path, tmp_path / "cache", {"method": "toy-floor", "amounts": [0.5], "importance": "l1"})
    with pytest.raises(HarnessError, match=r"pruners\.0\.floor: Input should be greater than or equal to 0"):
        _config(tmp_path, tmp_path / "cache", {"method": "toy-floor", "amounts": [0.5], "floor": -1})
    config = _config(tmp_path, tmp_path / "cache", {"method": "toy-floor", "amounts": [0.0, 0.5], "floor": 0.01})
    (_, spec) = prune_specs(config.pruners)
    assert spec.option("floor") == 0.01 and spec.label == "toy-floor@0.5"
    assert needs_gradient_batches(spec) and artifact_flags(spec).sparse_weights


@pytest.mark.slow
def test_the_toy_pruner_runs_through_a_real_sweep(tmp_path: Path, shared_cache: Path, toy: None) -> None:
    config = _config(tmp_path, shared_cache, {"method": "toy-floor", "amounts": [0.5], "floor": 0.01})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        records = list(store.records())
    assert counts == {"ok": 4, "error": 0, "skipped": 0}, [r.error for r in records]
    toy_cells = [r for r in records if r.identity.pruner == "toy-floor"]
    assert len(toy_cells) == 2
    for record in toy_cells:
        assert record.identity.prune_options["floor"] == 0.01  # its own option is part of the cell's key
        pruning = record.result.pruning
        assert 0.5 <= pruning["achieved_sparsity"] < 0.7
        assert any("1 gradient batches (16 images)" in n for n in pruning["notes"])  # calibration.count images
        assert record.result.accuracy["samples"] == 40
    unpruned = {r.identity.backend: r for r in records if r.identity.pruner == "none"}
    assert unpruned["torch"].result.pruning.get("achieved_sparsity") is None
