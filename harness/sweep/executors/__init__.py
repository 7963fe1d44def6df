"""Where a sweep's units run. The driver (:mod:`harness.sweep.driver`) is always the only writer of the
result store: it calls ``executor.run(units, run_unit, commit)``, and executors differ only in where
``run_unit`` (:class:`harness.sweep.unit.UnitRunner`) runs and how its outcomes come back to ``commit``.

* ``local`` (:mod:`harness.sweep.executors.local`): every unit here, in order. The default; never imports Ray.
* ``ray`` (:mod:`harness.sweep.executors.ray_executor`): each unit is a Ray task on a cluster (the optional
  ``ray`` extra), its outcomes streamed back and committed one by one as they arrive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.sweep.executors.common import EXECUTOR_KINDS, Commit, Executor, RunUnit, with_node

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import SweepConfig
    from harness.sweep.observer import Observer

__all__ = ["EXECUTOR_KINDS", "Commit", "Executor", "RunUnit", "executor_for", "with_node"]


def executor_for(config: SweepConfig, observer: Observer) -> Executor:
    """The executor the config names (``executor.kind``)."""
    if config.executor.kind == "ray":
        from harness.sweep.executors.ray_executor import RayExecutor

        return RayExecutor(config, observer)
    from harness.sweep.executors.local import LocalExecutor

    return LocalExecutor()
