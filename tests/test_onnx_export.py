"""harness.onnx_export: opset >= 17, named I/O, dynamic batch, verification and the content-keyed cache.

Regression context (REFERENCE.md section 1): the thesis tool's TensorRT profile was built for one batch
size; our exports keep a dynamic batch axis so every batch size (and a partial batch) runs one model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from harness.fingerprint import model_content_hash
from harness.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx

SHAPE = (3, 16, 16)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    # Non-trivial BatchNorm statistics, so folding them into the conv is actually checked.
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    net = _net()
    return net, cache, export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=cache, name="small")


def test_export_opset_names_and_dynamic_batch(exported) -> None:
    _, cache, result = exported
    assert result.path.is_file()
    assert result.path.parent == cache / "onnx"
    assert result.opset >= 17
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model)
    default_opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert default_opsets and default_opsets[0] >= 17
    assert [i.name for i in model.graph.input] == [INPUT_NAME] == ["input"]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME] == ["logits"]
    for value in (model.graph.input[0], model.graph.output[0]):
        batch_dim = value.type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.HasField("dim_value"), value.name
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert tuple(dims) == SHAPE


@pytest.mark.parametrize("batch", [1, 5])
def test_exported_model_runs_at_any_batch_and_matches_torch(exported, batch: int) -> None:
    net, _, result = exported
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(batch))
    (out,) = session.run(["logits"], {"input": x.numpy()})
    with torch.inference_mode():
        expected = net(x).numpy()
    assert out.shape == (batch, 5)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_max_abs_diff_recorded_and_small(exported) -> None:
    _, _, result = exported
    assert 0.0 <= result.max_abs_diff < 1e-4
    data = result.to_dict()
    assert data["path"] == str(result.path)
    assert data["max_abs_diff"] == result.max_abs_diff
    assert data["opset"] == result.opset


def test_same_content_hash_reuses_the_file(exported) -> None:
    net, cache, first = exported
    before = first.path.stat().st_mtime_ns
    content = first.path.read_bytes()
    files_before = sorted(p.name for p in (cache / "onnx").iterdir())
    second = export_onnx(net, SHAPE, content_hash=first.content_hash, cache_dir=cache, name="small")
    assert second.path == first.path
    assert second.path.stat().st_mtime_ns == before
    assert second.path.read_bytes() == content
    assert second.max_abs_diff == first.max_abs_diff
    assert sorted(p.name for p in (cache / "onnx").iterdir()) == files_before  # no stray temp files


def test_different_content_hash_gives_a_different_file(exported) -> None:
    _, cache, first = exported
    other = _net(seed=1)
    other_hash = model_content_hash(other)
    assert other_hash != first.content_hash
    second = export_onnx(other, SHAPE, content_hash=other_hash, cache_dir=cache, name="small")
    assert second.path != first.path
    assert first.path.is_file() and second.path.is_file()
    assert second.path.read_bytes() != first.path.read_bytes()
    # and it is the other model's weights that were exported
    x = torch.randn(2, *SHAPE)
    session = ort.InferenceSession(str(second.path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], other(x).numpy(), atol=1e-4)


@pytest.mark.parametrize("opset", [11, 13, 16])
def test_old_opsets_rejected(tmp_path: Path, opset: int) -> None:
    net = _net()
    with pytest.raises(HarnessError, match="17"):
        export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="small", opset=opset)
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").iterdir())


def test_odd_names_give_safe_file_names(tmp_path: Path) -> None:
    net = _net()
    result = export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path,
                         name="models/my net:make")
    assert result.path.parent == tmp_path / "onnx"
    assert "/" not in result.path.name[:-5] and ":" not in result.path.name and " " not in result.path.name
