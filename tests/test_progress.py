"""Progress and time estimates for long sweeps (harness.sweep.progress) and the CLI observer that shows them."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from harness.sweep.progress import SweepProgress, eta_seconds, format_duration


def test_eta_is_the_mean_time_per_finished_cell_times_the_cells_left() -> None:
    assert eta_seconds(30.0, 3, 6) == pytest.approx(60.0)
    assert eta_seconds(30.0, 0, 6) is None  # nothing finished: no estimate yet
    assert eta_seconds(30.0, 3, 0) == 0.0
    with pytest.raises(ValueError):
        eta_seconds(-1.0, 1, 1)


@pytest.mark.parametrize(("seconds", "text"), [(None, "unknown"), (0.4, "0s"), (42.4, "42s"), (125, "2m 05s"),
                                                (3599.6, "1h 00m"), (7380, "2h 03m")])
def test_durations_read_as_hours_minutes_seconds(seconds, text) -> None:
    assert format_duration(seconds) == text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_done_failed_left_and_estimates_from_finished_cells() -> None:
    clock = Clock()
    progress = SweepProgress(clock=clock)
    progress.start(planned=12, skipped=2)  # --resume: 2 finished before, 10 to run
    assert progress.line() == "0 done (0 failed), 10 left, 2 skipped, time left unknown"
    clock.now += 20
    progress.cell_finished(ok=True)
    progress.cell_finished(ok=False)
    assert (progress.done, progress.failed, progress.remaining) == (2, 1, 8)
    assert progress.eta() == pytest.approx(80.0)  # 10 s per cell, 8 cells left
    assert progress.line() == "2 done (1 failed), 8 left, 2 skipped, about 1m 20s left"
    clock.now += 60
    for _ in range(8):
        progress.cell_finished(ok=True)
    assert progress.remaining == 0 and progress.eta() == 0.0


def test_cli_observer_shows_counts_and_estimate() -> None:
    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from harness.cli.run import _ProgressObserver

    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    progress = Progress(TextColumn("{task.description}"), TextColumn("{task.fields[counts]}"), console=console)
    task = progress.add_task("starting", total=None, counts="")
    observer = _ProgressObserver(progress, task)
    observer.planned(3, 0)
    ok = SimpleNamespace(status="ok", identity=SimpleNamespace(label="a"), error=None)
    bad = SimpleNamespace(status="error", identity=SimpleNamespace(label="tinycnn none@0 torch fp32 b2"),
                          error="boom")
    observer.cell_done(ok)
    observer.cell_done(bad)
    shown = progress.tasks[0]
    assert shown.completed == 2 and shown.total == 3
    assert shown.fields["counts"].startswith("2 done (1 failed), 1 left, about ")
    assert "failed tinycnn none@0 torch fp32 b2: boom" in out.getvalue()
