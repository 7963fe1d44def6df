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
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from harness.errors import HarnessError
from harness.measure.launch import HOST_BOUND, HOST_BOUND_MEANING, LaunchCheck, launch_fix

Method = Literal["auto", "hierarchical", "within"]

#: Repeats needed before whole repeats are resampled.
MIN_REPEATS_HIERARCHICAL = 3


# --------------------------------------------------------------------------- helpers


def _as_repeats_ms(repeats_ns: Sequence[Sequence[int]], what: str = "latency samples") -> list[np.ndarray]:
    reps = [np.asarray(r, dtype=np.float64) / 1e6 for r in repeats_ns if len(r) > 0]
    if not reps:
        raise HarnessError(f"no {what}: every repeat is empty")
    for r in reps:
        if not np.all(np.isfinite(r)) or np.any(r < 0):
            raise HarnessError(f"{what} contain a negative or non-finite value")
    return reps


def _resolve_method(n_repeats: int, method: Method) -> tuple[str, str]:
    if method not in ("auto", "hierarchical", "within"):
        raise HarnessError(f"bootstrap method {method!r} is not one of auto, hierarchical, within")
    if method == "within":
        return "within", "asked for: resampling individual samples only (ignores drift between repeats)"
    if n_repeats >= MIN_REPEATS_HIERARCHICAL:
        return "hierarchical", (
            f"{n_repeats} repeats: whole repeats resampled, then samples within each, so drift between "
            "repeats (clocks, heat, other load) widens the interval"
        )
    if method == "hierarchical":
        raise HarnessError(
            f"a hierarchical bootstrap needs at least {MIN_REPEATS_HIERARCHICAL} repeats, got {n_repeats}; "
            "raise timing.repeats or use method='within'"
        )
    return "within", (
        f"only {n_repeats} repeat(s): too few to resample repeats, so samples are resampled within; "
        f"drift between repeats is not covered (use >= {MIN_REPEATS_HIERARCHICAL} repeats)"
    )


#: Draws per chosen repeat in the hierarchical bootstrap of the pooled median. A duration-based
#: window can hold thousands of samples per repeat; drawing all of them would make one bootstrap
#: cost seconds. Capping the draws credits a long repeat with no more within-repeat precision than
#: 512 samples give (the interval errs wide), which is far below the between-repeat drift it exists
#: to cover.
BOOTSTRAP_MAX_DRAWS = 512


def _resampled_medians(sorted_values: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Medians of ``shape`` bootstrap resamples (with replacement, full size) of ``sorted_values``,
    without drawing the resamples: a resample's k-th order statistic is the empirical quantile at
    the k-th order statistic of n uniforms, which is Beta(k, n + 1 - k) distributed (exact). For an
    even n the median averages the k-th and (k+1)-th; given U(k) = u, U(k+1) is u plus (1 - u) times
    the minimum of the n - k uniforms above u, a Beta(1, n - k)."""
    n = len(sorted_values)
    if n == 1:
        return np.full(shape, float(sorted_values[0]))
    k = (n + 1) // 2
    u = rng.beta(k, n + 1 - k, size=shape)

    def at(q: np.ndarray) -> np.ndarray:
        return sorted_values[np.clip(np.ceil(q * n).astype(np.int64) - 1, 0, n - 1)]

    if n % 2 == 1:
        return at(u)
    u2 = u + (1.0 - u) * rng.beta(1, n - k, size=shape)
    return (at(u) + at(u2)) / 2.0


def _bootstrap_medians(
    reps: list[np.ndarray], method: str, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Pooled medians of ``resamples`` bootstrap resamples (vectorised).

    ``within``: all samples pooled and resampled (exact, through :func:`_resampled_medians`).
    ``hierarchical``: R repeats chosen with replacement, then m samples within each chosen
    repeat (m = mean repeat length up to :data:`BOOTSTRAP_MAX_DRAWS`, so ragged repeats keep one
    shape). ``stratified``: every repeat once, m samples within each: the within-repeat part of
    the hierarchical scheme alone, with the same draws (used to split the interval's width into
    a within-repeat and a between-repeat part)."""
    lengths = np.array([len(r) for r in reps])
    flat = np.concatenate(reps)
    if method == "within":
        return _resampled_medians(np.sort(flat), (resamples,), rng)
    n_rep = len(reps)
    m = max(1, min(BOOTSTRAP_MAX_DRAWS, int(round(lengths.mean()))))
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    if method == "stratified":
        chosen = np.broadcast_to(np.arange(n_rep), (resamples, n_rep))
    else:
        chosen = rng.integers(0, n_rep, size=(resamples, n_rep))
    within = (rng.random((resamples, n_rep, m)) * lengths[chosen][:, :, None]).astype(np.int64)
    idx = offsets[chosen][:, :, None] + within
    return np.median(flat[idx].reshape(resamples, n_rep * m), axis=1)


def _t_quantile(p: float, df: int) -> float:
    """Student t quantile (numpy only): bisection on the CDF, integrated with Simpson's rule."""
    if df < 1:
        raise ValueError("t quantile needs df >= 1")
    const = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 2001)
        y = const * (1.0 + x * x / df) ** (-(df + 1) / 2)
        h = t / 2000
        return 0.5 + h / 3 * float(y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _z_quantile(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@functools.lru_cache(maxsize=256)
def small_sample_expansion(n: int, df: int, confidence: float) -> float:
    """Factor that widens a percentile-bootstrap interval for ``n`` independent units
    (repeats, on the hierarchical path): sqrt(n / (n - 1)) * t(df) / z, after
    Hesterberg's "expanded percentile interval". The plain percentile interval uses
    the bootstrap's biased variance ((n - 1) / n) and normal instead of t quantiles,
    so with 3-5 repeats it covers far less than the nominal 95 %."""
    if n < 2 or df < 1:
        return 1.0
    q = 1.0 - (1.0 - confidence) / 2.0
    return math.sqrt(n / (n - 1)) * _t_quantile(q, df) / _z_quantile(q)


def _expand_between(est: float, low: float, high: float, within_low: float, within_high: float,
                    k: float) -> tuple[float, float]:
    """Stretch only the between-repeat part of an interval by ``k`` (log scale).

    The small-sample expansion corrects for estimating the *between-repeat* variance from a
    handful of repeats; the within-repeat part is estimated from hundreds or thousands of samples
    and needs none. Each side's distance from the estimate is split as d^2 = w^2 + b^2 (w: the
    same side of the within-only interval), and becomes sqrt(w^2 + (k b)^2): when the repeats
    agree (b ~ 0) the interval stays as tight as the samples make it, when they disagree it is
    widened as the full expansion would."""
    if est <= 0 or min(low, high, within_low, within_high) <= 0:
        return _expand(est, low, high, k, log=False)
    le = math.log(est)

    def side(d: float, w: float) -> float:
        b2 = max(d * d - w * w, 0.0)
        return math.sqrt(w * w + k * k * b2)

    d_low = side(le - math.log(low), max(le - math.log(within_low), 0.0))
    d_high = side(math.log(high) - le, max(math.log(within_high) - le, 0.0))
    return math.exp(le - d_low), math.exp(le + d_high)


def _expand(est: float, low: float, high: float, k: float, log: bool) -> tuple[float, float]:
    """Stretch the interval's distances from the estimate by ``k`` (on the log scale when asked)."""
    if log:
        le, ll, lh = math.log(est), math.log(low), math.log(high)
        return math.exp(le - k * (le - ll)), math.exp(le + k * (lh - le))
    return est - k * (est - low), est + k * (high - est)


def _bootstrap_repeat_medians(reps: list[np.ndarray], resamples: int, rng: np.random.Generator,
                              chosen: np.ndarray | None = None) -> np.ndarray:
    """Hierarchical bootstrap of each repeat's median: ``chosen`` (resamples x R repeat indices;
    drawn with replacement when None), then each chosen repeat's median resampled within it
    (exact, at any repeat length: :func:`_resampled_medians`). Returns resamples x R medians."""
    n_rep = len(reps)
    if chosen is None:
        chosen = rng.integers(0, n_rep, size=(resamples, n_rep))
    out = np.empty(chosen.shape, dtype=np.float64)
    for r, rep in enumerate(reps):
        mask = chosen == r
        count = int(mask.sum())
        if count:
            out[mask] = _resampled_medians(np.sort(rep), (count,), rng)
    return out


def _bootstrap_repeat_median_means(reps: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Hierarchical bootstrap of the trimmed mean over repeats of each repeat's median."""
    return _trimmed_mean(_bootstrap_repeat_medians(reps, resamples, rng))


#: Share of repeat medians dropped at each end before averaging (a repeat that
#: was mostly preempted must not move the average).
REPEAT_TRIM = 0.2


def _trimmed_mean(values: np.ndarray) -> np.ndarray:
    """Trimmed mean along the last axis (REPEAT_TRIM dropped at each end)."""
    n = values.shape[-1]
    k = int(REPEAT_TRIM * n)
    v = np.sort(values, axis=-1)
    return v[..., k : n - k].mean(axis=-1)


def repeat_median_mean(reps: list[np.ndarray]) -> float:
    """20 %-trimmed mean of the per-repeat medians."""
    return float(_trimmed_mean(np.array([np.median(r) for r in reps])))


def _check_confidence(confidence: float, resamples: int) -> None:
    if not 0.5 <= confidence < 1.0:
        raise HarnessError(f"confidence must be in [0.5, 1), got {confidence}")
    if resamples < 100:
        raise HarnessError(f"a bootstrap needs at least 100 resamples, got {resamples}")


# --------------------------------------------------------------------------- median CI


@dataclass(frozen=True)
class MedianCI:
    """Bootstrap confidence interval of the median per-batch latency (ms) and of throughput."""

    median_ms: float
    low_ms: float
    high_ms: float
    confidence: float
    method: str  # "hierarchical" | "within"
    method_reason: str
    resamples: int
    repeats: int
    samples: int
    batch_size: int
    throughput_ips: float
    throughput_low_ips: float
    throughput_high_ips: float

    @property
    def half_width_ms(self) -> float:
        return (self.high_ms - self.low_ms) / 2.0

    @property
    def half_width_pct(self) -> float:
        """CI half-width as a percentage of the median."""
        return 100.0 * self.half_width_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["half_width_pct"] = self.half_width_pct
        return out


def median_ci(
    repeats_ns: Sequence[Sequence[int]],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    method: Method = "auto",
    *,
    batch_size: int = 1,
) -> MedianCI:
    """Percentile-bootstrap CI of the median latency (ms) of all samples of one cell.

    ``method="auto"`` resamples hierarchically (whole repeats, then samples within
    each chosen repeat) when there are >= 3 repeats, otherwise within the pooled
    samples; ``result.method`` and ``result.method_reason`` say which and why.
    Between-repeat drift (clock, thermal state, other load) is the dominant noise on
    shared machines; resampling only within repeats would ignore it and give
    intervals that are too narrow.

    The point estimate is the median of all samples (as ``LatencyStats.median_ms``).
    Throughput (images/s = ``batch_size`` / median) gets the CI mapped through the
    same monotone transform. Deterministic for a given ``seed``. Vectorised: 150
    samples x 2000 resamples takes about 10-40 ms (measured on a loaded 2-core machine).
    """
    _check_confidence(confidence, resamples)
    if batch_size < 1:
        raise HarnessError(f"batch_size must be >= 1, got {batch_size}")
    reps = _as_repeats_ms(repeats_ns)
    used, why = _resolve_method(len(reps), method)
    rng = np.random.default_rng(seed)
    boots = _bootstrap_medians(reps, used, resamples, rng)
    alpha = 1.0 - confidence
    quantiles = [alpha / 2.0, 1.0 - alpha / 2.0]
    low, high = np.quantile(boots, quantiles)
    median = float(np.median(np.concatenate(reps)))
    low, high = float(min(low, median)), float(max(high, median))
    if used == "hierarchical":
        n = len(reps)
        expansion = small_sample_expansion(n, n - 1, confidence)
        w_low, w_high = (float(v) for v in np.quantile(_bootstrap_medians(reps, "stratified", resamples, rng),
                                                       quantiles))
        if median > 0 and low > 0:
            low, high = _expand_between(median, low, high, min(w_low, median), max(w_high, median), expansion)
        why += (f"; the between-repeat part of the interval expanded x{expansion:.2f} for {n} repeats "
                f"(t with {n - 1} df)")

    def ips(ms: float) -> float:
        return batch_size / (ms / 1e3) if ms > 0 else float("inf")

    return MedianCI(
        median_ms=median,
        low_ms=low,
        high_ms=high,
        confidence=confidence,
        method=used,
        method_reason=why,
        resamples=resamples,
        repeats=len(reps),
        samples=int(sum(len(r) for r in reps)),
        batch_size=batch_size,
        throughput_ips=ips(median),
        throughput_low_ips=ips(high),
        throughput_high_ips=ips(low),
    )


# --------------------------------------------------------------------------- stability


@dataclass(frozen=True)
class StabilityThresholds:
    """When a window is called unstable, per device class (``*_cpu`` / ``*_gpu``). Each rule is one of
    the anchors' own warnings, applied to what that anchor measures:

    * ``robust_cv_*``: the scatter of the calls inside a repeat, as IQR / 1.349 / median (the CV a
      normal distribution with that interquartile range would have), the median over repeats.
      trtexec warns when the CV of its GPU compute times exceeds 2.5 %; on CPU the limit is 10 %.
      The classic stdev / mean CV is dominated by a handful of preempted calls (on a 2-core machine
      a 0.1 ms call preempted for 4 ms makes it 300 % while the median does not move), so it is
      stored but not judged.
    * ``repeat_cv_*``: how much the repeat medians disagree, as their stdev / mean. pyperf warns when
      the stdev of its values (one per worker process, i.e. one per repeat here) is 10 % of the mean
      or more; on GPU trtexec's 2.5 %. A stdev, unlike the range of the repeat medians, does not grow
      with the number of repeats, so more repeats never make a window look worse. The limit grows
      to ``repeat_cv_se`` standard errors of a repeat median when the repeats are too short or
      scattered to resolve it (a short window is not blamed for disagreement it cannot resolve).

    The width of the median's CI is *not* a rule: no anchor has one (trtexec's 2.5 % is a CV limit),
    and the interval is printed beside every median, so a window whose repeats disagree within the
    limits shows it as a wide interval, not as a "!". The CPU figures were checked against windows
    recorded on this project's machine (``tests/data/timing_samples``): quiet windows pass, a load
    step, a bimodal window and a repeat a quarter slower fail.
    """

    robust_cv_gpu: float = 0.025
    robust_cv_cpu: float = 0.10
    repeat_cv_gpu: float = 0.025
    repeat_cv_cpu: float = 0.10
    repeat_cv_se: float = 2.0

    def for_device(self, device: str) -> tuple[float, float]:
        """(robust CV, repeat CV) limits for "cpu" or "cuda"."""
        if device == "cpu":
            return self.robust_cv_cpu, self.repeat_cv_cpu
        if device == "cuda":
            return self.robust_cv_gpu, self.repeat_cv_gpu
        raise HarnessError(f"device {device!r} is not one of cpu, cuda")


#: Why a window is unstable, as a short code per reason (``StabilityVerdict.causes``). ``host`` and
#: ``device`` say the machine was disturbed (another process, throttling): such a window is not
#: comparable at all; ``cv`` and ``repeats`` say the numbers scatter; ``host-bound`` says they scatter
#: because the GPU waited for the host's launches (:mod:`harness.measure.launch`): the jitter is the host's. ``ci`` (a wide CI) is only read
#: from verdicts stored before the width of the CI stopped being a rule.
CAUSES: tuple[str, ...] = ("cv", "ci", "repeats", "device", "host", "host-bound")
ENVIRONMENT_CAUSES: frozenset[str] = frozenset({"device", "host"})


@dataclass(frozen=True)
class StabilityVerdict:
    stable: bool
    reasons: list[str]
    cv: float  # classic stdev / mean of all samples (stored, not judged)
    ci_half_width_pct: float  # stored and printed as the interval, not judged
    repeat_spread_pct: float | None  # slowest / fastest repeat median - 1, in % (stored, not judged)
    device: str
    robust_cv: float = 0.0  # median over repeats of IQR / 1.349 / median (judged)
    repeat_cv: float | None = None  # stdev / mean of the repeat medians (judged)
    repeat_cv_limit: float | None = None  # the limit it was judged against
    causes: list[str] = field(default_factory=list)  # one code of CAUSES per reason, same order
    #: Set on a host-bound GPU window (:mod:`harness.measure.launch`): what it means and the fix; the window
    #: may still be stable (its launches repeat alike), but its latency is the host's.
    host_bound: str | None = None

    @property
    def instability(self) -> str:
        """The reasons as one string ("" when stable), for the CSV/JSON column."""
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["host_bound"] is None:  # windows that are not host-bound keep the keys stored before
            del out["host_bound"]
        out["instability"] = self.instability
        return out


def _repeat_medians(reps: list[np.ndarray]) -> np.ndarray:
    return np.array([float(np.median(r)) for r in reps])


def robust_cv(samples: np.ndarray) -> float:
    """IQR / 1.349 / median: the CV of a normal distribution with the same interquartile range."""
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float((q3 - q1) / 1.349 / med) if med > 0 else 0.0


def repeat_median_se(samples: np.ndarray) -> float:
    """Standard error of one repeat's median relative to it (asymptotic: 1.2533 sigma / sqrt(n),
    sigma from the IQR)."""
    return 1.2533 * robust_cv(samples) / math.sqrt(len(samples)) if len(samples) else 0.0


def assess_stability(
    repeats_ns: Sequence[Sequence[int]],
    device: Literal["cpu", "cuda"],
    ci: MedianCI | None = None,
    device_warnings: Sequence[str] = (),
    host_load: Any = None,
    thresholds: StabilityThresholds = StabilityThresholds(),
    launch: LaunchCheck | None = None,
    backend: str | None = None,
) -> StabilityVerdict:
    """``stable`` with a reason (and a cause code) per trigger (see :class:`StabilityThresholds`): a
    scattered repeat (robust CV), repeat medians that disagree (their CV) beyond what their own
    scatter explains, device warnings (throttling, other GPU processes; passed in verbatim) and host
    load during the window (a ``harness.measure.hostload.HostLoad``, or anything with ``busy`` and
    ``reason``; None when not sampled). ``ci`` is computed when None (stored, not judged).

    A host-bound window (``launch``, :mod:`harness.measure.launch`) times the host's kernel launches: its
    scatter is the host's jitter, so it is reported with that cause (``host-bound``), never as noise
    of the device; ``host_bound`` holds what it means and the fix (for ``backend``)."""
    cv_max, repeat_cv_max = thresholds.for_device(device)
    reps = _as_repeats_ms(repeats_ns)
    if ci is None:
        ci = median_ci(repeats_ns)
    flat = np.concatenate(reps)
    mean = float(flat.mean())
    cv = float(flat.std(ddof=1) / mean) if len(flat) > 1 and mean > 0 else 0.0
    rcv = float(np.median([robust_cv(r) for r in reps]))
    reasons: list[str] = []
    causes: list[str] = []
    host_bound = launch.reason(backend) if launch is not None and launch.host_bound else None
    jitter = "host-bound: the host's launch jitter, " if host_bound else ""
    if rcv > cv_max:
        reasons.append(f"{jitter}samples scatter: robust CV {100 * rcv:.1f} % > {100 * cv_max:.1f} %")
        causes.append("host-bound" if host_bound else "cv")
    spread: float | None = None
    repeat_cv: float | None = None
    limit: float | None = None
    if len(reps) >= 2:
        meds = _repeat_medians(reps)
        if meds.min() > 0:
            spread = 100.0 * (float(meds.max() / meds.min()) - 1.0)
            repeat_cv = float(meds.std(ddof=1) / meds.mean())
            se = max(repeat_median_se(r) for r in reps)
            limit = max(repeat_cv_max, thresholds.repeat_cv_se * se)
            if repeat_cv > limit:
                reasons.append(
                    f"{jitter}repeat medians disagree: {meds.min():.4g}-{meds.max():.4g} ms "
                    f"(CV {100 * repeat_cv:.1f} % > {100 * limit:.1f} %)"
                )
                causes.append("host-bound" if host_bound else "repeats")
    for w in device_warnings:
        if w:
            reasons.append(f"device: {w}")
            causes.append("device")
    if host_load is not None and getattr(host_load, "busy", False):
        reasons.append(f"host busy: {getattr(host_load, 'reason', None) or 'load during the window'}")
        causes.append("host")
    return StabilityVerdict(
        stable=not reasons,
        reasons=reasons,
        cv=cv,
        ci_half_width_pct=ci.half_width_pct,
        repeat_spread_pct=spread,
        device=device,
        robust_cv=rcv,
        repeat_cv=repeat_cv,
        repeat_cv_limit=limit,
        causes=causes,
        host_bound=host_bound,
    )


def instability_causes(stability: Mapping[str, Any] | StabilityVerdict | None) -> list[str]:
    """The cause codes of a stored or computed verdict. Verdicts stored before cause codes existed
    are read from their reason texts ("host busy: ...", "device: ...", ...)."""
    if stability is None:
        return []
    if isinstance(stability, StabilityVerdict):
        return list(stability.causes)
    stored = stability.get("causes")
    if isinstance(stored, list):
        return [str(c) for c in stored]
    causes = []
    for reason in stability.get("reasons") or []:
        text = str(reason)
        if text.startswith("host-bound"):
            causes.append("host-bound")
        elif text.startswith("host busy"):
            causes.append("host")
        elif text.startswith("device:"):
            causes.append("device")
        elif text.startswith("repeat medians"):
            causes.append("repeats")
        elif "CI half-width" in text:
            causes.append("ci")
        else:
            causes.append("cv")
    return causes


def _environment_reasons(stability: Mapping[str, Any] | StabilityVerdict | None) -> list[str]:
    if stability is None:
        return []
    reasons = stability.reasons if isinstance(stability, StabilityVerdict) else list(stability.get("reasons") or [])
    causes = instability_causes(stability)
    return [str(r) for r, c in zip(reasons, causes) if c in ENVIRONMENT_CAUSES]


#: What to do about a pair that is not comparable.
NOT_COMPARABLE_FIX = ("rerun both cells on a quiet machine (no other harness or heavy process), "
                      "or with timing.until_stable")


def not_comparable_reason(baseline: Mapping[str, Any] | StabilityVerdict | None,
                          candidate: Mapping[str, Any] | StabilityVerdict | None) -> str | None:
    """Why a pair must not be compared at all, or None: either side's window was disturbed by the
    machine (another process busy on the host, device warnings such as throttling). Scatter
    alone (CV, CI, repeats) widens the interval instead: the CI already accounts for it."""
    parts = []
    for name, side in (("baseline", baseline), ("candidate", candidate)):
        env = _environment_reasons(side)
        if env:
            parts.append(f"{name} {'; '.join(env)}")
    if not parts:
        return None
    return f"not comparable: {'; '.join(parts)}; fix: {NOT_COMPARABLE_FIX}"


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


# --------------------------------------------------------------------------- until stable


@dataclass
class UntilStable:
    repeats_ns: list[list[int]]
    converged: bool
    repeats: int
    seconds: float
    target_ci_pct: float
    max_seconds: float
    ci: MedianCI | None
    stop_reason: str

    def to_dict(self, with_samples: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "converged": self.converged,
            "repeats": self.repeats,
            "seconds": self.seconds,
            "target_ci_pct": self.target_ci_pct,
            "max_seconds": self.max_seconds,
            "ci": self.ci.to_dict() if self.ci is not None else None,
            "stop_reason": self.stop_reason,
        }
        if with_samples:
            out["repeats_ns"] = self.repeats_ns
        return out


def measure_until_stable(
    run_repeat: Callable[[], list[int]],
    target_ci_pct: float,
    max_seconds: float,
    min_repeats: int = 3,
    clock: Callable[[], float] = time.monotonic,
    *,
    max_repeats: int = 1000,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    batch_size: int = 1,
) -> UntilStable:
    """Add repeats until the median's CI half-width is within ``target_ci_pct`` % of the
    median, or ``max_seconds`` have passed since the start (``min_repeats`` always run).

    ``run_repeat()`` runs one repeat (its own warm-up and iterations) and returns its
    samples in ns. Anchors: Google Benchmark grows the iteration count until
    ``--benchmark_min_time`` (0.5 s) is reached; pyperf spawns a required number of
    worker processes and warns when results are unstable; MLPerf LoadGen requires a
    minimum run duration (600 s) and query count. Here the stopping rule is the
    precision actually reached (the hierarchical-bootstrap CI, see :func:`median_ci`)
    under a time budget, and ``converged`` records whether the target was met.
    """
    if target_ci_pct <= 0:
        raise HarnessError(f"until_stable.target_ci_pct must be > 0, got {target_ci_pct}")
    if max_seconds <= 0:
        raise HarnessError(f"until_stable.max_seconds must be > 0, got {max_seconds}")
    if min_repeats < 1 or max_repeats < min_repeats:
        raise HarnessError(f"need 1 <= min_repeats <= max_repeats, got {min_repeats}, {max_repeats}")
    start = clock()
    repeats: list[list[int]] = []
    ci: MedianCI | None = None
    converged = False
    stop = ""
    while True:
        samples = list(run_repeat())
        if not samples:
            raise HarnessError("run_repeat returned no samples")
        repeats.append(samples)
        elapsed = clock() - start
        if len(repeats) >= min_repeats:
            ci = median_ci(repeats, confidence, resamples, seed, batch_size=batch_size)
            if ci.half_width_pct <= target_ci_pct:
                converged = True
                stop = f"CI half-width {ci.half_width_pct:.2f} % <= target {target_ci_pct} %"
                break
            if elapsed >= max_seconds:
                stop = (
                    f"time budget {max_seconds:g} s spent; CI half-width {ci.half_width_pct:.2f} % "
                    f"> target {target_ci_pct} %"
                )
                break
            if len(repeats) >= max_repeats:
                stop = f"{max_repeats} repeats reached; CI half-width {ci.half_width_pct:.2f} %"
                break
    return UntilStable(
        repeats_ns=repeats,
        converged=converged,
        repeats=len(repeats),
        seconds=clock() - start,
        target_ci_pct=target_ci_pct,
        max_seconds=max_seconds,
        ci=ci,
        stop_reason=stop,
    )


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
