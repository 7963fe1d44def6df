"""`harness compare` on a real tiny sweep (tinycnn on shapes: torch fp32, ort-cpu fp32 and int8)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.analysis.compare import (
    agreement,
    compare_records,
    decode_predictions,
    encode_predictions,
    not_int8_layers,
    parse_selector,
    precision_counts,
)
from harness.analysis.compare_render import table_rows, to_markdown
from harness.errors import HarnessError
from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow
from harness.store.results import ResultStore
from tests.helpers import CliResult, run_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sweep_out(tiny_sweep: Path) -> Path:
    """The session's sweep: 3 cells at batch 1, few iterations, 3 repeats (hierarchical CIs)."""
    return tiny_sweep


def _cli(*args: str) -> CliResult:
    return run_cli(*args)


def _compare_json(out: Path, baseline: str, candidate: str, *extra: str) -> list[dict[str, Any]]:
    proc = _cli("compare", "--out", str(out), "--baseline", baseline, "--candidate", candidate, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _stored_predictions(out: Path) -> bool:
    with ResultStore(out / "results.db") as store:
        return any(r.result is not None and r.result.to_dict().get("predictions") for r in store.records())


def _check_pair(row: dict[str, Any], predictions_stored: bool) -> None:
    assert row["status"] == "paired"
    for (median, (lo, hi)) in zip(row["median_ms"], row["median_ci_ms"]):
        assert lo <= median <= hi and median > 0
    s_lo, s_hi = row["speedup_ci"]
    assert s_lo <= row["speedup"] <= s_hi
    assert isinstance(row["significant"], bool)
    excludes_one = s_lo > 1.0 or s_hi < 1.0
    if row["significant"]:
        assert excludes_one
        assert row["faster"] == ("candidate" if row["speedup"] > 1 else "baseline")
    if not excludes_one:
        assert row["significant"] is False and row["faster"] is None
    assert "bootstrap" in row["test"]
    for acc in row["accuracy"]:
        assert 0.7 < acc <= 1.0  # tinycnn learned shapes, on every backend
    if predictions_stored:
        assert 0.0 <= row["agreement"] <= 1.0
    else:
        assert row["agreement"] is None and any("no stored predictions" in n for n in row["notes"])
    for side in (row["baseline"], row["candidate"]):
        assert side["size_mb"] > 0 and side["throughput_ips"] > 0
        assert side["stability"] is not None and isinstance(side["stability"]["stable"], bool)
        assert side["ci_method"] == "hierarchical"


@pytest.mark.slow
def test_compare_backends_pairs_same_precision(sweep_out: Path) -> None:
    rows = _compare_json(sweep_out, "backend=torch", "backend=ort-cpu")
    e2e = _compare_json(sweep_out, "backend=torch", "backend=ort-cpu", "--definition", "e2e")
    assert {r["definition"] for r in e2e} == {"e2e"}
    assert [r["median_ms"] for r in e2e] != [r["median_ms"] for r in rows]
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    (pair,) = by_status["paired"]
    assert pair["baseline"]["identity"]["backend"] == "torch"
    assert pair["candidate"]["identity"]["backend"] == "ort-cpu"
    assert pair["candidate"]["identity"]["precision"] == pair["identity"]["precision"] == "fp32"
    assert "backend" not in pair["identity"]
    _check_pair(pair, _stored_predictions(sweep_out))
    # ort-cpu int8 has no torch int8 partner: listed, not dropped
    (lonely,) = by_status["unpaired-candidate"]
    assert lonely["candidate"]["identity"]["precision"] == "int8" and lonely["baseline"] is None
    lo, hi = lonely["candidate"]["median_ci_ms"]
    assert lo <= lonely["candidate"]["median_ms"] <= hi
    assert set(by_status) == {"paired", "unpaired-candidate"}


@pytest.mark.slow
def test_compare_precisions_pairs_across_calibration(sweep_out: Path, tmp_path: Path) -> None:
    md = tmp_path / "cmp.md"
    rows = _compare_json(sweep_out, "precision=fp32", "precision=int8", "--md", str(md))
    paired = [r for r in rows if r["status"] == "paired"]
    (pair,) = paired  # fp32 cells have no calibration, int8 ones do: they pair anyway
    assert pair["identity"]["backend"] == "ort-cpu"
    assert pair["candidate"]["identity"]["calibration"]["method"] == "entropy"
    assert pair["candidate"]["calibrate_s"] is not None
    _check_pair(pair, _stored_predictions(sweep_out))
    (unpaired,) = [r for r in rows if r["status"] == "unpaired-baseline"]
    assert unpaired["baseline"]["identity"]["backend"] == "torch"
    text = md.read_text()
    assert text.startswith("# Comparison: precision=fp32 vs precision=int8")
    assert "unpaired-baseline" in text and "bootstrap" in text


@pytest.mark.slow
def test_compare_table_prints_cis_and_test(sweep_out: Path) -> None:
    proc = _cli("compare", "--out", str(sweep_out), "--baseline", "backend=torch", "--candidate", "backend=ort-cpu")
    assert proc.returncode == 0, proc.stderr
    assert "speedup" in proc.stdout and "95% CI" in proc.stdout
    # torch and ort-cpu cells of one unit were measured interleaved: compared round by round
    flat = " ".join(proc.stdout.split())  # the console wraps long lines
    assert "test: paired-rounds bootstrap" in flat and "design: paired-rounds" in flat
    assert "unpaired-candidate" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (("--baseline", "backend=nope", "--candidate", "backend=torch"), "matches no cell"),
    (("--baseline", "backend=torch", "--candidate", "precision=fp8"), "matches no cell"),
    (("--baseline", "colour=red", "--candidate", "backend=torch"), "unknown key 'colour'"),
    (("--baseline", "backend", "--candidate", "backend=torch"), "is not KEY=VALUE"),
    (("--baseline", "backend=torch", "--candidate", "backend=ort-cpu", "--definition", "wall"), "unknown timing"),
])
@pytest.mark.slow
def test_bad_selectors_exit_2_with_one_line(sweep_out: Path, args: tuple[str, ...], needle: str) -> None:
    proc = _cli("compare", "--out", str(sweep_out), *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- synthetic records


def _ident(**kw: Any) -> CellIdentity:
    base: dict[str, Any] = {"model": "m", "weights": "pretrained", "dataset": "shapes", "dataset_size": None,
                            "pruner": "none", "amount": 0.0, "prune_options": {}, "backend": "trt-native",
                            "precision": "fp16", "batch_size": 8}
    base.update(kw)
    if base["precision"] == "int8" and "calibration" not in kw:
        base["calibration"] = {"method": "entropy", "count": 64, "seed": 0}
    return CellIdentity(**base)


def _samples(median_ms: float, seed: int, spread: float = 0.01) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(v) for v in rng.normal(median_ms * 1e6, spread * median_ms * 1e6, 30)] for _ in range(5)]


def _cell(ident: CellIdentity, median_ms: float, seed: int, *, timer: str = "cuda_event",
          device_name: str = "NVIDIA H200", preds: list[int] | None = None, **extra: Any) -> CellOutcome:
    result = CellResult(
        accuracy={"top1": 0.9, "samples": 4}, device="cuda", device_name=device_name,
        timings=[TimingWindow.from_dict({"definition": "compute", "timer": timer, "batch_size": ident.batch_size,
                                         "config": {}, "stats": {"median_ms": median_ms},
                                         "samples_ns": _samples(median_ms, seed)})],
        compressed_size_bytes=1_000_000, prep_phases_s={"build": 2.0, "calibrate": 1.0},
        session={"details": extra.pop("details", {})},
        extra={"predictions": encode_predictions(preds) if preds is not None else None, **extra})
    return CellOutcome.ok(ident, result)


def test_predictions_round_trip_and_agreement() -> None:
    enc = encode_predictions([1, 2, 3, 4])
    assert enc["encoding"] == "int32-zlib-base64" and enc["count"] == 4
    assert decode_predictions(enc).tolist() == [1, 2, 3, 4]
    assert agreement(enc, encode_predictions([1, 2, 0, 4]))[0] == pytest.approx(0.75)
    assert agreement(enc, encode_predictions([1, 2, 3]))[0] is None
    with pytest.raises(HarnessError):
        decode_predictions({**enc, "encoding": "json"})


def test_int8_vs_fp16_reports_layers_counts_and_agreement() -> None:
    profile = {"source": "tensorrt-iprofiler", "batch_size": 8, "layers": [
        {"name": "conv1", "ms": 0.5, "share": 0.5, "precision": "int8"},
        {"name": "softmax", "ms": 0.3, "share": 0.3, "precision": "fp16"},
        {"name": "Reformatting CopyNode", "ms": 0.2, "share": 0.2, "precision": "fp32"}], "by_op_type": []}
    counts = {"int8": 1, "fp16": 1, "fp32": 0, "other": 0, "reformat": 1, "total": 3}
    fp16 = _cell(_ident(), 2.0, 1, preds=[0, 1, 2, 3])
    int8 = _cell(_ident(precision="int8"), 1.0, 2, preds=[0, 1, 2, 0], layer_profile=profile,
                 details={"layers": {"precision_counts": counts}})
    res = compare_records([fp16, int8], parse_selector("precision=fp16"), parse_selector("precision=int8"))
    (row,) = res.rows
    d = row.to_dict()
    assert d["status"] == "paired" and d["significant"] is True and d["faster"] == "candidate"
    assert d["speedup"] == pytest.approx(2.0, rel=0.05) and d["speedup_ci"][0] > 1
    assert d["agreement"] == pytest.approx(0.75)
    assert [r["name"] for r in d["not_int8_layers"]] == ["softmax", "Reformatting CopyNode"]
    assert d["candidate"]["precision_counts"] == counts and d["candidate"]["reformat_count"] == 1
    assert d["candidate"]["top_layers"][0]["name"] == "conv1"
    assert precision_counts(int8.result) == counts
    assert "int8:1 fp16:1 reformat:1" in to_markdown(res)


def test_ep_engines_counts_are_summed() -> None:
    engines = [{"precision_counts": {"int8": 3, "reformat": 1}}, {"precision_counts": {"int8": 2, "fp16": 1}}]
    cell = _cell(_ident(backend="ort-trt"), 1.0, 0, details={"ep_engines": engines})
    assert precision_counts(cell.result) == {"int8": 5, "reformat": 1, "fp16": 1}
    assert not_int8_layers({"source": "onnxruntime-profiler", "layers": [{"name": "x", "ms": 1}]}) == []


def test_refuses_different_timers_and_gpu_models() -> None:
    ep = _cell(_ident(backend="ort-trt"), 1.0, 1, timer="perf_counter_ns")
    native = _cell(_ident(), 1.0, 2)
    res = compare_records([ep, native], parse_selector("backend=ort-trt"), parse_selector("backend=trt-native"))
    (row,) = res.rows
    assert row.status == "refused" and "timers differ" in (row.refused or "")
    assert row.to_dict()["speedup"] is None and row.to_dict()["significant"] is None

    ep = _cell(_ident(backend="ort-trt"), 1.0, 1, device_name="NVIDIA A100")
    res = compare_records([ep, native], parse_selector("backend=ort-trt"), parse_selector("backend=trt-native"))
    assert res.rows[0].status == "refused" and "different GPU models" in (res.rows[0].refused or "")
    res = compare_records([ep, native], parse_selector("backend=ort-trt"), parse_selector("backend=trt-native"),
                          allow_mixed_gpus=True)
    assert res.rows[0].status == "paired" and any("allowed" in n for n in res.rows[0].notes)

    # node.gpu_name (ray executors) wins over device_name
    ep = _cell(_ident(backend="ort-trt"), 1.0, 1, node={"gpu_name": "NVIDIA L4"})
    res = compare_records([ep, native], parse_selector("backend=ort-trt"), parse_selector("backend=trt-native"))
    assert res.rows[0].status == "refused" and "NVIDIA L4" in (res.rows[0].refused or "")

    ep = _cell(_ident(backend="ort-trt"), 1.0, 1, details={"gpu_timing": {"id": "old"}})
    native = _cell(_ident(), 1.0, 2, details={"gpu_timing": {"id": "cuda-events-on-session-stream/v1"}})
    res = compare_records([ep, native], parse_selector("backend=ort-trt"), parse_selector("backend=trt-native"))
    assert res.rows[0].status == "refused" and "GPU timing definitions differ" in (res.rows[0].refused or "")


def test_identical_configs_are_not_significant_and_calibration_must_match() -> None:
    a = _cell(_ident(backend="ort-trt", precision="int8"), 1.0, 1)
    b = _cell(_ident(precision="int8"), 1.0, 2)
    other_calib = _cell(_ident(precision="int8", batch_size=8,
                               calibration={"method": "minmax", "count": 64, "seed": 0}), 1.0, 3)
    res = compare_records([a, b, other_calib], parse_selector("backend=ort-trt"),
                          parse_selector("backend=trt-native"))
    statuses = sorted(r.status for r in res.rows)
    assert statuses == ["paired", "unpaired-candidate"]  # a minmax engine is not paired with an entropy one
    (pair,) = res.pairs
    assert pair.comparison is not None and pair.comparison.significant is False
    lo, hi = pair.comparison.speedup_ci
    assert lo <= 1.0 <= hi


def test_ort_profiles_stored_stability_zero_fill_and_failed_cells() -> None:
    ort_profile = {"source": "onnxruntime-profiler", "batch_size": 8,
                   "layers": [{"name": "/conv1/Conv", "op_type": "Conv", "ms": 0.4, "share": 0.8,
                               "provider": "CPUExecutionProvider"}],
                   "by_op_type": [{"op_type": "Conv", "ms": 0.4, "share": 0.8, "count": 2},
                                  {"op_type": "Gemm", "ms": 0.1, "share": 0.2, "count": 1}]}
    base = _cell(_ident(backend="ort-cpu", precision="fp32"), 1.0, 1, timer="perf_counter_ns",
                 layer_profile=ort_profile)
    pruned = _cell(_ident(backend="ort-cpu", precision="fp32", pruner="l1-global", amount=0.5), 1.0, 2,
                   timer="perf_counter_ns")
    pruned.result.timings[0] = dataclasses.replace(
        pruned.result.timings[0], stability={"stable": False, "reasons": ["host busy: 3 other processes"]})
    broken = CellOutcome(_ident(backend="ort-cpu", precision="fp32", pruner="l1-global", amount=0.9), "error",
                         error="export failed")
    res = compare_records([base, pruned, broken], parse_selector("pruner=none"), parse_selector("pruner=l1-global"))
    rows = {r.status: r for r in res.rows}
    assert set(rows) == {"paired", "failed"}
    pair = rows["paired"].to_dict()
    assert pair["baseline"]["top_op_types"][0]["op_type"] == "Conv"
    assert pair["baseline"]["top_layers"][0]["provider"] == "CPUExecutionProvider"
    assert pair["candidate"]["stability"] == {"stable": False, "reasons": ["host busy: 3 other processes"],
                                             "source": "stored"}
    assert any("zero-fill" in n for n in pair["notes"])
    assert rows["failed"].notes == ["candidate cell failed: export failed"]
    md = to_markdown(res)
    assert "baseline top op types (onnxruntime-profiler): Conv 0.400 ms (80.00 %)" in md
    assert "candidate unstable: host busy" in md


def test_selector_parsing() -> None:
    sel = parse_selector("backend=ort-trt, calibration.method=entropy ,amount=0.5")
    assert sel.fields == {"backend", "calibration", "amount"}
    assert sel.matches(_ident(backend="ort-trt", precision="int8", amount=0.5).to_dict())
    assert not sel.matches(_ident(backend="ort-trt", precision="fp16", amount=0.5).to_dict())  # no calibration
    assert parse_selector("dataset_size=none").matches(_ident().to_dict())
    for bad in ("", "backend", "=x", "gpu=h200"):
        with pytest.raises(HarnessError):
            parse_selector(bad)


def test_cells_without_raw_samples_are_refused_not_crashed() -> None:
    a = _cell(_ident(backend="ort-trt"), 1.0, 1)
    b = _cell(_ident(), 1.0, 2)
    b.result.timings[0] = dataclasses.replace(b.result.timings[0], samples_ns=None)
    res = compare_records([a, b], parse_selector("backend=ort-trt"), parse_selector("backend=trt-native"))
    (row,) = res.rows
    assert row.status == "refused" and "no raw samples" in (row.refused or "")
    assert row.to_dict()["median_ms"][1] == 1.0  # the stored median is still shown


def test_calibration_provenance_is_shown_per_side() -> None:
    prov = {"method": "entropy", "calibration": {"num_bins": 2048, "num_quantized_bins": 128}, "count": 512,
            "seed": 0, "calib_file_list_hash": "abcdef0123456789ffff"}
    fp16 = _cell(_ident(), 2.0, 1)
    int8 = _cell(_ident(precision="int8"), 1.0, 2, calibration=prov)
    res = compare_records([fp16, int8], parse_selector("precision=fp16"), parse_selector("precision=int8"))
    assert res.rows[0].to_dict()["candidate"]["calibration"] == prov
    assert "calibration: - vs entropy 2048 bins 512 images set abcdef012345" in to_markdown(res)


def _timed_cell(ident: CellIdentity, factors: list[float], seed: int, *, block: str | None,
                stability: dict[str, Any] | None = None) -> CellOutcome:
    """A CPU cell whose repeat r ran at speed factors[r] (the machine's state in round r)."""
    rng = np.random.default_rng(seed)
    reps = [[int(v) for v in rng.normal(f * 1e6, 0.005e6, 40)] for f in factors]
    timing: dict[str, Any] = {"definition": "compute", "timer": "perf_counter_ns", "batch_size": ident.batch_size,
                              "config": {}, "stats": {"median_ms": float(np.median(reps) / 1e6)}, "samples_ns": reps}
    if block is not None:
        timing["interleave"] = {"design": "interleaved", "block_id": block, "rounds": list(range(len(reps))),
                                "positions": [0] * len(reps), "seed": 0, "windows": 2}
    if stability is not None:
        timing["stability"] = stability
    result = CellResult(accuracy={"top1": 0.9, "samples": 4}, device="cpu", device_name="cpu",
                        timings=[TimingWindow.from_dict(timing)])
    return CellOutcome.ok(ident, result)


def test_interleaved_cells_are_compared_round_by_round_and_others_with_a_drift_allowance() -> None:
    machine = [1.0, 1.5, 0.8, 1.3]  # the machine's speed changed a lot between rounds
    base = _ident(backend="torch", precision="fp32", batch_size=1)
    cand = _ident(backend="ort-cpu", precision="fp32", batch_size=1)
    b = _timed_cell(base, machine, 1, block="blk")
    c = _timed_cell(cand, [0.9 * f for f in machine], 2, block="blk")
    res = compare_records([b, c], parse_selector("backend=torch"), parse_selector("backend=ort-cpu"))
    (row,) = res.pairs
    d = row.to_dict()
    assert d["design"] == "paired-rounds" and d["significant"] and d["faster"] == "candidate"
    assert d["speedup"] == pytest.approx(1 / 0.9, rel=0.01)
    assert any("interleaved" in n for n in row.notes)
    # the same samples from two different blocks (separate runs): the drift is not cancelled
    c_apart = _timed_cell(cand, [0.9 * f for f in machine], 2, block="other")
    (row,) = compare_records([b, c_apart], parse_selector("backend=torch"), parse_selector("backend=ort-cpu")).pairs
    d = row.to_dict()
    assert d["design"] == "separate-windows" and not d["significant"]
    assert any("drift allowance" in n for n in row.notes)


def test_a_pair_with_a_host_busy_side_is_not_comparable() -> None:
    base = _ident(backend="torch", precision="fp32", batch_size=1)
    cand = _ident(backend="ort-cpu", precision="fp32", batch_size=1)
    busy = {"stable": False, "reasons": ["host busy: other processes using CPU: harness (pid 77) 90 %"],
            "causes": ["host"]}
    b = _timed_cell(base, [1.0, 1.0, 1.0], 1, block="blk", stability={"stable": True, "reasons": []})
    c = _timed_cell(cand, [0.5, 0.5, 0.5], 2, block="blk", stability=busy)  # "2x faster", beside another run
    res = compare_records([b, c], parse_selector("backend=torch"), parse_selector("backend=ort-cpu"))
    d = res.pairs[0].to_dict()
    assert d["significant"] is False and d["faster"] is None
    assert d["not_comparable"].startswith("not comparable: candidate host busy: other processes using CPU: harness")
    assert "quiet machine" in d["verdict"]
    header, rows = table_rows(res)
    assert rows[0][header.index("significant")] == "not comparable"
