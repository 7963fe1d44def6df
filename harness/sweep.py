"""The sweep: config -> model + data -> compression -> backend session -> timing + accuracy -> rows.

The sweep knows backends only through ``backends.base``; it never touches
TensorRT or ONNX Runtime directly. Every cell is committed to the result store
as soon as it finishes; a failure is recorded with its traceback and the sweep
goes on with the next cell.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import backends
from backends.base import ModelArtifact, PhaseTimes, Session
from harness.accuracy import LabelMapping, evaluate
from harness.config import PrunerConfig, SweepConfig
from harness.environment import device_name, harness_commit, library_versions
from harness.errors import HarnessError
from harness.fingerprint import model_content_hash
from harness.models import LoadedModel, load_model
from harness.onnx_export import export_onnx
from harness.results import ResultStore, cell_key
from harness.sizes import state_dict_bytes
from harness.timing import TimingConfig, measure, timer_for


class SweepObserver:
    """Progress callbacks, silent by default (the CLI renders them; tests may record them)."""

    def stage(self, text: str) -> None:
        """What the sweep is doing now."""

    def evaluated(self, done: int, total: int) -> None:
        """Evaluation images scored so far in the current session."""

    def cell_done(self, identity: dict[str, Any], status: str, summary: dict[str, Any]) -> None:
        """A cell was committed to the store with ``status`` ok or error."""


@dataclass(frozen=True)
class PruneStep:
    method: str
    amount: float
    option_items: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.option_items)

    @property
    def label(self) -> str:
        return "none" if self.method == "none" else f"{self.method}@{self.amount:g}"


@dataclass(frozen=True)
class Cell:
    model: str
    dataset: str
    prune: PruneStep
    backend: str
    precision: str
    batch_size: int

    def identity(self, config: SweepConfig) -> dict[str, Any]:
        ident: dict[str, Any] = {
            "model": self.model, "weights": config.weights, "dataset": self.dataset,
            "dataset_size": config.dataset_size, "pruner": self.prune.method, "amount": self.prune.amount,
            "prune_options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.prune.option_items}, "backend": self.backend, "precision": self.precision,
            "batch_size": self.batch_size,
        }
        if self.precision == "int8":
            ident["calibration"] = config.calibration.model_dump()
        return ident


def prune_steps(pruners: list[PrunerConfig]) -> list[PruneStep]:
    """Every (method, amount) pair; amount 0 of any method is the unpruned base model, listed once."""
    steps: list[PruneStep] = [PruneStep("none", 0.0)]
    for p in pruners:
        if p.method == "none":
            continue
        options = (("dim", p.dim), ("importance", p.importance), ("n", p.n), ("round_to", p.round_to),
                   ("targets", tuple(p.targets)))
        steps.extend(PruneStep(p.method, a, options) for a in p.amounts if a > 0)
    return list(dict.fromkeys(steps))


def plan_cells(config: SweepConfig) -> list[Cell]:
    return [
        Cell(m, d, step, b, p, bs)
        for m in config.models
        for d in config.datasets
        for step in prune_steps(config.pruners)
        for b, p in config.pairs()
        for bs in config.batch_sizes
    ]


def preflight(config: SweepConfig) -> None:
    """Fail before any work on bad input: unknown models, missing datasets, and backend/precision
    pairs this machine cannot run."""
    from harness.data.registry import open_split
    from harness.models import check_model_name

    for name, precision in config.pairs():
        backends.validate_request(name, precision)
    for model in config.models:
        check_model_name(model, weights=config.weights)
    for dataset in config.datasets:
        open_split(dataset, "val", data_root=Path(config.data_root), cache_dir=Path(config.cache_dir),
                   size=config.dataset_size, class_map=config.class_map)


@dataclass
class EvalData:
    """The evaluation split preprocessed for one model, and full batches for timing."""

    batches_by_size: dict[int, list[tuple[torch.Tensor, torch.Tensor]]]
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    imagenet_indices: tuple[int, ...] | None

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.images), batch_size):
            yield self.images[start:start + batch_size], self.labels[start:start + batch_size]

    def timing_inputs(self, batch_size: int, count: int) -> list[torch.Tensor]:
        """Up to ``count`` distinct full batches of real images (cycled when the split is small)."""
        n = len(self.images)
        out = []
        for b in range(count):
            idx = torch.arange(b * batch_size, (b + 1) * batch_size) % n
            out.append(self.images[idx].contiguous())
            if (b + 1) * batch_size >= n:
                break
        return out


def load_eval_data(loaded: LoadedModel, split: Any, max_samples: int | None) -> EvalData:
    dataset = split.dataset(loaded.transform)
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=64,
                                         shuffle=False, num_workers=0)
    images, labels = [], []
    for x, y in loader:
        images.append(x)
        labels.append(y)
    return EvalData({}, torch.cat(images), torch.cat(labels), len(split.classes), split.imagenet_indices)


class SweepRunner:
    def __init__(self, config: SweepConfig, store: ResultStore, observer: SweepObserver | None = None) -> None:
        self.config = config
        self.store = store
        self.observer = observer or SweepObserver()
        self.cache_dir = Path(config.cache_dir)
        self.data_root = Path(config.data_root)
        self._versions = library_versions()
        self._commit = harness_commit()

    def run(self, *, resume: bool) -> dict[str, int]:
        counts = {"ok": 0, "error": 0, "skipped": 0}
        cells = plan_cells(self.config)
        todo = [c for c in cells if not (resume and self.store.finished_ok(cell_key(c.identity(self.config))))]
        counts["skipped"] = len(cells) - len(todo)
        groups: dict[tuple[str, str], list[Cell]] = {}
        for c in todo:
            groups.setdefault((c.model, c.dataset), []).append(c)
        for (model_name, dataset_name), group in groups.items():
            self._run_model_dataset(model_name, dataset_name, group, counts)
        return counts

    # -- one model on one dataset ------------------------------------------------------------
    def _run_model_dataset(self, model_name: str, dataset_name: str, cells: list[Cell],
                           counts: dict[str, int]) -> None:
        from harness.data.registry import open_split

        self.observer.stage(f"loading {model_name} and {dataset_name}")
        phases = PhaseTimes()
        try:
            with phases.timed("load"):
                loaded = load_model(model_name, weights=self.config.weights, cache_dir=self.cache_dir,
                                    data_root=self.data_root)
                split = open_split(dataset_name, "val", data_root=self.data_root, cache_dir=self.cache_dir,
                                   size=self.config.dataset_size, class_map=self.config.class_map)
                data = load_eval_data(loaded, split, self.config.max_eval_samples)
                loaded.notes["state_dict_bytes"] = state_dict_bytes(loaded.module)  # serialised once, not per cell
        except Exception as exc:  # recorded for every cell of the group
            self._fail_all(cells, exc, counts)
            return
        mapping = LabelMapping.for_model(loaded.label_space, loaded.num_outputs, data.num_classes,
                                         data.imagenet_indices)
        by_prune: dict[PruneStep, list[Cell]] = {}
        for c in cells:
            by_prune.setdefault(c.prune, []).append(c)
        for step, prune_cells in by_prune.items():
            self._run_pruned(loaded, dataset_name, step, prune_cells, data, mapping, phases, counts)

    def _run_pruned(self, loaded: LoadedModel, dataset_name: str, step: PruneStep, cells: list[Cell],
                    data: EvalData, mapping: LabelMapping, load_phases: PhaseTimes,
                    counts: dict[str, int]) -> None:
        phases = PhaseTimes()
        phases.seconds.update(load_phases.seconds)
        self.observer.stage(f"{loaded.name}: pruning {step.label}")
        try:
            module, prune_report = self._prune(loaded, dataset_name, step, phases)
            # A 2:4 pattern is handed to TensorRT's sparse tactics (SPARSE_WEIGHTS / trt_sparsity_enable).
            artifact = self._artifact(loaded, module, dataset_name, phases, sparse_weights=step.method == "2:4")
        except Exception as exc:
            self._fail_all(cells, exc, counts)
            return
        by_session: dict[tuple[str, str], list[Cell]] = {}
        for c in cells:
            by_session.setdefault((c.backend, c.precision), []).append(c)
        for (backend_name, precision), session_cells in by_session.items():
            self._run_session(artifact, loaded, backend_name, precision, session_cells, data, mapping,
                              prune_report, counts)

    def _prune(self, loaded: LoadedModel, dataset_name: str, step: PruneStep,
               phases: PhaseTimes) -> tuple[torch.nn.Module, dict[str, Any] | None]:
        from harness.compression import PruneSpec, apply_pruning
        from harness.compression.sizes import measure_sizes

        if step.method == "none":
            return loaded.module, {"sizes": measure_sizes(loaded.module).to_dict()}

        spec = PruneSpec(method=step.method, amount=step.amount, n=step.options["n"], dim=step.options["dim"],
                         importance=step.options["importance"], round_to=step.options["round_to"],
                         targets=tuple(step.options["targets"]))
        calib_batches = None
        if step.method == "removal" and step.options["importance"] == "taylor":
            calib_batches = self._gradient_batches(loaded, dataset_name)
        with phases.timed("prune"):
            module, report = apply_pruning(loaded.module, spec,
                                           example_input=torch.zeros(1, *loaded.input_shape),
                                           calib_batches=calib_batches)
        return module.eval(), {**report.to_dict(), "sizes": measure_sizes(module).to_dict()}

    def _gradient_batches(self, loaded: LoadedModel, dataset_name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Calibration-split batches in the model's own label space (never the evaluation split)."""
        from calib.calibset import select_calibration_files
        from harness.data.registry import open_split

        train = open_split(dataset_name, "train", data_root=self.data_root, cache_dir=self.cache_dir,
                           size=self.config.dataset_size, class_map=self.config.class_map)
        files = select_calibration_files(train.samples, count=min(64, self.config.calibration.count),
                                         seed=self.config.calibration.seed)
        images = torch.stack([loaded.transform(_rgb(p)) for p, _ in files])
        labels = torch.tensor([label for _, label in files])
        if loaded.label_space == "imagenet":
            if train.imagenet_indices is None:
                raise HarnessError(f"taylor importance needs labels in {loaded.name}'s ImageNet label space; "
                                   f"{dataset_name} has no ImageNet index map (pass --class-map)")
            labels = torch.tensor(train.imagenet_indices)[labels]
        return [(images[i:i + 16], labels[i:i + 16]) for i in range(0, len(images), 16)]

    def _artifact(self, loaded: LoadedModel, module: torch.nn.Module, dataset_name: str,
                  phases: PhaseTimes, sparse_weights: bool) -> ModelArtifact:
        content = model_content_hash(module)
        notes: dict[str, Any] = {}

        def onnx() -> Path:
            if "onnx_export" not in notes:
                with phases.timed("export"):
                    notes["onnx_export"] = export_onnx(module, loaded.input_shape, content_hash=content,
                                                       cache_dir=self.cache_dir, name=loaded.name).to_dict()
            return Path(notes["onnx_export"]["path"])

        artifact = ModelArtifact(name=loaded.name, module=module, input_shape=loaded.input_shape,
                                 num_outputs=loaded.num_outputs, content_hash=content, onnx=onnx, phases=phases,
                                 int8_mode=self.config.int8_mode, sparse_weights=sparse_weights, notes=notes)
        if any(p == "int8" for _, p in self.config.pairs()):
            try:
                artifact.calibration = self._calibration(loaded, dataset_name, onnx, phases)
            except Exception as exc:  # only the int8 cells fail; fp32/fp16 cells go on
                artifact.calibration = _UnavailableCalibration(exc)
        return artifact

    def _calibration(self, loaded: LoadedModel, dataset_name: str, onnx: Any, phases: PhaseTimes) -> Any:
        """Calibration images from the train split (never the evaluation split), built lazily."""
        from calib import CalibrationData, CalibrationSet
        from harness.data.registry import open_split

        def split(name: str) -> Any:
            return open_split(dataset_name, name, data_root=self.data_root, cache_dir=self.cache_dir,
                              size=self.config.dataset_size, class_map=self.config.class_map)

        settings = self.config.calibration
        calib_set = CalibrationSet.from_splits(split("train"), split("val"), count=settings.count, seed=settings.seed)
        return CalibrationData(onnx, calib_set, loaded.transform, settings.method, self.cache_dir, phases)

    # -- one backend session -----------------------------------------------------------------
    def _run_session(self, artifact: ModelArtifact, loaded: LoadedModel, backend_name: str, precision: str,
                     cells: list[Cell], data: EvalData, mapping: LabelMapping,
                     prune_report: dict[str, Any] | None, counts: dict[str, int]) -> None:
        self.observer.stage(f"{loaded.name} {cells[0].prune.label}: {backend_name} {precision}: building session")
        before = dict(artifact.phases.seconds)
        try:
            cls = backends.validate_request(backend_name, precision)
            backend = cls(self.config.backend_options.get(backend_name, {}))
            session = backend.activate(artifact, precision, tuple(c.batch_size for c in cells), self.cache_dir)
        except Exception as exc:
            self._fail_all(cells, exc, counts)
            return
        prep = session_prep_phases(artifact.phases.seconds, before)
        try:
            try:
                accuracy = self._accuracy(session, max(c.batch_size for c in cells), data, mapping)
            except Exception as exc:  # the session cannot produce predictions: its cells fail
                self._fail_all(cells, exc, counts)
                return
            for cell in cells:
                self._run_cell(cell, session, loaded, data, accuracy, mapping, prune_report, prep, counts,
                               artifact.notes)
        finally:
            session.close()

    def _accuracy(self, session: Session, batch_size: int, data: EvalData,
                  mapping: LabelMapping) -> dict[str, Any] | None:
        """Top-1 over the whole evaluation split, once per session, at the session's largest batch."""
        if not self.config.accuracy or mapping.kind == "none":
            return None
        self.observer.stage(f"{session.info.backend} {session.info.precision}: accuracy")
        seen = [0]

        def on_batch(n: int) -> None:
            seen[0] += n
            self.observer.evaluated(seen[0], len(data.images))

        result = evaluate(session.infer, data.eval_batches(batch_size), mapping, batch_size=batch_size,
                          on_batch=on_batch).to_dict()
        return {**result, "batch_size": batch_size}

    def _run_cell(self, cell: Cell, session: Session, loaded: LoadedModel, data: EvalData,
                  accuracy: dict[str, Any] | None, mapping: LabelMapping, prune_report: dict[str, Any] | None,
                  prep: dict[str, float], counts: dict[str, int], notes: dict[str, Any]) -> None:
        identity = cell.identity(self.config)
        key = cell_key(identity)
        self.observer.stage(f"{loaded.name} {cell.prune.label}: {cell.backend} {cell.precision} "
                            f"batch {cell.batch_size}: timing")
        try:
            timings, device_report = self._time(session, data, cell.batch_size)
            result: dict[str, Any] = {
                "accuracy": accuracy,
                "accuracy_note": mapping.reason or None,
                "timings": timings,
                "original_size_bytes": loaded.notes["state_dict_bytes"],
                "compressed_size_bytes": session.info.artifact_bytes,
                "pruning": prune_report,
                "prep_phases_s": prep,
                "prep_time_s": sum(v for k, v in prep.items() if k != "load"),
                "session": {"backend": session.info.backend, "precision": session.info.precision,
                            "device": session.info.device, "details": session.info.details},
                "device": session.info.device,
                "device_name": device_name(session.info.device),
                "device_report": device_report.get("report"),
                "device_warnings": device_report.get("warnings", []),
                "versions": self._versions,
                "harness_commit": self._commit,
                "timing_config": self.config.timing.model_dump(),
                "artifact_notes": dict(notes),
            }
        except Exception as exc:
            self._fail(cell, exc, counts)
            return
        self.store.put_ok(key, identity, result)
        counts["ok"] += 1
        summary = {"accuracy": (accuracy or {}).get("top1"),
                   **{t["definition"]: t["stats"]["median_ms"] for t in timings}}
        self.observer.cell_done(identity, "ok", summary)

    def _time(self, session: Session, data: EvalData, batch_size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        t = self.config.timing
        config = TimingConfig(warmup=t.warmup, iterations=t.iterations, repeats=t.repeats)
        host_batches = data.timing_inputs(batch_size, t.batches)
        out: list[dict[str, Any]] = []
        device_report: dict[str, Any] = {"warnings": []}
        for definition in t.definitions:
            if definition == "compute":
                inputs = [session.stage(x) for x in host_batches]
                fn = session.run
            else:
                inputs, fn = host_batches, session.infer
            timer = timer_for(session.device, definition, session.cuda_stream)
            with _device_monitor(session.device, self.config.device_checks) as monitor:
                result = measure(fn, inputs, batch_size=batch_size, config=config, definition=definition,
                                 timer=timer)
            entry = result.to_dict()
            if monitor.result is not None:
                report = monitor.result.to_dict()
                device_report.setdefault("report", {})[definition] = report
                device_report["warnings"].extend(report.get("warnings", []))
                images = batch_size * config.iterations * config.repeats
                energy = report.get("energy_mj")
                # The window includes warm-up iterations, so divide by every image that ran.
                if energy is not None:
                    entry["energy_mj_per_image"] = energy / (images + batch_size * config.warmup * config.repeats)
            out.append(entry)
        return out, device_report

    # -- failures ------------------------------------------------------------------------------
    def _fail(self, cell: Cell, exc: BaseException, counts: dict[str, int]) -> None:
        identity = cell.identity(self.config)
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, HarnessError) else str(exc)
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.store.put_error(cell_key(identity), identity, message, trace)
        counts["error"] += 1
        self.observer.cell_done(identity, "error", {"error": message})

    def _fail_all(self, cells: list[Cell], exc: BaseException, counts: dict[str, int]) -> None:
        for c in cells:
            self._fail(c, exc, counts)


class _UnavailableCalibration:
    """Stands in for calibration that could not be set up: raises its error when an int8 build asks."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error


def session_prep_phases(totals: dict[str, float], before_session: dict[str, float]) -> dict[str, float]:
    """Prep time of one session: the shared load/prune/export phases, plus the calibration and
    engine build that this session's activation spent (zero when a cache was reused)."""
    prep = {phase: totals.get(phase, 0.0) for phase in ("load", "prune", "export")}
    for phase in ("calibrate", "build"):
        prep[phase] = totals.get(phase, 0.0) - before_session.get(phase, 0.0)
    return prep


class _NoMonitor:
    result = None

    def __enter__(self) -> _NoMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _device_monitor(device: str, enabled: bool) -> Any:
    if device != "cuda" or not enabled:
        return _NoMonitor()
    from harness.gpu.nvml import DeviceMonitor, nvml_available, nvml_device_for_torch

    if nvml_available() is not None:
        return _NoMonitor()
    return DeviceMonitor(nvml_device_for_torch(torch.cuda.current_device()))


def _rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")
