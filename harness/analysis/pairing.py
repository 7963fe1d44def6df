"""Comparing two measured windows: the one place that decides how two cells are compared.

Every reader that puts two cells side by side (``harness compare``, the report's "fastest", ``harness
recommend``) asks :func:`window_comparison`, so they cannot disagree:

* the design: round by round when both windows were measured in one interleaved block
  (:func:`harness.measure.interleave.paired_rounds`), else as separate windows with the drift allowance;
* refusal: a window the machine disturbed (host busy, device warnings) makes the pair "not comparable"
  (:meth:`harness.measure.stats.Comparison.with_stability`);
* host-bound windows (:mod:`harness.measure.launch`): two cells that both timed the host's kernel launches are
  never credited a speedup (or its absence); one host-bound cell qualifies what the speedup means
  (:meth:`harness.measure.stats.Comparison.with_launch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.measure import stats
from harness.measure.interleave import paired_rounds
from harness.store.outcome import TimingWindow


def window_verdict(window: TimingWindow, device: str | None, warnings: Sequence[str] = ()) -> Mapping[str, Any] | None:
    """A window's stability verdict as stored (with its cause codes), else computed from its samples."""
    if isinstance(window.stability, Mapping) and "stable" in window.stability:
        return window.stability
    u = window.uncertainty(device, warnings)
    return None if u.stable is None else {"stable": u.stable, "reasons": list(u.reasons)}


def window_comparison(baseline: TimingWindow, candidate: TimingWindow, *, batch_size: int,
                      devices: tuple[str | None, str | None] = ("cpu", "cpu"),
                      warnings: tuple[Sequence[str], Sequence[str]] = ((), ()),
                      backend: str | None = None) -> stats.Comparison:
    """Baseline vs candidate window (both with raw samples): the speedup, its CI and the verdict, with
    disturbed and host-bound windows taken into account; ``backend`` names the fix for host-bound pairs."""
    if not baseline.samples_ns or not candidate.samples_ns:
        raise ValueError("window_comparison needs the raw samples of both windows")
    paired = paired_rounds(baseline.extra.get("interleave"), candidate.extra.get("interleave"),
                           baseline.samples_ns, candidate.samples_ns)
    if paired is not None:
        comparison = stats.compare_paired_rounds(*paired, batch_size=batch_size)
    else:
        device = "cuda" if "cuda" in devices else "cpu"
        comparison = stats.compare_latencies(baseline.samples_ns, candidate.samples_ns, batch_size=batch_size,
                                             device=device)
    comparison = comparison.with_stability(window_verdict(baseline, devices[0], warnings[0]),
                                           window_verdict(candidate, devices[1], warnings[1]))
    return comparison.with_launch(baseline.launch_check, candidate.launch_check, backend)


__all__ = ["window_comparison", "window_verdict"]
