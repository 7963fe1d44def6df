"""FP8 (E4M3) Q/DQ models: structure, the arithmetic ONNX Runtime's CPU EP runs, calibration ranges, exclusions.

Real onnx, ml_dtypes and ONNX Runtime (CPU) throughout; also run under every onnxruntime an image pins
(tests/test_ort_matrix.py). The reference arithmetic is written out with numpy and ml_dtypes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")
from onnx import TensorProto, numpy_helper  # noqa: E402

from calib.fp8_qdq import (  # noqa: E402
    FP8_E4M3_MAX,
    ORT_FP8_OPTIMIZATION,
    count_fp8_qdq,
    e4m3,
    fp8_scale,
    write_fp8_qdq,
)
from calib.ort_qdq import QDQ_TARGETS, build_qdq_model, precision_of  # noqa: E402
from calib.ort_ranges import compute_tensor_ranges, tensor_thresholds  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402

SIDE = 8


class SmallNet(nn.Module):
    """Conv -> ReLU -> Conv -> ReLU -> pool -> Linear: the weighted ops are two Convs and a Gemm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = SmallNet().eval()
    tmp = tmp_path_factory.mktemp("fp8")
    path = export_onnx(model, (3, SIDE, SIDE), content_hash=model_content_hash(model), cache_dir=tmp,
                       name="small").path
    return model, path


def _thresholds(path: Path, x: np.ndarray) -> dict[str, float]:
    """max |value| of every tensor of ``path`` on ``x`` (a minmax calibration on one batch)."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        for out in node.output:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(out))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(None, {"input": x})
    found = {o.name: float(np.abs(v).max()) for o, v in zip(session.get_outputs(), values)}
    found["input"] = float(np.abs(x).max())
    return found


def _session(path: Path, level: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, {
        "none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "all": "ORT_ENABLE_ALL"}[level])
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _reference(model: SmallNet, x: np.ndarray, th: dict[str, float], names: dict[str, str]) -> np.ndarray:
    """The FP8 arithmetic written out: each weighted op's input rounded to E4M3 at threshold/448, its
    weight rounded per output channel at max|w_c|/448, then the op in FP32."""
    def q_act(t: torch.Tensor, name: str) -> torch.Tensor:
        s = fp8_scale(th[name])
        return torch.from_numpy(e4m3(t.numpy() / s).astype(np.float32) * s)

    def q_weight(w: torch.Tensor, axis: int = 0) -> torch.Tensor:
        w = w.detach().numpy()
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1)
        shape = [1] * w.ndim
        shape[axis] = -1
        s = (amax / FP8_E4M3_MAX).reshape(shape)
        return torch.from_numpy((e4m3(w / s).astype(np.float32) * s).astype(np.float32))

    with torch.no_grad():
        t = torch.from_numpy(x)
        t = torch.relu(nn.functional.conv2d(q_act(t, names["a"]), q_weight(model.a.weight), model.a.bias, padding=1))
        t = torch.relu(nn.functional.conv2d(q_act(t, names["b"]), q_weight(model.b.weight), model.b.bias, padding=1))
        t = torch.flatten(nn.functional.adaptive_avg_pool2d(t, 1), 1)
        return nn.functional.linear(q_act(t, names["fc"]), q_weight(model.fc.weight), model.fc.bias).numpy()


def test_e4m3_rounding_and_saturation() -> None:
    values = np.array([0.1, 1.0, 3.3, 17.0, 447.0, 448.0, 500.0, -1e6, 1e-4], np.float32)
    got = e4m3(values).astype(np.float32)
    assert got.tolist() == pytest.approx([0.1015625, 1.0, 3.25, 16.0, 448.0, 448.0, 448.0, -448.0, 0.0])
    assert fp8_scale(448.0) == 1.0 and fp8_scale(0.0) == 1.0
    with pytest.raises(HarnessError, match="not finite"):
        fp8_scale(float("inf"))


def test_structure_opset_types_and_per_channel_axes(small, tmp_path: Path) -> None:
    _, path = small
    x = np.random.default_rng(0).normal(size=(4, 3, SIDE, SIDE)).astype(np.float32)
    th = _thresholds(path, x)
    summary = write_fp8_qdq(path, tmp_path / "fp8.onnx", th)
    model = onnx.load(str(tmp_path / "fp8.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {19}
    assert summary.quantized_nodes and len(summary.quantized_nodes) == 3 and not summary.excluded_nodes
    assert (summary.activations, summary.weights) == (3, 3)
    assert count_fp8_qdq(tmp_path / "fp8.onnx") == {"QuantizeLinear": 3, "DequantizeLinear": 6}
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        act, weight = producers[node.input[0]], producers[node.input[1]]
        assert act.op_type == weight.op_type == "DequantizeLinear"
        assert producers[act.input[0]].op_type == "QuantizeLinear"  # activations: Q then DQ, per tensor
        assert numpy_helper.to_array(inits[act.input[1]]).shape == ()
        assert inits[act.input[2]].data_type == TensorProto.FLOAT8E4M3FN
        # weights: stored in FP8 with one scale per output channel (Conv [O,I,k,k]: axis 0; Gemm B [N,K]: axis 0)
        assert inits[weight.input[0]].data_type == TensorProto.FLOAT8E4M3FN
        (axis,) = [a.i for a in weight.attribute if a.name == "axis"]
        out_channels = inits[weight.input[0]].dims[axis]
        assert axis == 0 and numpy_helper.to_array(inits[weight.input[1]]).shape == (out_channels,)
        expected = th[producers[act.input[0]].input[0]] / FP8_E4M3_MAX
        assert float(numpy_helper.to_array(inits[act.input[1]])) == pytest.approx(expected, rel=1e-6)
    assert not [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 4]


def test_cpu_ep_computes_exactly_the_fp8_arithmetic(small, tmp_path: Path) -> None:
    model, path = small
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3, SIDE, SIDE)).astype(np.float32)
    x[0, 0, 0, 0] = 40.0  # an outlier: the input's scale follows it, small values lose precision
    th = _thresholds(path, x)
    write_fp8_qdq(path, tmp_path / "fp8.onnx", th)
    graph = onnx.load(str(tmp_path / "fp8.onnx")).graph
    names = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            q = next(n for n in graph.node if n.output and n.output[0] == node.input[0].replace("_fp8_dq", "_fp8_q"))
            key = "a" if node.name.startswith("/a/") else "b" if node.name.startswith("/b/") else "fc"
            names[key] = q.input[0]
    expected = _reference(model, x, th, names)
    fp32 = _session(path, "none").run(None, {"input": x})[0]
    for level in ("none", ORT_FP8_OPTIMIZATION):
        got = _session(tmp_path / "fp8.onnx", level).run(None, {"input": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(got - fp32).max() > 1e-3  # quantization really happened


def test_exclude_and_only_nodes(small, tmp_path: Path) -> None:
    _, path = small
    x = np.random.default_rng(2).normal(size=(2, 3, SIDE, SIDE)).astype(np.float32)
    th = _thresholds(path, x)
    nodes = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm")]
    kept = write_fp8_qdq(path, tmp_path / "x.onnx", th, exclude_nodes=[nodes[0]])
    assert kept.excluded_nodes == (nodes[0],) and len(kept.quantized_nodes) == 2
    assert count_fp8_qdq(tmp_path / "x.onnx")["QuantizeLinear"] == 2
    only = write_fp8_qdq(path, tmp_path / "o.onnx", th, only_nodes=[nodes[1]])
    assert only.quantized_nodes == (nodes[1],) and count_fp8_qdq(tmp_path / "o.onnx")["DequantizeLinear"] == 2
    with pytest.raises(HarnessError, match="no weighted node named /nope"):
        write_fp8_qdq(path, tmp_path / "n.onnx", th, exclude_nodes=["/nope"])
    with pytest.raises(HarnessError, match="no calibrated range"):
        write_fp8_qdq(path, tmp_path / "r.onnx", {})


def test_fp8_target_uses_the_int8_ranges_with_the_fp8_range(small, tmp_path: Path) -> None:
    """Same images, method and histogram as INT8 (the tensorrt flavour's symmetric thresholds); scale t/448."""
    _, path = small
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(8, 3, SIDE, SIDE)).astype(np.float32) for _ in range(3)]
    notes: list[str] = []
    out = build_qdq_model(path, lambda: iter(batches), tmp_path / "q.onnx", "entropy", target="fp8",
                          num_batches=3, notes=notes, preprocess=False)
    assert precision_of("fp8") == "fp8" and precision_of("tensorrt") == "int8" and QDQ_TARGETS["fp8"]["opset"] == 19
    assert any("FP8 E4M3 Q/DQ: 3 node(s) quantized" in n for n in notes)
    ranges = tensor_thresholds(compute_tensor_ranges(path, lambda: iter(batches), "entropy", num_batches=3,
                                                     work_dir=tmp_path, symmetric=True))
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            assert float(inits[node.input[1]]) == pytest.approx(ranges[node.input[0]] / FP8_E4M3_MAX, rel=1e-6)
            checked += 1
    assert checked == 3
    assert ranges["input"] < float(np.abs(np.concatenate(batches)).max())  # entropy clipped the input's tail
