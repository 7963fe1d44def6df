"""The sweep: config -> units -> cell outcomes -> result store.

* :func:`plan_units` splits a config into :class:`Unit` values: one model x dataset x pruning step,
  with the cells (backend x precision x batch size) that share its pruned model.
* :func:`run_unit` runs one unit and yields a typed :class:`~harness.outcome.CellOutcome` per cell;
  it never touches the store, so another executor (e.g. a distributed one) can run units anywhere.
* :func:`run_sweep` hands the units to an executor (:mod:`harness.executors`: local, the default, or
  ray); either way each outcome is committed to the store by this process as soon as it arrives, so a
  crash loses at most the running cells, ``--resume`` skips cells already ``ok``, and a failing cell
  never loses another (it is recorded with its traceback).

The sweep knows backends only through ``backends``; it never touches TensorRT or ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import backends
from backends.base import ModelArtifact, PhaseTimes, Session, UnavailableCalibration
from harness.accuracy import LabelMapping
from harness.cell_timing import build_cell_result, calibration_provenance, layer_profile, session_accuracy, time_session
from harness.compression.spec import PruneSpec
from harness.compression.recovery import RecoverOptions
from harness.config import Int8Settings, SweepConfig, prune_steps
from harness.environment import harness_commit, library_versions
from harness.errors import HarnessError
from harness.fingerprint import model_content_hash
from harness.onnx_export import export_onnx
from harness.outcome import CellIdentity, CellOutcome, CellResult
from harness.sizes import state_dict_bytes

if TYPE_CHECKING:  # pragma: no cover
    from harness.data.stream import StreamingEvalData
    from harness.machine import MachineFacts
    from harness.models import LoadedModel
    from harness.results import ResultStore

#: Preparation phases reported with every cell (seconds; zero when a cache was reused).
PREP_PHASES: tuple[str, ...] = ("load", "prune", "export", "calibrate", "build")
#: Reported only by the cells whose step ran it (so other cells keep the phases they always had).
OPTIONAL_PREP_PHASES: tuple[str, ...] = ("recover",)


class SweepObserver:
    """Progress callbacks, silent by default (the CLI renders them; tests may record them)."""

    def planned(self, cells: int, skipped: int) -> None:
        """The sweep has ``cells`` cells, ``skipped`` of them finished before (--resume)."""

    def stage(self, text: str) -> None:
        """What the sweep is doing now."""

    def notice(self, text: str) -> None:
        """Something the user should see at once (e.g. waiting for another process's timing window)."""
        self.stage(text)

    def evaluated(self, done: int, total: int) -> None:
        """Evaluation images scored so far in the current session."""

    def cell_done(self, outcome: CellOutcome) -> None:
        """A cell was committed to the store (``outcome.status`` is ok or error)."""


# ---------------------------------------------------------------------------------- planning


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
            pruner=self.prune.method, amount=self.prune.amount, prune_options=_prune_options(self.prune),
            backend=self.backend, precision=self.precision, batch_size=self.batch_size,
            calibration=config.calibration.model_dump() if self.precision == "int8" else None,
            recover=None if self.recover is None else self.recover.identity(),
            int8=None if self.int8 is None else self.int8.identity(),
        )


def _prune_options(spec: PruneSpec) -> dict[str, Any]:
    if spec.method == "none":
        return {}
    return {"dim": spec.dim, "importance": spec.importance, "n": spec.n, "round_to": spec.round_to,
            "targets": list(spec.targets)}


@dataclass(frozen=True)
class Unit:
    """One model x dataset x pruning step and its cells: the piece of work an executor runs."""

    model: str
    dataset: str
    prune: PruneSpec
    cells: tuple[Cell, ...]
    recover: RecoverOptions | None = None


def _int8_variants(config: SweepConfig, precision: str) -> list[Int8Settings | None]:
    """Plain INT8 is None (today's cells); other variants are their own cells. Non-int8: one cell."""
    if precision != "int8":
        return [None]
    return list(dict.fromkeys(None if v.plain else v for v in config.int8))


def plan_cells(config: SweepConfig) -> list[Cell]:
    return [
        Cell(m, d, spec, b, p, bs, recover, variant)
        for m in config.models
        for d in config.datasets
        for spec, recover in prune_steps(config.pruners)
        for b, p in config.pairs()
        for variant in _int8_variants(config, p)
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


def preflight(config: SweepConfig, facts: MachineFacts | None = None) -> None:
    """Fail before any work on bad input: unknown models, missing datasets, and backend/precision
    pairs this machine cannot run (the machine is probed once)."""
    from harness.data.registry import open_split
    from harness.machine import probe_machine
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


# ---------------------------------------------------------------------------------- running one unit


@dataclass
class _Inputs:
    """A model and its evaluation data, loaded once per model x dataset."""

    loaded: LoadedModel
    data: StreamingEvalData
    mapping: LabelMapping
    load_seconds: float


@dataclass
class UnitContext:
    """What units of one sweep share: the config, the observer, and the last loaded model x dataset
    (units of the same model and dataset run one after another and reuse it)."""

    config: SweepConfig
    observer: SweepObserver = field(default_factory=SweepObserver)
    versions: dict[str, Any] = field(default_factory=library_versions)
    commit: str | None = field(default_factory=harness_commit)
    facts: MachineFacts | None = None  # probed once, when the first session asks
    _inputs_key: tuple[str, str] | None = None
    _inputs: _Inputs | BaseException | None = None

    def machine(self) -> MachineFacts:
        if self.facts is None:
            from harness.machine import probe_machine

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
            self.observer.stage(f"loading {model} and {dataset}")
            self._inputs_key = (model, dataset)
            try:
                self._inputs = self._load(model, dataset)
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


def run_unit(unit: Unit, context: UnitContext) -> Iterator[CellOutcome]:
    """Run one unit: prune, then each backend x precision session, then each cell's timing.
    Yields one outcome per cell of the unit (failures included); never touches the store."""
    config = context.config
    try:
        inputs = context.inputs(unit.model, unit.dataset)
        step_phases = PhaseTimes()
        step_phases.add("load", inputs.load_seconds)
        context.observer.stage(f"{unit.model}: pruning {unit.prune.label}")
        module, prune_report = _prune(context, inputs.loaded, unit.dataset, unit.prune, step_phases)
        if unit.recover is not None:  # every later stage (export, calibration, engines) sees the recovered model
            module, recovery = _recover(context, inputs, unit, module, step_phases)
            prune_report = {**(prune_report or {}), "recovery": recovery}
        artifact = _artifact(context, inputs.loaded, module, unit.dataset, step_phases,
                             sparse_weights=unit.prune.method == "2:4")
    except Exception as exc:  # noqa: BLE001 - recorded for every cell of the unit
        yield from _failed(unit.cells, exc, config)
        return
    sessions: dict[tuple[str, str, Int8Settings | None], list[Cell]] = {}
    for cell in unit.cells:
        sessions.setdefault((cell.backend, cell.precision, cell.int8), []).append(cell)
    for (backend_name, precision, variant), cells in sessions.items():
        yield from _run_session(context, _with_int8_variant(context, artifact, inputs, unit.dataset, variant),
                                inputs, backend_name, precision, cells, prune_report, step_phases)


def _recover(context: UnitContext, inputs: _Inputs, unit: Unit, module: torch.nn.Module,
             phases: PhaseTimes) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune the pruned model on the train split (accuracy before and after, on the evaluation split,
    is reporting); the time is the prep phase ``recover``."""
    from harness.recovery_step import recovery_step

    assert unit.recover is not None
    rebuilt = inputs.loaded.notes.setdefault("cache_rebuilt", [])
    return recovery_step(module, inputs.loaded, unit.prune.method, unit.recover,
                         train=context.open_split(unit.dataset, "train"), eval_data=inputs.data,
                         mapping=inputs.mapping, cache_dir=context.cache_dir, phases=phases,
                         stage=context.observer.stage, on_rebuild=rebuilt.append)


def _with_int8_variant(context: UnitContext, artifact: ModelArtifact, inputs: _Inputs, dataset: str,
                       variant: Int8Settings | None) -> ModelArtifact:
    """The artifact as an int8 variant's sessions see it: its calibration source keeps the accuracy
    budget's nodes in FP32 (calib.accuracy_aware); plain INT8 and other precisions get it unchanged."""
    from calib import CalibrationData

    if variant is None or not isinstance(artifact.calibration, CalibrationData):
        return artifact
    from calib.accuracy_aware import AccuracyAwareCalibration
    from harness.recovery_step import label_map_for

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


def _failed(cells: list[Cell] | tuple[Cell, ...], exc: BaseException, config: SweepConfig) -> Iterator[CellOutcome]:
    for cell in cells:
        yield CellOutcome.failed(cell.identity(config), exc)


def _prune(context: UnitContext, loaded: LoadedModel, dataset: str, spec: PruneSpec,
           phases: PhaseTimes) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    from harness.compression import apply_pruning
    from harness.compression.sizes import measure_sizes

    if spec.method == "none":
        return loaded.module, {"sizes": measure_sizes(loaded.module).to_dict()}
    calib_batches = None
    if spec.method == "removal" and spec.importance == "taylor":
        calib_batches = _gradient_batches(context, loaded, dataset)
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

    # A 2:4 pattern is handed to TensorRT's sparse tactics (SPARSE_WEIGHTS / trt_sparsity_enable).
    artifact = ModelArtifact(name=loaded.name, module=module, input_shape=loaded.input_shape,
                             num_outputs=loaded.num_outputs, content_hash=content, onnx=onnx,
                             int8_mode=context.config.int8_mode, sparse_weights=sparse_weights, notes=notes)
    if any(p == "int8" for _, p in context.config.pairs()):
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
    return CalibrationData(onnx, calib_set, loaded.transform, settings.method, context.cache_dir)


def _run_session(context: UnitContext, artifact: ModelArtifact, inputs: _Inputs, backend_name: str,
                 precision: str, cells: list[Cell], prune_report: dict[str, Any] | None,
                 step_phases: PhaseTimes) -> Iterator[CellOutcome]:
    config = context.config
    context.observer.stage(f"{artifact.name} {cells[0].prune.label}: {backend_name} {precision}: building session")
    try:
        cls = backends.validate_request(backend_name, precision, context.machine())
        backend = cls(config.backend_options.get(backend_name, {}))
        session = backend.activate(artifact, precision, tuple(c.batch_size for c in cells), context.cache_dir)
    except Exception as exc:  # noqa: BLE001
        yield from _failed(cells, exc, config)
        return
    try:
        prep = prep_phases(step_phases.seconds, session.info.prep_phases)
        try:
            accuracy = _accuracy(context, session, max(c.batch_size for c in cells), inputs)
        except Exception as exc:  # noqa: BLE001 - the session cannot produce predictions: its cells fail
            yield from _failed(cells, exc, config)
            return
        for cell in cells:
            identity = cell.identity(config)
            context.observer.stage(f"{artifact.name} {cell.prune.label}: {cell.backend} {cell.precision} "
                                   f"batch {cell.batch_size}: timing")
            try:
                result = _cell_result(context, session, inputs, cell.batch_size, accuracy, prune_report, prep,
                                      artifact)
            except Exception as exc:  # noqa: BLE001
                yield CellOutcome.failed(identity, exc)
                continue
            yield CellOutcome.ok(identity, result)
    finally:
        session.close()


def cell_notes(artifact: ModelArtifact, loaded: LoadedModel, precision: str) -> dict[str, Any]:
    """The artifact notes of a cell, with ``cache_rebuilt``: every damaged cache file its preparation
    rebuilt (tinycnn weights, the ONNX export, and for int8 the calibration artifacts), one line each;
    the rebuild time is in the cell's prep phases (load, export, calibrate)."""
    notes = dict(artifact.notes)
    rebuilt = [*loaded.notes.get("cache_rebuilt", []), *artifact.notes.get("cache_rebuilt", [])]
    from calib import CalibrationData

    calibration = getattr(artifact.calibration, "inner", artifact.calibration)  # an int8 variant wraps it
    if precision == "int8" and isinstance(calibration, CalibrationData):
        # calib.provenance.load_if_matching's note for a damaged artifact ends "; rebuilding it".
        rebuilt += [n for n in calibration.notes if n.endswith("rebuilding it")]
        # Which images calibrated it (paths relative to the dataset root; their hash is in the provenance).
        notes["calibration"] = {"provenance": calibration.provenance, "provenance_hash": calibration.provenance_hash,
                                "root": str(calibration.calibration_set.root),
                                "files": calibration.calibration_set.relative_paths()}
    if rebuilt:
        notes["cache_rebuilt"] = list(dict.fromkeys(rebuilt))
    return notes


def prep_phases(step: dict[str, float], session: dict[str, float]) -> dict[str, float]:
    """Prep time of one session: the step's shared load/prune/export phases plus what this
    session's activation spent itself (its calibration and build; zero when a cache was reused)."""
    optional = [p for p in OPTIONAL_PREP_PHASES if p in step]
    names = [*PREP_PHASES, *optional, *(p for p in session if p not in PREP_PHASES and p not in optional)]
    return {p: step.get(p, 0.0) + session.get(p, 0.0) for p in names}


def _notice(observer: Any) -> Callable[[str], None]:
    """Where lock-wait messages go: the observer's ``notice`` (printed by the CLI), else its ``stage``."""
    return getattr(observer, "notice", None) or observer.stage


def _accuracy(context: UnitContext, session: Session, batch_size: int,
              inputs: _Inputs) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Top-1 over the whole evaluation split, once per session, at the session's largest batch,
    and the top-1 prediction of every image (for agreement between cells)."""
    if not context.config.accuracy or inputs.mapping.kind == "none":
        return None, None
    context.observer.stage(f"{session.info.backend} {session.info.precision}: accuracy")
    accuracy, predictions = session_accuracy(session, inputs.data, inputs.mapping, batch_size,
                                             context.observer.evaluated)
    # How the split was read (workers, uint8 pipeline, evaluation cache built or hit).
    accuracy["eval_data"] = dict(inputs.data.notes)
    published = published_check(context.config, inputs, accuracy)
    if published is not None:
        accuracy["published"] = published
    return accuracy, predictions


def published_check(config: SweepConfig, inputs: _Inputs, accuracy: dict[str, Any]) -> dict[str, Any] | None:
    """On ImageNet-1k val with an ImageNet model, the accuracy torchvision publishes for the weights
    beside the measured 1000-way top-1/top-5 (flagged above 0.3 points); None elsewhere."""
    from harness.models import published_accuracy_check

    if inputs.data.split.name != "imagenet" or inputs.loaded.label_space != "imagenet":
        return None
    # The dataset maps every class to its ImageNet index, so the 1000-way figures are the published kind.
    return published_accuracy_check(inputs.loaded.name, config.weights, accuracy["top1_1000"],
                                    accuracy.get("top5_1000"), samples=accuracy["samples"])


def _cell_result(context: UnitContext, session: Session, inputs: _Inputs, batch_size: int,
                 accuracy: tuple[dict[str, Any] | None, dict[str, Any] | None], prune_report: dict[str, Any] | None,
                 prep: dict[str, float], artifact: ModelArtifact) -> CellResult:
    """Time the cell (locked windows), then profile its layers in a separate pass."""
    config = context.config
    notice = _notice(context.observer)
    timings, device_report = time_session(session, inputs.data, batch_size, config.timing, config.device_checks,
                                          notice=notice)
    profile = None
    notes = cell_notes(artifact, inputs.loaded, session.info.precision)
    if config.profile_layers:
        context.observer.stage(f"{session.info.backend} {session.info.precision} batch {batch_size}: "
                               "per-layer profile")
        try:
            profile = layer_profile(session, inputs.data, batch_size, notice=notice)
        except Exception as exc:  # noqa: BLE001 - the timing stands; the missing profile says why
            notes["layer_profile_error"] = f"{type(exc).__name__}: {exc}"
    result = build_cell_result(
        session=session, timings=timings, device_report=device_report, accuracy=accuracy[0],
        accuracy_note=inputs.mapping.reason or None, original_size_bytes=inputs.loaded.notes["state_dict_bytes"],
        prune_report=prune_report, prep=prep, notes=notes, versions=context.versions, commit=context.commit,
        timing_config=config.timing.model_dump(), predictions=accuracy[1], layer_profile=profile,
        calibration=calibration_provenance(artifact.calibration) if session.info.precision == "int8" else None,
    )
    stored = getattr(artifact.calibration, "stored", None)  # an int8 variant's sensitivity and FP32 nodes
    if session.info.precision == "int8" and callable(stored) and stored():
        result = dataclasses.replace(result, int8_precision=stored())
    return result


def _rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


# ---------------------------------------------------------------------------------- executors


def run_sweep(config: SweepConfig, store: ResultStore, observer: SweepObserver | None = None, *,
              resume: bool, facts: MachineFacts | None = None) -> dict[str, int]:
    """Run every unit with the executor the config names (``executor.kind``: local by default, or
    ray), committing each cell's outcome here as soon as it arrives; returns ok/error/skipped counts."""
    from harness.executors import run_units

    return run_units(config, store, observer or SweepObserver(), resume=resume, facts=facts)


class SweepRunner:
    """The entry point the CLI and tests use (the executor comes from the config)."""

    def __init__(self, config: SweepConfig, store: ResultStore, observer: SweepObserver | None = None) -> None:
        self.config, self.store, self.observer = config, store, observer

    def run(self, *, resume: bool) -> dict[str, int]:
        return run_sweep(self.config, self.store, self.observer, resume=resume)
