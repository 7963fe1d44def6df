"""backends.ort_profile: ONNX Runtime's per-node profile, on real tinycnn sessions (fp32 and Q/DQ int8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from backends.ort_profile import aggregate_events, profile_onnx  # noqa: E402
from calib.ort_qdq import build_qdq_model  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402
from harness.tinycnn import INPUT_SIZE, TinyCNN  # noqa: E402

SHAPE = (3, INPUT_SIZE, INPUT_SIZE)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    cache = tmp_path_factory.mktemp("profile")
    torch.manual_seed(0)
    net = TinyCNN().eval()
    fp32 = export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=cache, name="tinycnn").path
    rng = np.random.default_rng(0)
    calib = [rng.normal(0, 1, (8, *SHAPE)).astype(np.float32) for _ in range(2)]
    int8 = build_qdq_model(fp32, lambda: iter(calib), cache / "tinycnn-int8.onnx", "minmax", target="cpu",
                           num_batches=2)
    return fp32, int8, rng.normal(0, 1, (4, *SHAPE)).astype(np.float32)


def _check_profile(profile, runs: int) -> None:
    assert profile.providers[0] == "CPUExecutionProvider"
    assert profile.runs == runs and len(profile.run_ms) == runs and profile.batch_size == 4
    assert profile.nodes and all(n.provider == "CPUExecutionProvider" for n in profile.nodes)
    assert all(n.count == runs for n in profile.nodes)  # each node once per run; warm-up runs dropped
    totals = [n.total_ms for n in profile.nodes]
    assert totals == sorted(totals, reverse=True) and all(t > 0 for t in totals)
    assert sum(n.share for n in profile.nodes) == pytest.approx(1.0)
    assert sum(o.total_ms for o in profile.op_types) == pytest.approx(profile.node_total_ms)
    assert sum(o.nodes for o in profile.op_types) == len(profile.nodes)
    assert all(n.mean_ms == pytest.approx(n.total_ms / runs) for n in profile.nodes)
    # node time is part of each run's time
    assert profile.node_total_ms <= sum(profile.run_ms) * 1.05
    assert profile.top_nodes(2) == list(profile.nodes[:2])
    data = json.loads(json.dumps(profile.to_dict(top_k=3)))
    assert len(data["nodes"]) == 3 and data["providers"][0] == "CPUExecutionProvider"


def test_fp32_profile_has_per_node_conv_times(models) -> None:
    fp32, _, batch = models
    profile = profile_onnx(fp32, batch, runs=3, warmup=2)
    _check_profile(profile, runs=3)
    op_types = {o.op_type for o in profile.op_types}
    assert "Conv" in op_types or "FusedConv" in op_types, op_types
    assert not op_types & {"QLinearConv", "QuantizeLinear", "DequantizeLinear"}


def test_int8_profile_shows_quantized_ops(models) -> None:
    _, int8, batch = models
    profile = profile_onnx(int8, torch.from_numpy(batch), runs=2, warmup=1)
    _check_profile(profile, runs=2)
    counts = profile.op_type_counts()
    quantized = {"QLinearConv", "QLinearAdd", "QLinearMatMul", "QLinearGlobalAveragePool", "QuantizeLinear",
                 "DequantizeLinear", "ConvInteger", "MatMulInteger"}
    assert set(counts) & quantized, counts
    assert counts.get("QLinearConv", 0) >= 4, counts  # the CPU EP fused Q/DQ + Conv into int8 kernels


def test_aggregate_drops_warmup_runs_and_fences() -> None:
    def node(name: str, ts: float, dur: float, op: str = "Conv") -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider"}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        node("a", 10, 50), node("b", 60, 30, "Relu"),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        node("a", 210, 20), {"cat": "Node", "name": "a_fence_before", "ts": 205, "dur": 5}, node("b", 240, 10, "Relu"),
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 60},
        node("a", 410, 40), node("b", 450, 10, "Relu"),
    ]
    nodes, op_types, run_ms, runs = aggregate_events(events, skip_runs=1)
    assert runs == 2 and run_ms == (0.1, 0.06)
    assert [(n.name, n.total_ms, n.count) for n in nodes] == [("a", 0.06, 2), ("b", 0.02, 2)]
    assert nodes[0].share == pytest.approx(0.75) and nodes[0].mean_ms == pytest.approx(0.03)
    assert [(o.op_type, o.nodes) for o in op_types] == [("Conv", 1), ("Relu", 1)]


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        profile_onnx(tmp_path / "missing.onnx", np.zeros((1, *SHAPE), np.float32))
    with pytest.raises(HarnessError, match="runs"):
        profile_onnx(tmp_path / "missing.onnx", np.zeros((1, *SHAPE), np.float32), runs=0)
