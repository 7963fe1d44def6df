"""What only a real CUDA GPU can show (``python -m pytest -m gpu``; skipped without one): CUDA-event
timing against a bare loop, FP32 maths per call under interleaving, per-cell energy from the real
counter, the host-bound verdict, and CUDA graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from backends.base import SessionInfo
from backends.torch_eager import TorchSession
from harness.measure.interleave import WindowSpec, measure_interleaved
from harness.measure.timing import CudaEventTimer, TimingSettings, measure
from harness.sweep.cell_timing import window_entry

pytestmark = pytest.mark.gpu

SHORT = TimingSettings(warmup=5, iterations=20, repeats=3, min_seconds=0.2, warmup_seconds=0.1)


def _resnet(name: str, precision: str) -> torch.nn.Module:
    import torchvision

    dtype = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16}[precision]
    model = getattr(torchvision.models, name)(weights=None).eval()
    return model.to("cuda", dtype=dtype).to(memory_format=torch.channels_last)


def _session(module: torch.nn.Module, precision: str, cuda_graphs: bool = False) -> TorchSession:
    info = SessionInfo(backend="torch", precision=precision, device="cuda")
    return TorchSession(module, precision, "cuda", info, channels_last=True, cuda_graphs=cuda_graphs)


def _staged(session: TorchSession, batch: int, size: int = 224) -> list[Any]:
    torch.manual_seed(0)
    return [session.stage(torch.randn(batch, 3, size, size)) for _ in range(2)]


def _bare_loop_ms(fn: Any, x: Any, calls: int = 100) -> float:
    stream = torch.cuda.current_stream()
    for _ in range(10):
        fn(x)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    for s, e in zip(starts, ends):
        s.record(stream)
        fn(x)
        e.record(stream)
    stream.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return times[len(times) // 2]


def test_harness_cuda_event_median_equals_a_bare_loop_on_a_busy_gpu() -> None:
    # batch 128 in IEEE FP32: ~50 ms of device time per call against ~8 ms of launches, so the device stays
    # busy even when the other test processes load the host
    session = _session(_resnet("resnet50", "fp32"), "fp32")
    inputs = _staged(session, 128)
    result = measure(session.run, inputs, batch_size=128, config=SHORT, definition="compute",
                     timer=CudaEventTimer(session.cuda_stream), device="cuda")
    bare = _bare_loop_ms(session.run, inputs[0], calls=30)
    assert result.stats.median_ms == pytest.approx(bare, rel=0.03)


def test_fp32_and_tf32_sessions_interleaved_compute_ieee_and_tf32_on_the_device(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = torch.randn(2048, 2048, device="cuda")
    reference = (a.double() @ a.double()).float()
    outputs: dict[str, list[float]] = {"fp32": [], "tf32": []}

    def call(precision: str) -> Any:
        def fn(x: torch.Tensor) -> torch.Tensor:
            out = x @ x
            outputs[precision].append(float(((out - reference).abs().max() / reference.abs().max()).item()))
            return out
        return fn

    class MatMul(torch.nn.Module):
        def __init__(self, fn: Any) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fn(x)

    sessions = {p: _session(MatMul(call(p)), p) for p in ("fp32", "tf32")}
    specs = [WindowSpec(key=p, fn=s.run, inputs=[a], batch_size=1, definition="compute", device="cuda",
                        timer=CudaEventTimer(s.cuda_stream), session=p) for p, s in sessions.items()]
    settings = TimingSettings(warmup=1, iterations=3, repeats=3, min_seconds=0, warmup_seconds=0)
    measure_interleaved(specs, settings, lock_device="gpu-test", seed=0, lock_dir=tmp_path)
    assert outputs["fp32"] and outputs["tf32"]
    assert max(outputs["fp32"]) < 1e-5, "every fp32 call ran IEEE FP32"
    assert min(outputs["tf32"]) > 1e-4, "every tf32 call ran TF32 (10-bit mantissa)"


def test_each_cell_gets_its_own_energy_from_the_real_counter(tmp_path: Path) -> None:
    from harness.sweep.cell_timing import device_monitor, energy_meter

    torch.manual_seed(0)
    heavy_x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    light_x = torch.randn(64, 64, device="cuda")
    stream = torch.cuda.current_stream()

    def heavy(x: torch.Tensor) -> torch.Tensor:
        return x @ x

    def light(x: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(2_000_000)  # the GPU spins on one thread: busy time at little power
        return x

    settings = TimingSettings(warmup=3, iterations=20, repeats=3, min_seconds=1.0, warmup_seconds=0.2)
    specs = [WindowSpec(key=k, fn=fn, inputs=[x], batch_size=1, definition="compute", device="cuda",
                        timer=CudaEventTimer(stream), session=k)
             for k, fn, x in (("heavy", heavy, heavy_x), ("light", light, light_x))]
    monitor = device_monitor("cuda", True)
    records, block = measure_interleaved(specs, settings, lock_device="gpu-test", seed=0, lock_dir=tmp_path,
                                         monitor=monitor, meter=energy_meter(monitor))
    entries = {spec.key: window_entry(rec.result, "cuda", window=block.window_dict(), host_load=None, warnings=[],
                                      until=None) for spec, rec in zip(specs, records)}
    period = entries["heavy"].energy["update_period_ms"]
    assert period is not None and 0 < period < 1000
    heavy_w, light_w = (entries[k].energy["mean_power_w"] for k in ("heavy", "light"))
    assert heavy_w is not None and light_w is not None
    assert heavy_w > 1.5 * light_w, (heavy_w, light_w)
    assert entries["heavy"].energy["repeats_used"] == 3


def test_eager_resnet_at_batch_1_is_host_bound_and_its_cuda_graph_is_not() -> None:
    module = _resnet("resnet50", "fp16")
    verdicts = {}
    medians = {}
    for graphs in (False, True):
        session = _session(module, "fp16", cuda_graphs=graphs)
        inputs = _staged(session, 1)
        result = measure(session.run, inputs, batch_size=1, config=SHORT, definition="compute",
                         timer=CudaEventTimer(session.cuda_stream), device="cuda")
        entry = window_entry(result, "cuda", window={}, host_load=None, warnings=[], until=None, backend="torch")
        verdicts[graphs] = entry.launch_check
        medians[graphs] = entry.median_ms
        if graphs:
            assert session.info.details["cuda_graphs"]["captured"] == len(inputs)
    assert verdicts[False] is not None and verdicts[False].host_bound, verdicts[False]
    assert verdicts[True] is not None and not verdicts[True].host_bound, verdicts[True]
    assert medians[True] < medians[False]


def test_cuda_graph_replay_computes_what_the_eager_call_computes() -> None:
    module = _resnet("resnet18", "fp32")
    eager = _session(module, "fp32")
    graphs = _session(module, "fp32", cuda_graphs=True)
    host = torch.randn(4, 3, 224, 224)
    replayed = graphs.run(graphs.stage(host)).float()
    torch.cuda.synchronize()
    assert torch.allclose(replayed, eager.run(eager.stage(host)).float(), rtol=1e-4, atol=1e-4)
    assert torch.allclose(graphs.infer(host), eager.infer(host), rtol=1e-4, atol=1e-4)
