"""Measuring until the median is known well enough: repeats are added until its CI is tight or a time
budget is spent (``timing.until_stable``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.measure.stats.intervals import MedianCI, median_ci

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
