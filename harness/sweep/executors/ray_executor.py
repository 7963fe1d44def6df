"""The Ray executor: each unit (one model x dataset x pruning step with its cells) is a Ray task.

* A GPU unit (any cell on a CUDA backend) asks for one whole GPU (``num_gpus=1``; Ray sets
  ``CUDA_VISIBLE_DEVICES``), so no two units ever time on the same GPU; a CPU unit asks for
  ``executor.cpus_per_unit`` cores.
* Each task is a streaming generator: it yields each cell's outcome as soon as the cell finishes and
  the driver (this process, the only writer of the SQLite store) commits it at once. So ``--resume``,
  crash safety and "a failing cell never loses another" hold as with the local executor.
* A cell that raises is recorded failed by :func:`harness.sweep.unit.run_unit` itself: Ray never sees an
  exception and never retries it (``retry_exceptions=False``). A task whose *worker* died (killed,
  out of memory, node lost) is submitted again for its cells not yet committed, at most
  ``executor.max_retries`` times; after that its remaining cells are recorded failed. The driver does
  this retry rather than Ray (``max_retries=0`` on the task) because only the driver knows which
  cells were committed, so no cell is ever run or committed twice.
* Paths: ``cache_dir`` given in the config, the environment or on the command line is used as is
  (made absolute) on every node, i.e. a shared cache; otherwise each node caches under its own
  ``~/.cache/pq-harness``. ``data_root`` is made absolute and must hold the datasets on every node.

Ray is optional: it is imported only here, and a missing Ray is a one-line error naming the extra.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.measure.device_identity import node_facts
from harness.store.outcome import CellOutcome
from harness.sweep.executors.common import Commit, RunUnit, with_node
from harness.sweep.unit import UnitRunner

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import SweepConfig
    from harness.sweep.observer import Observer
    from harness.sweep.plan import Cell, Unit

RAY_EXTRA = "pip install 'pq-harness[ray]'"
NODE_CACHE = Path("~/.cache/pq-harness")

#: Called in the worker after each outcome of a unit is yielded (tests use it to kill a worker).
UnitHook = Callable[["Unit", "CellOutcome"], None]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise HarnessError(f"the ray executor needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class UnitResources:
    """What one unit's task asks Ray for."""

    num_cpus: float
    num_gpus: float


def unit_resources(unit: Unit, cpus_per_unit: int, backend_options: Mapping[str, Any] | None = None,
                   cluster_gpus: float = 0) -> UnitResources:
    """One whole GPU (and one core for its host side) for a unit with any cell that computes on CUDA;
    ``cpus_per_unit`` cores otherwise.

    Each backend says whether its cell uses CUDA (:meth:`Backend.uses_cuda`, with the sweep's
    ``backend_options``). A backend that decides from what it sees (torch fp32 without a device) gets a
    GPU when the cluster has any: without one Ray hides every GPU from the task, and torch would
    silently run on the CPU."""
    from backends import backend_class

    options = backend_options or {}
    for cell in unit.cells:
        uses = backend_class(cell.backend).uses_cuda(cell.precision, options.get(cell.backend))
        if uses or (uses is None and cluster_gpus > 0):
            return UnitResources(num_cpus=1, num_gpus=1)
    return UnitResources(num_cpus=cpus_per_unit, num_gpus=0)


def worker_config(config: SweepConfig) -> tuple[SweepConfig, bool]:
    """The config as workers get it: paths absolute; and whether each node uses its own cache
    (when no cache_dir was given)."""
    given = config.model_fields_set
    update: dict[str, Any] = {"data_root": Path(config.data_root).resolve(),
                              "out_dir": Path(config.out_dir).resolve()}
    if config.class_map is not None:
        update["class_map"] = Path(config.class_map).resolve()
    node_cache = "cache_dir" not in given
    if not node_cache:
        update["cache_dir"] = Path(config.cache_dir).resolve()
    return config.model_copy(update=update), node_cache


def run_unit_task(run_unit: UnitRunner, unit: Unit, node_cache: bool, hook: UnitHook | None
                  ) -> Iterator[CellOutcome]:
    """The body of a unit's Ray task (a generator: one outcome per cell, as each finishes)."""
    import ray

    if node_cache:
        run_unit = dataclasses.replace(
            run_unit, config=run_unit.config.model_copy(update={"cache_dir": NODE_CACHE.expanduser()}))
    context = ray.get_runtime_context()
    ray_facts = {"ray_node_id": context.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                 "worker_pid": os.getpid(), "unit_started_at": time.time()}
    for outcome in run_unit(unit):
        device = outcome.result.device if outcome.result is not None else None
        yield with_node(outcome, node_facts("ray", device, **ray_facts, cell_finished_at=time.time()))
        if hook is not None:
            hook(unit, outcome)


@dataclass
class _Running:
    unit: Unit
    attempt: int  # 0 for the first run
    remaining: dict[str, Cell] = field(default_factory=dict)  # cell key -> cell, not yet committed


class RayExecutor:
    """Runs the sweep's units as Ray tasks; the driver commits each outcome as it arrives.

    Connects to ``executor.address`` (``auto`` or ``HOST:PORT``), or starts a private local cluster
    when none is given, unless Ray is already initialised in this process (then that cluster is used
    and left running). ``resources`` (default :func:`unit_resources`) and ``hook`` are for tests."""

    def __init__(self, config: SweepConfig, observer: Observer, *,
                 resources: Callable[[Unit], UnitResources] | None = None, hook: UnitHook | None = None) -> None:
        self.config, self.observer, self.resources, self.hook = config, observer, resources, hook

    def run(self, units: Sequence[Unit], run_unit: RunUnit, commit: Commit) -> None:
        if not isinstance(run_unit, UnitRunner):
            raise HarnessError("the ray executor ships the unit function to its workers: pass a UnitRunner")
        ray = import_ray()
        settings = self.config.executor
        started_here = False
        if not ray.is_initialized():
            self.observer.status(f"connecting to Ray at {settings.address}" if settings.address
                                else "starting a local Ray")
            try:
                ray.init(address=settings.address or "local", include_dashboard=False, log_to_driver=False)
            except ConnectionError as exc:
                raise HarnessError(f"cannot connect to the Ray cluster at {settings.address}: {exc}") from None
            started_here = True
        try:
            self._drive(ray, list(units), run_unit, commit)
        finally:
            if started_here:
                ray.shutdown()

    def _drive(self, ray: Any, units: list[Unit], run_unit: UnitRunner, commit: Commit) -> None:
        config, observer, hook = self.config, self.observer, self.hook
        settings = config.executor
        shipped_config, node_cache = worker_config(config)
        # Workers get the config with absolute paths and no observer (they cannot reach this console).
        shipped = UnitRunner(shipped_config)
        task = ray.remote(run_unit_task)
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        need = self.resources or (
            lambda u: unit_resources(u, settings.cpus_per_unit, config.backend_options, cluster_gpus))

        def submit(unit: Unit, attempt: int, cells: dict[str, Cell]) -> None:
            want = need(unit)
            gen = task.options(num_returns="streaming", num_cpus=want.num_cpus, num_gpus=want.num_gpus,
                               max_retries=0, retry_exceptions=False).remote(shipped, unit, node_cache, hook)
            pending[gen] = _Running(unit, attempt, cells)

        def fail_remaining(run: _Running, exc: BaseException) -> None:
            for cell in run.remaining.values():
                commit(CellOutcome.failed(cell.identity(config), exc))
            run.remaining.clear()

        pending: dict[Any, _Running] = {}
        for unit in units:
            submit(unit, 0, {cell.identity(config).key: cell for cell in unit.cells})
        observer.status(f"{len(units)} units on Ray")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            gen = ready[0]
            run = pending.pop(gen)
            try:
                ref = next(gen)
            except StopIteration:
                if run.remaining:  # cannot happen with run_unit (one outcome per cell), but never lose a cell
                    fail_remaining(run, HarnessError("the unit's task ended without a result for this cell"))
                continue
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the task's own code raised outside run_unit's guards
                fail_remaining(run, exc)
                continue
            except ray.exceptions.RayError as exc:  # the worker or its node died
                if run.attempt < settings.max_retries:
                    observer.status(f"a worker died; running the {len(run.remaining)} remaining cells of "
                                   f"{run.unit.model} {run.unit.prune.label} again (retry {run.attempt + 1} of "
                                   f"{settings.max_retries})")
                    cells = tuple(run.remaining.values())
                    submit(dataclasses.replace(run.unit, cells=cells), run.attempt + 1, dict(run.remaining))
                else:
                    fail_remaining(run, HarnessError(
                        f"the Ray worker running this unit died {run.attempt + 1} times (executor.max_retries="
                        f"{settings.max_retries}): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"))
                continue
            if run.remaining.pop(outcome.key, None) is not None:  # a cell is committed once, whatever happens
                commit(outcome)
            pending[gen] = run
