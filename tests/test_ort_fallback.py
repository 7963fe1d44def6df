"""ONNX Runtime never falls back silently: its Python session catches an execution provider's failure
during ``run`` (``EPFail``: a TensorRT out-of-memory, say), re-creates itself on CUDA/CPU without the
provider options and retries. A harness session has that fallback off: the failure fails the cell
with one line. (Run under every pinned onnxruntime by tests/test_ort_matrix.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backends.base import ModelArtifact
from backends.ort_common import create_session, ep_failure_type
from backends.ort_cpu import OrtCpuBackend
from harness.errors import HarnessError
from harness.onnx_export import INPUT_NAME, export_onnx
from harness.store.fingerprint import model_content_hash

ort = pytest.importorskip("onnxruntime")
SHAPE = (3, 16, 16)


class FailsOnce:
    """An ONNX Runtime C++ session whose provider fails on its first run, as an EP failure surfaces."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failures = 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures == 0:
            self.failures += 1
            raise ep_failure_type()("[TensorRT EP] out of memory while building an engine")
        return self.inner.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 5)).eval()
    return export_onnx(module, SHAPE, content_hash=model_content_hash(module),
                       cache_dir=tmp_path_factory.mktemp("onnx"), name="fallback").path


def test_onnx_runtime_left_to_itself_retries_on_another_provider_and_says_so_only_on_stdout(
        model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    session._sess = FailsOnce(session._sess)
    out = session.run(None, {INPUT_NAME: np.zeros((1, *SHAPE), np.float32)})
    assert out[0].shape == (1, 5), "the run 'succeeded' on the fallback providers"
    assert "Falling back" in capsys.readouterr().out


def test_a_harness_session_fails_with_one_line_instead_of_falling_back(
        model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = ModelArtifact(name="m", module=torch.nn.Identity(), input_shape=SHAPE, num_outputs=5,
                             content_hash="0" * 64, onnx=lambda: model)
    session = OrtCpuBackend().activate(artifact, "fp32", (2,), model.parent)
    session._session._sess = FailsOnce(session._session._sess)
    with pytest.raises(HarnessError) as info:
        session.infer(torch.zeros(2, *SHAPE))
    message = str(info.value)
    assert "\n" not in message and "out of memory" in message and "fallback" in message
    assert "Falling back" not in capsys.readouterr().out
    with pytest.raises(HarnessError):  # the compute path too: the session never quietly switched providers
        session._session._sess.failures = 0
        session.run(session.stage(torch.zeros(2, *SHAPE)))


def test_sessions_are_created_with_fallback_off(model: Path) -> None:
    session = create_session(model, [("CPUExecutionProvider", {})])
    assert session._enable_fallback is False
