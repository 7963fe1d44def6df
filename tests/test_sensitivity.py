"""Per-node INT8 sensitivity and the accuracy-budget Q/DQ model, on a model built so that INT8 breaks it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from calib.sensitivity import HeldOutData, QdqVariants, mixed_precision, sensitivity, snr_db
from harness.errors import HarnessError
from harness.onnx_export import export_onnx
from harness.store.fingerprint import model_content_hash

SIDE = 8


class OutlierNet(nn.Module):
    """The class is the signs of two small input channels; a third channel carries huge noise that the
    network ignores (its weights are zero). Per-tensor 8-bit quantization of the input spreads 256 levels
    over the noise's +-500, so the +-0.5 signal rounds to zero: full INT8 is at chance. Only ``first``
    reads the input, so leaving that one node in FP32 keeps the input unquantized."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 4, 1, bias=False)
        self.mid = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 4)
        with torch.no_grad():
            self.first.weight.copy_(torch.tensor([[0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                                                 dtype=torch.float32).view(4, 3, 1, 1))
            self.mid.weight.zero_()
            self.mid.weight[:, :, 1, 1] = torch.eye(4) * 4.0  # identity at the centre tap, scaled up
            signs = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])  # class = 2*b1 + b2
            self.head.weight.copy_(torch.stack([signs[:, 0], -signs[:, 0], signs[:, 1], -signs[:, 1]], 1))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.mid(torch.relu(self.first(x))))
        return self.head(torch.flatten(self.pool(x), 1))


def _data(n: int, seed: int, noise: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b1, b2 = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x = np.empty((n, 3, SIDE, SIDE), dtype=np.float32)
    x[:, 0] = rng.uniform(-noise, noise, (n, SIDE, SIDE))
    x[:, 1] = (2 * b1 - 1)[:, None, None] * 0.5 + rng.normal(0, 0.1, (n, SIDE, SIDE))
    x[:, 2] = (2 * b2 - 1)[:, None, None] * 0.5 + rng.normal(0, 0.1, (n, SIDE, SIDE))
    return x, 2 * b1 + b2


@pytest.fixture(scope="module")
def outlier_variants(tmp_path_factory: pytest.TempPathFactory) -> tuple[QdqVariants, HeldOutData, Path]:
    tmp = tmp_path_factory.mktemp("sensitivity")
    model = OutlierNet().eval()
    onnx_path = export_onnx(model, (3, SIDE, SIDE), content_hash=model_content_hash(model), cache_dir=tmp,
                            name="outlier").path
    calib, _ = _data(64, seed=1)  # calibration images: disjoint from the held-out ones below
    batches = [calib[i:i + 16] for i in range(0, 64, 16)]
    # minmax keeps the noise's full range, as max-abs calibrators do
    variants = QdqVariants(onnx_path, lambda: iter(batches), tmp / "work", "minmax", target="cpu",
                           num_batches=len(batches))
    images, labels = _data(200, seed=2)
    return variants, HeldOutData(images, labels, batch_size=50), onnx_path


def test_sensitivity_ranks_the_harmful_node_first(outlier_variants) -> None:
    variants, data, _ = outlier_variants
    assert sorted(op for _, op in variants.nodes) == ["Conv", "Conv", "Gemm"]
    table = sensitivity(variants, data, mode="fp32-one")
    assert table.fp32.accuracy == 1.0 and table.int8_drop_points > 3.0  # INT8 breaks it
    first = table.rows[0]
    assert first.op_type == "Conv" and "first" in first.node
    assert first.accuracy == 1.0 and first.harm_points > 3.0 and first.agreement == 1.0
    assert all(r.harm_points < 1.0 for r in table.rows[1:])  # the others do not matter
    assert first.snr_db > table.int8.snr_db + 10
    cheap = sensitivity(variants, data, mode="int8-one")
    assert cheap.ranking()[0] == first.node and cheap.rows[0].harm_points > 3.0
    stored = table.to_dict()
    assert stored["rows"][0]["node"] == first.node and stored["mode"] == "fp32-one"


def test_accuracy_budget_leaves_the_fewest_nodes_in_fp32(outlier_variants, tmp_path: Path) -> None:
    variants, data, _ = outlier_variants
    table = sensitivity(variants, data)
    result = mixed_precision(variants, data, table, 0.5, out_path=tmp_path / "budget.onnx")
    assert result.within_budget and result.drop_points <= 0.5
    assert result.excluded_nodes == [table.rows[0].node]  # one node is the fewest: full INT8 is out of budget
    assert result.steps[0]["drop_points"] > 3.0 and result.steps[-1]["excluded"] == result.excluded_nodes
    assert "rank 1 by sensitivity" in result.excluded[0]["reason"]
    # the model on disk: that node has no quantized input, the others do
    graph = onnx.load(str(result.model)).graph
    produced_by_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in graph.node:
        if node.name == table.rows[0].node:
            assert not any(i in produced_by_dq for i in node.input), "the excluded node reads a Q/DQ tensor"
        elif node.op_type in ("Conv", "Gemm"):
            assert any(i in produced_by_dq for i in node.input), f"{node.name} should stay INT8"
    # a budget that full INT8 already meets excludes nothing
    loose = mixed_precision(variants, data, table, 100.0)
    assert loose.excluded_nodes == [] and loose.within_budget


# ------------------------------------------------------------------------------ FP8 (E4M3)

#: Noise far beyond FP8's range relative to the signal: per-tensor E4M3 spans 448 / 2**-9 (~2.3e5, its
#: smallest subnormal) under one scale; at +-1e6 the scale is ~2232, so the +-0.5 signal is 2.2e-4 of a
#: unit, below half the smallest subnormal, and rounds to zero.
FP8_NOISE = 1e6


def _variants(tmp: Path, noise: float, target: str) -> tuple[QdqVariants, HeldOutData]:
    model = OutlierNet().eval()
    onnx_path = export_onnx(model, (3, SIDE, SIDE), content_hash=model_content_hash(model), cache_dir=tmp,
                            name=f"outlier-{target}").path
    calib, _ = _data(64, seed=1, noise=noise)
    batches = [calib[i:i + 16] for i in range(0, 64, 16)]
    variants = QdqVariants(onnx_path, lambda: iter(batches), tmp / f"work-{noise:g}", "minmax", target=target,
                           num_batches=len(batches))
    images, labels = _data(200, seed=2, noise=noise)
    return variants, HeldOutData(images, labels, batch_size=50)


def test_fp8_keeps_what_int8_loses_until_the_outliers_leave_its_range(tmp_path: Path) -> None:
    """At +-500 per-tensor INT8 is at chance (the fixture above) while FP8's logarithmic grid still resolves
    the +-0.5 signal; at +-1e6 FP8 breaks too. Sensitivity ranks the one node reading the input first and
    the budget keeps exactly that node in FP32, as it does for INT8."""
    near, near_data = _variants(tmp_path, 500.0, "fp8")
    assert near.precision == "fp8"
    kept = sensitivity(near, near_data)
    assert kept.precision == "fp8" and kept.int8.accuracy > 0.95  # int8's fixture: full INT8 drop > 3 points

    variants, data = _variants(tmp_path, FP8_NOISE, "fp8")
    table = sensitivity(variants, data, mode="fp32-one")
    assert table.fp32.accuracy == 1.0 and table.int8_drop_points > 30.0 and table.to_dict()["precision"] == "fp8"
    first = table.rows[0]
    assert first.op_type == "Conv" and "first" in first.node and first.accuracy == 1.0
    assert all(r.harm_points < 1.0 for r in table.rows[1:])
    result = mixed_precision(variants, data, table, 0.5, out_path=tmp_path / "fp8-budget.onnx")
    assert result.within_budget and result.excluded_nodes == [first.node] and result.drop_points <= 0.5
    graph = onnx.load(str(result.model)).graph
    fp8_zero_points = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT8E4M3FN}
    quantized_inputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"
                        and n.input[2] in fp8_zero_points}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert any(i in quantized_inputs for i in node.input) is (node.name != first.node), node.name


def test_snr_and_bad_input() -> None:
    ref = np.array([[1.0, -2.0, 3.0]])
    assert snr_db(ref, ref) == 200.0
    assert snr_db(ref, ref * 1.1) == pytest.approx(20.0)
    with pytest.raises(HarnessError, match="held-out data"):
        HeldOutData(np.zeros((2, 3, 4, 4)), np.zeros(3))


def test_int8_config_block_is_validated_and_plain_int8_keeps_no_identity() -> None:
    from harness.config import load_config

    config = load_config(None, {"int8": {"max_accuracy_drop": 0.5, "sensitivity": True}})
    assert len(config.int8) == 1 and config.int8[0].identity()["max_accuracy_drop"] == 0.5
    both = load_config(None, {"int8": [{}, {"max_accuracy_drop": 0.5}]})
    assert [v.identity() is None for v in both.int8] == [True, False]
    assert load_config(None, {}).int8[0].plain
    with pytest.raises(HarnessError, match="int8.0.max_accuracy_dorp: unknown key"):
        load_config(None, {"int8": {"max_accuracy_dorp": 0.5}})
    with pytest.raises(HarnessError, match="int8.0.max_accuracy_drop"):
        load_config(None, {"int8": {"max_accuracy_drop": -1}})


def test_cli_refuses_a_backend_without_qdq_models() -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, ["sensitivity", "--backend", "torch"])
    assert result.exit_code == 2 and "backend 'torch' runs none" in result.output
    assert "Traceback" not in result.output
    fp8 = CliRunner().invoke(app, ["sensitivity", "--backend", "ort-cuda", "--precision", "fp8"])
    assert fp8.exit_code == 2 and "backend 'ort-cuda' runs no FP8 Q/DQ model" in fp8.output
    assert "Traceback" not in fp8.output


@pytest.mark.slow
def test_cli_scores_tinycnn_on_held_out_train_images(shared_cache: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, ["sensitivity", "--cache-dir", str(shared_cache), "--data-root",
                                      str(tmp_path), "--count", "64", "--holdout", "64", "--json",
                                      "--max-accuracy-drop", "0.5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["sensitivity"]["rows"]
    assert len(rows) == 7 and {r["op_type"] for r in rows} == {"Conv", "Gemm"}
    assert data["sensitivity"]["data"]["split"].startswith("train") and data["sensitivity"]["samples"] == 64
    assert data["mixed_precision"]["within_budget"] is True
    assert data["calibration"]["count"] == 64
