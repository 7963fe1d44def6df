"""When a window's numbers are not to be trusted (:class:`StabilityThresholds`, each rule an anchor's own
warning), why (cause codes), and when a pair must not be compared at all (:func:`not_comparable_reason`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from harness.errors import HarnessError
from harness.measure.launch import LaunchCheck
from harness.measure.stats.intervals import MedianCI, _as_repeats_ms, _repeat_medians, median_ci

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
