"""``DeviceMonitor``: energy, clocks and other processes over a timed window on one GPU.

    with DeviceMonitor(0, own_pid=os.getpid()) as mon:
        run_timed_loop()
    mon.result.energy_mj, mon.result.warnings

Energy comes from ``nvmlDeviceGetTotalEnergyConsumption`` (Volta and newer) when supported, else
from a background thread that samples ``nvmlDeviceGetPowerUsage`` and integrates it (trapezoids).
The whole window's energy is in ``result``; a monitor is also an energy meter
(:class:`harness.measure.energy.EnergyMeter`): ``mark()`` reads the counter now and ``span(a, b)`` gives the
energy between two marks, so each timed repeat inside one monitored block gets its own joules. The
counter advances in steps: its update period is measured when the monitor starts (the time between
changes of its value, polled every 0.1 ms) and a span shorter than
:data:`harness.measure.energy.MIN_COUNTER_PERIODS` periods gets no number and a note.
The thread also samples clock-event reasons and the SM clock *during* the window. NVML calls go
through ctypes, which releases the GIL, so the sampler costs the timed loop little; still, keep
``sample_interval_s`` coarse (tens of milliseconds) for Python-heavy loops. The queries themselves
live in :mod:`harness.gpu.nvml_query`.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Callable, Literal

from harness.gpu.nvml_query import (
    BENIGN_CLOCK_REASONS,
    CLOCK_SM,
    DeviceNotMapped,
    DeviceSnapshot,
    GpuProcess,
    Query,
    clock_reasons,
    init_nvml,
    load_nvml,
    nvml_device_for_torch,
    power_w,
    resolve_device,
    shutdown_nvml,
    take_snapshot,
)
from harness.measure.energy import MIN_COUNTER_PERIODS, EnergySpan

EnergySource = Literal["counter", "power-sampling"]


def energy_per_image_mj(energy_mj: float | None, images: int) -> float | None:
    """Energy per image in millijoules; ``None`` when the energy or the image count is unknown."""
    if energy_mj is None or images <= 0:
        return None
    return energy_mj / images


def integrate_power_mj(samples: list[tuple[float, float]]) -> float | None:
    """Trapezoid integral of ``(seconds, watts)`` samples, in millijoules (None for < 2 samples)."""
    if len(samples) < 2:
        return None
    total_j = 0.0
    for (t0, p0), (t1, p1) in zip(samples, samples[1:]):
        total_j += (p0 + p1) / 2.0 * max(0.0, t1 - t0)
    return total_j * 1000.0


#: How long the counter's update period is looked for when a monitor starts, and how often it is read.
PERIOD_PROBE_MAX_S = 0.4
PERIOD_PROBE_POLL_S = 0.0001
PERIOD_PROBE_CHANGES = 4


def counter_update_period(read: Callable[[], int | None], *, max_seconds: float = PERIOD_PROBE_MAX_S,
                          poll_s: float = PERIOD_PROBE_POLL_S, changes: int = PERIOD_PROBE_CHANGES,
                          clock: Callable[[], float] = time.perf_counter,
                          sleep: Callable[[float], None] = time.sleep) -> float | None:
    """The update period of a stepping counter: the median time between changes of its value, read
    every ``poll_s`` for at most ``max_seconds`` (the first change only synchronises with the steps).
    None when it changed fewer than twice (a counter slower than ``max_seconds / 2``)."""
    start = clock()
    last = read()
    seen: list[float] = []
    looks = int(max_seconds / poll_s) + 1  # a bound in looks too: ``clock`` may be one that only a test moves
    while clock() - start < max_seconds and len(seen) < changes + 1 and looks > 0:
        looks -= 1
        sleep(poll_s)
        value = read()
        if value is not None and value != last:
            seen.append(clock())
            last = value
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    return statistics.median(gaps) if gaps else None


@dataclass(frozen=True)
class EnergyMark:
    """A reading of the monitor's meter: when, and the energy counter then (None without a counter)."""

    t: float
    counter_mj: int | None


@dataclass
class MonitorResult:
    """What one timed window did on the GPU; ``before``/``after`` are None when the device was not mapped."""

    index: int
    before: DeviceSnapshot | None
    after: DeviceSnapshot | None
    duration_s: float
    energy_mj: float | None
    energy_source: EnergySource | None
    mean_power_w: float | None
    samples: int
    clock_event_reasons_seen: list[str]
    sm_clock_median_mhz: float | None
    warnings: list[str]
    mig_uuid: str | None = None  # the MIG instance measured (power, energy and clocks are its GPU's)

    @classmethod
    def unmapped(cls, duration_s: float, warning: str) -> MonitorResult:
        """The result of a window whose device NVML could not find: nothing measured, one warning."""
        return cls(-1, None, None, duration_s, None, None, None, 0, [], None, [warning])

    def energy_per_image_mj(self, images: int) -> float | None:
        return energy_per_image_mj(self.energy_mj, images)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Sample:
    t: float
    power_w: float | None
    reasons: list[str] | None
    sm_clock_mhz: int | None


class _Sampler(threading.Thread):
    def __init__(self, poll: Callable[[], _Sample], interval_s: float) -> None:
        super().__init__(name="pq-nvml-sampler", daemon=True)
        self._poll = poll
        self._interval = interval_s
        self._stop_event = threading.Event()
        self.samples: list[_Sample] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                self.samples.append(self._poll())
            except Exception as err:  # noqa: BLE001 - reported as a monitor warning
                self.error = err
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5.0)


class DeviceMonitor:
    """Context manager that measures a timed window on one GPU (see the module docstring).

    ``device`` is an NVML index or a UUID (``GPU-...``, ``MIG-...``, or bare as torch prints it: both
    prefixes are tried); for a torch device use ``DeviceMonitor.for_torch_device(index)`` (indices
    differ under ``CUDA_VISIBLE_DEVICES``). On a MIG instance, power, energy and clocks are read from
    its GPU. ``result.index`` is the NVML index of the (parent) GPU.
    ``unmapped="warn"``: when NVML has no such device, the window runs unmonitored and ``result``
    carries one warning saying so (device checks then never fail a benchmark); ``"raise"`` raises
    :class:`~harness.gpu.nvml_query.DeviceNotMapped`.
    ``own_pid`` (default: this process) and ``extra_own_pids`` are not reported as other processes.
    ``sample_interval_s`` is the power-sampling period used when the energy counter is not
    supported; with the counter, reasons and clocks are sampled every ``reason_interval_s``
    (``None`` disables sampling then).
    """

    def __init__(
        self,
        device: int | str = 0,
        own_pid: int | None = None,
        *,
        nvml: Any | None = None,
        extra_own_pids: tuple[int, ...] = (),
        sample_interval_s: float = 0.02,
        reason_interval_s: float | None = 0.1,
        clock_ratio_threshold: float = 0.9,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        unmapped: Literal["raise", "warn"] = "raise",
    ) -> None:
        self.device = device
        self.unmapped = unmapped
        self._unmapped_reason: str | None = None
        self.mig_uuid: str | None = None
        self.index = device if isinstance(device, int) else -1
        self.own_pids = frozenset({os.getpid() if own_pid is None else own_pid, *extra_own_pids})
        self._nvml_arg = nvml
        self.sample_interval_s = sample_interval_s
        self.reason_interval_s = reason_interval_s
        self.clock_ratio_threshold = clock_ratio_threshold
        self._clock = clock
        self._sleep = sleep
        self._nvml: Any = None
        self._handle: Any = None
        self._before: DeviceSnapshot | None = None
        self._t0 = 0.0
        self._energy0: int | None = None
        self._power0: float | None = None
        self._sampler: _Sampler | None = None
        self.result: MonitorResult | None = None
        #: The energy counter's update period (measured when the monitor starts); None: unknown.
        self.energy_update_period_s: float | None = None

    @classmethod
    def for_torch_device(cls, device_index: int, **kwargs: Any) -> DeviceMonitor:
        """A monitor of torch's CUDA device ``device_index`` that warns (never fails) when unmapped."""
        kwargs.setdefault("unmapped", "warn")
        return cls(nvml_device_for_torch(device_index), **kwargs)

    # -- helpers
    def _poll(self) -> _Sample:
        q = Query(self._nvml)
        sm = q.const("NVML_CLOCK_SM", CLOCK_SM)
        return _Sample(
            t=self._clock(),
            power_w=power_w(q, self._handle),
            reasons=clock_reasons(q, self._handle),
            sm_clock_mhz=q.call("nvmlDeviceGetClockInfo", self._handle, sm),
        )

    def __enter__(self) -> DeviceMonitor:
        self._nvml = load_nvml(self._nvml_arg)
        init_nvml(self._nvml)
        try:
            resolved = resolve_device(self._nvml, self.device)
        except DeviceNotMapped as err:
            shutdown_nvml(self._nvml)
            if self.unmapped == "raise":
                raise
            self._unmapped_reason = f"device checks skipped: {err}"
            self._t0 = self._clock()
            return self
        except BaseException:
            shutdown_nvml(self._nvml)
            raise
        self._handle, self.index, self.mig_uuid = resolved.handle, resolved.index, resolved.mig_uuid
        self._before = take_snapshot(self.index, self._handle, self._nvml, self.own_pids)
        q = Query(self._nvml)
        energy = q.call("nvmlDeviceGetTotalEnergyConsumption", self._handle)
        if energy is not None:
            self.energy_update_period_s = counter_update_period(self._read_counter, clock=self._clock,
                                                                sleep=self._sleep)
        self._t0 = self._clock()
        energy = q.call("nvmlDeviceGetTotalEnergyConsumption", self._handle)
        self._energy0 = None if energy is None else int(energy)
        self._power0 = power_w(q, self._handle)
        interval = self.sample_interval_s if self._energy0 is None else self.reason_interval_s
        if interval is not None and interval > 0:
            self._sampler = _Sampler(self._poll, interval)
            self._sampler.start()
        return self

    # -- the energy meter (harness.measure.energy.EnergyMeter)
    @property
    def min_span_s(self) -> float:
        """The shortest span that gets a number: ``MIN_COUNTER_PERIODS`` counter periods (power samples
        without a counter), with 5 % to spare; 0 when nothing is metered."""
        if self._unmapped_reason is not None:
            return 0.0
        period = self.energy_update_period_s if self._energy0 is not None else self.sample_interval_s
        return 0.0 if period is None else 1.05 * MIN_COUNTER_PERIODS * period

    def _read_counter(self) -> int | None:
        value = Query(self._nvml).call("nvmlDeviceGetTotalEnergyConsumption", self._handle)
        return None if value is None else int(value)

    def mark(self) -> EnergyMark:
        """The energy counter as it reads now (up to one update period old)."""
        counter = self._read_counter() if self._energy0 is not None else None
        return EnergyMark(self._clock(), counter)

    def _next_step(self, value: int) -> tuple[float, float, int] | None:
        """Wait (at most two update periods) for the counter to step past ``value``: (the last look
        before the step, the look that saw it, the new value)."""
        period = self.energy_update_period_s
        if period is None:
            return None
        before = self._clock()
        deadline = before + 2 * period
        looks = int(2 * period / PERIOD_PROBE_POLL_S) + 1
        while self._clock() < deadline and looks > 0:
            looks -= 1
            self._sleep(PERIOD_PROBE_POLL_S)
            now = self._read_counter()
            seen = self._clock()
            if now is not None and now != value:
                return before, seen, now
            before = seen
        return None

    def start(self) -> EnergyMark:
        """A fresh reading to start a span: the counter's next step, carried forward to the moment it
        was seen at the power of the step itself (the step happened between two looks), so nothing
        done before the span hides in a stale value; the caller's work begins right after."""
        first = self.mark()
        period = self.energy_update_period_s
        if first.counter_mj is None or period is None:
            return first
        step = self._next_step(first.counter_mj)
        if step is None:
            return first
        before, seen, value = step
        watts_mj = (value - first.counter_mj) / period  # mJ per second during the step's period
        return EnergyMark(seen, int(round(value + watts_mj * (seen - before) / 2)))

    def stop(self) -> EnergyMark:
        """The counter at the moment the caller's work finished: the stale value read now and the
        counter's next step, interpolated back to now (the error is at most a quarter period of the
        difference between the busy and the idle power)."""
        end = self.mark()
        if end.counter_mj is None:
            return end
        step = self._next_step(end.counter_mj)
        period = self.energy_update_period_s
        if step is None or period is None:
            return end
        _, t_step, value = step
        share = min(1.0, max(0.0, (end.t - (t_step - period)) / period))
        return EnergyMark(end.t, int(round(end.counter_mj + share * (value - end.counter_mj))))

    def span(self, start: EnergyMark, end: EnergyMark) -> EnergySpan:
        """The device energy between two marks: the counter's difference, or the power samples taken
        between them integrated; no number (and a note) when the span is shorter than
        ``MIN_COUNTER_PERIODS`` counter periods (sampling intervals), or nothing could be read."""
        seconds = max(0.0, end.t - start.t)
        if self._unmapped_reason is not None:
            return EnergySpan(None, seconds, None, None, self._unmapped_reason)
        if start.counter_mj is not None and end.counter_mj is not None:
            period = self.energy_update_period_s
            if period is None:
                return EnergySpan(None, seconds, "counter", None,
                                  f"the energy counter did not step within {PERIOD_PROBE_MAX_S:g} s: its update "
                                  "period is unknown, so no span can be resolved")
            if seconds < MIN_COUNTER_PERIODS * period:
                return EnergySpan(None, seconds, "counter", period,
                                  f"a repeat of {seconds:.3f} s is shorter than {MIN_COUNTER_PERIODS} update periods "
                                  f"of the energy counter ({1e3 * period:.1f} ms): lengthen timing.min_seconds")
            if end.counter_mj < start.counter_mj:
                return EnergySpan(None, seconds, "counter", period, "the energy counter went backwards")
            return EnergySpan(float(end.counter_mj - start.counter_mj), seconds, "counter", period)
        interval = self.sample_interval_s
        samples = list(self._sampler.samples) if self._sampler is not None else []
        points = [(s.t, s.power_w) for s in samples if s.power_w is not None and start.t <= s.t <= end.t]
        if seconds < MIN_COUNTER_PERIODS * interval or len(points) < 2:
            return EnergySpan(None, seconds, "power-sampling", interval,
                              f"a repeat of {seconds:.3f} s holds {len(points)} power samples (one per "
                              f"{1e3 * interval:.0f} ms): too few to integrate; lengthen timing.min_seconds")
        energy = integrate_power_mj(points)
        assert energy is not None
        # the samples cover [first, last]; extend their mean power to the whole span
        covered = points[-1][0] - points[0][0]
        scale = seconds / covered if covered > 0 else 1.0
        return EnergySpan(energy * scale, seconds, "power-sampling", interval)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._unmapped_reason is not None:
            self.result = MonitorResult.unmapped(max(0.0, self._clock() - self._t0), self._unmapped_reason)
            return
        try:
            q = Query(self._nvml)
            t1 = self._clock()
            energy1 = None if self._energy0 is None else q.call("nvmlDeviceGetTotalEnergyConsumption", self._handle)
            power1 = power_w(q, self._handle)
            if self._sampler is not None:
                self._sampler.stop()
            after = take_snapshot(self.index, self._handle, self._nvml, self.own_pids)
            assert self._before is not None
            self.result = self._build_result(self._before, after, t1, energy1, power1)
        finally:
            shutdown_nvml(self._nvml)

    def _build_result(
        self,
        before: DeviceSnapshot,
        after: DeviceSnapshot,
        t1: float,
        energy1: int | None,
        power1: float | None,
    ) -> MonitorResult:
        duration = max(0.0, t1 - self._t0)
        samples = self._sampler.samples if self._sampler is not None else []
        warnings: list[str] = []
        if self._sampler is not None and self._sampler.error is not None:
            warnings.append(f"NVML sampling stopped early: {self._sampler.error}")

        # Energy: the counter when supported, else integrated power samples.
        energy_mj: float | None = None
        source: EnergySource | None = None
        if self._energy0 is not None and energy1 is not None and int(energy1) >= self._energy0:
            energy_mj = float(int(energy1) - self._energy0)
            source = "counter"
        else:
            series = [(self._t0, self._power0)] + [(s.t, s.power_w) for s in samples] + [(t1, power1)]
            points = [(t, p) for t, p in series if p is not None and self._t0 <= t <= t1]
            energy_mj = integrate_power_mj(points)
            if energy_mj is not None:
                source = "power-sampling"
                if len(points) < 5:
                    warnings.append(
                        f"energy from only {len(points)} power samples over {duration:.3f} s: "
                        "lengthen the timed window for a usable energy figure"
                    )
            else:
                warnings.append("energy unknown: this GPU reports neither an energy counter nor power usage")
        mean_power = energy_mj / 1000.0 / duration if energy_mj is not None and duration > 0 else None

        # Clock-event reasons seen during and right after the window.
        seen: list[str] = []
        for reasons in [s.reasons for s in samples] + [after.clock_event_reasons]:
            for reason in reasons or []:
                if reason not in seen:
                    seen.append(reason)
        throttles = [r for r in seen if r not in BENIGN_CLOCK_REASONS]
        if throttles:
            warnings.append(
                "GPU clocks were limited during the timed window (" + ", ".join(throttles) + "): "
                "timings and energy may not be representative"
            )

        # SM clock against its maximum, ignoring idle moments.
        busy = [
            s.sm_clock_mhz
            for s in samples
            if s.sm_clock_mhz is not None and "GpuIdle" not in (s.reasons or [])
        ]
        if not busy and after.sm_clock_mhz is not None and "GpuIdle" not in (after.clock_event_reasons or []):
            busy = [after.sm_clock_mhz]
        sm_median = float(statistics.median(busy)) if busy else None
        sm_max = after.sm_clock_max_mhz or before.sm_clock_max_mhz
        if sm_median is not None and sm_max:
            if sm_median < self.clock_ratio_threshold * sm_max:
                warnings.append(
                    f"SM clock {sm_median:.0f} MHz is below {self.clock_ratio_threshold:.0%} of its maximum "
                    f"{sm_max} MHz during the window (power/thermal limit or locked clocks?)"
                )

        # Other processes sharing the GPU.
        others: dict[int, GpuProcess] = {}
        for proc in before.other_processes + after.other_processes:
            others.setdefault(proc.pid, proc)
        if others:
            listed = ", ".join(f"{p.pid} ({p.name or '?'})" for p in others.values())
            warnings.append(
                f"other processes use GPU {self.index}: {listed}; they share its time and power "
                "(inside a container NVML may report host PIDs, including this process's own)"
            )
        if self.mig_uuid is not None or before.mig_enabled or after.mig_enabled:
            instance = f" (measured instance {self.mig_uuid})" if self.mig_uuid else ""
            warnings.append(
                f"MIG mode is enabled on GPU {self.index}{instance}: results describe a GPU slice, and NVML "
                "power/energy/clocks cover the whole GPU"
            )

        return MonitorResult(
            index=self.index,
            before=before,
            after=after,
            duration_s=duration,
            energy_mj=energy_mj,
            energy_source=source,
            mean_power_w=mean_power,
            samples=len(samples),
            clock_event_reasons_seen=seen,
            sm_clock_median_mhz=sm_median,
            warnings=warnings,
            mig_uuid=self.mig_uuid,
        )
