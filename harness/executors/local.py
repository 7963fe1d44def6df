"""The local executor: every unit in this process, in order, each outcome committed as it arrives,
so a crash loses at most the running cell and ``--resume`` goes on from there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.executors.common import commit, node_info, plan_for_store, with_node

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import SweepConfig
    from harness.machine import MachineFacts
    from harness.results import ResultStore
    from harness.sweep import SweepObserver


def run_local(config: SweepConfig, store: ResultStore, observer: SweepObserver, *, resume: bool,
              facts: MachineFacts | None = None) -> dict[str, int]:
    from harness.sweep import UnitContext, run_unit

    units, tally = plan_for_store(config, store, resume=resume)
    observer.planned(tally.planned, tally.skipped)
    context = UnitContext(config, observer, facts=facts)
    for unit in units:
        for outcome in run_unit(unit, context):
            device = outcome.result.device if outcome.result is not None else None
            commit(store, with_node(outcome, node_info("local", device)), tally, observer)
    return tally.counts()
