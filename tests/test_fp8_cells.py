"""fp8 cells: the ort-cpu session (an emulated accuracy reference), and the one rule that keeps an emulated
latency out of comparisons, rankings and recommendations while it stays recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")

from backends import validate_request  # noqa: E402
from backends.base import ModelArtifact, PhaseTimes  # noqa: E402
from backends.ort_cpu import FP8_EMULATION_NOTE, OrtCpuBackend  # noqa: E402
from calib.fp8_qdq import count_fp8_qdq  # noqa: E402
from calib.ort_qdq import build_qdq_model  # noqa: E402
from harness.analysis.compare import compare_records, parse_selector  # noqa: E402
from harness.analysis.recommend import recommend  # noqa: E402
from harness.analysis.report import Point, pareto_front  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.machine import MachineFacts  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402
from harness.store.outcome import CellIdentity, CellOutcome, CellResult, TimingWindow, latency_is_emulated  # noqa: E402

SHAPE = (3, 16, 16)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1))


class ArrayCalibration:
    """The calibration source's Q/DQ side over in-memory batches (the quantizer and ONNX Runtime are real)."""

    def __init__(self, onnx_path: Path, batches: list[np.ndarray], cache: Path) -> None:
        self.onnx_path, self.batches_, self.cache = onnx_path, batches, cache
        self.provenance_hash = "a" * 16

    def qdq_onnx(self, target: str, phases: PhaseTimes) -> Path:
        out = self.cache / f"qdq-{target}.onnx"
        if not out.exists():
            build_qdq_model(self.onnx_path, lambda: iter(self.batches_), out, "minmax", target=target,
                            num_batches=len(self.batches_))
        return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    module = Net().eval()
    cache = tmp_path_factory.mktemp("fp8-cells")
    path = export_onnx(module, SHAPE, content_hash=model_content_hash(module), cache_dir=cache, name="net").path
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(8, *SHAPE)).astype(np.float32) for _ in range(4)]
    return ModelArtifact(name="net", module=module, input_shape=SHAPE, num_outputs=4,
                         content_hash=model_content_hash(module), onnx=lambda: path,
                         calibration=ArrayCalibration(path, batches, cache))  # type: ignore[arg-type]


def test_ort_cpu_runs_the_fp8_qdq_model_and_marks_its_latency_emulated(artifact: ModelArtifact,
                                                                        tmp_path: Path) -> None:
    with OrtCpuBackend().activate(artifact, "fp8", (1, 4), tmp_path) as session:
        details = session.info.details
        assert details["latency_emulated"] == FP8_EMULATION_NOTE and details["graph_optimization"] == "none"
        assert count_fp8_qdq(Path(details["onnx_path"]))["QuantizeLinear"] == 3  # two convs and the head
        x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(1))
        fp8 = session.infer(x)
    with OrtCpuBackend().activate(artifact, "fp32", (1, 4), tmp_path) as fp32_session:
        fp32 = fp32_session.infer(x)
        assert "latency_emulated" not in fp32_session.info.details
    assert fp8.dtype == torch.float32 and fp8.shape == fp32.shape
    assert not torch.equal(fp8, fp32)  # quantized
    assert (fp8.argmax(1) == fp32.argmax(1)).float().mean() >= 0.9
    err = (fp8 - fp32).pow(2).sum() / fp32.pow(2).sum()
    assert 10 * torch.log10(1 / err) > 20  # E4M3 keeps the logits within 20 dB SNR


def test_fp8_backend_rules_are_one_line_refusals() -> None:
    cpu = MachineFacts(torch_version="2.14.1", onnxruntime_version="1.32.0", ort_providers=("CPUExecutionProvider",))
    assert validate_request("ort-cpu", "fp8", cpu).name == "ort-cpu"
    for backend, needle in (("torch", "cannot run precision 'fp8'"), ("trt-native", "tensorrt is not installed")):
        with pytest.raises(HarnessError) as info:
            validate_request(backend, "fp8", cpu)
        assert needle in str(info.value) and "\n" not in str(info.value)
    from backends.torch_eager import TorchBackend

    assert "use trt-native (sm_89+) or ort-cpu" in (TorchBackend.unavailable_reason("fp8", cpu) or "")


# ------------------------------------------------------------------------------ emulated latency, stored records


def _cell(precision: str, median_ms: float, seed: int, *, accuracy: float, emulated: bool = False,
          backend: str = "ort-cpu", pruner: str = "none") -> CellOutcome:
    rng = np.random.default_rng(seed)
    samples = [[int(v) for v in rng.normal(median_ms * 1e6, 0.01 * median_ms * 1e6, 30)] for _ in range(5)]
    ident = CellIdentity(model="m", weights="pretrained", dataset="shapes", dataset_size=None, pruner=pruner,
                         amount=0.0, prune_options={}, backend=backend, precision=precision, batch_size=8,
                         calibration={"method": "entropy", "count": 64, "seed": 0} if precision != "fp32" else None)
    details: dict[str, Any] = {"latency_emulated": FP8_EMULATION_NOTE} if emulated else {}
    timing = TimingWindow.from_dict({"definition": "compute", "timer": "perf_counter_ns", "batch_size": 8,
                                     "config": {}, "stats": {"median_ms": median_ms}, "samples_ns": samples})
    return CellOutcome.ok(ident, CellResult(
        accuracy={"top1": accuracy, "samples": 500}, timings=[timing], compressed_size_bytes=100_000, device="cpu",
        device_name="x86_64", session={"backend": backend, "precision": precision, "details": details},
        node={"hostname": "h", "gpu_name": None, "gpu_uuid": None, "executor": "local"}))


def test_the_predicate_reads_the_session_record() -> None:
    assert latency_is_emulated(_cell("fp8", 1.0, 0, accuracy=0.9, emulated=True).result) == FP8_EMULATION_NOTE
    assert latency_is_emulated(_cell("int8", 1.0, 0, accuracy=0.9).result) is None
    assert latency_is_emulated(None) is None


def test_compare_shows_an_emulated_cell_but_never_compares_its_latency() -> None:
    int8 = _cell("int8", 2.0, 1, accuracy=0.95)
    fp8 = _cell("fp8", 20.0, 2, accuracy=0.94, emulated=True)  # ten times slower: the emulation, not FP8
    result = compare_records([int8, fp8], parse_selector("precision=int8"), parse_selector("precision=fp8"))
    (row,) = result.to_list()
    assert row["status"] == "refused" and row["speedup"] is None and row["significant"] is None
    assert row["verdict"].startswith("latency not compared: the candidate cell's FP8 is emulated on the CPU")
    assert row["median_ms"][1] == pytest.approx(20.0, rel=0.05)  # recorded and shown
    assert row["accuracy"] == [0.95, 0.94] and row["accuracy_delta"] == pytest.approx(-0.01)


def test_recommend_and_the_report_leave_emulated_cells_out() -> None:
    cells = [_cell("fp32", 5.0, 3, accuracy=0.95), _cell("int8", 2.0, 4, accuracy=0.95),
             _cell("fp8", 0.5, 5, accuracy=0.95, emulated=True)]  # "fastest" only because it is made up
    rec = recommend(cells, objective="latency")
    assert rec.cells == [cells[1].key]
    (why,) = [e for e in rec.excluded if e["key"] == cells[2].key]
    assert why["kind"] == "emulated" and "FP8 is emulated" in why["reason"]
    assert cells[2].key not in recommend(cells, objective="size").cells

    def point(outcome: CellOutcome, emulated: str | None) -> Point:
        r = outcome.result
        assert r is not None
        return Point(model="m", dataset="shapes", pruner="none", amount=0.0, backend=outcome.identity.precision,
                     batch=8, accuracy=r.top1, latency_ms=r.timings[0].median_ms, throughput=1.0, size_mb=0.1,
                     macs_before=None, macs_after=None, emulated=emulated, key=outcome.key)

    front = pareto_front([point(cells[1], None), point(cells[2], latency_is_emulated(cells[2].result))])
    assert [p.key for p in front] == [cells[1].key]


# ------------------------------------------------------------------------------ a real sweep


@pytest.mark.slow
def test_an_fp8_sweep_on_shapes_is_within_a_point_of_fp32(shared_cache: Path, tmp_path: Path) -> None:
    """tinycnn on shapes through the whole sweep: fp8 cells carry their calibration like int8 cells, an int8:
    variant applies to them, the emulated latency is marked, and FP8 costs at most a point of top-1."""
    from harness.store.results import ResultStore
    from harness.sweep.driver import run_sweep
    from tests.helpers import sweep_config

    config = sweep_config(tmp_path, shared_cache, batch_sizes=[32], backends={"ort-cpu": ["fp32", "fp8"]},
                          calibration={"method": "entropy", "count": 64, "seed": 0},
                          int8=[{}, {"max_accuracy_drop": 0.5, "holdout": 64}], profile_layers=False)
    with ResultStore(tmp_path / "out" / "results.db") as store:
        assert run_sweep(config, store, resume=False) == {"ok": 3, "error": 0, "skipped": 0}
        cells = {(r.identity.precision, bool(r.identity.int8)): r for r in store.records()}
    fp32, fp8, budget = cells["fp32", False], cells["fp8", False], cells["fp8", True]
    assert fp32.identity.calibration is None and fp8.identity.calibration == {"method": "entropy", "count": 64,
                                                                              "seed": 0}
    for cell in (fp8, budget):
        assert cell.result is not None and latency_is_emulated(cell.result) == FP8_EMULATION_NOTE
        assert cell.result.calibration is not None and cell.result.top1 is not None
        assert abs(100 * (cell.result.top1 - fp32.result.top1)) <= 1.0  # type: ignore[union-attr]
    assert "fp8" in (budget.result.int8_precision or {})  # type: ignore[union-attr]
