"""harness.onnx_export: opset >= 17, named I/O, dynamic batch, verification and the content-keyed cache.

Regression context: the thesis tool's TensorRT profile was built for one batch
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
from harness.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from harness.store.fingerprint import model_content_hash

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


# -- caches that heal ----------------------------------------------------------------------------


def test_truncated_export_is_rebuilt_not_a_parse_error(tmp_path: Path) -> None:
    from harness.store.cache_files import CacheRebuiltWarning, sidecar_of

    net = _net()
    first = export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="small")
    assert first.rebuilt is None and sidecar_of(first.path).exists()
    good = first.path.read_bytes()
    first.path.write_bytes(good[: len(good) // 3])  # the fault, reproduced: ORT cannot parse it
    with pytest.raises(Exception, match="(?i)protobuf|parse|load"):
        ort.InferenceSession(str(first.path), providers=["CPUExecutionProvider"])
    notes: list[str] = []
    again = export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="small",
                        on_rebuild=notes.append)
    assert again.path == first.path and again.path.read_bytes() == good
    assert notes == [again.rebuilt] and "truncated" in notes[0] and str(first.path) in notes[0]
    ort.InferenceSession(str(again.path), providers=["CPUExecutionProvider"])  # loads again

    # Garbled in place (same size) and a missing sidecar: rebuilt too; without a callback: a warning.
    again.path.write_bytes(b"\0" * len(good))
    with pytest.warns(CacheRebuiltWarning, match="sha256"):
        export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="small")
    sidecar_of(first.path).unlink()
    with pytest.warns(CacheRebuiltWarning, match="sidecar"):
        export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="small")
    assert first.path.read_bytes() == good


def test_cached_export_respects_the_umask(tmp_path: Path) -> None:
    import os

    from harness.store.cache_files import sidecar_of

    net = _net()
    old = os.umask(0o022)
    try:
        result = export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="small")
    finally:
        os.umask(old)
    assert result.path.stat().st_mode & 0o777 == 0o644
    assert sidecar_of(result.path).stat().st_mode & 0o777 == 0o644


# -- the disagreement check -------------------------------------------------------------------


class _ScaleByFirstElement(nn.Module):
    """Python control flow on a tensor value: the tracer records the branch taken for the example input
    (logits * 1) and ONNX keeps it for every input, while PyTorch takes the other branch for inputs whose
    first element is positive (logits * 100)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if float(x.flatten()[0]) > 0:  # evaluated once at trace time
            return logits * 100.0
        return logits


class _ExportSubstitutes(torch.autograd.Function):
    """A custom op whose ONNX symbolic is not what forward computes (like an exporter bug)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return x * 3.0

    @staticmethod
    def symbolic(g, x):  # noqa: ANN001, ANN205
        return g.op("Identity", x)


class _CustomOpNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ExportSubstitutes.apply(self.net(x))


def test_export_that_disagrees_with_torch_is_rejected(tmp_path: Path) -> None:
    net = _CustomOpNet().eval()
    with pytest.raises(HarnessError, match=r"disagrees with PyTorch \(max abs diff (\S+)\)") as info:
        export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="custom")
    # max_abs_diff is really computed: it is |3 y - y| = 2 max|y| for this model, not a constant.
    with torch.inference_mode():
        expected = 2 * float(net.net(torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(0)))
                             .abs().max())
    reported = float(str(info.value).split("max abs diff ")[1].split(")")[0])
    assert reported == pytest.approx(expected, rel=1e-2)
    assert not list((tmp_path / "onnx").glob("*.onnx")), "a rejected export must not be cached"


def test_tensor_value_branch_is_caught_by_the_check(tmp_path: Path) -> None:
    # The check's example input (seeded randn) has a negative first element, so the trace records
    # "return logits"; PyTorch on the same input agrees and the export is accepted, honestly ...
    torch_example = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(0))
    assert float(torch_example.flatten()[0]) <= 0
    net = _ScaleByFirstElement().eval()
    result = export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="branch")
    assert result.max_abs_diff < 1e-4
    # ... and the recorded value is the real difference: for a positive first element the ONNX graph
    # (traced branch) and PyTorch differ by 99 |logits|.
    x = torch_example.clone()
    x.view(-1)[0] = 1.0
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        diff = float(np.abs(session.run(None, {"input": x.numpy()})[0] - net(x).numpy()).max())
        assert diff == pytest.approx(99 * float(net.net(x).abs().max()), rel=1e-3)


def test_max_abs_diff_is_measured_not_assumed(tmp_path: Path) -> None:
    from harness import onnx_export

    net = _net()
    result = export_onnx(net, SHAPE, content_hash=model_content_hash(net), cache_dir=tmp_path, name="small")
    example = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        direct = float(np.abs(session.run(None, {"input": example.numpy()})[0] - net(example).numpy()).max())
    assert result.max_abs_diff == pytest.approx(direct, rel=1e-6, abs=1e-9)
    assert onnx_export._max_abs_diff(net, result.path, example) == pytest.approx(direct, rel=1e-6, abs=1e-9)
    assert onnx_export._max_abs_diff(_net(seed=1), result.path, example) > 1e-3  # another model: differs


def test_dynamo_is_passed_only_to_exporters_that_have_it() -> None:
    from harness.onnx_export import torchscript_exporter_kwargs

    def export_2_4(model, args, f, export_params=True, verbose=False, input_names=None, opset_version=None):  # noqa: ANN001, ANN202
        """torch 2.1-2.4 (and 2.5 pre-releases): no ``dynamo`` parameter."""

    def export_2_5(model, args, f, *, input_names=None, opset_version=None, dynamo=False, **kwargs):  # noqa: ANN001, ANN003, ANN202
        """torch 2.5+: ``dynamo`` (default True from 2.9)."""

    def export_kwargs_only(model, args, f, **kwargs):  # noqa: ANN001, ANN003, ANN202
        """**kwargs alone says nothing about ``dynamo``."""

    assert torchscript_exporter_kwargs(export_2_4) == {}
    assert torchscript_exporter_kwargs(export_2_5) == {"dynamo": False}
    assert torchscript_exporter_kwargs(export_kwargs_only) == {}
    assert torchscript_exporter_kwargs(torch.onnx.export) == {"dynamo": False}  # the installed torch 2.14
