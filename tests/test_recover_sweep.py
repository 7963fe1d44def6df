"""A sweep with recovery after pruning and an accuracy-aware int8 variant (tinycnn on shapes, CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.config import load_config
from harness.store.results import ResultStore
from harness.sweep.driver import run_sweep
from harness.sweep.observer import SweepObserver
from harness.sweep.plan import plan_cells

RECOVER = {"epochs": 1, "max_steps": 20, "lr": 0.003}


class ValAwayDuringRecovery(SweepObserver):
    """Takes the evaluation split's folder away while recovery trains, and puts it back afterwards
    (the status messages say when): recovery must not need a single evaluation file."""

    def __init__(self, val: Path) -> None:
        self.val, self.away = val, val.with_name("val.away")
        self.recovered_while_away = 0

    def status(self, text: str) -> None:
        recovering = ": recovering" in text
        if recovering and self.val.exists():
            self.val.rename(self.away)
        if recovering and "step" in text:
            self.recovered_while_away += int(not self.val.exists())
        if not recovering and self.away.exists():
            self.away.rename(self.val)


@pytest.mark.slow
def test_recovery_and_int8_variants_are_their_own_cells(tmp_path: Path, shared_cache: Path) -> None:
    # a private cache (the shapes files are taken away during recovery), seeded from the shared one
    cache = tmp_path / "cache"
    config = load_config(None, {
        "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [8],
        "backends": {"torch": ["fp32"], "ort-cpu": ["fp32", "int8"]},
        "pruners": [{"method": "removal", "amounts": [0.5], "round_to": 8},
                    {"method": "removal", "amounts": [0.5], "round_to": 8, "recover": RECOVER}],
        "int8": [{}, {"max_accuracy_drop": 0.5, "sensitivity": True, "holdout": 64}],
        "calibration": {"count": 64}, "timing": {"warmup": 1, "iterations": 3, "repeats": 1},
        "cache_dir": cache, "data_root": tmp_path / "data", "out_dir": tmp_path / "out"})
    from harness.data.registry import open_split
    from harness.models import load_model

    load_model("tinycnn", weights="pretrained", cache_dir=shared_cache, data_root=tmp_path / "data")  # trained once per session
    for sub in ("datasets", "models"):
        shutil.copytree(shared_cache / sub, cache / sub)
    val = open_split("shapes", "val", data_root=tmp_path / "data", cache_dir=cache).root
    observer = ValAwayDuringRecovery(val)
    with ResultStore(tmp_path / "out" / "results.db") as store:
        counts = run_sweep(config, store, observer, resume=False)
        records = {r.key: r for r in store.records()}
    assert counts == {"ok": 12, "error": 0, "skipped": 0}, [r.error for r in records.values() if r.error]
    assert observer.recovered_while_away > 0 and val.exists()
    assert len(records) == len(plan_cells(config)) == 12

    recovered = [r for r in records.values() if r.identity.recover is not None]
    plain = [r for r in records.values() if r.identity.pruner == "removal" and r.identity.recover is None]
    assert len(recovered) == len(plain) == 4
    for r in plain:  # no recover: today's identity, so old databases resume
        assert "recover" not in r.identity.to_dict() and "recovery" not in r.result.pruning
    for r in recovered:
        rec = r.result.pruning["recovery"]
        assert rec["steps"] == 20 and rec["provenance"]["data_split"] == "train"
        assert rec["accuracy_after"] > rec["accuracy_before"] + 0.2  # removal at 0.5 destroys it; recovery helps
        assert r.result.prep_phases_s["recover"] > 0
        assert r.result.prep_time_s >= r.result.prep_phases_s["recover"]
    torch_recovered = next(r for r in recovered if r.identity.backend == "torch")
    # the cell measures the recovered model (every later stage sees it)
    assert torch_recovered.result.top1 == pytest.approx(torch_recovered.result.pruning["recovery"]["accuracy_after"])

    variants = [r for r in records.values() if r.identity.int8 is not None]
    assert len(variants) == 3 and all(r.identity.precision == "int8" for r in variants)
    for r in variants:
        analysis = r.result.int8_precision["cpu"]
        assert len(analysis["sensitivity"]["rows"]) == 7
        assert analysis["sensitivity"]["data"]["split"].startswith("train")
        assert analysis["mixed_precision"]["within_budget"] is True
    plain_int8 = [r for r in records.values() if r.identity.precision == "int8" and r.identity.int8 is None]
    assert len(plain_int8) == 3 and all("int8" not in r.identity.to_dict() for r in plain_int8)
    assert all(r.result.int8_precision is None for r in plain_int8)

    # the configuration to ship, from the real database: never outside the budget
    from harness.analysis.recommend import recommend

    rec = recommend(list(records.values()), include_unstable=True, max_accuracy_drop=2.0)
    assert rec.verdict in ("best", "tie") and rec.cells
    assert all(n["accuracy_drop_points"] <= 2.0 for n in rec.numbers)
    unrecovered = {r.key for r in plain if r.identity.precision == "fp32"}
    assert not unrecovered & set(rec.cells)  # removal without recovery lost far more than 2 points
    assert all(e["kind"] == "budget" for e in rec.excluded if e["key"] in unrecovered)

    # resume: every key is stable
    with ResultStore(tmp_path / "out" / "results.db") as store:
        assert run_sweep(config, store, resume=True) == {"ok": 0, "error": 0, "skipped": 12}
