"""The local executor: every unit in this process, in order, each outcome committed as it arrives,
so a crash loses at most the running cell and ``--resume`` goes on from there."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.measure.device_identity import node_facts
from harness.sweep.executors.common import Commit, RunUnit, with_node

if TYPE_CHECKING:  # pragma: no cover
    from harness.sweep.plan import Unit


class LocalExecutor:
    def run(self, units: Sequence[Unit], run_unit: RunUnit, commit: Commit) -> None:
        for unit in units:
            for outcome in run_unit(unit):
                device = outcome.result.device if outcome.result is not None else None
                commit(with_node(outcome, node_facts("local", device)))
