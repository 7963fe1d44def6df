"""A calibration table keyed on the un-optimized ONNX's tensor names still matches after ONNX Runtime's graph
optimizations, which is what ort-trt relies on with ``native_calibration_table`` (and ONNX Runtime's own table).

The TensorRT EP's subgraph gets only the provider-independent *basic* optimizations (extended and layout
ones apply to CPU/CUDA-assigned nodes only). Run with ONNX Runtime's real optimizer: the basic level only
removes tensors (a Conv+BatchNorm fusion keeps the BatchNorm's output name on the fused Conv, whose values
are the same), it never invents one, so every tensor the EP sees has its entry in the table.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

from harness.onnx_export import export_onnx
from harness.store.fingerprint import model_content_hash


class ConvBnResidual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8))
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.head(torch.relu(y + self.block(y)))


def _names(path: Path) -> set[str]:
    graph = onnx.load(str(path)).graph
    return {o for n in graph.node for o in n.output} | {i.name for i in graph.input}


def _optimized(src: Path, level: str, out: Path) -> Path:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return out


def test_basic_optimizations_invent_no_tensor_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ConvBnResidual().eval()
    src = export_onnx(module, (3, 16, 16), content_hash=model_content_hash(module), cache_dir=tmp_path,
                      name="convbn").path
    original = _names(src)
    basic = _names(_optimized(src, "ORT_ENABLE_BASIC", tmp_path / "basic.onnx"))
    assert basic <= original, f"basic optimizations named new tensors: {sorted(basic - original)}"
    # the CPU-only layout pass does invent names: the check above can tell (and TensorRT EP nodes never get it)
    full = _names(_optimized(src, "ORT_ENABLE_ALL", tmp_path / "all.onnx"))
    assert full - original


@pytest.mark.slow
def test_resnet18_basic_optimizations_only_remove_tensors(tmp_path: Path) -> None:
    module = torchvision.models.resnet18(weights=None).eval()
    src = export_onnx(module, (3, 64, 64), content_hash=model_content_hash(module), cache_dir=tmp_path,
                      name="resnet18").path
    original = _names(src)
    basic = _names(_optimized(src, "ORT_ENABLE_BASIC", tmp_path / "basic.onnx"))
    assert basic <= original, f"basic optimizations named new tensors: {sorted(basic - original)}"
    assert len(basic) < len(original)  # it did optimize: nodes were removed, their names with them
