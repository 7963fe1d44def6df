"""`harness recommend`: the configuration to ship, from a database written through the real ResultStore."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.analysis.recommend import recommend
from harness.analysis.recommend_render import recommendation_section
from harness.analysis.report import write_report
from harness.cli import app
from harness.errors import HarnessError
from harness.measure.timing import TimingResult, TimingSettings
from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow
from harness.store.results import ResultStore


def _cell(backend: str, precision: str, median_ms: float, accuracy: float, *, seed: int, pruner: str = "none",
          amount: float = 0.0, size: int = 1_000_000, batch: int = 8, host: str = "bench-1",
          timer: str = "perf_counter_ns", stable: bool = True, model: str = "tinycnn") -> CellOutcome:
    rng = np.random.default_rng(seed)
    # 5 repeats of 40 samples; each repeat drifts by ~2 % (a shared machine) and samples scatter by ~3 %
    repeats = [[int(v) for v in rng.normal(median_ms * 1e6 * rng.normal(1, 0.02), 0.03 * median_ms * 1e6, 40)]
               for _ in range(5)]
    timing = TimingResult("compute", timer, batch, TimingSettings(repeats=5, iterations=40), repeats).to_dict()
    timing["stability"] = {"stable": stable, "reasons": [] if stable else ["CV 14.0 % > 10.0 %"]}
    ident = CellIdentity(model=model, weights="pretrained", dataset="shapes", dataset_size=None, pruner=pruner,
                         amount=amount, prune_options={} if pruner == "none" else {"round_to": 8},
                         backend=backend, precision=precision, batch_size=batch,
                         calibration={"method": "entropy", "count": 512, "seed": 0} if precision == "int8" else None)
    return CellOutcome.ok(ident, CellResult(
        accuracy={"top1": accuracy, "samples": 500}, timings=[TimingWindow.from_dict(timing)], compressed_size_bytes=size, device="cpu",
        device_name="x86_64", versions={"torch": "2.14.1", "onnxruntime": "1.32.0"},
        node={"hostname": host, "gpu_name": None, "gpu_uuid": None, "executor": "local"}))


def _failed(backend: str, precision: str) -> CellOutcome:
    ident = CellIdentity(model="tinycnn", weights="pretrained", dataset="shapes", dataset_size=None, pruner="none",
                         amount=0.0, prune_options={}, backend=backend, precision=precision, batch_size=8)
    return CellOutcome.failed(ident, HarnessError("the engine build ran out of memory"))


def _db(tmp_path: Path, cells: list[CellOutcome]) -> list[CellOutcome]:
    with ResultStore(tmp_path / "results.db") as store:
        for c in cells:
            store.put(c)
        return list(store.records())


def _by_label(rec, text: str) -> str:
    keys = [e["key"] for e in rec.excluded if text in e["label"]]
    return keys[0]


def test_never_recommends_a_cell_outside_the_budget(tmp_path: Path) -> None:
    records = _db(tmp_path, [
        _cell("ort-cpu", "fp32", 4.0, 0.958, seed=1),
        _cell("ort-cpu", "int8", 1.5, 0.925, seed=2, size=300_000),  # 3.3 points below: far fastest, out
        _cell("ort-cpu", "fp32", 2.6, 0.952, seed=3, pruner="removal", amount=0.5, size=250_000),  # 0.6 points
        _cell("torch", "fp32", 5.0, 0.958, seed=4, size=1_100_000),
        _failed("ort-cpu", "fp16"),
    ])
    rec = recommend(records, max_accuracy_drop=1.0)
    removal = next(r.key for r in records if r.identity.pruner == "removal")
    int8 = next(r.key for r in records if r.identity.precision == "int8")
    assert rec.verdict == "best" and rec.cells == [removal]
    out = {e["key"]: e for e in rec.excluded}
    assert out[int8]["kind"] == "budget" and "3.30 points below" in out[int8]["reason"]
    assert any(e["kind"] == "failed" and "out of memory" in e["reason"] for e in rec.excluded)
    n = rec.numbers[0]
    assert n["median_ci_ms"][0] <= n["median_ms"] <= n["median_ci_ms"][1]
    assert n["accuracy_drop_points"] == pytest.approx(0.6)
    assert n["speedup_vs_baseline"] > 1.3 and n["speedup_significant"] is True
    # the faster int8 cell is still shown, as an alternative outside the budget
    alt = {a["key"]: a for a in rec.alternatives}
    assert alt[int8]["within_budget"] is False
    # a wider budget takes it
    assert recommend(records, max_accuracy_drop=4.0).cells == [int8]


def test_never_ranks_cells_that_are_not_comparable(tmp_path: Path) -> None:
    records = _db(tmp_path, [
        _cell("ort-cpu", "fp32", 4.0, 0.958, seed=1),
        _cell("torch", "fp32", 5.0, 0.958, seed=2),
        _cell("ort-cpu", "fp32", 3.0, 0.955, seed=3, pruner="removal", amount=0.5),
        # fastest and in budget, but measured on another machine: never ranked against the others
        _cell("ort-cpu", "int8", 1.0, 0.958, seed=4, host="other-box"),
    ])
    rec = recommend(records)
    other = next(r.key for r in records if r.identity.precision == "int8")
    assert other not in rec.cells
    reason = next(e for e in rec.excluded if e["key"] == other)
    assert reason["kind"] == "not comparable" and "other-box" in reason["reason"]
    assert rec.measured_on["nodes"][0]["hostname"] == "bench-1"
    assert [a for a in rec.alternatives if a["key"] == other] == []


def test_a_tie_lists_the_tied_set_smallest_first(tmp_path: Path) -> None:
    records = _db(tmp_path, [
        _cell("ort-cpu", "fp32", 3.0, 0.958, seed=1, size=1_000_000),
        # zero-fill pruning: the same dense kernels, the same latency distribution
        _cell("ort-cpu", "fp32", 3.0, 0.956, seed=2, pruner="l1-global", amount=0.3, size=990_000),
        _cell("ort-cpu", "fp32", 4.5, 0.958, seed=3, pruner="l1", amount=0.1, size=980_000),
    ])
    rec = recommend(records)
    zero_fill = next(r.key for r in records if r.identity.pruner == "l1-global")
    unpruned = next(r.key for r in records if r.identity.pruner == "none")
    assert rec.verdict == "tie" and rec.cells == [zero_fill, unpruned]
    assert "no significant winner" in rec.why


def test_unstable_cells_are_excluded_unless_asked(tmp_path: Path) -> None:
    records = _db(tmp_path, [
        _cell("ort-cpu", "fp32", 4.0, 0.958, seed=1),
        _cell("ort-cpu", "int8", 2.0, 0.955, seed=2, stable=False),
    ])
    int8 = next(r.key for r in records if r.identity.precision == "int8")
    rec = recommend(records)
    assert int8 not in rec.cells
    assert next(e for e in rec.excluded if e["key"] == int8)["kind"] == "unstable"
    assert recommend(records, include_unstable=True).cells == [int8]


def test_size_objective_and_bad_arguments(tmp_path: Path) -> None:
    records = _db(tmp_path, [
        _cell("ort-cpu", "fp32", 4.0, 0.958, seed=1, size=1_000_000),
        _cell("ort-cpu", "int8", 2.0, 0.955, seed=2, size=300_000),
        _cell("ort-cpu", "fp32", 4.0, 0.958, seed=3, model="other"),
    ])
    int8 = next(r.key for r in records if r.identity.precision == "int8")
    rec = recommend(records, objective="size", model="tinycnn")
    assert rec.verdict == "best" and rec.cells == [int8] and "smaller" in rec.why
    with pytest.raises(HarnessError, match="2 model x dataset groups"):
        recommend(records)
    with pytest.raises(HarnessError, match="unknown objective"):
        recommend(records, objective="speed", model="tinycnn")
    with pytest.raises(HarnessError, match="no cell at batch size 3"):
        recommend(records, batch_size=3, model="tinycnn")


def test_cli_json_has_the_documented_fields(tmp_path: Path) -> None:
    records = _db(tmp_path, [
        _cell("ort-cpu", "fp32", 4.0, 0.958, seed=1),
        _cell("ort-cpu", "int8", 2.0, 0.955, seed=2, size=300_000),
    ])
    result = CliRunner().invoke(app, ["recommend", "--out", str(tmp_path), "--json", "--max-accuracy-drop", "0.5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"recommendation", "alternatives", "excluded", "budget", "objective", "measured_on"}
    assert set(data["recommendation"]) == {"cells", "verdict", "numbers", "why"}
    assert data["recommendation"]["cells"] == [next(r.key for r in records if r.identity.precision == "int8")]
    assert data["budget"]["max_accuracy_drop_points"] == 0.5 and data["objective"] == "latency"
    text = CliRunner().invoke(app, ["recommend", "--out", str(tmp_path)])
    assert text.exit_code == 0 and "verdict: best" in text.stdout
    missing = CliRunner().invoke(app, ["recommend", "--out", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no results database" in missing.output and "Traceback" not in missing.output
    assert recommendation_section(records)[0] == "## Recommendation"
    with ResultStore(tmp_path / "results.db") as store:
        write_report(store, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Recommendation" in md and "verdict: best" in md
