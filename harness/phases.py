"""``PhaseTimes``: wall time spent per preparation phase of a cell (load, prune, export, calibrate, build).

It lives apart from the backend interface so that calibration (which adds its own ``calibrate`` time)
and the backends can share it without importing each other.
"""

from __future__ import annotations

import time


class PhaseTimes:
    """Wall time spent per preparation phase (load, prune, export, calibrate, build)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def timed(self, phase: str) -> _PhaseContext:
        return _PhaseContext(self, phase)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class _PhaseContext:
    def __init__(self, owner: PhaseTimes, phase: str) -> None:
        self._owner, self._phase, self._start = owner, phase, 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._owner.add(self._phase, time.perf_counter() - self._start)


__all__ = ["PhaseTimes"]
