"""Executors: where a sweep's units run. The driver (this process) is always the only writer of
the result store; executors differ in where :func:`harness.sweep.run_unit` runs.

* ``local`` (:mod:`harness.executors.local`): every unit here, in order. The default; never imports Ray.
* ``ray`` (:mod:`harness.executors.ray_executor`): each unit is a Ray task on a cluster (the optional
  ``ray`` extra), its outcomes streamed back and committed one by one as they arrive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.executors.common import EXECUTOR_KINDS, SweepTally, commit, node_info, plan_for_store, with_node

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import SweepConfig
    from harness.machine import MachineFacts
    from harness.results import ResultStore
    from harness.sweep import SweepObserver

__all__ = ["EXECUTOR_KINDS", "SweepTally", "commit", "node_info", "plan_for_store", "run_units", "with_node"]


def run_units(config: SweepConfig, store: ResultStore, observer: SweepObserver, *, resume: bool,
              facts: MachineFacts | None = None) -> dict[str, int]:
    """Run the sweep with the executor the config names (``executor.kind``); returns the counts
    ``{"ok", "error", "skipped"}``."""
    if config.executor.kind == "ray":
        from harness.executors.ray_executor import run_ray

        return run_ray(config, store, observer, resume=resume)
    from harness.executors.local import run_local

    return run_local(config, store, observer, resume=resume, facts=facts)
