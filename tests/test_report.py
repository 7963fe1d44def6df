"""`harness report`: plots and the Markdown summary from a real sweep's database."""

from __future__ import annotations

from pathlib import Path

from harness.config import load_config
from harness.report import collect_points, write_report
from harness.results import ResultStore
from harness.sweep import SweepRunner


def test_report_writes_plots_and_speedup_table(tmp_path: Path, shared_cache: Path) -> None:
    config = load_config(None, {
        "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [4, 16], "backends": {"torch": ["fp32"]},
        "pruners": [{"method": "removal", "importance": "l2", "amounts": [0.5]},
                    {"method": "l1-global", "amounts": [0.3]}],
        "timing": {"warmup": 1, "iterations": 3, "repeats": 1},
        "cache_dir": shared_cache, "data_root": tmp_path / "data", "out_dir": tmp_path / "out"})
    with ResultStore(tmp_path / "out" / "results.db") as store:
        SweepRunner(config, store).run(resume=False)
        points, failures = collect_points(store)
        files = write_report(store, tmp_path / "report")
    assert not failures and len(points) == 6
    assert {p.pruner for p in points} == {"none", "removal-l2", "l1-global"}
    png = tmp_path / "report" / "tinycnn-shapes.png"
    assert png in files and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| removal-l2 | 0.5 | torch fp32 |" in md  # theoretical vs measured speedup row
    assert "Fastest configuration per backend" in md
