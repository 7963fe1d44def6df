"""Calibration of the harness's significance decision on this machine.

Each trial times a real single-threaded CPU workload (``inner`` 96x96 fp32
matmuls per call) under three configurations with the harness's own protocol
(``harness.timing.measure`` + ``PerfCounterTimer``: warm-up, iterations, repeats):

* A and B: identical;
* C: 10 % more real work (``inner * 1.1`` matmuls per call), checked by measuring.

Repeats of A, B and C are interleaved (order rotated per repeat) so that drift
hits all three alike. Each trial then asks ``harness.stats.compare_latencies``
whether B differs from A and whether C differs from A.

Goal: "no significant difference" for A vs B in >= 95 % of trials and "significantly
slower" for C vs A in >= 95 %.

Usage: nice python bench/statistics.py [--trials 20] [--iterations 30] [--repeats 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ != "__main__":
    # This file is named statistics.py, so any script run from bench/ (bench/ is then first on
    # sys.path) that imports `statistics`, directly or through harness.timing, lands here. Hand
    # it the standard library's module instead, and stop.
    import importlib.util as _ilu
    import sysconfig as _sc

    _spec = _ilu.spec_from_file_location(__name__, str(Path(_sc.get_paths()["stdlib"]) / "statistics.py"))
    _mod = _ilu.module_from_spec(_spec)
    sys.modules[__name__] = _mod
    _spec.loader.exec_module(_mod)
    globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("__")})
else:
    # Run as a script: drop bench/ from the import path so that `import statistics` (here, in
    # harness.timing, in libraries) finds the standard library.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import time  # noqa: E402

# (the script's other imports are inside the functions: when this file stands in for the
# standard library's `statistics`, nothing below may import harness.timing or torch)


def make_workload(inner: int, size: int):
    import torch

    a = torch.randn(size, size)

    def fn(x: torch.Tensor) -> None:
        for _ in range(inner):
            torch.mm(x, x)

    return fn, a


def run_trial(
    fns, x, warmup: int, iterations: int, min_repeats: int, target_ci_pct: float, max_seconds: float, trial: int,
    check_every: int = 4,
) -> tuple[dict[str, list[list[int]]], bool]:
    """One round = one repeat of every config (order rotated). Rounds are added, as
    ``timing.until_stable`` does for one cell, until every config's median CI
    half-width is within ``target_ci_pct`` or ``max_seconds`` have passed (checked every
    ``check_every`` rounds, so that the bootstrap does not cost more than the timing)."""
    from harness.stats import median_ci
    from harness.timing import PerfCounterTimer, TimingSettings, measure

    config = TimingSettings(warmup=warmup, iterations=iterations, repeats=1)
    timer = PerfCounterTimer()
    names = list(fns)
    out: dict[str, list[list[int]]] = {n: [] for n in names}
    start = time.monotonic()
    r = 0
    while True:
        k = (trial + r) % len(names)
        for name in names[k:] + names[:k]:
            res = measure(fns[name], [x], batch_size=1, config=config, definition="compute", timer=timer)
            out[name].append(res.repeats_ns[0])
        r += 1
        if r >= min_repeats and r % check_every == 0:
            if all(median_ci(out[n], resamples=500).half_width_pct <= target_ci_pct for n in names):
                return out, True
            if time.monotonic() - start >= max_seconds:
                return out, False


def main() -> None:
    import argparse
    import statistics as pystats

    import torch

    from harness.stats import COMPARISON_TEST, compare_latencies

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per repeat")
    parser.add_argument("--repeats", type=int, default=8, help="minimum repeats per config")
    parser.add_argument("--target-ci-pct", type=float, default=2.0, help="until-stable target (CI half-width %%)")
    parser.add_argument("--max-seconds", type=float, default=6.0, help="until-stable budget per trial")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--inner", type=int, default=10, help="matmuls per call in A and B (C does 10 %% more)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--min-effect", type=float, default=0.01)
    args = parser.parse_args()
    if args.inner < 10:
        parser.error("--inner must be >= 10 so that 10 % more work is a whole number of matmuls")
    torch.set_num_threads(1)
    slow_inner = int(round(args.inner * 1.1))
    fn_a, x = make_workload(args.inner, args.size)
    fn_b, _ = make_workload(args.inner, args.size)
    fn_c, _ = make_workload(slow_inner, args.size)
    fns = {"A": fn_a, "B": fn_b, "C": fn_c}

    t0 = time.monotonic()
    null_sig = slow_sig = converged = 0
    repeats_used = []
    mw_null = mw_slow = 0
    work_ratios, null_speedups, slow_speedups = [], [], []
    for trial in range(args.trials):
        data, conv = run_trial(
            fns, x, args.warmup, args.iterations, args.repeats, args.target_ci_pct, args.max_seconds, trial
        )
        converged += conv
        repeats_used.append(len(data["A"]))
        same = compare_latencies(data["A"], data["B"], seed=trial, min_effect=args.min_effect)
        slower = compare_latencies(data["A"], data["C"], seed=trial, min_effect=args.min_effect)
        null_sig += same.significant
        slow_sig += slower.significant and slower.faster == "baseline"
        mw_null += same.mann_whitney_p < 0.05
        mw_slow += slower.mann_whitney_p < 0.05
        work_ratios.append(slower.candidate.median_ms / slower.baseline.median_ms)
        null_speedups.append(same.speedup)
        slow_speedups.append(slower.speedup)
        print(
            f"trial {trial + 1:2d} ({len(data['A'])} rep{'' if conv else ', budget'}): "
            f"A {same.baseline.median_ms:.3f} ms [{same.baseline.low_ms:.3f}, "
            f"{same.baseline.high_ms:.3f}]  B/A speedup {same.speedup:.3f} "
            f"[{same.speedup_low:.3f}, {same.speedup_high:.3f}] {'SIG' if same.significant else 'ns '}  "
            f"C/A speedup {slower.speedup:.3f} [{slower.speedup_low:.3f}, {slower.speedup_high:.3f}] "
            f"{'SIG' if slower.significant else 'ns '}",
            flush=True,
        )
    n = args.trials
    not_sig = n - null_sig
    elapsed = time.monotonic() - t0
    print()
    print(
        f"workload: {args.inner} (C: {slow_inner}) {args.size}x{args.size} fp32 matmuls per call, 1 thread; "
        f"{args.warmup} warm-up + {args.iterations} iterations per repeat, interleaved; repeats added until "
        f"every median CI half-width <= {args.target_ci_pct} % (min {args.repeats}, budget {args.max_seconds:g} s): "
        f"converged in {converged}/{n} trials, repeats per config median {pystats.median(repeats_used):.0f} "
        f"(range {min(repeats_used)}-{max(repeats_used)}); {n} trials in {elapsed:.0f} s"
    )
    print(f"test: {COMPARISON_TEST} (95 %, minimum effect {100 * args.min_effect:.0f} %)")
    print(
        f"measured work ratio C/A (median of trial medians): {pystats.median(work_ratios):.3f} "
        f"(range {min(work_ratios):.3f}-{max(work_ratios):.3f})"
    )
    print(
        f"B/A speedup: median {pystats.median(null_speedups):.3f}, range "
        f"{min(null_speedups):.3f}-{max(null_speedups):.3f}"
    )
    print(f"identical: no significant difference in {not_sig}/{n} ({100 * not_sig / n:.0f} %)")
    print(f"10 % slower: significant in {slow_sig}/{n} ({100 * slow_sig / n:.0f} %)")
    print(
        f"for reference, Mann-Whitney U over all samples (p < 0.05): identical flagged in {mw_null}/{n}, "
        f"10 % slower flagged in {mw_slow}/{n}"
    )
    ok = not_sig / n >= 0.95 and slow_sig / n >= 0.95
    print(f"goal (>= 95 % for both): {'met' if ok else 'NOT met'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
