"""The one timing engine every backend is measured with.

* CPU work, and the host-to-host ``e2e`` definition: ``time.perf_counter_ns``
  around each call (``e2e`` calls are synchronous by definition).
* GPU ``compute``: CUDA events recorded on the session's stream around each
  call; the stream is synchronised once per repeat, so launches overlap as they
  would in a serving loop but every interval is device time.

Each repeat runs untimed warm-up calls (at least ``warmup`` of them and for at least
``warmup_seconds``), then timed calls: at least ``iterations`` of them and for at
least ``min_seconds`` (as trtexec measures for a duration, Google Benchmark for a
minimum time, pyperf calibrates loops to a minimum time per value). A fixed count
alone makes a window of a fast model a few milliseconds of work, which one
scheduler tick can ruin; a duration makes every window long enough to average over
the machine's short-term states. The raw per-iteration samples are kept, with each
repeat's start and end time; statistics are over all samples.

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

from harness.measure.energy import EnergyMeter, EnergySpan
from harness.measure.launch import LAUNCH_PROBE_CALLS

TIMING_DEFINITIONS: tuple[str, ...] = ("compute", "e2e")
TimingDefinition = Literal["compute", "e2e"]

#: Default minimum measuring time per repeat, by device class (seconds): a CPU window of 0.5 s spans
#: many scheduler time slices; a GPU's clocks settle slower, so it gets 1 s.
DEFAULT_MIN_SECONDS: dict[str, float] = {"cpu": 0.5, "cuda": 1.0}
#: Default warm-up time per repeat (at least ``warmup`` calls as well), by device class.
DEFAULT_WARMUP_SECONDS: dict[str, float] = {"cpu": 0.2, "cuda": 0.5}
#: A repeat stops growing at this many samples even before ``min_seconds`` (a microsecond-scale call
#: would otherwise store hundreds of thousands of samples per repeat).
MAX_SAMPLES_PER_REPEAT = 10_000


def device_class(device: str) -> str:
    """"cuda" for any CUDA device ("cuda", "cuda:1"), else "cpu"."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


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
    #: Minimum measuring time per repeat in seconds (besides ``iterations``); None: the device's default
    #: (:data:`DEFAULT_MIN_SECONDS`); 0: count only.
    min_seconds: float | None = Field(default=None, ge=0, le=600)
    #: Minimum warm-up time per repeat in seconds (besides ``warmup`` calls); None: the device's default.
    warmup_seconds: float | None = Field(default=None, ge=0, le=600)
    #: Opt-in: repeats (at least ``repeats``) are added until the CI is tight enough or the budget is spent.
    until_stable: UntilStableSettings | None = None

    def loop_dict(self) -> dict[str, int]:
        """The loop counts stored with every timing result (``config`` of ``TimingResult.to_dict``)."""
        return {"warmup": self.warmup, "iterations": self.iterations, "repeats": self.repeats}

    def min_seconds_for(self, device: str) -> float:
        """The minimum measuring time per repeat on ``device`` ("cpu", "cuda", ...)."""
        return DEFAULT_MIN_SECONDS[device_class(device)] if self.min_seconds is None else self.min_seconds

    def warmup_seconds_for(self, device: str) -> float:
        """The minimum warm-up time per repeat on ``device``."""
        return DEFAULT_WARMUP_SECONDS[device_class(device)] if self.warmup_seconds is None else self.warmup_seconds

    def duration_dict(self, device: str) -> dict[str, float]:
        """The durations a window on ``device`` ran with (``duration`` of ``TimingResult.to_dict``)."""
        return {"min_seconds": self.min_seconds_for(device), "warmup_seconds": self.warmup_seconds_for(device)}



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
    #: (start, end) epoch seconds of each repeat's timed calls (warm-up excluded), in repeat order.
    repeat_times: list[tuple[float, float]] = field(default_factory=list)
    device: str = "cpu"
    #: Per repeat, the host's issue time of a few untimed calls on an idle stream (GPU windows only):
    #: what :mod:`harness.measure.launch` judges host-bound windows by.
    issue_ns: list[list[int]] = field(default_factory=list)
    #: Per repeat, the device energy over its timed calls (None where no meter ran).
    energy: list[EnergySpan | None] = field(default_factory=list)

    def add(self, repeat: Repeat) -> None:
        """Append one measured repeat (samples, times, issue probe, energy)."""
        self.repeats_ns.append(repeat.samples_ns)
        self.repeat_times.append((repeat.start, repeat.end))
        self.issue_ns.append(repeat.issue_ns)
        self.energy.append(repeat.energy)

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
            "duration": self.config.duration_dict(self.device),
            "repeat_times": [[round(a, 6), round(b, 6)] for a, b in self.repeat_times],
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
        # Events belong to the device they are created on, and recording one on another device's stream
        # fails: create them on the session's device, whichever device is current.
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

    def issue_times(self, fn: Callable[[Any], Any], inputs: Sequence[Any], n: int) -> list[int]:
        """The host wall time of ``n`` calls until each returns, each issued on an idle stream (the
        stream is synchronised before and after every call), so no call waits for a full launch
        queue: how long the host needs to issue one call (:mod:`harness.measure.launch`)."""
        clock = time.perf_counter_ns
        count = len(inputs)
        out = [0] * n
        with torch.cuda.stream(self.stream):
            for i in range(n):
                self.stream.synchronize()
                t0 = clock()
                fn(inputs[i % count])
                out[i] = clock() - t0
        self.stream.synchronize()
        return out


@dataclass(frozen=True)
class Repeat:
    """One repeat: its samples (ns), when its timed calls ran (epoch seconds), the host issue-time
    probe (GPU only) and the device energy over the timed calls (when a meter ran)."""

    samples_ns: list[int]
    start: float
    end: float
    issue_ns: list[int] = field(default_factory=list)
    energy: EnergySpan | None = None


def _synchronize(timer: PerfCounterTimer | CudaEventTimer) -> None:
    if isinstance(timer, CudaEventTimer):
        timer.stream.synchronize()


def warm_up(fn: Callable[[Any], Any], inputs: Sequence[Any], *, calls: int, seconds: float,
            timer: PerfCounterTimer | CudaEventTimer) -> int:
    """Untimed calls: at least ``calls`` and until ``seconds`` have passed (device work synchronised
    before the clock is read, so queued GPU work counts). Returns how many calls ran."""
    clock = time.perf_counter
    start = clock()
    done = 0
    count = len(inputs)
    while done < calls:
        fn(inputs[done % count])
        done += 1
    _synchronize(timer)
    while clock() - start < seconds:
        fn(inputs[done % count])
        done += 1
        _synchronize(timer)
    return done


#: How long :func:`wait_for_idle_threads` waits at most, how long each look lasts, and the share of
#: one core below which this process counts as idle.
SETTLE_MAX_SECONDS = 0.5
SETTLE_SLICE_SECONDS = 0.005
SETTLE_IDLE_CORES = 0.1
#: Consecutive quiet looks that count as idle: on a loaded machine a spinning thread can be off the CPU
#: for one whole look and seem quiet; two in a row rarely are.
SETTLE_QUIET_LOOKS = 2


def wait_for_idle_threads(max_seconds: float = SETTLE_MAX_SECONDS) -> float:
    """Wait until this process's other threads stop burning CPU; returns the seconds waited.

    Runtime thread pools spin after their last call before they sleep: ONNX Runtime's intra-op
    workers (``session.intra_op.allow_spinning``, on by default) keep a core busy for about 50 ms,
    OpenMP workers for a while too. When windows of different sessions alternate in one process, the
    session timed last is still spinning while the next one is timed, and on a 2-core machine that
    halves the next window's speed (ONNX Runtime at batch 32 measured 3.7 ms after its own window,
    7.8 ms right after another session's). The spin belongs to how a runtime behaves after *its own*
    calls, so it is waited out between sessions, not switched off: each session is still measured
    with its runtime's defaults. Quiet means under ``SETTLE_IDLE_CORES`` of a core of process CPU
    time over ``SETTLE_QUIET_LOOKS`` consecutive looks of ``SETTLE_SLICE_SECONDS`` (the process CPU
    clock counts every thread)."""
    start = time.perf_counter()
    quiet = 0
    while True:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(SETTLE_SLICE_SECONDS)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        quiet = quiet + 1 if wall <= 0 or cpu / wall < SETTLE_IDLE_CORES else 0
        if quiet >= SETTLE_QUIET_LOOKS or wall0 + wall - start >= max_seconds:
            return time.perf_counter() - start


def measure_repeat(fn: Callable[[Any], Any], inputs: Sequence[Any], *, config: TimingSettings,
                   timer: PerfCounterTimer | CudaEventTimer, device: str = "cpu",
                   meter: EnergyMeter | None = None) -> Repeat:
    """One repeat: warm-up (by count and time), on a GPU the issue-time probe
    (:meth:`CudaEventTimer.issue_times`, untimed), then timed calls, at least ``config.iterations``
    and for at least ``config.min_seconds_for(device)`` (until :data:`MAX_SAMPLES_PER_REPEAT`).

    The timed calls run in blocks through ``timer.time_calls``: first ``iterations``, then as many
    as the measured rate says are still missing; between blocks only the wall clock is read, so
    the per-call timing is the timer's alone. ``meter`` is read right before the first timed call and
    right after the last one has finished (the timer synchronises the device): the repeat's energy
    is that of its timed calls alone; a metered repeat lasts at least ``meter.min_span_s``."""
    if not inputs:
        raise ValueError("measure needs at least one input")
    warm_up(fn, inputs, calls=config.warmup, seconds=config.warmup_seconds_for(device), timer=timer)
    issue = timer.issue_times(fn, inputs, LAUNCH_PROBE_CALLS) if isinstance(timer, CudaEventTimer) else []
    # a metered repeat lasts long enough for its energy to resolve (NVML's counter steps every ~100 ms)
    min_seconds = max(config.min_seconds_for(device), meter.min_span_s if meter is not None else 0.0)
    clock = time.perf_counter
    mark = meter.start() if meter is not None else None
    wall_start = time.time()
    t0 = clock()
    samples = timer.time_calls(fn, inputs, config.iterations)
    while True:
        elapsed = clock() - t0
        if elapsed >= min_seconds or len(samples) >= MAX_SAMPLES_PER_REPEAT:
            break
        per_call = elapsed / len(samples) if elapsed > 0 else 1e-6
        missing = int((min_seconds - elapsed) / per_call * 1.05) + 1
        block = max(1, min(missing, MAX_SAMPLES_PER_REPEAT - len(samples)))
        # The block's inputs continue the cycle where the previous block stopped.
        offset = len(samples) % len(inputs)
        rotated = list(inputs[offset:]) + list(inputs[:offset])
        samples.extend(timer.time_calls(fn, rotated, block))
    wall_end = time.time()
    energy = meter.span(mark, meter.stop()) if meter is not None else None
    return Repeat(samples_ns=samples, start=wall_start, end=wall_end, issue_ns=issue, energy=energy)


def measure(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    *,
    batch_size: int,
    config: TimingSettings,
    definition: str,
    timer: PerfCounterTimer | CudaEventTimer,
    on_repeat: Callable[[int], None] | None = None,
    device: str | None = None,
    meter: EnergyMeter | None = None,
) -> TimingResult:
    """Time ``fn`` over ``inputs`` (cycled): per repeat, warm-up then timed calls (see
    :func:`measure_repeat`). ``device`` picks the default durations ("cuda" when the timer is
    CUDA events and no device is given, else "cpu"); ``meter`` reads each repeat's energy."""
    if not inputs:
        raise ValueError("measure needs at least one input")
    if device is None:
        device = "cuda" if isinstance(timer, CudaEventTimer) else "cpu"
    result = TimingResult(definition=definition, timer=timer.name, batch_size=batch_size, config=config,
                          device=device)
    for rep in range(config.repeats):
        result.add(measure_repeat(fn, inputs, config=config, timer=timer, device=device, meter=meter))
        if on_repeat is not None:
            on_repeat(rep)
    return result


def timer_for(device: str, definition: str, stream: torch.cuda.Stream | None) -> PerfCounterTimer | CudaEventTimer:
    """CUDA events for GPU compute; the host clock for CPU and for host-to-host e2e."""
    if definition == "compute" and device == "cuda" and stream is not None:
        return CudaEventTimer(stream)
    return PerfCounterTimer()
