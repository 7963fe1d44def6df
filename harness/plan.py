"""A sweep's plan: config -> cells (model x dataset x pruning step x backend x precision x batch size)
-> units (one model x dataset x pruning step with the cells that share its pruned model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.compression.spec import PruneSpec
from harness.config import SweepConfig, prune_specs
from harness.outcome import CellIdentity


@dataclass(frozen=True)
class Cell:
    model: str
    dataset: str
    prune: PruneSpec
    backend: str
    precision: str
    batch_size: int

    def identity(self, config: SweepConfig) -> CellIdentity:
        return CellIdentity(
            model=self.model, weights=config.weights, dataset=self.dataset, dataset_size=config.dataset_size,
            pruner=self.prune.method, amount=self.prune.amount, prune_options=self.prune.identity_options(),
            backend=self.backend, precision=self.precision, batch_size=self.batch_size,
            calibration=config.calibration.model_dump() if self.precision == "int8" else None,
        )


@dataclass(frozen=True)
class Unit:
    """One model x dataset x pruning step and its cells: the piece of work an executor runs."""

    model: str
    dataset: str
    prune: PruneSpec
    cells: tuple[Cell, ...]


def plan_cells(config: SweepConfig) -> list[Cell]:
    return [
        Cell(m, d, spec, b, p, bs)
        for m in config.models
        for d in config.datasets
        for spec in prune_specs(config.pruners)
        for b, p in config.pairs()
        for bs in config.batch_sizes
    ]


def plan_units(config: SweepConfig, skip: Callable[[Cell], bool] | None = None) -> list[Unit]:
    """The sweep's units in run order (model, dataset, pruning step); cells for which ``skip`` is
    true (e.g. already finished, with --resume) are left out, and so are units left empty."""
    grouped: dict[tuple[str, str, PruneSpec], list[Cell]] = {}
    for cell in plan_cells(config):
        if skip is None or not skip(cell):
            grouped.setdefault((cell.model, cell.dataset, cell.prune), []).append(cell)
    return [Unit(m, d, spec, tuple(cells)) for (m, d, spec), cells in grouped.items()]
