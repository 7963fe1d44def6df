"""harness.measure.timing: statistics, percentiles, the measure loop and timer selection.

Regression context: the thesis tool took latency from
profiler rows that could count one batch twice and timed its two backends
differently; here every backend goes through ``measure`` with the same timer
per timing definition, and the raw samples are kept.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from harness.measure.timing import (
    TIMING_DEFINITIONS,
    CudaEventTimer,
    LatencyStats,
    PerfCounterTimer,
    TimingResult,
    TimingSettings,
    measure,
    percentile,
    timer_for,
    wait_for_idle_threads,
)

# --------------------------------------------------------------------------- LatencyStats


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("count", [2, 7, 50, 301])
def test_latency_stats_match_numpy(seed: int, count: int) -> None:
    rng = np.random.default_rng(seed)
    samples_ns = [int(v) for v in rng.integers(100_000, 50_000_000, size=count)]
    batch = int(rng.integers(1, 257))
    stats = LatencyStats.from_ns(samples_ns, batch_size=batch)

    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    assert stats.samples == count
    assert stats.median_ms == pytest.approx(float(np.median(ms)), rel=1e-12)
    assert stats.mean_ms == pytest.approx(float(np.mean(ms)), rel=1e-12)
    assert stats.min_ms == pytest.approx(float(ms.min()), rel=1e-12)
    assert stats.max_ms == pytest.approx(float(ms.max()), rel=1e-12)
    for q, got in ((90, stats.p90_ms), (95, stats.p95_ms), (99, stats.p99_ms)):
        assert got == pytest.approx(float(np.percentile(ms, q, method="linear")), rel=1e-12), q
    stdev = float(np.std(ms, ddof=1))
    assert stats.stdev_ms == pytest.approx(stdev, rel=1e-9)
    assert stats.cv == pytest.approx(stdev / float(np.mean(ms)), rel=1e-9)
    assert stats.throughput_ips == pytest.approx(batch / (float(np.median(ms)) / 1e3), rel=1e-12)


def test_latency_stats_ignore_sample_order() -> None:
    rng = np.random.default_rng(5)
    samples = [int(v) for v in rng.integers(1, 10**7, size=40)]
    shuffled = list(samples)
    rng.shuffle(shuffled)
    assert LatencyStats.from_ns(samples, 4) == LatencyStats.from_ns(shuffled, 4)
    assert LatencyStats.from_ns(sorted(samples, reverse=True), 4) == LatencyStats.from_ns(samples, 4)


def test_latency_stats_single_sample() -> None:
    stats = LatencyStats.from_ns([3_000_000], batch_size=8)
    assert stats.samples == 1
    assert stats.median_ms == stats.mean_ms == stats.min_ms == stats.max_ms == pytest.approx(3.0)
    assert stats.p90_ms == stats.p95_ms == stats.p99_ms == pytest.approx(3.0)
    assert stats.stdev_ms == 0.0
    assert stats.cv == 0.0
    assert stats.throughput_ips == pytest.approx(8 / 0.003)


def test_latency_stats_need_samples() -> None:
    with pytest.raises(ValueError):
        LatencyStats.from_ns([], batch_size=1)


def test_latency_stats_zero_median_gives_infinite_throughput() -> None:
    stats = LatencyStats.from_ns([0, 0, 0], batch_size=4)
    assert stats.median_ms == 0.0
    assert stats.cv == 0.0
    assert stats.throughput_ips == float("inf")


# --------------------------------------------------------------------------- percentile


def test_percentile_edges_and_numpy_agreement() -> None:
    rng = np.random.default_rng(11)
    values = sorted(float(v) for v in rng.normal(10.0, 3.0, size=23))
    assert percentile(values, 0) == values[0]
    assert percentile(values, 100) == values[-1]
    for q in (0, 0.5, 1, 10, 25, 33.3, 50, 66.6, 75, 90, 95, 99, 99.9, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q, method="linear")), rel=1e-12), q


def test_percentile_of_one_and_two_values() -> None:
    for q in (0, 37, 50, 90, 100):
        assert percentile([4.25], q) == 4.25
    lo, hi = 1.0, 3.0
    for q in (0, 10, 50, 90, 100):
        assert percentile([lo, hi], q) == pytest.approx(lo + (hi - lo) * q / 100)


def test_percentile_of_nothing_raises() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


# --------------------------------------------------------------------------- TimingSettings


@pytest.mark.parametrize(
    "kwargs",
    [{"warmup": -1}, {"iterations": 0}, {"iterations": -3}, {"repeats": 0}, {"repeats": -1}],
)
def test_timing_config_rejects_bad_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TimingSettings(**kwargs)


def test_timing_config_accepts_minimal_values() -> None:
    cfg = TimingSettings(warmup=0, iterations=1, repeats=1)
    assert (cfg.warmup, cfg.iterations, cfg.repeats) == (0, 1, 1)
    with pytest.raises(ValueError):
        cfg.iterations = 5  # type: ignore[misc]  # frozen


# --------------------------------------------------------------------------- measure

#: Loop counts alone (no minimum duration): what the call-count tests below check.
COUNT_ONLY = {"min_seconds": 0, "warmup_seconds": 0}


class _Recorder:
    """A function under test that records every input it was called with."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, x: object) -> object:
        self.calls.append(x)
        return x


class _CountingPerfTimer(PerfCounterTimer):
    """The real perf_counter timer, noting how many calls had happened when each timed block began."""

    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder
        self.calls_before_block: list[int] = []

    def time_calls(self, fn, inputs, n):  # type: ignore[no-untyped-def]
        self.calls_before_block.append(len(self.recorder.calls))
        return super().time_calls(fn, inputs, n)


@pytest.mark.parametrize(("warmup", "iterations", "repeats", "n_inputs"),
                         [(3, 5, 2, 3), (0, 4, 3, 2), (2, 1, 1, 5), (4, 7, 2, 1)])
def test_measure_call_count_order_and_sample_layout(warmup: int, iterations: int, repeats: int,
                                                   n_inputs: int) -> None:
    inputs = [f"x{i}" for i in range(n_inputs)]
    rec = _Recorder()
    timer = _CountingPerfTimer(rec)
    seen_repeats: list[int] = []
    cfg = TimingSettings(warmup=warmup, iterations=iterations, repeats=repeats, **COUNT_ONLY)
    result = measure(rec, inputs, batch_size=2, config=cfg, definition="e2e", timer=timer,
                     on_repeat=seen_repeats.append)

    assert len(rec.calls) == warmup * repeats + iterations * repeats
    # Each repeat: warm-up calls cycle the inputs from the start, then timed calls do too.
    per_repeat = [inputs[i % n_inputs] for i in range(warmup)] + [inputs[i % n_inputs] for i in range(iterations)]
    assert rec.calls == per_repeat * repeats
    # Warm-up calls happen before the timed block of each repeat, and are not timed.
    assert timer.calls_before_block == [r * (warmup + iterations) + warmup for r in range(repeats)]
    assert seen_repeats == list(range(repeats))

    assert result.timer == "perf_counter_ns"
    assert result.definition == "e2e"
    assert result.batch_size == 2
    assert result.config == cfg
    assert len(result.repeats_ns) == repeats
    assert all(len(rep) == iterations for rep in result.repeats_ns)
    assert all(isinstance(s, int) and s >= 0 for rep in result.repeats_ns for s in rep)
    assert result.samples_ns == [s for rep in result.repeats_ns for s in rep]
    assert result.stats.samples == repeats * iterations


def test_measure_samples_reflect_a_known_sleep() -> None:
    cfg = TimingSettings(warmup=1, iterations=4, repeats=2, **COUNT_ONLY)
    result = measure(lambda _: time.sleep(0.002), [None], batch_size=4, config=cfg, definition="compute",
                     timer=PerfCounterTimer())
    assert min(result.samples_ns) >= 2_000_000
    stats = result.stats
    assert stats.median_ms >= 2.0
    assert stats.min_ms >= 2.0
    assert stats.samples == 8
    assert stats.throughput_ips == pytest.approx(4 / (stats.median_ms / 1e3))


def test_measure_distinguishes_slow_from_fast_inputs() -> None:
    """Samples are per call: a slow input shows up at its positions in the cycle."""
    cfg = TimingSettings(warmup=0, iterations=6, repeats=1, **COUNT_ONLY)
    result = measure(lambda d: time.sleep(d), [0.0, 0.004], batch_size=1, config=cfg, definition="e2e",
                     timer=PerfCounterTimer())
    (samples,) = result.repeats_ns
    slow = samples[1::2]
    assert min(slow) >= 4_000_000
    # Compare totals (3 x >= 4 ms against 3 x sleep(0)) to stay robust against scheduler noise.
    assert sum(slow) > sum(samples[0::2])


def test_measure_needs_inputs() -> None:
    with pytest.raises(ValueError):
        measure(lambda x: x, [], batch_size=1, config=TimingSettings(), definition="e2e", timer=PerfCounterTimer())


def test_perf_counter_timer_cycles_inputs() -> None:
    rec = _Recorder()
    samples = PerfCounterTimer().time_calls(rec, ["a", "b", "c"], 7)
    assert rec.calls == ["a", "b", "c", "a", "b", "c", "a"]
    assert len(samples) == 7


# --------------------------------------------------------------------------- timer_for


def test_timer_for_cpu_uses_perf_counter_for_every_definition() -> None:
    for definition in TIMING_DEFINITIONS:
        timer = timer_for("cpu", definition, None)
        assert isinstance(timer, PerfCounterTimer)
        assert timer.name == "perf_counter_ns"


def test_timer_for_cuda() -> None:
    stream = object()  # only stored by the timer: construction needs no GPU
    compute = timer_for("cuda", "compute", stream)  # type: ignore[arg-type]
    assert isinstance(compute, CudaEventTimer)
    assert compute.name == "cuda_event"
    assert compute.stream is stream
    # e2e is host-to-host, always the host clock, even on CUDA with a stream.
    assert isinstance(timer_for("cuda", "e2e", stream), PerfCounterTimer)  # type: ignore[arg-type]
    # compute on CUDA without a stream cannot use events.
    assert isinstance(timer_for("cuda", "compute", None), PerfCounterTimer)
    # a stream on a CPU session never selects CUDA events.
    assert isinstance(timer_for("cpu", "compute", stream), PerfCounterTimer)  # type: ignore[arg-type]


def test_timing_definitions() -> None:
    assert set(TIMING_DEFINITIONS) == {"compute", "e2e"}


# --------------------------------------------------------------------------- to_dict


def _small_result() -> TimingResult:
    cfg = TimingSettings(warmup=1, iterations=3, repeats=2, **COUNT_ONLY)
    return measure(lambda _: sum(range(200)), [0, 1], batch_size=3, config=cfg, definition="compute",
                   timer=PerfCounterTimer())


def test_to_dict_with_samples() -> None:
    result = _small_result()
    data = result.to_dict()
    assert data["definition"] == "compute"
    assert data["timer"] == "perf_counter_ns"
    assert data["batch_size"] == 3
    assert data["config"] == {"warmup": 1, "iterations": 3, "repeats": 2}
    assert data["samples_ns"] == result.repeats_ns
    assert len(data["samples_ns"]) == 2 and all(len(r) == 3 for r in data["samples_ns"])
    stats = LatencyStats.from_ns(result.samples_ns, 3)
    assert data["stats"]["median_ms"] == stats.median_ms
    assert data["stats"]["samples"] == 6
    assert set(data["stats"]) == set(LatencyStats.__dataclass_fields__)
    # JSON-serialisable as stored by the result store.
    assert json.loads(json.dumps(data)) == data


def test_to_dict_without_samples() -> None:
    result = _small_result()
    data = result.to_dict(with_samples=False)
    assert "samples_ns" not in data
    assert data["stats"] == result.to_dict()["stats"]


def test_timing_settings_is_the_one_type_and_results_store_only_the_loop_counts() -> None:
    """The sweep config's ``timing:`` section is what ``measure`` runs with; each stored timing keeps the
    same ``config`` keys as before the merge of the two settings types."""
    from harness.config import SweepConfig

    assert SweepConfig.model_fields["timing"].annotation is TimingSettings
    cfg = TimingSettings(warmup=0, iterations=2, repeats=1, definitions=["e2e"], batches=2, **COUNT_ONLY)
    stored = measure(lambda x: x, [1], batch_size=1, config=cfg, definition="e2e",
                     timer=PerfCounterTimer()).to_dict()
    assert stored["config"] == {"warmup": 0, "iterations": 2, "repeats": 1}


def test_cuda_events_are_created_on_the_sessions_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fakes for the CUDA runtime (no GPU here): the device current when each event is made is recorded."""
    import contextlib
    from typing import Any

    import torch

    from harness.measure.timing import CudaEventTimer

    current = ["cuda:0"]
    made: list[str] = []

    @contextlib.contextmanager
    def device(d: Any) -> Any:
        before, current[0] = current[0], str(d)
        try:
            yield
        finally:
            current[0] = before

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            made.append(current[0])

        def record(self, stream: Any) -> None:
            pass

        def elapsed_time(self, other: Any) -> float:
            return 0.5

    class Stream:
        device = torch.device("cuda", 1)

        def synchronize(self) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    samples = CudaEventTimer(Stream()).time_calls(lambda x: None, [1, 2], 3)
    assert samples == [500_000] * 3 and made == ["cuda:1"] * 6


# --------------------------------------------------------------------------- duration-based windows


def test_default_durations_by_device_and_validation() -> None:
    cfg = TimingSettings()
    assert cfg.min_seconds is None and cfg.warmup_seconds is None
    assert cfg.min_seconds_for("cpu") == 0.5 and cfg.min_seconds_for("cuda") == 1.0
    assert cfg.min_seconds_for("cuda:1") == 1.0
    assert cfg.warmup_seconds_for("cpu") == 0.2 and cfg.warmup_seconds_for("cuda") == 0.5
    own = TimingSettings(min_seconds=0.05, warmup_seconds=0)
    assert own.min_seconds_for("cuda") == 0.05 and own.warmup_seconds_for("cpu") == 0
    for bad in ({"min_seconds": -1}, {"warmup_seconds": -0.1}, {"min_seconds": "soon"}, {"min_seconds": 1e6}):
        with pytest.raises(ValueError):
            TimingSettings(**bad)


def test_config_key_timing_min_seconds_is_validated() -> None:
    from harness.config import load_config
    from harness.errors import HarnessError

    assert load_config(None, {"timing": {"min_seconds": 0.25}}).timing.min_seconds == 0.25
    with pytest.raises(HarnessError, match="timing.min_seconds"):
        load_config(None, {"timing": {"min_seconds": -2}})


def test_each_repeat_measures_for_at_least_min_seconds_and_at_least_iterations() -> None:
    rec = _Recorder()
    cfg = TimingSettings(warmup=0, iterations=3, repeats=2, min_seconds=0.06, warmup_seconds=0)
    sleepy = lambda x: (rec(x), time.sleep(0.002))  # noqa: E731
    result = measure(sleepy, ["a", "b", "c"], batch_size=1, config=cfg, definition="e2e", timer=PerfCounterTimer())
    assert len(result.repeats_ns) == 2
    for rep, (start, end) in zip(result.repeats_ns, result.repeat_times):
        assert sum(rep) >= 0.06e9 * 0.9  # the timed calls themselves add up to about min_seconds
        assert end - start >= 0.06
        assert len(rep) > 3  # more than `iterations`: the duration set the count
    # The inputs keep cycling across the blocks of calls within a repeat.
    n0 = len(result.repeats_ns[0])
    assert rec.calls[:n0] == [["a", "b", "c"][i % 3] for i in range(n0)]
    # A long call still runs `iterations` times however short min_seconds is.
    cfg2 = TimingSettings(warmup=0, iterations=4, repeats=1, min_seconds=0.001, warmup_seconds=0)
    slow = measure(lambda _: time.sleep(0.003), [None], batch_size=1, config=cfg2, definition="e2e",
                   timer=PerfCounterTimer())
    assert len(slow.repeats_ns[0]) == 4
    stored = result.to_dict()
    assert stored["duration"] == {"min_seconds": 0.06, "warmup_seconds": 0}
    assert len(stored["repeat_times"]) == 2 and stored["repeat_times"][0][0] < stored["repeat_times"][1][0]


def test_warm_up_runs_for_warmup_seconds_and_is_not_timed() -> None:
    rec = _Recorder()
    timer = _CountingPerfTimer(rec)
    cfg = TimingSettings(warmup=2, iterations=5, repeats=1, min_seconds=0, warmup_seconds=0.05)
    measure(lambda x: (rec(x), time.sleep(0.002)), [0], batch_size=1, config=cfg, definition="e2e", timer=timer)
    warm = timer.calls_before_block[0]
    assert warm >= 10  # ~0.05 s of 2 ms calls, well beyond the 2-call minimum
    assert len(rec.calls) == warm + 5


def test_a_repeat_stops_at_the_sample_cap() -> None:
    from harness.measure.timing import MAX_SAMPLES_PER_REPEAT

    cfg = TimingSettings(warmup=0, iterations=1, repeats=1, min_seconds=600, warmup_seconds=0)
    result = measure(lambda x: x, [0], batch_size=1, config=cfg, definition="e2e", timer=PerfCounterTimer())
    assert len(result.repeats_ns[0]) == MAX_SAMPLES_PER_REPEAT


def test_waiting_for_idle_threads_lasts_while_another_thread_burns_cpu():
    end = time.perf_counter() + 0.15

    def spin() -> None:
        while time.perf_counter() < end:
            pass

    worker = threading.Thread(target=spin, daemon=True)
    worker.start()
    waited = wait_for_idle_threads(max_seconds=3.0)
    assert waited >= 0.1 and time.perf_counter() >= end - 0.01
    worker.join()
    assert wait_for_idle_threads(max_seconds=3.0) < 1.0  # nothing spins: it does not wait to the cap
