"""FP16/BF16 ONNX models for strongly typed TensorRT builds: conversion, what stays FP32, Q/DQ models, the cache.

Real onnx, onnxruntime (CPU) and the float16 converter (onnxconverter-common, or the copy ONNX Runtime
ships); ModelOpt AutoCast where it imports (with nvidia-modelopt on PYTHONPATH).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, numpy_helper  # noqa: E402

from backends import typed_onnx  # noqa: E402
from backends.typed_onnx import KEEP_FP32_OPS, converter_for, half_precision_onnx, node_types  # noqa: E402
from calib.ort_qdq import build_qdq_model  # noqa: E402
from harness.errors import BackendUnavailable, HarnessError  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402

SHAPE = (3, 12, 12)


class Net(nn.Module):
    """Convs, a LayerNorm and a softmax: the last two must stay FP32 in a half-precision model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.conv(x), 1), 1)
        return torch.softmax(self.fc(self.norm(x)), dim=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    module = Net().eval()
    return export_onnx(module, SHAPE, content_hash=model_content_hash(module),
                       cache_dir=tmp_path_factory.mktemp("typed"), name="net").path


def _x(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


def _run(path: Path, x: np.ndarray, level: str = "ORT_ENABLE_BASIC") -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _types_by_op(path: Path) -> dict[str, set[str]]:
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    names = {1: "fp32", 10: "fp16", 16: "bf16"}
    types = {v.name: v.type.tensor_type.elem_type for v in [*m.graph.value_info, *m.graph.output]}
    found: dict[str, set[str]] = {}
    for node in m.graph.node:
        found.setdefault(node.op_type, set()).add(names.get(types.get(node.output[0], 0), "?"))
    return found


@pytest.fixture
def no_modelopt(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as it is without ModelOpt (importing it fails), whatever PYTHONPATH holds."""
    monkeypatch.setitem(sys.modules, "modelopt", None)


def test_fp16_keeps_float32_io_and_the_sensitive_ops(model: Path, tmp_path: Path, no_modelopt: None) -> None:
    assert converter_for(qdq=False) == "float16"
    typed = half_precision_onnx(model, "fp16", tmp_path)
    half = onnx.load(str(typed.path))
    onnx.checker.check_model(half)
    for io in [*half.graph.input, *half.graph.output]:
        assert io.type.tensor_type.elem_type == TensorProto.FLOAT, io.name
    by_op = _types_by_op(typed.path)
    assert by_op["Conv"] == {"fp16"} and by_op["Gemm"] == {"fp16"}
    assert by_op["Softmax"] == {"fp32"} and by_op["LayerNormalization"] == {"fp32"}
    assert {"Softmax", "LayerNormalization"} <= set(KEEP_FP32_OPS)
    assert typed.node_types["compute"]["fp16"] >= 4 and typed.node_types["compute"]["fp32"] >= 2
    assert typed.provenance["converter"] == "float16" and typed.provenance["keep_io_types"] is True
    x = _x()
    np.testing.assert_allclose(_run(typed.path, x), _run(model, x), atol=2e-3)


def test_bf16_is_the_fp16_decision_relabelled_from_the_fp32_weights(model: Path, tmp_path: Path,
                                                                     no_modelopt: None) -> None:
    from ml_dtypes import bfloat16

    typed = half_precision_onnx(model, "bf16", tmp_path)
    m = onnx.load(str(typed.path))
    onnx.checker.check_model(m, full_check=True)
    assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {22}  # Conv takes bfloat16 from 22
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
    kinds = {i.data_type for i in m.graph.initializer}
    assert TensorProto.FLOAT16 not in kinds and TensorProto.BFLOAT16 in kinds
    checked = 0
    for init in m.graph.initializer:
        if init.data_type == TensorProto.BFLOAT16 and init.name in original:
            got = np.frombuffer(init.raw_data, dtype=bfloat16).reshape(tuple(init.dims))
            np.testing.assert_array_equal(got, original[init.name].astype(bfloat16))  # rounded once, from FP32
            checked += 1
    assert checked >= 4
    by_op = _types_by_op(typed.path)
    assert by_op["Conv"] == {"bf16"} and by_op["Softmax"] == {"fp32"}
    assert not any(a.i == TensorProto.FLOAT16 for n in m.graph.node for a in n.attribute if a.name == "to")


@pytest.mark.parametrize("target", ["tensorrt", "fp8"])
def test_a_qdq_model_keeps_its_quantized_ops_and_runs_the_rest_in_fp16(model: Path, tmp_path: Path,
                                                                      target: str) -> None:
    batches = [_x(8, seed) for seed in range(3)]
    qdq = build_qdq_model(model, lambda: iter(batches), tmp_path / f"{target}.onnx", "minmax", target=target,
                          num_batches=3, preprocess=False)
    typed = half_precision_onnx(qdq, "fp16", tmp_path, qdq=True, source_provenance={"calibration": "c0ffee"})
    m = onnx.load(str(typed.path))
    onnx.checker.check_model(m)
    before = node_types(onnx.load(str(qdq)))
    assert typed.node_types["quantized"] == before["quantized"] and sum(before["quantized"].values()) == 3
    assert set(typed.node_types["quantized"]) == {"int8" if target == "tensorrt" else "fp8"}
    scales = [i for i in m.graph.initializer if i.name.endswith("scale")]
    assert scales and all(i.data_type == TensorProto.FLOAT16 for i in scales)  # DQ outputs FP16
    assert _types_by_op(typed.path)["Conv"] == {"fp16"}
    assert typed.provenance["source_provenance"] == {"calibration": "c0ffee"} and typed.provenance["qdq"]
    x = _x(16, seed=9)
    # the reference arithmetic (no graph optimisation): onnxruntime 1.21's basic-level WeightBiasQuantization
    # overflows the int32 biases it makes of an FP16 Q/DQ model (calib.fp8_qdq); TensorRT runs these models
    reference, half = _run(qdq, x, "ORT_DISABLE_ALL"), _run(typed.path, x, "ORT_DISABLE_ALL")
    assert (half.argmax(1) == reference.argmax(1)).mean() >= 0.9
    np.testing.assert_allclose(half, reference, atol=0.02)


def test_cache_reuse_staleness_and_healing(model: Path, tmp_path: Path, no_modelopt: None) -> None:
    first = half_precision_onnx(model, "fp16", tmp_path)
    again = half_precision_onnx(model, "fp16", tmp_path)
    assert not first.reused and again.reused and again.path == first.path
    assert again.node_types == first.node_types
    other = half_precision_onnx(model, "bf16", tmp_path)
    assert other.path != first.path  # the type is part of the key
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])  # a truncated write
    notes: list[str] = []
    healed = half_precision_onnx(model, "fp16", tmp_path, on_rebuild=notes.append)
    assert not healed.reused and healed.path == first.path and healed.path.read_bytes() == data
    assert len(notes) == 1 and "truncated" in notes[0] and healed.rebuilt == notes[0]
    with pytest.raises(HarnessError, match="fp16, bf16"):
        half_precision_onnx(model, "fp8", tmp_path)


def test_no_converter_is_one_clear_line(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("modelopt", "modelopt.onnx.autocast", "onnxconverter_common", "onnxconverter_common.float16",
                 "onnxruntime.transformers", "onnxruntime.transformers.float16"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing them fails
    assert converter_for(qdq=False) is None and converter_for(qdq=True) is None
    with pytest.raises(BackendUnavailable) as info:
        typed_onnx.check_converter()
    assert "onnxconverter-common" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BackendUnavailable):
        half_precision_onnx(model, "fp16", tmp_path)
    assert not (tmp_path / "typed-onnx").exists()


def test_modelopt_autocast_when_it_imports(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("modelopt.onnx.autocast")
    assert converter_for(qdq=False) == "modelopt-autocast" and converter_for(qdq=True) == "float16"
    typed = half_precision_onnx(model, "fp16", tmp_path)
    assert typed.provenance["converter"] == "modelopt-autocast"
    assert typed.provenance["converter_version"].startswith("nvidia-modelopt ")
    by_op = _types_by_op(typed.path)
    assert by_op["Conv"] == {"fp16"} and by_op["Softmax"] == {"fp32"}
    x = _x()
    np.testing.assert_allclose(_run(typed.path, x), _run(model, x), atol=2e-3)
