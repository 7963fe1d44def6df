"""Two windows compared: the two designs (separate windows with a drift allowance, paired rounds of an
interleaved block), the decision (CI excludes 1 and a minimum effect), the refusals (disturbed, host-bound)
and naming the fastest of several only when it is significantly faster than the runner-up."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.measure.launch import HOST_BOUND, HOST_BOUND_MEANING, LaunchCheck, launch_fix
from harness.measure.stats.intervals import (
    MedianCI,
    Method,
    _as_repeats_ms,
    _bootstrap_medians,
    _bootstrap_repeat_median_means,
    _bootstrap_repeat_medians,
    _check_confidence,
    _expand,
    _repeat_medians,
    _trimmed_mean,
    median_ci,
    repeat_median_mean,
    small_sample_expansion,
)
from harness.measure.stats.stability import StabilityVerdict, not_comparable_reason

# --------------------------------------------------------------------------- comparison


def mann_whitney_u(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test (normal approximation, tie correction, continuity
    correction). Returns (U of x, p-value). Assumes independent samples."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise HarnessError("Mann-Whitney U needs two non-empty samples")
    both = np.concatenate([x, y])
    order = np.argsort(both, kind="mergesort")
    sorted_vals = both[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg_rank_sorted = np.repeat(first + (counts + 1) / 2.0, counts)
    ranks = np.empty_like(avg_rank_sorted)
    ranks[order] = avg_rank_sorted
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie_term = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return u1, 1.0
    z = (abs(u1 - n1 * n2 / 2.0) - 0.5) / math.sqrt(var)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return u1, min(1.0, p)


@dataclass(frozen=True)
class Comparison:
    """Baseline vs candidate. ``speedup`` = baseline median / candidate median (> 1:
    candidate faster). ``significant`` when the bootstrap CI of the speedup excludes 1
    AND the speedup differs from 1 by at least ``min_effect``."""

    baseline: MedianCI
    candidate: MedianCI
    speedup: float
    speedup_low: float
    speedup_high: float
    significant: bool
    faster: str | None  # "baseline" | "candidate" | None when not significant
    test: str
    statistic: str  # what speedup is the ratio of (see compare_latencies)
    median_ratio: float  # baseline median / candidate median (all samples), for display
    min_effect: float
    mann_whitney_p: float
    mann_whitney_note: str
    reason: str
    #: How the two cells were measured and so how the CI was computed: "paired-rounds" (interleaved:
    #: repeat i of both in round i) or "separate-windows" (each cell's repeats back to back).
    design: str = "separate-windows"
    design_note: str = ""
    #: Set when the pair must not be compared (see :func:`not_comparable_reason`); never significant then.
    not_comparable: str | None = None
    #: Set when both cells are host-bound (:meth:`with_launch`): what they compare is the launch path.
    host_bound: str | None = None

    @property
    def speedup_ci(self) -> tuple[float, float]:
        return (self.speedup_low, self.speedup_high)

    def with_stability(self, baseline: Mapping[str, Any] | StabilityVerdict | None,
                       candidate: Mapping[str, Any] | StabilityVerdict | None) -> Comparison:
        """This comparison, or a "not comparable" one (not significant, no faster side, the reason and
        the fix as its verdict) when either side's window was disturbed by the machine."""
        why = not_comparable_reason(baseline, candidate)
        if why is None:
            return self
        return replace(self, significant=False, faster=None, reason=why, not_comparable=why)

    def with_launch(self, baseline: LaunchCheck | None, candidate: LaunchCheck | None,
                    backend: str | None = None) -> Comparison:
        """This comparison in the light of host-bound windows (:mod:`harness.measure.launch`). Two host-bound
        cells both measured the host's launches: neither a speedup nor its absence says anything about
        precision or pruning, so the pair is never significant and its verdict says so. When one cell
        is host-bound, the comparison stands with what it bounds: the faster cell's GPU time is at most
        its measured time (the speedup is a lower bound), or part of the difference is the slower
        cell's launch overhead."""
        bound = [name for name, check in (("baseline", baseline), ("candidate", candidate))
                 if check is not None and check.host_bound]
        if not bound or self.not_comparable:
            return self
        if len(bound) == 2:
            why = (f"{HOST_BOUND}: both cells are host-bound ({HOST_BOUND_MEANING}); this compares the launch "
                   f"path, not precision or pruning; {launch_fix(backend)}")
            return replace(self, significant=False, faster=None, reason=why, not_comparable=why, host_bound=why)
        faster = "candidate" if self.speedup > 1.0 else "baseline"
        if bound[0] == faster:
            note = (f"the {faster} cell is host-bound: its GPU time is at most its measured time, so the "
                    f"difference is a lower bound")
        else:
            note = (f"the {bound[0]} cell is host-bound: part of the difference is its launch overhead, "
                    f"not its GPU time")
        return replace(self, reason=f"{self.reason}; {note}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
            "median_ms": [self.baseline.median_ms, self.candidate.median_ms],
            "median_ci_ms": [
                [self.baseline.low_ms, self.baseline.high_ms],
                [self.candidate.low_ms, self.candidate.high_ms],
            ],
            "speedup": self.speedup,
            "speedup_ci": [self.speedup_low, self.speedup_high],
            "significant": self.significant,
            "faster": self.faster,
            "test": self.test,
            "statistic": self.statistic,
            "median_ratio": self.median_ratio,
            "min_effect": self.min_effect,
            "mann_whitney_p": self.mann_whitney_p,
            "mann_whitney_note": self.mann_whitney_note,
            "reason": self.reason,
            "design": self.design,
            "design_note": self.design_note,
            "not_comparable": self.not_comparable,
            "host_bound": self.host_bound,
        }


COMPARISON_TEST = "hierarchical bootstrap CI of the speedup (t-expanded for few repeats) + minimum effect"
PAIRED_TEST = ("paired-rounds bootstrap CI of the speedup (rounds resampled, trimmed mean of per-round median "
               "ratios, t-expanded for few rounds) + minimum effect")
STAT_REPEAT_MEDIAN_MEAN = "20 %-trimmed mean of per-repeat medians"
STAT_ROUND_RATIO_MEAN = "20 %-trimmed geometric mean of per-round median ratios"
STAT_MEDIAN = "median of all samples"

DESIGN_PAIRED = "paired-rounds"
DESIGN_SEPARATE = "separate-windows"

#: Drift allowed between two cells whose windows were measured apart (different units or sweeps, or
#: each cell's repeats back to back), by device class, as a fraction of the speedup. A machine's speed
#: moves between minutes (other jobs, clocks, heat, page placement) by more than the repeats of one
#: window can show; nothing inside the two windows measures it, so it is added to the interval (in
#: quadrature, on the log scale). Identical models measured one after the other on a quiet 2-core
#: machine differed by 2 %; cells measured interleaved need no allowance (drift hits both alike).
DRIFT_ALLOWANCE: dict[str, float] = {"cpu": 0.03, "cuda": 0.02}


def _decide(speedup: float, lo: float, hi: float, confidence: float, min_effect: float) -> tuple[bool, str | None, str]:
    excludes_one = lo > 1.0 or hi < 1.0
    large_enough = abs(speedup - 1.0) >= min_effect
    significant = excludes_one and large_enough
    faster = ("candidate" if speedup > 1.0 else "baseline") if significant else None
    pct = 100.0 * confidence
    if significant:
        reason = (
            f"{faster} faster: speedup {speedup:.3f} ({pct:.0f} % CI {lo:.3f}-{hi:.3f}) excludes 1 "
            f"and exceeds the {100 * min_effect:.1f} % minimum effect"
        )
    elif excludes_one:
        reason = (
            f"speedup {speedup:.3f} ({pct:.0f} % CI {lo:.3f}-{hi:.3f}) is below the "
            f"{100 * min_effect:.1f} % minimum effect"
        )
    else:
        reason = f"speedup {speedup:.3f}: its {pct:.0f} % CI {lo:.3f}-{hi:.3f} includes 1"
    return significant, faster, reason


def _widen_log(est: float, lo: float, hi: float, allowance: float) -> tuple[float, float]:
    """Add a relative ``allowance`` to both sides of an interval, in quadrature on the log scale."""
    if allowance <= 0 or est <= 0 or lo <= 0:
        return lo, hi
    a = math.log1p(allowance)
    le = math.log(est)
    d_lo = math.hypot(le - math.log(lo), a)
    d_hi = math.hypot(math.log(hi) - le, a)
    return math.exp(le - d_lo), math.exp(le + d_hi)


MANN_WHITNEY_NOTE = ("Mann-Whitney U over all samples (normal approximation, tie-corrected); "
                     "assumes independent samples, reported for reference")


def compare_latencies(
    baseline_repeats_ns: Sequence[Sequence[int]],
    candidate_repeats_ns: Sequence[Sequence[int]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    min_effect: float = 0.01,
    method: Method = "auto",
    batch_size: int = 1,
    drift_allowance: float | None = None,
    device: str = "cpu",
) -> Comparison:
    """Speedup of candidate over baseline, measured in separate windows, with a bootstrap CI and a
    significance decision (``design`` "separate-windows"; for interleaved cells see
    :func:`compare_paired_rounds`).

    With >= 3 repeats on both sides the compared statistic is the *20 %-trimmed
    mean of the per-repeat medians* (robust to preempted iterations inside a repeat
    and to a repeat that was mostly preempted, averaged over the machine states the
    repeats saw; pyperf likewise averages per-process values): on a shared machine
    the states are often discrete (e.g. an SMT sibling busy or idle, 30-45 % apart,
    measured on this project's 2-core machine), and the pooled median then sits between
    the modes and jumps with the mix, while the mean over repeats moves smoothly.
    Each side is bootstrapped hierarchically and independently (whole repeats, then
    samples within); the speedup CI is the percentile interval of the ratio of the
    resampled statistics, widened for few repeats (see
    :func:`small_sample_expansion`). With fewer repeats the statistic is the median
    of all samples, resampled within. ``statistic`` names which; ``median_ratio`` is
    the plain ratio of the two cells' medians, for display.

    The repeats of each cell ran back to back, so drift *between* the two windows (a job that
    started after the first cell, clocks, heat) is invisible to the resampling: the interval is
    widened by ``drift_allowance`` (default :data:`DRIFT_ALLOWANCE` for ``device``), and the
    design note says so. The difference is *significant* when that CI excludes 1 and
    ``|speedup - 1| >= min_effect`` (default 1 %). The Mann-Whitney U p-value over
    all samples (Google Benchmark's ``compare.py`` test) is reported for reference
    only: it treats every sample as independent, so drift makes it overconfident.
    """
    _check_confidence(confidence, resamples)
    if min_effect < 0:
        raise HarnessError(f"min_effect must be >= 0, got {min_effect}")
    allowance = DRIFT_ALLOWANCE["cuda" if str(device).startswith("cuda") else "cpu"] \
        if drift_allowance is None else drift_allowance
    if allowance < 0:
        raise HarnessError(f"drift_allowance must be >= 0, got {allowance}")
    base_ci = median_ci(baseline_repeats_ns, confidence, resamples, seed, method, batch_size=batch_size)
    cand_ci = median_ci(candidate_repeats_ns, confidence, resamples, seed + 1, method, batch_size=batch_size)
    base = _as_repeats_ms(baseline_repeats_ns, "baseline samples")
    cand = _as_repeats_ms(candidate_repeats_ns, "candidate samples")
    rng = np.random.default_rng([seed, 0x5EED])
    hierarchical = base_ci.method == "hierarchical" and cand_ci.method == "hierarchical"
    if hierarchical:
        statistic = STAT_REPEAT_MEDIAN_MEAN
        b_boot = _bootstrap_repeat_median_means(base, resamples, rng)
        c_boot = _bootstrap_repeat_median_means(cand, resamples, rng)
        b_est, c_est = repeat_median_mean(base), repeat_median_mean(cand)
    else:
        statistic = STAT_MEDIAN
        b_boot = _bootstrap_medians(base, "within", resamples, rng)
        c_boot = _bootstrap_medians(cand, "within", resamples, rng)
        b_est, c_est = base_ci.median_ms, cand_ci.median_ms
    if np.any(c_boot <= 0) or c_est <= 0:
        raise HarnessError("candidate latencies of 0 ms cannot be compared")
    ratios = b_boot / c_boot
    alpha = 1.0 - confidence
    lo, hi = (float(v) for v in np.quantile(ratios, [alpha / 2.0, 1.0 - alpha / 2.0]))
    speedup = b_est / c_est
    lo, hi = min(lo, speedup), max(hi, speedup)
    if hierarchical:
        n_b, n_c = base_ci.repeats, cand_ci.repeats
        lo, hi = _expand(speedup, lo, hi, small_sample_expansion(min(n_b, n_c), n_b + n_c - 2, confidence), log=True)
    lo, hi = _widen_log(speedup, lo, hi, allowance)
    note = (f"measured in separate windows (each cell's repeats back to back): drift between the two windows "
            f"is not in the samples, so the interval includes a {100 * allowance:.0f} % drift allowance; "
            "cells interleaved in one unit run are compared round by round instead")
    return _comparison(base, cand, base_ci, cand_ci, (speedup, lo, hi), confidence, min_effect,
                       test=COMPARISON_TEST, statistic=statistic, design=DESIGN_SEPARATE, design_note=note)


def _comparison(base: Sequence[np.ndarray], cand: Sequence[np.ndarray], base_ci: MedianCI, cand_ci: MedianCI,
                interval: tuple[float, float, float], confidence: float, min_effect: float, *, test: str,
                statistic: str, design: str, design_note: str) -> Comparison:
    """The decision on a speedup and its interval (significance and minimum effect, with Mann-Whitney's p
    beside it), whichever design produced the interval."""
    speedup, lo, hi = interval
    significant, faster, reason = _decide(speedup, lo, hi, confidence, min_effect)
    _, p = mann_whitney_u(np.concatenate(base), np.concatenate(cand))
    return Comparison(
        baseline=base_ci,
        candidate=cand_ci,
        speedup=speedup,
        speedup_low=lo,
        speedup_high=hi,
        significant=significant,
        faster=faster,
        test=test,
        statistic=statistic,
        median_ratio=base_ci.median_ms / cand_ci.median_ms,
        min_effect=min_effect,
        mann_whitney_p=p,
        mann_whitney_note=MANN_WHITNEY_NOTE,
        reason=reason,
        design=design,
        design_note=design_note,
    )


#: Rounds needed before rounds are resampled (as repeats for the hierarchical bootstrap).
MIN_ROUNDS_PAIRED = 3


def compare_paired_rounds(
    baseline_rounds_ns: Sequence[Sequence[int]],
    candidate_rounds_ns: Sequence[Sequence[int]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    min_effect: float = 0.01,
    batch_size: int = 1,
) -> Comparison:
    """Speedup of candidate over baseline measured *interleaved*: ``baseline_rounds_ns[i]`` and
    ``candidate_rounds_ns[i]`` are the repeats of round i (measured one right after the other,
    with the other cells of the unit, in a shuffled order per round).

    Whatever slowed the machine in round i (another job, clocks, an SMT sibling) slowed both
    cells' repeats of that round, so the ratio of the two round medians cancels it. The
    statistic is the 20 %-trimmed geometric mean of the per-round median ratios; the CI comes
    from a bootstrap over rounds (rounds resampled with replacement, and each chosen round's two
    medians resampled within their samples), t-expanded for few rounds (see
    :func:`small_sample_expansion`). ``design`` is "paired-rounds". Significant as in
    :func:`compare_latencies` (CI excludes 1 and ``|speedup - 1| >= min_effect``).
    """
    _check_confidence(confidence, resamples)
    if min_effect < 0:
        raise HarnessError(f"min_effect must be >= 0, got {min_effect}")
    base = _as_repeats_ms(baseline_rounds_ns, "baseline samples")
    cand = _as_repeats_ms(candidate_rounds_ns, "candidate samples")
    if len(base) != len(candidate_rounds_ns) or len(base) != len(baseline_rounds_ns) or len(cand) != len(base):
        raise HarnessError(
            f"paired rounds need the same number of non-empty rounds on both sides, got {len(base)} and {len(cand)}"
        )
    n = len(base)
    if n < MIN_ROUNDS_PAIRED:
        raise HarnessError(f"a paired-rounds comparison needs at least {MIN_ROUNDS_PAIRED} rounds, got {n}; "
                           "raise timing.repeats")
    base_ci = median_ci(baseline_rounds_ns, confidence, resamples, seed, batch_size=batch_size)
    cand_ci = median_ci(candidate_rounds_ns, confidence, resamples, seed + 1, batch_size=batch_size)
    b_med, c_med = _repeat_medians(base), _repeat_medians(cand)
    if np.any(c_med <= 0) or np.any(b_med <= 0):
        raise HarnessError("latencies of 0 ms cannot be compared")
    speedup = float(np.exp(_trimmed_mean(np.log(b_med / c_med))))
    rng = np.random.default_rng([seed, 0xA17])
    chosen = rng.integers(0, n, size=(resamples, n))  # the same rounds for both sides: the pairing
    b_boot = _bootstrap_repeat_medians(base, resamples, rng, chosen)
    c_boot = _bootstrap_repeat_medians(cand, resamples, rng, chosen)
    if np.any(c_boot <= 0):
        raise HarnessError("candidate latencies of 0 ms cannot be compared")
    boots = np.exp(_trimmed_mean(np.log(b_boot / c_boot)))
    alpha = 1.0 - confidence
    lo, hi = (float(v) for v in np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0]))
    lo, hi = min(lo, speedup), max(hi, speedup)
    lo, hi = _expand(speedup, lo, hi, small_sample_expansion(n, n - 1, confidence), log=True)
    return _comparison(base, cand, base_ci, cand_ci, (speedup, lo, hi), confidence, min_effect,
                       test=PAIRED_TEST, statistic=STAT_ROUND_RATIO_MEAN, design=DESIGN_PAIRED,
                       design_note=(f"measured interleaved in {n} rounds (repeat i of both cells in round i): "
                                    "the CI is a bootstrap over rounds of the per-round median ratio, so drift "
                                    "that hit both cells cancels"))




# --------------------------------------------------------------------------- fastest


@dataclass(frozen=True)
class FastestPick:
    """``winner`` is set only when the fastest candidate is significantly faster than
    every other one (in particular the runner-up); otherwise ``winner`` is None and
    ``tied`` lists the fastest and every candidate not significantly slower."""

    winner: str | None
    tied: list[str]
    ranking: list[str]  # by median, fastest first
    medians_ms: dict[str, float]
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # other label -> fastest vs it
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "tied": list(self.tied),
            "ranking": list(self.ranking),
            "medians_ms": dict(self.medians_ms),
            "comparisons": {k: v.to_dict() for k, v in self.comparisons.items()},
            "reason": self.reason,
        }


def pick_fastest(
    candidates: Mapping[str, Sequence[Sequence[int]]] | Sequence[tuple[str, Sequence[Sequence[int]]]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    min_effect: float = 0.01,
    compare: Callable[[str, str], Comparison] | None = None,
) -> FastestPick:
    """Name the fastest of labelled cells (label -> repeats_ns) only when it is
    significantly faster (see :func:`compare_latencies`) than the runner-up and all
    others; otherwise report a tie. ``compare(baseline_label, candidate_label)``, when
    given, makes each comparison instead (e.g. round by round for interleaved cells, and
    "not comparable" for cells the machine disturbed: those are never crowned)."""
    items = list(candidates.items()) if isinstance(candidates, Mapping) else list(candidates)
    if not items:
        raise HarnessError("pick_fastest needs at least one candidate")
    labels = [label for label, _ in items]
    if len(set(labels)) != len(labels):
        raise HarnessError("pick_fastest: candidate labels must be unique")
    medians = {label: float(np.median(np.concatenate(_as_repeats_ms(reps)))) for label, reps in items}
    ranking = sorted(labels, key=lambda lab: medians[lab])
    by_label = dict(items)
    best = ranking[0]
    if len(ranking) == 1:
        return FastestPick(best, [best], ranking, medians, {}, "only one candidate")
    comps: dict[str, Comparison] = {}
    tied = [best]
    for other in ranking[1:]:
        # baseline = other, candidate = best: speedup > 1 means best is faster
        if compare is not None:
            c = compare(other, best)
        else:
            c = compare_latencies(
                by_label[other], by_label[best],
                confidence=confidence, resamples=resamples, seed=seed, min_effect=min_effect,
            )
        comps[other] = c
        if not (c.significant and c.faster == "candidate"):
            tied.append(other)
    runner = ranking[1]
    if len(tied) == 1:
        c = comps[runner]
        reason = (
            f"{best} is significantly faster than the runner-up {runner}: speedup {c.speedup:.3f} "
            f"(CI {c.speedup_low:.3f}-{c.speedup_high:.3f})"
        )
        return FastestPick(best, tied, ranking, medians, comps, reason)
    others = ", ".join(t for t in tied if t != best)
    reason = f"no significant winner: {best} is not significantly faster than {others}"
    blocked = [o for o in tied if o != best and comps[o].not_comparable]
    if blocked:
        reason += f" ({comps[blocked[0]].not_comparable})"
    return FastestPick(None, tied, ranking, medians, comps, reason)
