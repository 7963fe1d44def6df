"""Energy per cell: each repeat's joules are read around its own timed calls, inside one interleaved
block shared with other cells; warm-up, settle waits and other cells' repeats are never counted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness.gpu import nvml_monitor as gm
from harness.measure.energy import EnergySpan, window_energy
from harness.measure.interleave import WindowSpec, measure_interleaved
from harness.measure.timing import PerfCounterTimer, TimingSettings
from harness.sweep.cell_timing import window_entry
from tests.fake_nvml import FakeNvml


class VirtualClock:
    """Device time: it moves only when a fake call runs or the monitor waits, so what the counter
    integrates does not depend on how this machine schedules the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class SteppingNvml(FakeNvml):
    """An energy counter that integrates a power the test sets while it runs, and advances in steps of
    ``period_s`` as NVML's does: it reads the energy up to its last step."""

    def __init__(self, period_s: float = 0.002, **kw: Any) -> None:
        self.virtual = VirtualClock()
        super().__init__(clock=self.virtual, **kw)
        self.period_s = period_s
        self._changes: list[tuple[float, float]] = [(self.virtual.t, 50.0)]  # (since, watts)
        self.timed = False

    def set_power(self, watts: float) -> None:
        self._changes.append((self.virtual.t, watts))

    def monitor(self) -> gm.DeviceMonitor:
        nvml = self

        class Monitor(gm.DeviceMonitor):  # tells the fake calls whether they are timed or warming up
            def start(self) -> gm.EnergyMark:
                mark = super().start()
                nvml.timed = True
                return mark

            def stop(self) -> gm.EnergyMark:
                nvml.timed = False
                return super().stop()

        return Monitor(0, nvml=self, reason_interval_s=None, clock=self.virtual, sleep=self.virtual.sleep)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        now = self.virtual.t
        step = now - (now % self.period_s)
        joules = 0.0
        for (since, watts), (until, _) in zip(self._changes, [*self._changes[1:], (step, 0.0)]):
            joules += watts * max(0.0, min(until, step) - since)
        return int(1000.0 * joules)


WARMUP, ITERATIONS, CALL_S, WARMUP_W = 3, 12, 0.004, 250.0


def _window(key: str, nvml: SteppingNvml, timed_w: float) -> WindowSpec:
    def fn(_: object) -> None:
        nvml.set_power(timed_w if nvml.timed else WARMUP_W)
        nvml.virtual.sleep(CALL_S)  # what the counter integrates: exactly CALL_S at this power
        time.sleep(CALL_S)  # what the timing loop sees (its durations are wall-clock)

    return WindowSpec(key=key, fn=fn, inputs=[None], batch_size=4, definition="compute", timer=PerfCounterTimer(),
                      device="cuda", session=key)


def test_two_cells_in_one_block_get_their_own_energy_and_no_warm_up(tmp_path: Path) -> None:
    nvml = SteppingNvml()
    specs = [_window("100W", nvml, 100.0), _window("400W", nvml, 400.0)]
    settings = TimingSettings(warmup=WARMUP, iterations=ITERATIONS, repeats=3, min_seconds=0, warmup_seconds=0)
    monitor = nvml.monitor()
    records, block = measure_interleaved(specs, settings, lock_device="cpu", seed=1, lock_dir=tmp_path,
                                         monitor=monitor, meter=monitor)
    assert monitor.energy_update_period_s == pytest.approx(0.002, rel=0.1)
    entries = [window_entry(r.result, "cuda", window=block.window_dict(), host_load=None, warnings=[], until=None)
               for r in records]
    low, high = (e.energy_mj_per_image for e in entries)
    assert low is not None and high is not None
    assert high / low == pytest.approx(4.0, rel=0.05)
    # the timed calls' own joules: the warm-up's (3 calls at 250 W) would add 60 % to the low cell's figure
    expected_low = 100.0 * 1000.0 * CALL_S / 4  # W x s per call / images per call, in mJ
    assert low == pytest.approx(expected_low, rel=0.05)
    energy = entries[0].energy
    assert energy is not None and energy["repeats_used"] == 3 and energy["images"] == 4 * 3 * ITERATIONS
    assert energy["mean_power_w"] == pytest.approx(100.0, rel=0.05) and energy["source"] == "counter"
    assert energy["update_period_ms"] == pytest.approx(2.0, rel=0.1)


def test_a_metered_repeat_lasts_ten_counter_periods_and_a_shorter_span_gets_no_number(tmp_path: Path) -> None:
    nvml = SteppingNvml(period_s=0.02)  # 12 calls of 4 ms = 48 ms: shorter than 10 periods of 20 ms
    settings = TimingSettings(warmup=WARMUP, iterations=ITERATIONS, repeats=2, min_seconds=0, warmup_seconds=0)
    monitor = nvml.monitor()
    records, block = measure_interleaved([_window("a", nvml, 100.0)], settings, lock_device="cpu",
                                         lock_dir=tmp_path, monitor=monitor, meter=monitor)
    entry = window_entry(records[0].result, "cuda", window=block.window_dict(), host_load=None, warnings=[],
                         until=None)
    assert all(end - start >= 0.2 for start, end in records[0].result.repeat_times), "extended to 10 periods"
    assert entry.energy_mj_per_image == pytest.approx(100.0 * 1000.0 * CALL_S / 4, rel=0.05)
    with nvml.monitor() as meter:
        short = meter.span(meter.start(), meter.stop())
    assert short.mj is None and "shorter than 10 update periods" in (short.note or "")
    spans = [short, short]
    energy = window_energy(spans, [12, 12], 4)
    assert energy is not None and energy.mj_per_image is None and "shorter than 10 update periods" in energy.note


def test_window_energy_divides_by_the_calls_each_metered_repeat_timed() -> None:
    spans = [EnergySpan(1000.0, 1.0, "counter", 0.01), EnergySpan(None, 0.01, "counter", 0.01, "too short"),
             EnergySpan(3000.0, 2.0, "counter", 0.01)]
    energy = window_energy(spans, [100, 3, 300], batch_size=2)
    assert energy is not None
    assert energy.mj_per_image == pytest.approx(4000.0 / 800)
    assert energy.repeats_used == 2 and energy.images == 800 and energy.mean_power_w == pytest.approx(4.0 / 3.0)
    assert "1 of 3 repeats not metered: too short" == energy.note
    assert window_energy([None, None], [1, 2], 1) is None


def test_counter_update_period_is_the_median_time_between_steps() -> None:
    t = [0.0]
    reads = iter(range(10_000))

    def clock() -> float:
        return t[0]

    def sleep(s: float) -> None:
        t[0] += s

    def read() -> int:
        next(reads)
        return int(t[0] / 0.025)  # steps every 25 ms

    assert gm.counter_update_period(read, clock=clock, sleep=sleep, poll_s=0.001) == pytest.approx(0.025, abs=0.0015)
    assert gm.counter_update_period(lambda: 7, clock=clock, sleep=sleep) is None
