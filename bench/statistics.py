"""Calibration of the harness's significance decision on this machine.

Case ``calibration``: each trial times a real single-threaded CPU workload (``inner`` 96x96 fp32
matmuls per call) under three configurations with the harness's own protocol
(``harness.measure.timing.measure`` + ``PerfCounterTimer``: warm-up, iterations, repeats):

* A and B: identical;
* C: 10 % more real work (``inner * 1.1`` matmuls per call), checked by measuring.

Repeats of A, B and C are interleaved (order rotated per repeat) so that drift
hits all three alike. Each trial then asks ``harness.measure.stats.compare_latencies``
whether B differs from A and whether C differs from A.

Case ``drift``: the same three configurations as spin work units (a fixed count of Python
loop iterations per call; C 10 % more), with a *load step*: ``--load-procs`` busy processes
start part-way through the trial and run to its end, as when other jobs start after the first
cell of a sweep was measured. Each trial is run in both designs:

* sequential (the old sweep): all repeats of A, then the load starts, then all of B, then C;
  judged by the old rule (hierarchical bootstrap, no drift allowance) and by the new rules
  (drift allowance for separate windows, and "not comparable" when a window saw host load);
* interleaved (the new unit): round r measures one repeat of each config in a seeded shuffled
  order; the load starts after the first third of the rounds; judged by
  ``harness.measure.stats.compare_paired_rounds`` (bootstrap over rounds of per-round median ratios).

Goal (both cases, interleaved design): "no significant difference" for A vs B in >= 95 % of
trials and "significantly slower" for C vs A in >= 95 %.

Usage: nice python bench/statistics.py [--case all|calibration|drift] [--trials 20]
       [--drift-trials 20] [--load-procs 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ != "__main__":
    # This file is named statistics.py, so any script run from bench/ (bench/ is then first on
    # sys.path) that imports `statistics`, directly or through harness.measure.timing, lands here. Hand
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
    # harness.measure.timing, in libraries) finds the standard library.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import os  # noqa: E402
import time  # noqa: E402

# (the script's other imports are inside the functions: when this file stands in for the
# standard library's `statistics`, nothing below may import harness.measure.timing or torch)


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
    from harness.measure.stats import median_ci
    from harness.measure.timing import PerfCounterTimer, TimingSettings, measure

    config = TimingSettings(warmup=warmup, iterations=iterations, repeats=1, min_seconds=0, warmup_seconds=0)
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


SPIN_LOAD = "import time\nend = time.time() + 120\nwhile time.time() < end: pass\n"
#: A load that competes for caches and memory bandwidth as well as a CPU (as another benchmark or a
#: training job does), copying a 64 MB array over and over.
MEMORY_LOAD = ("import time\nimport numpy as np\na = np.ones(8 << 20)\nend = time.time() + 120\n"
               "while time.time() < end:\n    b = a.copy()\n")


def memory_work(array) -> float:
    """A fixed amount of cache- and memory-bound work: one pass over ``array``."""
    return float(array.sum())


def calibrate_memory(target_ms: float):
    import numpy as np

    n = 1 << 16
    while True:
        a = np.ones(n)
        t0 = time.perf_counter()
        for _ in range(5):
            memory_work(a)
        per_call_ms = (time.perf_counter() - t0) / 5 * 1e3
        if per_call_ms > target_ms / 4:
            return max(1 << 14, int(n * target_ms / per_call_ms))
        n *= 2


def spin(n: int) -> int:
    """A fixed amount of CPU work: n Python loop iterations (slows down exactly when the CPU is shared)."""
    x = 0
    for i in range(n):
        x += i
    return x


def calibrate_spin(target_ms: float) -> int:
    n = 2000
    while True:
        t0 = time.perf_counter()
        for _ in range(5):
            spin(n)
        per_call_ms = (time.perf_counter() - t0) / 5 * 1e3
        if per_call_ms > target_ms / 4:
            return max(1000, int(n * target_ms / per_call_ms))
        n *= 2


class LoadStep:
    """``procs`` busy processes, started by :meth:`start`, ended by :meth:`stop` (or on exit)."""

    def __init__(self, procs: int, code: str = SPIN_LOAD) -> None:
        self.procs = procs
        self.code = code
        self.running: list = []

    def start(self) -> None:
        import subprocess

        self.running = [subprocess.Popen([sys.executable, "-c", self.code]) for _ in range(self.procs)]
        time.sleep(0.05)  # let them get onto the CPUs

    def stop(self) -> None:
        for proc in self.running:
            proc.kill()
        for proc in self.running:
            proc.wait()
        self.running = []

    def __enter__(self) -> LoadStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drift_trial(fns, settings, rounds: int, load_procs: int, seed: int, design: str, load_code: str = SPIN_LOAD):
    """One trial of the drift case; returns (rounds per config, host-load verdict per config)."""
    import random

    from harness.measure.hostload import HostLoadSampler
    from harness.measure.timing import PerfCounterTimer, measure_repeat

    timer = PerfCounterTimer()
    names = list(fns)
    out: dict[str, list[list[int]]] = {n: [] for n in names}
    busy: dict[str, bool] = {n: False for n in names}
    with LoadStep(load_procs, load_code) as load:
        if design == "sequential":
            for i, name in enumerate(names):
                if i == 1:
                    load.start()  # after the first cell's measurement
                with HostLoadSampler(period_s=0.1) as sampler:
                    for _ in range(rounds):
                        out[name].append(measure_repeat(fns[name], [None], config=settings, timer=timer).samples_ns)
                busy[name] = bool(sampler.result and sampler.result.busy)
        else:
            order = random.Random(seed)
            samplers = {n: [] for n in names}
            for r in range(rounds):
                if r == rounds // 3:
                    load.start()
                this = names[:]
                order.shuffle(this)
                for name in this:
                    with HostLoadSampler(period_s=0.1) as sampler:
                        out[name].append(measure_repeat(fns[name], [None], config=settings, timer=timer).samples_ns)
                    samplers[name].append(bool(sampler.result and sampler.result.busy))
            busy = {n: any(v) for n, v in samplers.items()}
    return out, busy


def run_drift_case(args) -> bool:
    import statistics as pystats

    from harness.measure.stats import PAIRED_TEST, compare_latencies, compare_paired_rounds, not_comparable_reason
    from harness.measure.timing import TimingSettings

    import numpy as np

    if args.work == "spin":
        n_spin = calibrate_spin(args.spin_ms)
        slow_spin = int(round(n_spin * 1.1))
        fns = {"A": lambda _: spin(n_spin), "B": lambda _: spin(n_spin), "C": lambda _: spin(slow_spin)}
        load_code = SPIN_LOAD
        unit = f"spin work unit {n_spin} loop iterations (~{args.spin_ms:g} ms; C: {slow_spin})"
    else:
        n_spin = calibrate_memory(args.spin_ms)
        slow_spin = int(round(n_spin * 1.1))
        arrays = {"A": np.ones(n_spin), "B": np.ones(n_spin), "C": np.ones(slow_spin)}
        fns = {k: (lambda a: lambda _: memory_work(a))(v) for k, v in arrays.items()}
        load_code = MEMORY_LOAD
        unit = (f"memory work unit: sum over {n_spin * 8 / 1e6:.1f} MB (~{args.spin_ms:g} ms; C: "
                f"{slow_spin * 8 / 1e6:.1f} MB), load processes copy 64 MB arrays")
    settings = TimingSettings(warmup=2, iterations=args.drift_iterations, repeats=1, min_seconds=0, warmup_seconds=0)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    counts = {k: 0 for k in ("seq_old_null", "seq_old_slow", "seq_new_null", "seq_new_slow", "seq_nc",
                              "int_null", "int_slow", "int_busy")}
    null_speedups, slow_speedups, load_factors = [], [], []
    n = args.drift_trials
    for trial in range(n):
        seq, seq_busy = drift_trial(fns, settings, args.drift_rounds, args.load_procs, trial, "sequential", load_code)
        inter, int_busy = drift_trial(fns, settings, args.drift_rounds, args.load_procs, trial, "interleaved",
                                      load_code)
        old_null = compare_latencies(seq["A"], seq["B"], seed=trial, drift_allowance=0.0)
        old_slow = compare_latencies(seq["A"], seq["C"], seed=trial, drift_allowance=0.0)
        host = {k: {"reasons": ["host busy: load step"] if v else []} for k, v in seq_busy.items()}
        new_null = compare_latencies(seq["A"], seq["B"], seed=trial).with_stability(host["A"], host["B"])
        new_slow = compare_latencies(seq["A"], seq["C"], seed=trial).with_stability(host["A"], host["C"])
        counts["seq_nc"] += new_null.not_comparable is not None
        paired_null = compare_paired_rounds(inter["A"], inter["B"], seed=trial)
        paired_slow = compare_paired_rounds(inter["A"], inter["C"], seed=trial)
        counts["seq_old_null"] += old_null.significant
        counts["seq_old_slow"] += old_slow.significant and old_slow.faster == "baseline"
        counts["seq_new_null"] += new_null.significant
        counts["seq_new_slow"] += new_slow.significant and new_slow.faster == "baseline"
        counts["int_null"] += paired_null.significant
        counts["int_slow"] += paired_slow.significant and paired_slow.faster == "baseline"
        counts["int_busy"] += int_busy["A"] or int_busy["B"]
        null_speedups.append(paired_null.speedup)
        slow_speedups.append(paired_slow.speedup)
        load_factors.append(old_null.speedup)
        print(
            f"drift trial {trial + 1:2d}: sequential B/A {old_null.speedup:.3f} [{old_null.speedup_low:.3f}, "
            f"{old_null.speedup_high:.3f}] {'SIG' if old_null.significant else 'ns '} (new rules: "
            f"{'not comparable' if new_null.not_comparable else ('SIG' if new_null.significant else 'ns')}); "
            f"interleaved B/A {paired_null.speedup:.3f} [{paired_null.speedup_low:.3f}, "
            f"{paired_null.speedup_high:.3f}] {'SIG' if paired_null.significant else 'ns '}  C/A "
            f"{paired_slow.speedup:.3f} [{paired_slow.speedup_low:.3f}, {paired_slow.speedup_high:.3f}] "
            f"{'SIG' if paired_slow.significant else 'ns '}",
            flush=True,
        )

    def rate(k: int) -> str:
        return f"{k}/{n} ({100 * k / n:.0f} %)"

    elapsed = time.monotonic() - t0
    print()
    print(f"drift case: {unit}, {args.drift_iterations} iterations per repeat, {args.drift_rounds} repeats (rounds) per config; "
          f"load step: {args.load_procs} busy process(es); load average before {load_before[0]:.2f}; "
          f"{n} trials x 2 designs in {elapsed:.0f} s")
    print(f"load step slowed B in the sequential design: B/A speedup median {pystats.median(load_factors):.3f}")
    print(f"sequential design, old rule (no drift allowance, no host-load verdict): identical called different "
          f"in {rate(counts['seq_old_null'])}, 10 % slower found in {rate(counts['seq_old_slow'])}")
    print(f"sequential design, new rules: identical called different in {rate(counts['seq_new_null'])} "
          f"('not comparable: host busy' in {rate(counts['seq_nc'])}); 10 % slower called slower in "
          f"{rate(counts['seq_new_slow'])} (a pair disturbed by load is not comparable: rerun it)")
    print(f"interleaved design ({PAIRED_TEST}): identical: no significant difference in "
          f"{rate(n - counts['int_null'])}; 10 % slower: significant in {rate(counts['int_slow'])}; "
          f"B/A median {pystats.median(null_speedups):.3f}, C/A median {pystats.median(slow_speedups):.3f}")
    print(f"  (in {rate(counts['int_busy'])} interleaved trials the host sampler saw the load, so the harness "
          "itself would add 'not comparable: host busy' to those windows; the rates above are the statistics alone)")
    ok = (n - counts["int_null"]) / n >= 0.95 and counts["int_slow"] / n >= 0.95 and counts["seq_new_null"] / n <= 0.05
    print(f"drift goal (interleaved >= 95 % for both; sequential new rules never crown drift): "
          f"{'met' if ok else 'NOT met'}")
    return ok


def main() -> None:
    import argparse
    import statistics as pystats

    import torch

    from harness.measure.stats import COMPARISON_TEST, compare_latencies

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
    parser.add_argument("--case", choices=["all", "calibration", "drift"], default="all")
    parser.add_argument("--drift-trials", type=int, default=20)
    parser.add_argument("--drift-rounds", type=int, default=10, help="repeats (rounds) per config in the drift case")
    parser.add_argument("--drift-iterations", type=int, default=30, help="timed calls per repeat in the drift case")
    parser.add_argument("--spin-ms", type=float, default=1.0, help="duration of one work unit (calibrated)")
    parser.add_argument("--work", choices=["spin", "memory"], default="spin",
                        help="drift case work unit and load: Python loop vs busy loops, or memory passes vs copies")
    parser.add_argument("--load-procs", type=int, default=2, help="busy processes of the load step")
    args = parser.parse_args()
    drift_ok = True
    if args.case in ("all", "drift"):
        drift_ok = run_drift_case(args)
        if args.case == "drift":
            sys.exit(0 if drift_ok else 1)
        print()
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
    sys.exit(0 if ok and drift_ok else 1)


if __name__ == "__main__":
    main()
