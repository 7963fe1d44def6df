"""The sweep driver: config -> units -> an executor -> outcomes committed to the store.

The driver plans the units (:mod:`harness.sweep.plan`), hands them with the unit function
(:class:`harness.sweep.unit.UnitRunner`) and its commit callback to an executor
(:mod:`harness.sweep.executors`: ``local``, the default, or ``ray``), and is the only writer of the store:
each outcome is committed as soon as it arrives, so a crash loses at most the running cells,
``--resume`` skips cells already ``ok``, and a failing cell never loses another.

The sweep knows backends only through ``backends``; it never touches TensorRT or ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import backends
from harness.config import SweepConfig
from harness.machine import MachineFacts, probe_machine
from harness.sweep.executors import Executor, executor_for
from harness.sweep.observer import Observer, SweepObserver
from harness.sweep.plan import Unit, plan_cells, plan_units
from harness.sweep.unit import UnitRunner

if TYPE_CHECKING:  # pragma: no cover
    from harness.store.outcome import CellOutcome
    from harness.store.results import ResultStore


@dataclass
class SweepTally:
    """Cells of one run: planned in all, skipped (finished before, --resume), ok and failed so far."""

    planned: int
    skipped: int
    ok: int = 0
    error: int = 0

    def counts(self) -> dict[str, int]:
        return {"ok": self.ok, "error": self.error, "skipped": self.skipped}


def plan_for_store(config: SweepConfig, store: ResultStore, *, resume: bool) -> tuple[list[Unit], SweepTally]:
    """The units still to run (with --resume, cells already ``ok`` in the store are left out)."""
    planned = len(plan_cells(config))
    units = plan_units(config, skip=(lambda c: store.finished_ok(c.identity(config).key)) if resume else None)
    return units, SweepTally(planned=planned, skipped=planned - sum(len(u.cells) for u in units))


def run_sweep(config: SweepConfig, store: ResultStore, observer: Observer | None = None, *,
              resume: bool, facts: MachineFacts | None = None, executor: Executor | None = None) -> dict[str, int]:
    """Run every unit with ``executor`` (default: the one the config names, ``executor.kind``: local,
    or ray), committing each cell's outcome here as soon as it arrives; returns ok/error/skipped counts."""
    watcher = observer or SweepObserver()
    units, tally = plan_for_store(config, store, resume=resume)
    watcher.planned(tally.planned, tally.skipped)
    if not units:
        return tally.counts()

    def commit(outcome: CellOutcome) -> None:
        """Commit one outcome (one transaction), count it, tell the observer."""
        store.put(outcome)
        if outcome.status == "ok":
            tally.ok += 1
        else:
            tally.error += 1
        watcher.cell_done(outcome)

    executor = executor or executor_for(config, watcher)
    executor.run(units, UnitRunner(config, watcher, facts), commit)
    return tally.counts()


def preflight(config: SweepConfig, facts: MachineFacts | None = None) -> None:
    """Fail before any work on bad input: unknown models, missing datasets, and backend/precision
    pairs this machine cannot run (the machine is probed once)."""
    from harness.data.registry import open_split
    from harness.models import check_custom_model, check_model_name, is_custom

    facts = facts if facts is not None else probe_machine()
    # On a Ray cluster the workers, not the driver's machine, run the sessions: each checks its own.
    if config.executor.kind == "local":
        for name, precision in config.pairs():
            backends.validate_request(name, precision, facts)
    for model in config.models:
        check_model_name(model, weights=config.weights)
        if is_custom(model):  # imports, builds and runs it once: a broken factory fails here, not per cell
            check_custom_model(model)
    for dataset in config.datasets:
        open_split(dataset, "val", data_root=Path(config.data_root), cache_dir=Path(config.cache_dir),
                   size=config.dataset_size, class_map=config.class_map)
