"""One cell, measured and assembled: its timing windows, its per-layer profile pass, its notes, and
the :class:`~harness.store.outcome.CellResult` that holds them (``node`` is added by the executor that ran it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.names import QUANTIZED_PRECISIONS
from harness.measure.device_identity import device_name, lock_device_id
from harness.measure.locks import HeavyWork, heavy_work
from harness.store.outcome import CellResult, TimingWindow
from harness.sweep.cell_timing import time_session

if TYPE_CHECKING:  # pragma: no cover
    from backends.base import ModelArtifact, Session
    from harness.config import SweepConfig
    from harness.data.stream import StreamingEvalData
    from harness.models import LoadedModel
    from harness.sweep.observer import Observer


@dataclass(frozen=True)
class SessionAccuracy:
    """A session's accuracy pass: the stored ``accuracy`` mapping and the per-image predictions."""

    accuracy: dict[str, Any] | None = None
    predictions: dict[str, Any] | None = None
    note: str | None = None  # why accuracy is absent or partial (label mapping)


@dataclass(frozen=True)
class CellContext:
    """What every cell of one session shares."""

    config: SweepConfig
    observer: Observer
    session: Session
    artifact: ModelArtifact
    loaded: LoadedModel
    data: StreamingEvalData
    accuracy: SessionAccuracy
    prune_report: dict[str, Any] | None
    prep: dict[str, float]
    versions: dict[str, Any]
    commit: str | None


def measure_cell(cell: CellContext, batch_size: int, *, lock_dir: Path | None = None,
                 heavy: Sequence[HeavyWork] = ()) -> CellResult:
    """Time the cell on its own (one locked window per definition), then profile its layers in a
    separate pass, then assemble it. Units interleave their cells' windows instead
    (:mod:`harness.measure.interleave`) and call :func:`assemble_cell` with the windows they measured."""
    timings, device_report = time_session(cell.session, cell.data, batch_size, cell.config.timing,
                                          cell.config.device_checks, notice=cell.observer.notice, lock_dir=lock_dir)
    return assemble_cell(cell, batch_size, timings, device_report, lock_dir=lock_dir, heavy=heavy)


def assemble_cell(cell: CellContext, batch_size: int, timings: list[TimingWindow], device_report: dict[str, Any],
                  *, lock_dir: Path | None = None, heavy: Sequence[HeavyWork] = ()) -> CellResult:
    """The cell's result from its measured windows, after its per-layer profile pass (outside every
    window, holding the device shared). ``heavy``: the heavy work done for this cell outside its
    windows (load, prune, session build, accuracy pass), stored with the profile pass as the
    result's ``heavy_work`` intervals."""
    config, session, observer = cell.config, cell.session, cell.observer
    notes = cell_notes(cell.artifact, cell.loaded, session.info.precision)
    profile = None
    work = list(heavy)
    if config.profile_layers:
        observer.status(f"{session.info.backend} {session.info.precision} batch {batch_size}: per-layer profile")
        try:
            profile = layer_profile_pass(session, cell.data, batch_size, notice=observer.notice, lock_dir=lock_dir,
                                         record=work.append)
        except Exception as exc:  # noqa: BLE001 - the timing stands; the missing profile says why
            notes["layer_profile_error"] = f"{type(exc).__name__}: {exc}"
    info = session.info
    quantized = info.precision in QUANTIZED_PRECISIONS
    return CellResult(
        accuracy=cell.accuracy.accuracy,
        accuracy_note=cell.accuracy.note,
        timings=timings,
        original_size_bytes=cell.loaded.notes["state_dict_bytes"],
        compressed_size_bytes=info.artifact_bytes,
        pruning=cell.prune_report,
        prep_phases_s=cell.prep,
        prep_time_s=sum(v for k, v in cell.prep.items() if k != "load"),
        session={"backend": info.backend, "precision": info.precision, "device": info.device,
                 "details": info.details},
        device=info.device,
        device_name=device_name(info.device),
        device_report=device_report.get("report"),
        device_warnings=device_report.get("warnings", []),
        versions=cell.versions,
        harness_commit=cell.commit,
        timing_config=config.timing.model_dump(),
        artifact_notes=notes,
        layer_profile=profile,
        predictions=cell.accuracy.predictions,
        calibration=calibration_provenance(cell.artifact.calibration) if quantized else None,
        int8_precision=int8_precision(cell.artifact.calibration) if quantized else None,
        extra={"heavy_work": [w.to_dict() for w in work]} if work else {},
    )


def int8_precision(calibration: Any) -> dict[str, Any] | None:
    """An int8 variant's sensitivity table and the nodes its accuracy budget kept in FP32, per Q/DQ flavour
    (calib.accuracy_aware); None for plain INT8."""
    stored = getattr(calibration, "stored", None)
    return (stored() or None) if callable(stored) else None


def layer_profile_pass(session: Session, data: StreamingEvalData, batch_size: int, *,
                       notice: Callable[[str], None] | None = None, lock_dir: Path | None = None,
                       record: Callable[[HeavyWork], None] | None = None) -> dict[str, Any] | None:
    """The session's per-layer view at ``batch_size`` on a real batch, in its own pass holding the
    device shared (heavy work: it waits while another process's window is open, and a window waits
    for it). None when the backend has no profiler. Errors propagate (the caller records them)."""
    batch = data.timing_inputs(batch_size, 1)[0]
    with heavy_work(lock_device_id(session.device), f"per-layer profile b{batch_size}", lock_dir=lock_dir,
                    on_wait=notice) as work:
        try:
            return session.layer_profile(batch)
        finally:
            if record is not None:
                record(work)


def cell_notes(artifact: ModelArtifact, loaded: LoadedModel, precision: str) -> dict[str, Any]:
    """The artifact notes of a cell, with ``cache_rebuilt``: every damaged cache file its preparation
    rebuilt (tinycnn weights, the ONNX export, and for int8 the calibration artifacts), one line each;
    the rebuild time is in the cell's prep phases (load, export, calibrate)."""
    from calib import CalibrationData

    notes = dict(artifact.notes)
    rebuilt = [*loaded.notes.get("cache_rebuilt", []), *artifact.notes.get("cache_rebuilt", [])]
    calibration = getattr(artifact.calibration, "inner", artifact.calibration)  # an int8 variant wraps it
    if precision in QUANTIZED_PRECISIONS and isinstance(calibration, CalibrationData):
        # calib.provenance.load_if_matching's note for a damaged artifact ends "; rebuilding it" (a cached
        # sensitivity analysis: "; rebuilt it").
        rebuilt += [n for n in calibration.notes if n.endswith(("rebuilding it", "rebuilt it"))]
        # Which images calibrated it (paths relative to the dataset root; their hash is in the provenance).
        notes["calibration"] = {"provenance": calibration.provenance, "provenance_hash": calibration.provenance_hash,
                                "root": str(calibration.calibration_set.root),
                                "files": calibration.calibration_set.relative_paths()}
    if rebuilt:
        notes["cache_rebuilt"] = list(dict.fromkeys(rebuilt))
    return notes


def calibration_provenance(calibration: Any) -> dict[str, Any] | None:
    """The artifact's calibration provenance (None when calibration is absent or unavailable)."""
    if calibration is None:
        return None
    try:
        return dict(calibration.provenance)
    except Exception:  # noqa: BLE001 - UnavailableCalibration raises its setup error: the cell failed anyway
        return None
