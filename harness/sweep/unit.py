"""Running one unit (model x dataset x pruning step): load, prune, export, then each backend x
precision session and each of its cells. :func:`run_unit` yields one typed
:class:`~harness.store.outcome.CellOutcome` per cell, failures included, and never touches the store, so
any executor can run units anywhere (:mod:`harness.sweep.driver` commits what they yield)."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import backends
from backends.base import ModelArtifact, PhaseTimes, UnavailableCalibration
from backends.names import QUANTIZED_PRECISIONS
from harness.accuracy import LabelMapping
from harness.compression import apply_pruning, artifact_flags, needs_gradient_batches
from harness.compression.registry import NO_PRUNING
from harness.compression.sizes import measure_sizes, state_dict_bytes
from harness.compression.spec import PruneSpec
from harness.config import Int8Settings, SweepConfig
from harness.environment import harness_commit, library_versions
from harness.errors import HarnessError
from harness.machine import MachineFacts, probe_machine
from harness.measure.device_identity import lock_device_id
from harness.measure.interleave import MAX_SESSIONS, WindowSpec, measure_interleaved
from harness.measure.locks import HeavyWork, heavy_work
from harness.measure.timing import timer_for
from harness.onnx_export import export_onnx
from harness.store.fingerprint import model_content_hash
from harness.store.outcome import CellOutcome, CellResult
from harness.sweep.cell import CellContext, SessionAccuracy, assemble_cell, measure_cell
from harness.sweep.cell_timing import device_monitor, energy_meter, session_accuracy, window_entry
from harness.sweep.logs import captured_logs
from harness.sweep.observer import Observer, SweepObserver
from harness.sweep.plan import Cell, Unit

if TYPE_CHECKING:  # pragma: no cover
    from backends.base import Session
    from harness.data.stream import StreamingEvalData
    from harness.models import LoadedModel

#: Preparation phases reported with every cell (seconds; zero when a cache was reused).
PREP_PHASES: tuple[str, ...] = ("load", "prune", "export", "calibrate", "build")
#: Reported only by the cells whose step ran it (so other cells keep the phases they always had).
OPTIONAL_PREP_PHASES: tuple[str, ...] = ("recover",)


@dataclass
class _Inputs:
    """A model and its evaluation data, loaded once per model x dataset."""

    loaded: LoadedModel
    data: StreamingEvalData
    mapping: LabelMapping
    load_seconds: float


@dataclass
class UnitContext:
    """What units of one sweep share in one process: the config, the observer, and the last loaded
    model x dataset (units of the same model and dataset run one after another and reuse it)."""

    config: SweepConfig
    observer: Observer = field(default_factory=SweepObserver)
    versions: dict[str, Any] = field(default_factory=library_versions)
    commit: str | None = field(default_factory=harness_commit)
    facts: MachineFacts | None = None  # probed once, when the first session asks
    #: Heavy work done outside timing windows since the last unit took it (see :func:`run_unit`).
    heavy: list[HeavyWork] = field(default_factory=list)
    _inputs_key: tuple[str, str] | None = None
    _inputs: _Inputs | BaseException | None = None

    def captured(self, lines: list[str]) -> Any:
        """What libraries log while the block runs goes into ``lines``, not the console."""
        return captured_logs(lines)

    def machine(self) -> MachineFacts:
        if self.facts is None:
            self.facts = probe_machine()
        return self.facts

    @property
    def cache_dir(self) -> Path:
        return Path(self.config.cache_dir)

    @property
    def data_root(self) -> Path:
        return Path(self.config.data_root)

    def open_split(self, dataset: str, split: str) -> Any:
        from harness.data.registry import open_split

        return open_split(dataset, split, data_root=self.data_root, cache_dir=self.cache_dir,
                          size=self.config.dataset_size, class_map=self.config.class_map)

    def inputs(self, model: str, dataset: str) -> _Inputs:
        """The loaded model and data (a load failure is remembered and raised for each unit)."""
        if self._inputs_key != (model, dataset):
            self.observer.status(f"loading {model} and {dataset}")
            self._inputs_key = (model, dataset)
            try:
                # Loading can mean training (tinycnn on first use): heavy work on the CPU.
                with heavy_work("cpu", f"load {model} and {dataset}", on_wait=self.observer.notice) as work:
                    self._inputs = self._load(model, dataset)
                self.heavy.append(work)
            except Exception as exc:  # noqa: BLE001 - every cell of the model x dataset records it
                self._inputs = exc
        if isinstance(self._inputs, BaseException):
            raise self._inputs
        assert self._inputs is not None
        return self._inputs

    def _load(self, model: str, dataset: str) -> _Inputs:
        from harness.data.stream import StreamingEvalData
        from harness.models import load_model

        config = self.config
        phases = PhaseTimes()
        rebuilt: list[str] = []  # damaged cached weights retrained: the time is in "load"
        with phases.timed("load"):
            loaded = load_model(model, weights=config.weights, cache_dir=self.cache_dir,
                                data_root=self.data_root, on_rebuild=rebuilt.append)
            if rebuilt:
                loaded.notes["cache_rebuilt"] = rebuilt
            # Streamed in batches (bounded memory, whatever the split's size); decoded once per pass.
            data = StreamingEvalData.for_model(loaded, self.open_split(dataset, "val"),
                                               max_samples=config.max_eval_samples, num_workers=config.eval_workers,
                                               cache_dir=self.cache_dir if config.eval_cache else None)
            loaded.notes["state_dict_bytes"] = state_dict_bytes(loaded.module)  # serialised once, not per cell
        mapping = LabelMapping.for_model(loaded.label_space, loaded.num_outputs, data.num_classes,
                                         data.imagenet_indices)
        return _Inputs(loaded, data, mapping, phases.seconds["load"])


@dataclass(frozen=True)
class UnitRunner:
    """The unit function the driver hands to an executor: ``runner(unit)`` yields the unit's outcomes.
    One :class:`UnitContext` per process (made on first use), so a Ray worker builds its own."""

    config: SweepConfig
    observer: Observer | None = None
    facts: MachineFacts | None = None
    _context: list[UnitContext] = field(default_factory=list, compare=False, repr=False)

    def __call__(self, unit: Unit) -> Iterator[CellOutcome]:
        if not self._context:
            self._context.append(UnitContext(self.config, self.observer or SweepObserver(), facts=self.facts))
        return run_unit(unit, self._context[0])

    def __getstate__(self) -> dict[str, Any]:  # shipped to a worker without this process's context
        return {"config": self.config, "observer": None, "facts": None, "_context": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)


def run_unit(unit: Unit, context: UnitContext) -> Iterator[CellOutcome]:
    """Run one unit: prune, then build each backend x precision session (and its accuracy pass),
    then time the cells of the unit's sessions *interleaved* (:func:`_time_interleaved`), then
    profile and assemble each cell. Everything heavy outside the timing windows holds the device
    shared (:func:`harness.measure.locks.heavy_work`). Yields one outcome per cell of the unit (failures
    included); never touches the store."""
    config = context.config
    unit_log: list[str] = []  # what libraries logged for the whole unit: stored with each of its cells
    try:
        with context.captured(unit_log):
            inputs = context.inputs(unit.model, unit.dataset)
            step_phases = PhaseTimes()
            step_phases.add("load", inputs.load_seconds)
            context.observer.status(f"{unit.model}: pruning {unit.prune.label}")
            with heavy_work("cpu", f"prune {unit.prune.label}", on_wait=context.observer.notice) as pruning:
                module, prune_report = _prune(context, inputs.loaded, unit.dataset, unit.prune, step_phases)
            step_heavy = [pruning]
            if unit.recover is not None:  # every later stage (export, calibration, engines) sees the recovered model
                with heavy_work("cpu", f"recover {unit.prune.label}", on_wait=context.observer.notice) as recovering:
                    module, recovery = _recover(context, inputs, unit, module, step_phases)
                prune_report = {**(prune_report or {}), "recovery": recovery}
                step_heavy.append(recovering)
            artifact = _artifact(context, inputs.loaded, module, unit.dataset, step_phases,
                                 sparse_weights=artifact_flags(unit.prune).sparse_weights)
    except Exception as exc:  # noqa: BLE001 - recorded for every cell of the unit
        yield from _failed(unit.cells, exc, config)
        return
    unit_heavy = [*context.heavy, *step_heavy]
    context.heavy.clear()
    sessions: dict[tuple[str, str, Int8Settings | None], list[Cell]] = {}
    for cell in unit.cells:
        sessions.setdefault((cell.backend, cell.precision, cell.int8), []).append(cell)
    groups: dict[str, list[_Prepared]] = {}
    with ExitStack() as alive:
        for (backend_name, precision, variant), cells in sessions.items():
            session_log = list(unit_log)
            with context.captured(session_log):
                variant_artifact = _with_int8_variant(context, artifact, inputs, unit.dataset, variant)
                prepared, failures = _prepare_session(context, variant_artifact, inputs, backend_name, precision,
                                                      cells, prune_report, step_phases, alive, unit_heavy)
            if prepared is not None:
                prepared.log = session_log
            yield from failures
            if prepared is None:
                continue
            group = groups.setdefault(prepared.lock_device, [])
            group.append(prepared)
            if len(group) >= MAX_SESSIONS["cuda" if prepared.session.device == "cuda" else "cpu"]:
                yield from _time_and_close(context, unit, groups.pop(prepared.lock_device))
        for group in groups.values():
            yield from _time_and_close(context, unit, group)


def _recover(context: UnitContext, inputs: _Inputs, unit: Unit, module: torch.nn.Module,
             phases: PhaseTimes) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune the pruned model on the train split (accuracy before and after, on the evaluation split,
    is reporting); the time is the prep phase ``recover``."""
    from harness.sweep.recovery_step import recovery_step

    assert unit.recover is not None
    rebuilt = inputs.loaded.notes.setdefault("cache_rebuilt", [])
    return recovery_step(module, inputs.loaded, unit.prune.method, unit.recover,
                         train=context.open_split(unit.dataset, "train"), eval_data=inputs.data,
                         mapping=inputs.mapping, cache_dir=context.cache_dir, phases=phases,
                         stage=context.observer.status, on_rebuild=rebuilt.append)


def _with_int8_variant(context: UnitContext, artifact: ModelArtifact, inputs: _Inputs, dataset: str,
                       variant: Int8Settings | None) -> ModelArtifact:
    """The artifact as an int8 variant's sessions see it: its calibration source keeps the accuracy
    budget's nodes in FP32 (calib.accuracy_aware); plain INT8 and other precisions get it unchanged."""
    from calib import CalibrationData

    if variant is None or not isinstance(artifact.calibration, CalibrationData):
        return artifact
    from calib.accuracy_aware import AccuracyAwareCalibration
    from harness.sweep.recovery_step import label_map_for

    mode = artifact.int8_mode
    if variant.max_accuracy_drop is not None and mode == "auto":
        mode = "explicit"  # TensorRT keeps the chosen layers in FP32 only when it builds from the Q/DQ model
    try:
        train = context.open_split(dataset, "train")
        source: Any = AccuracyAwareCalibration(artifact.calibration, variant, train,
                                               label_map=label_map_for(inputs.loaded, train))
    except Exception as exc:  # noqa: BLE001 - only this variant's cells fail
        source = UnavailableCalibration(exc)
    return dataclasses.replace(artifact, calibration=source, int8_mode=mode)


@dataclass
class _Prepared:
    """A built session kept alive for its unit's interleaved timing, with its cells."""

    session: Session
    shared: CellContext
    cells: list[Cell]
    lock_device: str
    heavy: list[HeavyWork]
    closed: bool = False
    log: list[str] = field(default_factory=list)  # what libraries logged for this session (and its unit)

    def close(self) -> None:
        """Release the session once (after its group's block, or when the unit stops early)."""
        if not self.closed:
            self.closed = True
            self.session.close()


def _time_and_close(context: UnitContext, unit: Unit, group: list[_Prepared]) -> Iterator[CellOutcome]:
    """Time a group, then release its sessions at once: a unit holds at most one group's sessions
    (engines, execution contexts, device memory) besides the one being built, so a large model on a
    16 GB GPU never keeps every session of its unit alive, and later builds get their memory."""
    try:
        yield from _time_interleaved(context, unit, group)
    finally:
        for prepared in group:
            prepared.close()


def _prepare_session(context: UnitContext, artifact: ModelArtifact, inputs: _Inputs, backend_name: str,
                     precision: str, cells: list[Cell], prune_report: dict[str, Any] | None,
                     step_phases: PhaseTimes, alive: ExitStack,
                     unit_heavy: list[HeavyWork]) -> tuple[_Prepared | None, list[CellOutcome]]:
    """Build one session (export, calibration, engine build: heavy work) and run its accuracy pass
    (heavy work), keeping it open until its group is timed (``alive`` closes it if the unit stops
    first); or the failed outcomes of its cells."""
    config = context.config
    observer = context.observer
    observer.status(f"{artifact.name} {cells[0].prune.label}: {backend_name} {precision}: building session")
    try:
        cls = backends.validate_request(backend_name, precision, context.machine())
        # The device the session will compute on, as the backend itself says (torch decides fp32 by the GPU).
        uses_cuda = cls.uses_cuda(precision, config.backend_options.get(backend_name))
        if uses_cuda is None:
            uses_cuda = context.machine().torch_cuda_available
        lock = lock_device_id("cuda") if uses_cuda else "cpu"
        with heavy_work(lock, f"build {backend_name} {precision} session", on_wait=observer.notice) as build:
            backend = cls(config.backend_options.get(backend_name, {}))
            session = backend.activate(artifact, precision, tuple(c.batch_size for c in cells), context.cache_dir)
    except Exception as exc:  # noqa: BLE001
        return None, list(_failed(cells, exc, config))
    lock = lock_device_id(session.device)
    prep = prep_phases(step_phases.seconds, session.info.prep_phases)
    try:
        with heavy_work(lock, f"accuracy pass {backend_name} {precision}", on_wait=observer.notice) as acc:
            accuracy = _accuracy(context, session, max(c.batch_size for c in cells), inputs)
    except Exception as exc:  # noqa: BLE001 - the session cannot produce predictions: its cells fail
        session.close()
        return None, list(_failed(cells, exc, config))
    shared = CellContext(config=config, observer=observer, session=session, artifact=artifact,
                         loaded=inputs.loaded, data=inputs.data, accuracy=accuracy, prune_report=prune_report,
                         prep=prep, versions=context.versions, commit=context.commit)
    prepared = _Prepared(session, shared, cells, lock, [*unit_heavy, build, acc])
    alive.callback(prepared.close)  # closed with its group, or when the unit stops before that
    return prepared, []


def _unit_seed(unit: Unit) -> int:
    """The seed of a unit's round orders: fixed per unit, so a rerun shuffles alike."""
    return zlib.crc32(f"{unit.model}|{unit.dataset}|{unit.prune.label}".encode())


def _time_interleaved(context: UnitContext, unit: Unit, group: list[_Prepared]) -> Iterator[CellOutcome]:
    """Time every window (cell x timing definition) of the group's sessions in rounds (one repeat
    of each per round, shuffled per round), then profile and assemble each cell. A cell whose
    inputs cannot be staged fails alone; if the interleaved block itself fails (a session that
    breaks while timed), each cell is timed on its own instead, so one broken cell fails alone."""
    config, observer = context.config, context.observer
    settings = config.timing
    specs: list[WindowSpec] = []
    owners: list[tuple[_Prepared, Cell]] = []
    failed: list[CellOutcome] = []
    for prepared in group:
        session = prepared.session
        for cell in prepared.cells:
            try:
                with context.captured(prepared.log), \
                        heavy_work(prepared.lock_device, f"stage timing inputs b{cell.batch_size}") as staging:
                    host = prepared.shared.data.timing_inputs(cell.batch_size, settings.batches)
                    cell_specs = []
                    for definition in settings.definitions:
                        inputs, fn = ([session.stage(x) for x in host], session.run) if definition == "compute" \
                            else (host, session.infer)
                        cell_specs.append(WindowSpec(
                            key=(cell, definition), fn=fn, inputs=inputs, batch_size=cell.batch_size,
                            definition=definition, device=session.device, session=id(session),
                            timer=timer_for(session.device, definition, session.cuda_stream)))
            except Exception as exc:  # noqa: BLE001
                failed.append(CellOutcome.failed(cell.identity(config), exc))
                continue
            prepared.heavy.append(staging)
            specs.extend(cell_specs)
            owners.append((prepared, cell))
    yield from failed
    if not specs:
        return
    lock = group[0].lock_device
    observer.status(f"{unit.model} {unit.prune.label}: timing {len(owners)} cell(s), {len(specs)} windows "
                   f"interleaved in rounds")
    monitor = device_monitor(group[0].session.device, config.device_checks)
    block_log: list[str] = []
    try:
        with context.captured(block_log):
            records, block = measure_interleaved(specs, settings, lock_device=lock, seed=_unit_seed(unit),
                                                 notice=observer.notice, monitor=monitor,
                                                 meter=energy_meter(monitor))
    except Exception:  # noqa: BLE001 - find the broken cell: time each on its own
        for prepared, cell in owners:
            observer.status(f"{unit.model} {unit.prune.label}: {cell.backend} {cell.precision} "
                           f"batch {cell.batch_size}: timing")
            try:
                with context.captured(prepared.log):
                    result = measure_cell(prepared.shared, cell.batch_size, heavy=prepared.heavy)
            except Exception as exc:  # noqa: BLE001
                yield CellOutcome.failed(cell.identity(config), exc)
                continue
            yield CellOutcome.ok(cell.identity(config), _with_log(result, prepared.log))
        return
    for prepared in group:  # the block's lines concern every session timed in it
        prepared.log.extend(block_log)
    device_report: dict[str, Any] = {"warnings": []}
    warnings: list[str] = []
    if monitor.result is not None:
        # the block's clocks, throttling and other processes concern every window of it; energy is each
        # window's own (read around each of its repeats, harness.measure.energy)
        report = monitor.result.to_dict()
        warnings = list(report.get("warnings", []))
        device_report = {"report": {"interleaved block": report}, "warnings": warnings}
    by_cell: dict[int, list[Any]] = {}
    for spec, rec in zip(specs, records):
        cell, _ = spec.key
        entry = window_entry(rec.result, spec.device, window=block.window_dict(), host_load=block.host_load,
                             warnings=warnings, until=rec.until_stable, backend=cell.backend,
                             interleave=rec.interleave_dict(block))
        by_cell.setdefault(id(cell), []).append(entry)
    for prepared, cell in owners:
        try:
            with context.captured(prepared.log):
                result = assemble_cell(prepared.shared, cell.batch_size, by_cell[id(cell)], device_report,
                                       heavy=prepared.heavy)
        except Exception as exc:  # noqa: BLE001
            yield CellOutcome.failed(cell.identity(config), exc)
            continue
        yield CellOutcome.ok(cell.identity(config), _with_log(result, prepared.log))


def _with_log(result: CellResult, lines: list[str]) -> CellResult:
    """The cell's result with what libraries logged for it (``log``; absent when they said nothing)."""
    if not lines:
        return result
    return dataclasses.replace(result, extra={**result.extra, "log": list(lines)})


def _failed(cells: list[Cell] | tuple[Cell, ...], exc: BaseException, config: SweepConfig) -> Iterator[CellOutcome]:
    for cell in cells:
        yield CellOutcome.failed(cell.identity(config), exc)


def _prune(context: UnitContext, loaded: LoadedModel, dataset: str, spec: PruneSpec,
           phases: PhaseTimes) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """The pruned model and its report (with sizes); the unpruned step reports its sizes only."""
    if spec.method == NO_PRUNING:
        return loaded.module, {"sizes": measure_sizes(loaded.module).to_dict()}
    calib_batches = _gradient_batches(context, loaded, dataset) if needs_gradient_batches(spec) else None
    with phases.timed("prune"):
        module, report = apply_pruning(loaded.module, spec, example_input=torch.zeros(1, *loaded.input_shape),
                                       calib_batches=calib_batches)
    return module.eval(), {**report.to_dict(), "sizes": measure_sizes(module).to_dict()}


def _gradient_batches(context: UnitContext, loaded: LoadedModel,
                      dataset: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Calibration-split batches in the model's own label space (never the evaluation split)."""
    from calib.calibset import select_calibration_files

    settings = context.config.calibration
    train = context.open_split(dataset, "train")
    files = select_calibration_files(train.samples, count=min(64, settings.count), seed=settings.seed)
    images = torch.stack([loaded.transform(_rgb(p)) for p, _ in files])
    labels = torch.tensor([label for _, label in files])
    if loaded.label_space == "imagenet":
        if train.imagenet_indices is None:
            raise HarnessError(f"taylor importance needs labels in {loaded.name}'s ImageNet label space; "
                               f"{dataset} has no ImageNet index map (pass --class-map)")
        labels = torch.tensor(train.imagenet_indices)[labels]
    return [(images[i:i + 16], labels[i:i + 16]) for i in range(0, len(images), 16)]


def _artifact(context: UnitContext, loaded: LoadedModel, module: torch.nn.Module, dataset: str,
              phases: PhaseTimes, sparse_weights: bool) -> ModelArtifact:
    """The pruned model as backends receive it: the ONNX export is lazy, shared by every session of
    the step and timed here as ``export``; calibration is set up only when an int8 cell exists."""
    content = model_content_hash(module)
    notes: dict[str, Any] = {}

    def onnx() -> Path:
        if "onnx_export" not in notes:
            with phases.timed("export"):
                notes["onnx_export"] = export_onnx(
                    module, loaded.input_shape, content_hash=content, cache_dir=context.cache_dir, name=loaded.name,
                    on_rebuild=notes.setdefault("cache_rebuilt", []).append).to_dict()  # time counted in "export"
            if not notes["cache_rebuilt"]:
                del notes["cache_rebuilt"]
        return Path(notes["onnx_export"]["path"])

    # Sparse weights (a 2:4 pattern) are handed to TensorRT's sparse tactics (SPARSE_WEIGHTS / trt_sparsity_enable).
    int8_mode = context.config.int8_mode
    if context.config.calibration.tool == "modelopt" and int8_mode == "auto":
        int8_mode = "explicit"  # ModelOpt writes Q/DQ models: TensorRT builds from them, never its calibrator
    artifact = ModelArtifact(name=loaded.name, module=module, input_shape=loaded.input_shape,
                             num_outputs=loaded.num_outputs, content_hash=content, onnx=onnx,
                             int8_mode=int8_mode, sparse_weights=sparse_weights, notes=notes)
    if any(p in QUANTIZED_PRECISIONS for _, p in context.config.pairs()):
        try:
            artifact.calibration = _calibration(context, loaded, dataset, onnx)
        except Exception as exc:  # noqa: BLE001 - only the int8 cells fail; fp32/fp16 cells go on
            artifact.calibration = UnavailableCalibration(exc)
    return artifact


def _calibration(context: UnitContext, loaded: LoadedModel, dataset: str, onnx: Callable[[], Path]) -> Any:
    """Calibration images from the train split (never the evaluation split), built lazily."""
    from calib import CalibrationData, CalibrationSet

    settings = context.config.calibration
    calib_set = CalibrationSet.from_splits(context.open_split(dataset, "train"), context.open_split(dataset, "val"),
                                           count=settings.count, seed=settings.seed)
    return CalibrationData(onnx, calib_set, loaded.transform, settings.method, context.cache_dir, tool=settings.tool)


def prep_phases(step: dict[str, float], session: dict[str, float]) -> dict[str, float]:
    """Prep time of one session: the step's shared load/prune/export phases plus what this
    session's activation spent itself (its calibration and build; zero when a cache was reused)."""
    optional = [p for p in OPTIONAL_PREP_PHASES if p in step]
    names = [*PREP_PHASES, *optional, *(p for p in session if p not in PREP_PHASES and p not in optional)]
    return {p: step.get(p, 0.0) + session.get(p, 0.0) for p in names}


def _accuracy(context: UnitContext, session: Session, batch_size: int, inputs: _Inputs) -> SessionAccuracy:
    """Top-1 over the whole evaluation split, once per session, at the session's largest batch,
    and the top-1 prediction of every image (for agreement between cells)."""
    note = inputs.mapping.reason or None
    if not context.config.accuracy or inputs.mapping.kind == "none":
        return SessionAccuracy(note=note)
    context.observer.status(f"{session.info.backend} {session.info.precision}: accuracy")
    accuracy, predictions = session_accuracy(session, inputs.data, inputs.mapping, batch_size,
                                             context.observer.evaluated)
    # How the split was read (workers, uint8 pipeline, evaluation cache built or hit).
    accuracy["eval_data"] = dict(inputs.data.notes)
    published = published_check(context.config, inputs, accuracy)
    if published is not None:
        accuracy["published"] = published
    return SessionAccuracy(accuracy=accuracy, predictions=predictions, note=note)


def published_check(config: SweepConfig, inputs: _Inputs, accuracy: dict[str, Any]) -> dict[str, Any] | None:
    """On ImageNet-1k val with an ImageNet model, the accuracy torchvision publishes for the weights
    beside the measured 1000-way top-1/top-5 (flagged above 0.3 points); None elsewhere."""
    from harness.models import published_accuracy_check

    if inputs.data.split.name != "imagenet" or inputs.loaded.label_space != "imagenet":
        return None
    # The dataset maps every class to its ImageNet index, so the 1000-way figures are the published kind.
    return published_accuracy_check(inputs.loaded.name, config.weights, accuracy["top1_1000"],
                                    accuracy.get("top5_1000"), samples=accuracy["samples"])


def _rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")
