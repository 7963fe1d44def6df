"""Session switches in one process: does the session timed last slow the next one down?

Two ONNX Runtime CPU sessions of the same tinycnn model (random weights, default session options:
intra-op threads = cores, spinning on), timed alternately in windows of ``--window`` seconds, as an
interleaved block times a unit's sessions. Arms:

* ``own``: session A right after its own window (the steady state it would have alone);
* ``switch``: A right after a window of session B, at once;
* ``switch+wait``: A after B, once ``harness.measure.timing.wait_for_idle_threads`` says B's pool stopped
  spinning (what ``harness.measure.interleave.measure_interleaved`` does on every session change).

Goal: ``switch+wait`` within the noise of ``own``; ``switch`` shows what the wait removes.
Usage: python bench/session_switch.py [--batch 32] [--window 0.05] [--trials 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backends.ort_common import INPUT_NAME, create_session, import_ort  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.measure.timing import wait_for_idle_threads  # noqa: E402
from harness.tinycnn import INPUT_SIZE, TinyCNN  # noqa: E402


def window_median_ms(session, feed: dict, seconds: float) -> float:
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        t = time.perf_counter_ns()
        session.run(None, feed)
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--window", type=float, default=0.05, help="seconds per window")
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(args.batch, 3, INPUT_SIZE, INPUT_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(model, (3, INPUT_SIZE, INPUT_SIZE), content_hash="0" * 16, cache_dir=Path(tmp),
                               name="tinycnn")
        a, b = (create_session(exported.path, [("CPUExecutionProvider", {})]) for _ in range(2))
    feed = {INPUT_NAME: x.numpy()}
    arms: dict[str, list[float]] = {"own": [], "switch": [], "switch+wait": []}
    waits: list[float] = []
    for _ in range(args.trials):
        for arm in arms:
            window_median_ms(a if arm == "own" else b, feed, args.window)
            if arm == "switch+wait":
                waits.append(wait_for_idle_threads())
            arms[arm].append(window_median_ms(a, feed, args.window))
    print(f"ONNX Runtime {import_ort().__version__}, tinycnn b{args.batch}, windows of {args.window:g} s, "
          f"{args.trials} trials (median of the window medians, min-max)")
    for arm, values in arms.items():
        print(f"  {arm:12s} {statistics.median(values):7.3f} ms  ({min(values):.3f}-{max(values):.3f})")
    print(f"  wait for idle threads: median {1e3 * statistics.median(waits):.0f} ms, max {1e3 * max(waits):.0f} ms")
    ratio = statistics.median(arms["switch+wait"]) / statistics.median(arms["own"])
    print(f"  switch+wait / own = {ratio:.3f}; switch / own = "
          f"{statistics.median(arms['switch']) / statistics.median(arms['own']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
