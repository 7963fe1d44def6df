"""`harness report`: plots and the Markdown summary from a real sweep's database."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.analysis.report import collect_points, write_report
from harness.config import load_config
from harness.store.results import ResultStore
from harness.sweep.driver import run_sweep


@pytest.mark.slow
def test_report_writes_plots_and_speedup_table(tmp_path: Path, shared_cache: Path) -> None:
    config = load_config(None, {
        "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [4, 16], "backends": {"torch": ["fp32"]},
        "pruners": [{"method": "removal", "importance": "l2", "amounts": [0.5]},
                    {"method": "l1-global", "amounts": [0.3]}],
        "timing": {"min_seconds": 0, "warmup_seconds": 0, "warmup": 1, "iterations": 3, "repeats": 1},
        "cache_dir": shared_cache, "data_root": tmp_path / "data", "out_dir": tmp_path / "out"})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        run_sweep(config, store, resume=False)
        points, failures = collect_points(store)
        files = write_report(store, tmp_path / "report")
    assert not failures and len(points) == 6
    assert {p.pruner for p in points} == {"none", "removal-l2", "l1-global"}
    png = tmp_path / "report" / "tinycnn-shapes.png"
    assert png in files and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| removal-l2 | 0.5 | torch fp32 |" in md  # theoretical vs measured speedup row
    assert "Fastest configuration per backend" in md


# --------------------------------------------------------------------------- significance, never noise


def _synthetic_cell(model: str, backend: str, precision: str, pruner: str, amount: float, median_ms: float,
                    seed: int, accuracy: float = 0.9):
    import numpy as np

    from harness.measure.timing import TimingResult, TimingSettings
    from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow

    rng = np.random.default_rng(seed)
    # 5 repeats of 40 samples; each repeat drifts by ~2 % (what a shared machine does) and samples by ~3 %
    repeats = [[int(v) for v in rng.normal(median_ms * 1e6 * rng.normal(1, 0.02), 0.03 * median_ms * 1e6, 40)]
               for _ in range(5)]
    timing = TimingResult("compute", "perf_counter_ns", 8, TimingSettings(repeats=5, iterations=40, min_seconds=0, warmup_seconds=0),
                          repeats).to_dict()
    timing = TimingWindow.from_dict(timing)
    ident = CellIdentity(model=model, weights="pretrained", dataset="shapes", dataset_size=None, pruner=pruner,
                         amount=amount, prune_options={}, backend=backend, precision=precision, batch_size=8,
                         calibration={"method": "entropy"} if precision == "int8" else None)
    return CellOutcome.ok(ident, CellResult(accuracy={"top1": accuracy, "samples": 500}, timings=[timing],
                                            compressed_size_bytes=1_000_000, device="cpu"))


def _section(md: str, model: str) -> str:
    start = md.index(f"## {model} on shapes")
    end = md.find("\n## ", start + 1)
    return md[start:] if end < 0 else md[start:end]


def test_report_names_a_tie_within_noise_and_a_winner_only_when_significant(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.db") as store:
        # "tied": two int8 cells from one distribution (zero-fill pruning does not change dense kernels)
        store.put(_synthetic_cell("tied", "ort-cpu", "int8", "none", 0.0, 3.0, seed=1))
        store.put(_synthetic_cell("tied", "ort-cpu", "int8", "l1-global", 0.1, 3.0, seed=2))
        # "clear": one configuration 40 % faster than the other
        store.put(_synthetic_cell("clear", "ort-cpu", "int8", "none", 0.0, 2.0, seed=3))
        store.put(_synthetic_cell("clear", "ort-cpu", "int8", "l1-global", 0.1, 2.8, seed=4))
        write_report(store, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    tied, clear = _section(md, "tied"), _section(md, "clear")
    assert "fastest:" not in tied
    assert "tie: ort-cpu int8 (" in tied and "ort-cpu int8 (unpruned)" in tied and "(l1-global 0.1)" in tied
    assert "fastest: ort-cpu int8 (unpruned) (speedup" in clear
    assert "Over all backends (batch 8): fastest: ort-cpu int8 (unpruned)" in clear
    assert "tie:" not in clear
    # the Pareto table shows latency CIs
    assert "| ort-cpu int8 (unpruned) | 90.00 | 2.0" in clear and "[" in clear
    png = tmp_path / "report" / "clear-shapes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_comparison_section_uses_harness_compare(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.db") as store:
        store.put(_synthetic_cell("m", "ort-cpu", "fp32", "none", 0.0, 4.0, seed=5))
        store.put(_synthetic_cell("m", "ort-cpu", "int8", "none", 0.0, 2.0, seed=6))
        write_report(store, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Comparisons" in md
    assert "### INT8 vs FP32 (precision=fp32 vs precision=int8)" in md
    assert "| fp32 vs int8 | paired |" in md and "yes (candidate faster)" in md
    assert "EP vs native" not in md and "INT8 vs FP16" not in md  # no such data


def test_report_never_ranks_latencies_from_different_timers(tmp_path: Path) -> None:
    gpu = _synthetic_cell("m", "trt-native", "fp16", "none", 0.0, 1.0, seed=7)
    gpu.result.timings[0] = dataclasses.replace(gpu.result.timings[0], timer="cuda_event")
    with ResultStore(tmp_path / "results.db") as store:
        store.put(_synthetic_cell("m", "ort-cpu", "fp32", "none", 0.0, 4.0, seed=8))
        store.put(gpu)
        write_report(store, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Over backends timed with cuda_event (batch 8): only configuration: trt-native fp16 (unpruned)" in md
    assert "Over backends timed with perf_counter_ns (batch 8): only configuration: ort-cpu fp32 (unpruned)" in md
    assert "fastest:" not in md
