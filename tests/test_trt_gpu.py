"""trt-native on a real GPU with real TensorRT (issue 9 item 8). Skipped without TensorRT or a GPU;
``bench/gpu_smoke.py --pytest`` runs this file inside the containers.

* tinycnn INT8 through the real ``IInt8EntropyCalibrator2`` (TRT 10): batches were served, the engine
  has INT8 layers (no silent fallback), and its top-1 agrees with torch on the calibration images;
* the profiling pass returns per-layer rows joined to the inspector;
* a capture during which ``execute_async_v3`` returns False ends in plain execution with real logits.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

trt = pytest.importorskip("tensorrt")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from backends.base import ModelArtifact, PhaseTimes  # noqa: E402
from backends.trt_api import is_strongly_typed  # noqa: E402
from backends.trt_native import TrtNativeBackend  # noqa: E402
from calib.trt_calibrator import CalibratorCore  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.tinycnn import TinyCNN  # noqa: E402

SHAPE = (3, 32, 32)


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *SHAPE), generator=g) * 2 - 1


class Calibration:
    """The calibration interface, over fixed images (the sweep's source does this from the train split)."""

    provenance: dict[str, Any] = {"method": "entropy", "images": "synthetic-uniform-256"}
    provenance_hash = "f" * 64

    def __init__(self) -> None:
        self.images = _images(256, 1)
        self.cores: list[CalibratorCore] = []

    def batches(self, batch_size: int) -> Any:
        for i in range(0, len(self.images) - batch_size + 1, batch_size):
            yield self.images[i:i + batch_size]

    def trt_calibrator_core(self, batch_size: int, input_shape: tuple[int, ...], *, cache_dir: Path,
                            buffer_factory: Any, tensorrt_version: str, phases: PhaseTimes) -> CalibratorCore:
        core = CalibratorCore(self.batches(batch_size), batch_size, input_shape, buffer_factory)
        self.cores.append(core)
        return core

    def qdq_onnx(self, target: str, phases: PhaseTimes) -> Path:
        pytest.skip("explicit Q/DQ is covered by the sweep smoke test")


def _artifact(tmp_path: Path, calibration: Any = None) -> ModelArtifact:
    torch.manual_seed(0)
    module = TinyCNN().eval()
    export = export_onnx(module, SHAPE, content_hash="e" * 64, cache_dir=tmp_path, name="tinycnn")
    return ModelArtifact(name="tinycnn", module=module, input_shape=SHAPE, num_outputs=10, content_hash="e" * 64,
                         onnx=lambda: export.path, calibration=calibration, int8_mode="implicit")


@pytest.mark.skipif(is_strongly_typed(str(trt.__version__)), reason="implicit INT8 was removed in TensorRT 11")
def test_tinycnn_int8_through_the_real_calibrator(tmp_path: Path) -> None:
    calibration = Calibration()
    artifact = _artifact(tmp_path, calibration)
    session = TrtNativeBackend({"calibration_batch_size": 32}).activate(artifact, "int8", (1, 32), tmp_path)
    details = session.info.details
    assert calibration.cores and calibration.cores[0].batches_served == 256 // 32
    assert details["layers"]["precision_counts"]["int8"] > 0 and not details.get("int8_fallback")
    x = _images(128, 2)
    with torch.no_grad():
        ref = artifact.module(x).argmax(1)
    got = torch.cat([session.infer(x[i:i + 32]) for i in range(0, 128, 32)]).argmax(1)
    agreement = (got == ref).float().mean().item()
    assert agreement >= 0.90, f"int8 top-1 agrees with torch on only {agreement:.0%}"
    rows = session.iprofiler_rows(32, runs=3)
    assert rows and all(r["ms"] >= 0 for r in rows) and any(r["precision"] == "int8" for r in rows)
    assert session.info.prep_phases["build"] > 0  # type: ignore[attr-defined]
    session.close()


def test_per_batch_profiles_and_graphs_give_torch_logits(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    session = TrtNativeBackend({"cuda_graph": True}).activate(artifact, "fp32", (1, 8), tmp_path)
    assert session.info.details["plan"]["profiles"] == [[1, 1, 1], [1, 8, 8]]
    assert session.graph_batches == (1, 8)
    for b in (1, 8, 5):
        x = _images(b, 3 + b)
        with torch.no_grad():
            ref = artifact.module(x)
        assert torch.allclose(session.infer(x), ref, atol=1e-2, rtol=1e-2)  # TF32 is on by default for fp32 engines
        y = session.run(session.stage(x))
        session.cuda_stream.synchronize()
        assert torch.allclose(y.float().cpu(), ref, atol=1e-2, rtol=1e-2)  # TF32 is on by default for fp32 engines
    session.close()


def test_a_capture_that_fails_falls_back_to_plain_execution(tmp_path: Path) -> None:
    from backends.trt_runner import TrtNativeSession

    artifact = _artifact(tmp_path)
    real = TrtNativeBackend().activate(artifact, "fp32", (4,), tmp_path)

    class FailingContext:
        """A real context that reports failure while the stream is capturing."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def execute_async_v3(self, stream: int) -> bool:
            if torch.cuda.is_current_stream_capturing():
                return False
            return bool(self.inner.execute_async_v3(stream))

    engine = real._engine
    wrapped = SimpleNamespace(
        num_io_tensors=engine.num_io_tensors, get_tensor_name=engine.get_tensor_name,
        get_tensor_mode=engine.get_tensor_mode, get_tensor_dtype=engine.get_tensor_dtype,
        create_execution_context=lambda: FailingContext(engine.create_execution_context()))
    session = TrtNativeSession(trt=trt, runtime=real._runtime, engine=wrapped, info=real.info,
                               input_shape=SHAPE, profiles=((4, 4, 4),), batch_sizes=(4,), cuda_graph=True)
    assert session.graph_batches == () and "4" in session.info.details["cuda_graph_fallback"]
    x = _images(4, 9)
    with torch.no_grad():
        ref = artifact.module(x)
    y = session.run(session.stage(x))
    session.cuda_stream.synchronize()
    assert torch.allclose(y.float().cpu(), ref, atol=1e-2, rtol=1e-2)  # TF32 is on by default for fp32 engines
