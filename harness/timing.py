"""The one timing engine every backend is measured with.

* CPU work, and the host-to-host ``e2e`` definition: ``time.perf_counter_ns``
  around each call (``e2e`` calls are synchronous by definition).
* GPU ``compute``: CUDA events recorded on the session's stream around each
  call; the stream is synchronised once per repeat, so launches overlap as they
  would in a serving loop but every interval is device time.

Each repeat runs ``warmup`` untimed calls, then ``iterations`` timed ones. The
raw per-iteration samples are kept; statistics are over all samples.

:class:`TimingSettings` is the one timing settings type: the ``timing:`` section
of a sweep config and what :func:`measure` runs with.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

TIMING_DEFINITIONS: tuple[str, ...] = ("compute", "e2e")
TimingDefinition = Literal["compute", "e2e"]


class UntilStableSettings(BaseModel):
    """``timing.until_stable``: add repeats until the median's 95 % CI half-width is within
    ``target_ci_pct`` % of the median, or ``max_seconds`` of timing have passed (per definition)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_ci_pct: float = Field(default=1.0, gt=0)
    max_seconds: float = Field(default=30.0, gt=0)


class TimingSettings(BaseModel):
    """How a cell is timed (``timing:`` in the sweep config); bad values raise a ValueError."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=50, ge=1)
    repeats: int = Field(default=3, ge=1)
    definitions: list[TimingDefinition] = Field(default_factory=lambda: ["compute", "e2e"])
    batches: int = Field(default=4, ge=1, description="distinct full batches of real images cycled while timing")
    #: Opt-in: repeats (at least ``repeats``) are added until the CI is tight enough or the budget is spent.
    until_stable: UntilStableSettings | None = None

    def loop_dict(self) -> dict[str, int]:
        """The loop counts stored with every timing result (``config`` of ``TimingResult.to_dict``)."""
        return {"warmup": self.warmup, "iterations": self.iterations, "repeats": self.repeats}



@dataclass(frozen=True)
class LatencyStats:
    """Per-batch latency statistics in milliseconds, and throughput."""

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    stdev_ms: float
    cv: float
    throughput_ips: float
    samples: int

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int], batch_size: int) -> LatencyStats:
        if not samples_ns:
            raise ValueError("no timing samples")
        ms = sorted(s / 1e6 for s in samples_ns)
        mean = statistics.fmean(ms)
        stdev = statistics.stdev(ms) if len(ms) > 1 else 0.0
        median = statistics.median(ms)
        return cls(
            median_ms=median,
            mean_ms=mean,
            min_ms=ms[0],
            max_ms=ms[-1],
            p90_ms=percentile(ms, 90),
            p95_ms=percentile(ms, 95),
            p99_ms=percentile(ms, 99),
            stdev_ms=stdev,
            cv=stdev / mean if mean > 0 else 0.0,
            throughput_ips=batch_size / (median / 1e3) if median > 0 else float("inf"),
            samples=len(ms),
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class TimingResult:
    definition: str
    timer: str
    batch_size: int
    config: TimingSettings
    repeats_ns: list[list[int]] = field(default_factory=list)

    @property
    def samples_ns(self) -> list[int]:
        return [s for rep in self.repeats_ns for s in rep]

    @property
    def stats(self) -> LatencyStats:
        return LatencyStats.from_ns(self.samples_ns, self.batch_size)

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "definition": self.definition,
            "timer": self.timer,
            "batch_size": self.batch_size,
            "config": self.config.loop_dict(),
            "stats": asdict(self.stats),
        }
        if with_samples:
            out["samples_ns"] = self.repeats_ns
        return out


class PerfCounterTimer:
    """Host wall clock around each call."""

    name = "perf_counter_ns"

    def time_calls(self, fn: Callable[[Any], Any], inputs: Sequence[Any], n: int) -> list[int]:
        clock = time.perf_counter_ns
        count = len(inputs)
        samples = [0] * n
        for i in range(n):
            x = inputs[i % count]
            t0 = clock()
            fn(x)
            samples[i] = clock() - t0
        return samples


class CudaEventTimer:
    """CUDA events on ``stream`` around each call; one synchronise per batch of calls."""

    name = "cuda_event"

    def __init__(self, stream: torch.cuda.Stream) -> None:
        self.stream = stream

    def time_calls(self, fn: Callable[[Any], Any], inputs: Sequence[Any], n: int) -> list[int]:
        count = len(inputs)
        # Events belong to the device they are created on, and an event recorded on another device's
        # stream fails: create them on the session's device (torch would otherwise create them lazily on
        # the stream's device at the first record, which older releases did not do for every path).
        with torch.cuda.device(self.stream.device):
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        with torch.cuda.stream(self.stream):
            for i in range(n):
                starts[i].record(self.stream)
                fn(inputs[i % count])
                ends[i].record(self.stream)
        self.stream.synchronize()
        return [int(round(s.elapsed_time(e) * 1e6)) for s, e in zip(starts, ends)]


def measure(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    *,
    batch_size: int,
    config: TimingSettings,
    definition: str,
    timer: PerfCounterTimer | CudaEventTimer,
    on_repeat: Callable[[int], None] | None = None,
) -> TimingResult:
    """Time ``fn`` over ``inputs`` (cycled): warm-up, then timed iterations, per repeat."""
    if not inputs:
        raise ValueError("measure needs at least one input")
    result = TimingResult(definition=definition, timer=timer.name, batch_size=batch_size, config=config)
    for rep in range(config.repeats):
        for i in range(config.warmup):
            fn(inputs[i % len(inputs)])
        if isinstance(timer, CudaEventTimer):
            timer.stream.synchronize()
        result.repeats_ns.append(timer.time_calls(fn, inputs, config.iterations))
        if on_repeat is not None:
            on_repeat(rep)
    return result


def timer_for(device: str, definition: str, stream: torch.cuda.Stream | None) -> PerfCounterTimer | CudaEventTimer:
    """CUDA events for GPU compute; the host clock for CPU and for host-to-host e2e."""
    if definition == "compute" and device == "cuda" and stream is not None:
        return CudaEventTimer(stream)
    return PerfCounterTimer()
