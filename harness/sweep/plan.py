"""A sweep's plan: config -> cells (model x dataset x pruning step x backend x precision x batch size)
-> units (one model x dataset x pruning step with the cells that share its pruned model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backends.names import QUANTIZED_PRECISIONS
from harness.compression.recovery import RecoverOptions
from harness.compression.spec import PruneSpec
from harness.config import Int8Settings, SweepConfig, prune_steps
from harness.store.outcome import CellIdentity


@dataclass(frozen=True)
class Cell:
    model: str
    dataset: str
    prune: PruneSpec
    backend: str
    precision: str
    batch_size: int
    recover: RecoverOptions | None = None  # a fine-tune after pruning (its own cell)
    int8: Int8Settings | None = None  # an int8 variant other than plain INT8 (its own cell)

    def identity(self, config: SweepConfig) -> CellIdentity:
        return CellIdentity(
            model=self.model, weights=config.weights, dataset=self.dataset, dataset_size=config.dataset_size,
            pruner=self.prune.method, amount=self.prune.amount, prune_options=self.prune.identity_options(),
            backend=self.backend, precision=self.precision, batch_size=self.batch_size,
            calibration=config.calibration.identity() if self.precision in QUANTIZED_PRECISIONS else None,
            recover=None if self.recover is None else self.recover.identity(),
            int8=None if self.int8 is None else self.int8.identity(),
        )


@dataclass(frozen=True)
class Unit:
    """One model x dataset x pruning step and its cells: the piece of work an executor runs."""

    model: str
    dataset: str
    prune: PruneSpec
    cells: tuple[Cell, ...]
    recover: RecoverOptions | None = None  # recovery after pruning: every later stage sees its model


def int8_variants(config: SweepConfig, precision: str) -> list[Int8Settings | None]:
    """Plain INT8 (or FP8) is None (today's cells and keys); each other ``int8:`` variant is its own cell
    (the variants apply to every quantized precision: int8 and fp8)."""
    if precision not in QUANTIZED_PRECISIONS:
        return [None]
    return list(dict.fromkeys(None if v.plain else v for v in config.int8))


def plan_cells(config: SweepConfig) -> list[Cell]:
    return [
        Cell(m, d, spec, b, p, bs, recover, variant)
        for m in config.models
        for d in config.datasets
        for spec, recover in prune_steps(config.pruners)
        for b, p in config.pairs()
        for variant in int8_variants(config, p)
        for bs in config.batch_sizes
    ]


def plan_units(config: SweepConfig, skip: Callable[[Cell], bool] | None = None) -> list[Unit]:
    """The sweep's units in run order (model, dataset, pruning step); cells for which ``skip`` is
    true (e.g. already finished, with --resume) are left out, and so are units left empty."""
    grouped: dict[tuple[str, str, PruneSpec, RecoverOptions | None], list[Cell]] = {}
    for cell in plan_cells(config):
        if skip is None or not skip(cell):
            grouped.setdefault((cell.model, cell.dataset, cell.prune, cell.recover), []).append(cell)
    return [Unit(m, d, spec, tuple(cells), recover) for (m, d, spec, recover), cells in grouped.items()]
