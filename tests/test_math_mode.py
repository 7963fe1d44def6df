"""FP32 maths per call: torch keeps TF32 in process-wide switches, and an interleaved unit keeps an fp32
and a tf32 session alive together; each call must run under its own session's mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from backends.base import SessionInfo
from backends.torch_eager import MathMode, TorchOptions, TorchSession, _fp32_switches
from harness.errors import HarnessError
from harness.measure.interleave import WindowSpec, measure_interleaved
from harness.measure.timing import PerfCounterTimer, TimingSettings


def _modes() -> tuple[Any, ...]:
    return tuple(getattr(owner, name) for owner, name in _fp32_switches())


def _tf32_on(values: tuple[Any, ...]) -> bool:
    return all(v in (True, "tf32") for v in values)


def _ieee(values: tuple[Any, ...]) -> bool:
    return all(v in (False, "ieee") for v in values)


class Recorder(torch.nn.Module):
    """Records torch's FP32 maths switches as they are while each forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, ...]] = []
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(_modes())
        return self.linear(x)


def _session(precision: str) -> tuple[TorchSession, Recorder]:
    module = Recorder().eval()
    info = SessionInfo(backend="torch", precision=precision, device="cuda")
    # a CUDA session as activate builds it (its maths follow its precision); the stream is a stand-in,
    # and the recorder runs on the CPU: what is observed is the switches torch reads at dispatch
    session = TorchSession(module, precision, "cuda", info, channels_last=False, stream=object())
    return session, module


def test_fp32_and_tf32_sessions_interleaved_each_call_sees_its_own_math(tmp_path: Path) -> None:
    before = _modes()
    fp32, fp32_module = _session("fp32")
    tf32, tf32_module = _session("tf32")
    x = torch.ones(2, 4)
    specs = [WindowSpec(key=name, fn=s.run, inputs=[x], batch_size=2, definition="compute",
                        timer=PerfCounterTimer(), session=name) for name, s in (("fp32", fp32), ("tf32", tf32))]
    settings = TimingSettings(warmup=2, iterations=5, repeats=4, min_seconds=0, warmup_seconds=0)
    measure_interleaved(specs, settings, lock_device="cpu", seed=3, lock_dir=tmp_path)
    assert len(fp32_module.seen) == len(tf32_module.seen) == 4 * 7
    assert all(_ieee(v) for v in fp32_module.seen), set(fp32_module.seen)
    assert all(_tf32_on(v) for v in tf32_module.seen), set(tf32_module.seen)
    assert _modes() == before, "the switches are put back after every call"
    assert fp32.info.details["fp32_math"].startswith("ieee") and tf32.info.details["fp32_math"].startswith("tf32")


def test_half_precision_sessions_keep_their_fp32_layers_ieee_and_cpu_sessions_set_nothing() -> None:
    fp16, module = _session("fp16")
    fp16.run(torch.ones(1, 4, dtype=torch.float16).float())
    assert _ieee(module.seen[0])
    cpu_module = Recorder().eval()
    cpu = TorchSession(cpu_module, "fp32", "cpu", SessionInfo(backend="torch", precision="fp32", device="cpu"),
                       channels_last=False)
    with MathMode(allow_tf32=True).applied():
        cpu.run(torch.ones(1, 4))
    assert _tf32_on(cpu_module.seen[0]), "a CPU session has no TF32 maths and leaves the switches alone"
    assert "fp32_math" not in cpu.info.details


def test_math_mode_restores_the_switches_when_the_call_raises() -> None:
    before = _modes()
    with pytest.raises(RuntimeError), MathMode(allow_tf32=not _tf32_on(before)).applied():
        assert _modes() != before
        raise RuntimeError("boom")
    assert _modes() == before


def test_cuda_graphs_cannot_be_combined_with_a_compile_mode_that_replays_graphs_itself() -> None:
    from backends.torch_eager import TorchBackend

    with pytest.raises(HarnessError, match="reduce-overhead"):
        TorchBackend({"cuda_graphs": True, "compile": True, "compile_mode": "reduce-overhead"})
    assert TorchOptions(cuda_graphs=True, compile=True, compile_mode="max-autotune-no-cudagraphs").cuda_graphs
