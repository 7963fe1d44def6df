"""Energy of timed repeats: what a meter reads around each repeat, and a window's energy per image.

A meter (the NVML device monitor on a GPU) is read at the start and at the end of each timed repeat,
after its warm-up and before anything else runs, so the joules of a repeat are the device's own while
that repeat's timed calls ran: no warm-up, staging, settle wait or other cell's repeat is counted
(MLPerf's power runs measure the timed run only). A window's energy per image is its repeats' joules
over the images those repeats timed: never a share of a longer span, never an average of averages.

NVML's energy counter advances in steps (its update period): a reading may be up to one period old.
So the start of a repeat waits for the counter's next step (then the calls begin: the reading is
fresh), and its end takes the counter's next step after the last call and interpolates back to the
moment the calls finished. A span shorter than :data:`MIN_COUNTER_PERIODS` periods still cannot be
resolved to better than ~10 % and gets no number and a note, never a guess (CodeCarbon reports 0 in
that case; this records why nothing was reported).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: A span gets a number only when it lasts at least this many update periods of the energy counter
#: (or power samples, without a counter): the reading at each end is late by up to one period, so the
#: error is below 1 / MIN_COUNTER_PERIODS of the span's energy.
MIN_COUNTER_PERIODS = 10


@dataclass(frozen=True)
class EnergySpan:
    """The device energy over one timed repeat; ``mj`` is None when it cannot be resolved (``note`` says why)."""

    mj: float | None
    seconds: float
    source: str | None = None  # "counter" | "power-sampling"
    update_period_s: float | None = None  # the counter's update period (or the power sampling interval)
    note: str | None = None


class EnergyMeter(Protocol):
    """What :func:`harness.measure.timing.measure_repeat` reads around a repeat's timed calls."""

    def start(self) -> Any:
        """A reading taken right before the first timed call (opaque to the caller); a stepping
        counter may wait for its next step here, so the reading is fresh when the calls begin."""
        ...

    def stop(self) -> Any:
        """A reading of the moment the last timed call finished (the caller has synchronised the device)."""
        ...

    def span(self, start: Any, end: Any) -> EnergySpan:
        """The energy between two readings of this meter."""
        ...

    @property
    def min_span_s(self) -> float:
        """The shortest span this meter resolves (0 when any span does)."""
        ...


@dataclass(frozen=True)
class WindowEnergy:
    """A window's energy: its resolvable repeats' joules over the images those repeats timed."""

    mj_per_image: float | None
    joules: float | None
    images: int
    seconds: float
    repeats_used: int
    repeats: int
    source: str | None
    update_period_s: float | None
    note: str | None

    @property
    def mean_power_w(self) -> float | None:
        if self.joules is None or self.seconds <= 0:
            return None
        return self.joules / self.seconds

    def to_dict(self) -> dict[str, Any]:
        """The ``energy`` entry stored with a window."""
        return {
            "mj_per_image": self.mj_per_image, "joules": self.joules, "images": self.images,
            "seconds": round(self.seconds, 6), "mean_power_w": self.mean_power_w,
            "repeats_used": self.repeats_used, "repeats": self.repeats, "source": self.source,
            "update_period_ms": None if self.update_period_s is None else round(1e3 * self.update_period_s, 3),
            "note": self.note,
        }


def window_energy(spans: Sequence[EnergySpan | None], calls_per_repeat: Sequence[int],
                  batch_size: int) -> WindowEnergy | None:
    """Energy per image of a window from its repeats' spans and the calls each repeat timed; None when
    no repeat was metered (no GPU, or no NVML)."""
    if len(spans) != len(calls_per_repeat):
        raise ValueError(f"{len(spans)} energy spans for {len(calls_per_repeat)} repeats")
    metered = [(s, n) for s, n in zip(spans, calls_per_repeat) if s is not None]
    if not metered:
        return None
    used = [(s, n) for s, n in metered if s.mj is not None]
    source = next((s.source for s, _ in metered if s.source), None)
    period = next((s.update_period_s for s, _ in metered if s.update_period_s is not None), None)
    notes = list(dict.fromkeys(s.note for s, _ in metered if s.mj is None and s.note))
    if not used:
        return WindowEnergy(None, None, 0, 0.0, 0, len(spans), source, period,
                            "; ".join(notes) or "no repeat could be metered")
    joules = sum(s.mj for s, _ in used) / 1e3  # type: ignore[misc]
    images = batch_size * sum(n for _, n in used)
    seconds = sum(s.seconds for s, _ in used)
    note = None
    if len(used) < len(metered):
        note = f"{len(metered) - len(used)} of {len(metered)} repeats not metered: " + "; ".join(notes)
    return WindowEnergy(1e3 * joules / images if images else None, joules, images, seconds, len(used), len(spans),
                        source, period, note)


__all__ = ["MIN_COUNTER_PERIODS", "EnergyMeter", "EnergySpan", "WindowEnergy", "window_energy"]
