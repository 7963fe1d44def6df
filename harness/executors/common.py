"""What every executor shares: planning against the store, committing, the node a cell ran on."""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import SweepConfig
    from harness.outcome import CellOutcome
    from harness.results import ResultStore
    from harness.sweep import SweepObserver, Unit

EXECUTOR_KINDS: tuple[str, ...] = ("local", "ray")


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
    from harness.sweep import plan_cells, plan_units

    planned = len(plan_cells(config))
    units = plan_units(config, skip=(lambda c: store.finished_ok(c.identity(config).key)) if resume else None)
    return units, SweepTally(planned=planned, skipped=planned - sum(len(u.cells) for u in units))


def commit(store: ResultStore, outcome: CellOutcome, tally: SweepTally, observer: SweepObserver) -> None:
    """Commit one outcome (one transaction), count it, tell the observer."""
    store.put(outcome)
    if outcome.status == "ok":
        tally.ok += 1
    else:
        tally.error += 1
    observer.cell_done(outcome)


def node_info(executor: str, device: str | None, **extra: Any) -> dict[str, Any]:
    """Where a cell ran: hostname, and for a CUDA cell the GPU's name and UUID (as torch reports the
    UUID: without NVML's ``GPU-``/``MIG-`` prefix), plus executor-specific ``extra`` keys."""
    info: dict[str, Any] = {"hostname": socket.gethostname(), "gpu_name": None, "gpu_uuid": None,
                            "executor": executor}
    if device == "cuda":
        info.update(_cuda_identity())
    return {**info, **extra}


def _cuda_identity() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    uuid = getattr(props, "uuid", None)
    return {"gpu_name": props.name, "gpu_uuid": str(uuid) if uuid is not None and str(uuid) else None}


def with_node(outcome: CellOutcome, node: dict[str, Any]) -> CellOutcome:
    """The outcome with ``node`` recorded in its result (a failed cell has no result to carry it)."""
    if outcome.result is None:
        return outcome
    return dataclasses.replace(outcome, result=dataclasses.replace(outcome.result, node=node))
