"""The measurements of one session: accuracy pass, timing windows and their statistics.

Each timing definition of a cell is one *window*:

* the process holds the device's exclusive lock (:class:`harness.measure.locks.DeviceLock`, on "cpu" or the
  GPU's UUID), so two harness processes on one machine never time at the same time; a process that
  has to wait says so through ``notice``;
* host load is sampled during the window (:class:`harness.measure.hostload.HostLoadSampler`);
* ``compute`` times ``session.run`` on batches staged before the window (already where the backend
  computes); ``e2e`` times ``session.infer`` on host tensors (host in, host logits out);
* the window's start and end (epoch seconds) are stored with it.

Statistics (the bootstrap CI of the median and the stability verdict) are computed after the lock is
released. With ``timing.until_stable`` set, repeats are added one at a time until the CI half-width is
within the target or the time budget is spent (``stats.measure_until_stable``).

The per-layer profile (``session.layer_profile``) runs in a separate pass after the cell's windows
(:mod:`harness.sweep.cell`), never inside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness.accuracy import evaluate
from harness.measure import stats
from harness.measure.device_identity import lock_device_id
from harness.measure.energy import EnergyMeter, window_energy
from harness.measure.hostload import HostLoadSampler
from harness.measure.interleave import NoMonitor
from harness.measure.launch import launch_check
from harness.measure.locks import DeviceLock
from harness.measure.timing import TimingResult, TimingSettings, measure, timer_for, wait_for_idle_threads
from harness.store.outcome import TimingWindow, encode_predictions

if TYPE_CHECKING:  # pragma: no cover
    from backends.base import Session
    from harness.data.stream import StreamingEvalData as EvalData

Notice = Callable[[str], None]



# ---------------------------------------------------------------------------------- one window


@dataclass
class Window:
    """Bookkeeping of one timing window."""

    start: float
    end: float
    lock_device: str
    lock_waited_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "lock_device": self.lock_device,
                "lock_waited_s": self.lock_waited_s}


def _measure(fn: Callable[[Any], Any], inputs: Sequence[Any], batch_size: int, settings: TimingSettings,
             definition: str, timer: Any, device: str = "cpu",
             meter: EnergyMeter | None = None) -> tuple[TimingResult, stats.UntilStable | None]:
    """The timed loop: fixed repeats, or repeats until the median's CI is tight enough."""
    target = settings.until_stable
    if target is None:
        return measure(fn, inputs, batch_size=batch_size, config=settings, definition=definition,
                       timer=timer, device=device, meter=meter), None
    one = settings.model_copy(update={"repeats": 1})
    result = TimingResult(definition=definition, timer=timer.name, batch_size=batch_size, config=settings,
                          device=device)

    def run_repeat() -> list[int]:
        rep = measure(fn, inputs, batch_size=batch_size, config=one, definition=definition, timer=timer,
                      device=device, meter=meter)
        result.repeat_times.extend(rep.repeat_times)
        result.issue_ns.extend(rep.issue_ns)
        result.energy.extend(rep.energy)
        return rep.repeats_ns[0]

    until = stats.measure_until_stable(run_repeat, target.target_ci_pct, target.max_seconds,
                                       min_repeats=settings.repeats, batch_size=batch_size)
    result.repeats_ns = until.repeats_ns
    result.config = settings.model_copy(update={"repeats": until.repeats})
    return result, until


def time_session(session: Session, data: EvalData, batch_size: int, settings: TimingSettings,
                 device_checks: bool, *, notice: Notice | None = None,
                 lock_dir: Path | None = None) -> tuple[list[TimingWindow], dict[str, Any]]:
    """Each timing definition of ``settings`` on real full batches, one locked window each, with
    its CI, stability verdict, window timestamps and host load; NVML device checks on CUDA, with
    each repeat's energy read around its timed calls."""
    host_batches = data.timing_inputs(batch_size, settings.batches)
    lock_device = lock_device_id(session.device)
    out: list[TimingWindow] = []
    device_report: dict[str, Any] = {"warnings": []}
    for definition in settings.definitions:
        if definition == "compute":
            inputs = [session.stage(x) for x in host_batches]  # staged before the window: not timed
            fn = session.run
        else:
            inputs, fn = host_batches, session.infer
        timer = timer_for(session.device, definition, session.cuda_stream)
        with DeviceLock(lock_device, lock_dir=lock_dir, on_wait=notice) as lock:
            with HostLoadSampler() as sampler, device_monitor(session.device, device_checks) as monitor:
                wait_for_idle_threads()  # what ran before (another session's pool) must not spin into it
                start = time.time()
                result, until = _measure(fn, inputs, batch_size, settings, definition, timer, session.device,
                                         meter=energy_meter(monitor))
                end = time.time()
            window = Window(start, end, lock_device, lock.waited_s)
        warnings: list[str] = []
        if monitor.result is not None:
            report = monitor.result.to_dict()
            device_report.setdefault("report", {})[definition] = report
            warnings = list(report.get("warnings", []))
            device_report["warnings"].extend(warnings)
        entry = window_entry(result, session.device, window=window.to_dict(), host_load=sampler.result,
                             warnings=warnings, until=None if until is None else until.to_dict(),
                             backend=session.info.backend)
        out.append(entry)
    return out, device_report


def window_entry(result: TimingResult, device: str, *, window: dict[str, Any], host_load: Any,
                 warnings: Sequence[str], until: dict[str, Any] | None, backend: str | None = None,
                 interleave: dict[str, Any] | None = None) -> TimingWindow:
    """The stored record of one measured window: statistics, the median's CI, the stability verdict
    (with the host load, device warnings and host-bound check seen), the window's lock and times, the
    durations it ran with, each repeat's start and end, its own energy per image (its repeats' joules
    over the images they timed, :mod:`harness.measure.energy`), the host-bound check (:mod:`harness.measure.launch`),
    and for an interleaved window its block and rounds."""
    ci = stats.median_ci(result.repeats_ns, batch_size=result.batch_size)
    launch = launch_check(result.issue_ns, result.repeats_ns)
    verdict = stats.assess_stability(result.repeats_ns, "cuda" if device == "cuda" else "cpu", ci,
                                     device_warnings=list(warnings), host_load=host_load, launch=launch,
                                     backend=backend)
    energy = window_energy(result.energy, [len(r) for r in result.repeats_ns], result.batch_size) \
        if len(result.energy) == len(result.repeats_ns) else None
    if until is not None and "ci" not in until:
        until = {**until, "ci": ci.to_dict()}
    stored = result.to_dict()
    extra = {"duration": stored["duration"], "repeat_times": stored["repeat_times"]}
    if interleave is not None:
        extra["interleave"] = interleave
    energy_per_image = None if energy is None else energy.mj_per_image
    absent = {key for key, value in (("energy_mj_per_image", energy_per_image), ("energy", energy),
                                     ("launch", launch)) if value is None}
    return TimingWindow(
        definition=result.definition, timer=result.timer, batch_size=result.batch_size,
        config=result.config.loop_dict(), stats=asdict(result.stats), samples_ns=result.repeats_ns,
        energy_mj_per_image=energy_per_image, ci=ci.to_dict(), stability=verdict.to_dict(),
        window=window, host_load=None if host_load is None else host_load.to_dict(),
        until_stable=until, energy=None if energy is None else energy.to_dict(),
        launch=None if launch is None else launch.to_dict(), absent=frozenset(absent), extra=extra)


def energy_meter(monitor: Any) -> EnergyMeter | None:
    """The entered device monitor as an energy meter (None off the GPU or without NVML)."""
    return monitor if hasattr(monitor, "mark") and hasattr(monitor, "span") else None


def device_monitor(device: str, enabled: bool) -> Any:
    """The NVML monitor of a window on ``device`` (a no-op off the GPU, or without NVML)."""
    if device != "cuda" or not enabled:
        return NoMonitor()
    from harness.gpu.nvml_monitor import DeviceMonitor
    from harness.gpu.nvml_query import nvml_unavailable_reason

    if nvml_unavailable_reason() is not None:
        return NoMonitor()
    return DeviceMonitor.for_torch_device(torch.cuda.current_device())


# ---------------------------------------------------------------------------------- accuracy + predictions


def session_accuracy(session: Session, data: EvalData, mapping: Any, batch_size: int,
                     on_evaluated: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Top-1 over the whole evaluation split at ``batch_size``, and the top-1 predicted output index
    of every image in split order (for agreement between two cells)."""
    seen = [0]
    predicted: list[np.ndarray] = []

    def on_batch(n: int) -> None:
        seen[0] += n
        if on_evaluated is not None:
            on_evaluated(seen[0], len(data))

    def on_logits(logits: torch.Tensor) -> None:
        predicted.append(logits.float().argmax(dim=1).cpu().numpy())

    result = evaluate(session.infer, data.eval_batches(batch_size), mapping, batch_size=batch_size,
                      on_batch=on_batch, on_logits=on_logits).to_dict()
    indices = np.concatenate(predicted) if predicted else np.zeros(0, dtype=np.int64)
    return {**result, "batch_size": batch_size}, encode_predictions(indices)


__all__ = ["Window", "device_monitor", "energy_meter", "session_accuracy", "time_session", "window_entry"]
