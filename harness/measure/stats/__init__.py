"""Uncertainty, stability and significance for the harness's raw latency samples.

Every function here takes the raw per-iteration samples of one timed cell as the
timing engine keeps them (``TimingResult.repeats_ns``: one list of nanosecond
samples per repeat) and returns typed results with ``to_dict()``.

Why a hierarchical bootstrap
----------------------------
On a shared machine the dominant noise is not the scatter of iterations inside
one repeat but the *drift between repeats*: clock boost and thermal state change,
another process starts or stops, caches and page placement differ.  Samples inside
a repeat are correlated through that common state, so treating all samples as
independent (resampling only within the pooled samples) gives confidence
intervals that are far too narrow and "detects" differences that are only drift.
With >= 3 repeats we therefore resample whole repeats first (the between-repeat
variation) and then samples within each chosen repeat (the within-repeat
variation); with fewer repeats there is nothing to resample at the top level, so
we fall back to resampling within the samples and say so in the result.

Comparisons (:func:`compare_latencies`, :func:`pick_fastest`) with >= 3 repeats
compare the 20 %-trimmed mean of the per-repeat medians rather than the pooled
median: on this project's 2-core machine repeats fall into discrete speed states
(~40 % apart), the pooled median then jumps between the modes: in
bench/statistics.py a 10 % slower config was found in 3 of 5 trials with the pooled
median, and in 20 of 20 with the trimmed mean of repeat medians (a plain mean
found 0 of 5: one mostly preempted repeat moves it).

None of the anchor tools reports bootstrap intervals (trtexec warns on CV > 2.5 %,
pyperf on stdev >= 10 % of the mean and uses a t-test, Google Benchmark's
``compare.py`` uses a Mann-Whitney U test); the thresholds below follow them.
The Mann-Whitney U test is implemented here with numpy (normal approximation with
tie correction) and reported next to the bootstrap decision, but it assumes
independent samples, so the decision is taken from the hierarchical bootstrap.

The package is split by concern: ``intervals`` (the median and its CI), ``stability`` (when a window is not
to be trusted, and why), ``comparison`` (two windows compared, the fastest of several) and ``until_stable``;
everything public is importable from ``harness.measure.stats`` itself.
"""

from __future__ import annotations

from harness.measure.stats.comparison import (
    COMPARISON_TEST,
    DESIGN_PAIRED,
    DESIGN_SEPARATE,
    DRIFT_ALLOWANCE,
    MANN_WHITNEY_NOTE,
    MIN_ROUNDS_PAIRED,
    PAIRED_TEST,
    STAT_MEDIAN,
    STAT_REPEAT_MEDIAN_MEAN,
    STAT_ROUND_RATIO_MEAN,
    Comparison,
    FastestPick,
    compare_latencies,
    compare_paired_rounds,
    mann_whitney_u,
    pick_fastest,
)
from harness.measure.stats.intervals import (
    BOOTSTRAP_MAX_DRAWS,
    MIN_REPEATS_HIERARCHICAL,
    REPEAT_TRIM,
    MedianCI,
    Method,
    median_ci,
    repeat_median_mean,
    small_sample_expansion,
)
from harness.measure.stats.stability import (
    CAUSES,
    ENVIRONMENT_CAUSES,
    NOT_COMPARABLE_FIX,
    StabilityThresholds,
    StabilityVerdict,
    assess_stability,
    instability_causes,
    not_comparable_reason,
    repeat_median_se,
    robust_cv,
)
from harness.measure.stats.until_stable import (
    UntilStable,
    measure_until_stable,
)

__all__ = [
    "BOOTSTRAP_MAX_DRAWS",
    "CAUSES",
    "COMPARISON_TEST",
    "Comparison",
    "DESIGN_PAIRED",
    "DESIGN_SEPARATE",
    "DRIFT_ALLOWANCE",
    "ENVIRONMENT_CAUSES",
    "FastestPick",
    "MANN_WHITNEY_NOTE",
    "MIN_REPEATS_HIERARCHICAL",
    "MIN_ROUNDS_PAIRED",
    "MedianCI",
    "Method",
    "NOT_COMPARABLE_FIX",
    "PAIRED_TEST",
    "REPEAT_TRIM",
    "STAT_MEDIAN",
    "STAT_REPEAT_MEDIAN_MEAN",
    "STAT_ROUND_RATIO_MEAN",
    "StabilityThresholds",
    "StabilityVerdict",
    "UntilStable",
    "assess_stability",
    "compare_latencies",
    "compare_paired_rounds",
    "instability_causes",
    "mann_whitney_u",
    "measure_until_stable",
    "median_ci",
    "not_comparable_reason",
    "pick_fastest",
    "repeat_median_mean",
    "repeat_median_se",
    "robust_cv",
    "small_sample_expansion",
]
