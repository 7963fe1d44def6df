"""Progress of a long sweep: cells done, failed, remaining, and an estimated time left.

Pure bookkeeping (no console, no clock of its own unless asked): the CLI's progress observer feeds it
and renders :meth:`SweepProgress.line`. The estimate is the mean wall time per finished cell so far
times the cells remaining; on a cluster that wall time already reflects how many units run at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


def eta_seconds(elapsed_s: float, finished: int, remaining: int) -> float | None:
    """Estimated seconds left: ``remaining`` cells at the mean wall time of the ``finished`` ones
    (``elapsed_s / finished``); None before any cell finished; 0 when nothing remains."""
    if elapsed_s < 0 or finished < 0 or remaining < 0:
        raise ValueError("elapsed time and cell counts must be >= 0")
    if remaining == 0:
        return 0.0
    if finished == 0:
        return None
    return elapsed_s / finished * remaining


def format_duration(seconds: float | None) -> str:
    """``None`` -> "unknown"; 42.4 -> "42s"; 125 -> "2m 05s"; 7380 -> "2h 03m"."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


@dataclass
class SweepProgress:
    """Counts of one sweep run and its estimate. ``planned`` counts every cell of the config,
    ``skipped`` those finished before (--resume, not run again); done = ok + failed this run."""

    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    started: float | None = None
    clock: Callable[[], float] = time.monotonic

    def start(self, planned: int, skipped: int) -> None:
        self.planned, self.skipped, self.ok, self.failed = planned, skipped, 0, 0
        self.started = self.clock()

    def cell_finished(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def remaining(self) -> int:
        return max(0, self.planned - self.skipped - self.done)

    def eta(self) -> float | None:
        if self.started is None:
            return None
        return eta_seconds(self.clock() - self.started, self.done, self.remaining)

    def line(self) -> str:
        """E.g. "12 done (1 failed), 30 left, about 4m 10s left" (+ ", 8 skipped" with --resume)."""
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        eta = self.eta()
        when = "time left unknown" if eta is None else f"about {format_duration(eta)} left"
        return f"{self.done} done ({self.failed} failed), {self.remaining} left{skipped}, {when}"
