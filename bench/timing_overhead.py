"""Timing-engine overhead: the harness's median latency for a fixed CPU workload
against a bare perf_counter_ns loop around the same callable, in one process.

A third arm wraps each harness measurement in what the harness holds around a
timing window (harness.measure.locks.DeviceLock + harness.measure.hostload.HostLoadSampler), so
the cost of the lock and of the background load sampler is measured too. The harness
arms run with duration-based repeats (``--min-seconds``, the CPU default 0.5 s; the
timed calls then run in blocks, the clock read between blocks only).

Goal: ratio <= 1.02.  Usage: python bench/timing_overhead.py [--size 256] [--iterations 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness.measure.hostload import HostLoadSampler  # noqa: E402
from harness.measure.locks import DeviceLock  # noqa: E402
from harness.measure.timing import PerfCounterTimer, TimingSettings, measure  # noqa: E402


def bare_loop(fn, x, warmup: int, iterations: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        for _ in range(warmup):
            fn(x)
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            fn(x)
            samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="square matmul size (the workload)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="alternate bare/harness this many times")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="timing.min_seconds of the harness arms (default: the CPU default)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    a = torch.randn(args.size, args.size)
    fn = lambda x: torch.mm(x, x)  # noqa: E731
    config = TimingSettings(warmup=10, iterations=args.iterations, repeats=args.repeats,
                            min_seconds=args.min_seconds, warmup_seconds=0)
    bare, harness, guarded = [], [], []
    lock_dir = Path(tempfile.mkdtemp(prefix="pq-overhead-locks-"))
    for _ in range(args.rounds):  # interleave so drift hits all arms equally
        bare.append(bare_loop(fn, a, 10, args.iterations, args.repeats))
        result = measure(fn, [a], batch_size=1, config=config, definition="compute", timer=PerfCounterTimer())
        harness.append(result.stats.median_ms)
        with DeviceLock("cpu", lock_dir=lock_dir), HostLoadSampler():
            result = measure(fn, [a], batch_size=1, config=config, definition="compute", timer=PerfCounterTimer())
        guarded.append(result.stats.median_ms)
    b, h, g = statistics.median(bare), statistics.median(harness), statistics.median(guarded)
    print(f"workload: {args.size}x{args.size} fp32 matmul, 1 thread, {args.iterations} iterations x "
          f"{args.repeats} repeats x {args.rounds} rounds; harness arms: min_seconds "
          f"{config.min_seconds_for('cpu'):g} per repeat")
    print(f"bare perf_counter_ns loop median: {b:.4f} ms")
    print(f"harness timing engine median:     {h:.4f} ms")
    print(f"harness + device lock + host-load sampler median: {g:.4f} ms")
    print(f"ratio harness/bare: {h / b:.4f} (goal <= 1.02)")
    print(f"ratio (harness + lock + sampler)/bare: {g / b:.4f} (goal <= 1.02)")


if __name__ == "__main__":
    main()
