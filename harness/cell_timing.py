"""The measurement of one cell: accuracy pass, timing windows, statistics, per-layer profile.

Each timing definition of a cell is one *window*:

* the process holds the device's exclusive lock (:class:`harness.locks.DeviceLock`, on "cpu" or the
  GPU's UUID), so two harness processes on one machine never time at the same time; a process that
  has to wait says so through ``notice``;
* host load is sampled during the window (:class:`harness.hostload.HostLoadSampler`);
* ``compute`` times ``session.run`` on batches staged before the window (already where the backend
  computes); ``e2e`` times ``session.infer`` on host tensors (host in, host logits out);
* the window's start and end (epoch seconds) are stored with it.

Statistics (the bootstrap CI of the median and the stability verdict) are computed after the lock is
released. With ``timing.until_stable`` set, repeats are added one at a time until the CI half-width is
within the target or the time budget is spent (``stats.measure_until_stable``).

The per-layer profile (ONNX Runtime's profiler, or TensorRT's IProfiler through
``session.layer_profile``) runs in a separate pass after the cell's windows, never inside them; it
holds the device lock too, so it never disturbs another process's window.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness import stats
from harness.accuracy import evaluate
from harness.environment import device_name
from harness.hostload import HostLoadSampler
from harness.locks import DeviceLock
from harness.outcome import PREDICTIONS_ENCODING, CellResult, encode_predictions  # noqa: F401 - re-exported
from harness.timing import TimingResult, TimingSettings, measure, timer_for

if TYPE_CHECKING:  # pragma: no cover
    from backends.base import Session
    from harness.data.stream import StreamingEvalData as EvalData

Notice = Callable[[str], None]

#: How many layers of a profile are stored per cell (largest first); by_op_type is always complete.
PROFILE_TOP_LAYERS = 50


# ---------------------------------------------------------------------------------- devices


def lock_device_id(device: str) -> str:
    """The lock name of a session's device: "cpu", or the current GPU's UUID (its name if torch
    reports no UUID): indices differ between processes with different CUDA_VISIBLE_DEVICES."""
    if device != "cuda":
        return "cpu"
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    uuid = getattr(props, "uuid", None)  # torch >= 2.2 has it; older builds do not
    if uuid:
        text = str(uuid)
        return text if text.startswith("GPU-") else f"GPU-{text}"
    return props.name


def node_facts(device: str, executor: str = "local") -> dict[str, Any]:
    """Where a cell ran (``node`` of the result)."""
    gpu_name = gpu_uuid = None
    if device == "cuda":
        gpu_name = torch.cuda.get_device_name(torch.cuda.current_device())
        gpu_uuid = lock_device_id(device)
    return {"hostname": socket.gethostname(), "gpu_name": gpu_name, "gpu_uuid": gpu_uuid, "executor": executor}


# ---------------------------------------------------------------------------------- one window


@dataclass
class Window:
    """Bookkeeping of one timing window."""

    start: float
    end: float
    lock_device: str
    lock_waited_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "lock_device": self.lock_device,
                "lock_waited_s": self.lock_waited_s}


def _measure(fn: Callable[[Any], Any], inputs: Sequence[Any], batch_size: int, settings: TimingSettings,
             definition: str, timer: Any) -> tuple[TimingResult, stats.UntilStable | None]:
    """The timed loop: fixed repeats, or repeats until the median's CI is tight enough."""
    target = settings.until_stable
    if target is None:
        return measure(fn, inputs, batch_size=batch_size, config=settings, definition=definition,
                       timer=timer), None
    one = settings.model_copy(update={"repeats": 1})

    def run_repeat() -> list[int]:
        return measure(fn, inputs, batch_size=batch_size, config=one, definition=definition,
                       timer=timer).repeats_ns[0]

    until = stats.measure_until_stable(run_repeat, target.target_ci_pct, target.max_seconds,
                                       min_repeats=settings.repeats, batch_size=batch_size)
    result = TimingResult(definition=definition, timer=timer.name, batch_size=batch_size,
                          config=settings.model_copy(update={"repeats": until.repeats}),
                          repeats_ns=until.repeats_ns)
    return result, until


def time_session(session: Session, data: EvalData, batch_size: int, settings: TimingSettings,
                 device_checks: bool, *, notice: Notice | None = None,
                 lock_dir: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each timing definition of ``settings`` on real full batches, one locked window each, with
    its CI, stability verdict, window timestamps and host load; NVML device checks on CUDA."""
    host_batches = data.timing_inputs(batch_size, settings.batches)
    lock_device = lock_device_id(session.device)
    out: list[dict[str, Any]] = []
    device_report: dict[str, Any] = {"warnings": []}
    for definition in settings.definitions:
        if definition == "compute":
            inputs = [session.stage(x) for x in host_batches]  # staged before the window: not timed
            fn = session.run
        else:
            inputs, fn = host_batches, session.infer
        timer = timer_for(session.device, definition, session.cuda_stream)
        with DeviceLock(lock_device, lock_dir=lock_dir, on_wait=notice) as lock:
            with HostLoadSampler() as sampler, _device_monitor(session.device, device_checks) as monitor:
                start = time.time()
                result, until = _measure(fn, inputs, batch_size, settings, definition, timer)
                end = time.time()
            window = Window(start, end, lock_device, lock.waited_s)
        entry = result.to_dict()
        warnings: list[str] = []
        if monitor.result is not None:
            report = monitor.result.to_dict()
            device_report.setdefault("report", {})[definition] = report
            warnings = list(report.get("warnings", []))
            device_report["warnings"].extend(warnings)
            repeats = len(result.repeats_ns)
            energy = report.get("energy_mj")
            # The window includes warm-up iterations, so divide by every image that ran.
            if energy is not None:
                images = batch_size * (settings.iterations + settings.warmup) * repeats
                entry["energy_mj_per_image"] = energy / images
        load = sampler.result
        ci = stats.median_ci(result.repeats_ns, batch_size=batch_size)
        verdict = stats.assess_stability(result.repeats_ns, session.device, ci, device_warnings=warnings,
                                         host_load=load)
        entry.update(ci=ci.to_dict(), stability=verdict.to_dict(), window=window.to_dict(),
                     host_load=None if load is None else load.to_dict(),
                     until_stable=None if until is None else until.to_dict())
        out.append(entry)
    return out, device_report


class _NoMonitor:
    result = None

    def __enter__(self) -> _NoMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _device_monitor(device: str, enabled: bool) -> Any:
    if device != "cuda" or not enabled:
        return _NoMonitor()
    from harness.gpu.nvml_monitor import DeviceMonitor
    from harness.gpu.nvml_query import nvml_unavailable_reason

    if nvml_unavailable_reason() is not None:
        return _NoMonitor()
    return DeviceMonitor.for_torch_device(torch.cuda.current_device())


# ---------------------------------------------------------------------------------- accuracy + predictions


def session_accuracy(session: Session, data: EvalData, mapping: Any, batch_size: int,
                     on_evaluated: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Top-1 over the whole evaluation split at ``batch_size``, and the top-1 predicted output index
    of every image in split order (for agreement between two cells)."""
    seen = [0]
    predicted: list[np.ndarray] = []

    def on_batch(n: int) -> None:
        seen[0] += n
        if on_evaluated is not None:
            on_evaluated(seen[0], len(data))

    def on_logits(logits: torch.Tensor) -> None:
        predicted.append(logits.float().argmax(dim=1).cpu().numpy())

    result = evaluate(session.infer, data.eval_batches(batch_size), mapping, batch_size=batch_size,
                      on_batch=on_batch, on_logits=on_logits).to_dict()
    indices = np.concatenate(predicted) if predicted else np.zeros(0, dtype=np.int64)
    return {**result, "batch_size": batch_size}, encode_predictions(indices)


# ---------------------------------------------------------------------------------- per-layer profile


#: What ONNX Runtime's per-node times measure, per provider. The PyPI CUDA provider is built without
#: CUPTI, so its node events bracket the host-side kernel launches, not the GPU's execution.
ORT_NODE_TIMERS: dict[str, tuple[str, str]] = {
    "CPUExecutionProvider": ("host", "node times are CPU execution times of the kernels"),
    "CUDAExecutionProvider": (
        "host-launch",
        "node times are host-side launch times of the CUDA kernels (ONNX Runtime's CUDA provider from PyPI "
        "links no CUPTI): they rank nodes by launch cost, not by GPU time; use trt-native's layer profile or "
        "Nsight Systems for device time"),
}


def ort_node_timer(providers: Sequence[str]) -> tuple[str, str]:
    """(timer, note) for the node times of a profile that ran on ``providers`` (the first one computes)."""
    first = providers[0] if providers else "CPUExecutionProvider"
    return ORT_NODE_TIMERS.get(first, ("unknown", f"{first}: what its node times measure is not known"))


def _ort_layer_profile(session: Session, batch: torch.Tensor) -> dict[str, Any]:
    from backends.ort_profile import profile_onnx

    details = session.info.details
    path = details.get("onnx_path")
    if not path:
        raise ValueError(f"{session.info.backend} names no ONNX path in its session details (onnx_path)")
    providers = list(details.get("providers") or ["CPUExecutionProvider"])
    threads = details.get("intra_op_threads")

    def configure(options: Any) -> None:
        if threads:
            options.intra_op_num_threads = int(threads)

    profile = profile_onnx(Path(path), batch, providers=providers, configure=configure)
    layers = [{"name": n.name, "op_type": n.op_type, "ms": n.mean_ms, "share": n.share, "provider": n.provider}
              for n in profile.nodes[:PROFILE_TOP_LAYERS]]
    merged: dict[str, dict[str, Any]] = {}
    for op in profile.op_types:  # one row per op type (the profile splits them per provider)
        row = merged.setdefault(op.op_type, {"op_type": op.op_type, "ms": 0.0, "share": 0.0, "count": 0})
        row["ms"] += op.mean_ms
        row["share"] += op.share
        row["count"] += op.nodes
    by_op = sorted(merged.values(), key=lambda r: r["ms"], reverse=True)
    timer, timer_note = ort_node_timer(list(profile.providers))
    return {"source": "onnxruntime-profiler", "batch_size": int(batch.shape[0]), "layers": layers,
            "by_op_type": by_op, "layer_count": len(profile.nodes), "runs": profile.runs,
            "providers": list(profile.providers), "timer": timer, "notes": [*profile.notes, timer_note]}


def layer_profile(session: Session, data: EvalData, batch_size: int, *, notice: Notice | None = None,
                  lock_dir: Path | None = None) -> dict[str, Any] | None:
    """The per-layer view of ``session`` at ``batch_size`` on a real batch, in its own pass (holding
    the device lock so another process's window is not disturbed). None for backends without one
    (torch; trt-native without ``layer_profile``). Errors propagate (the caller records them)."""
    backend = session.info.backend
    native = getattr(session, "layer_profile", None)  # trt-native's IProfiler pass (GPU only)
    if backend not in ("ort-cpu", "ort-cuda") and native is None:
        return None
    with DeviceLock(lock_device_id(session.device), lock_dir=lock_dir, on_wait=notice):
        if backend in ("ort-cpu", "ort-cuda"):
            return _ort_layer_profile(session, data.timing_inputs(batch_size, 1)[0])
        return trt_layer_profile(native(batch_size), batch_size)  # its own context, zeros of the shape


def trt_layer_profile(rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """TensorRT IProfiler rows (``{name, ms, precision, type, reformat}`` from
    ``TrtNativeSession.layer_profile``) in the stored ``layer_profile`` layout."""
    total = sum(float(r["ms"]) for r in rows) or 0.0

    def share(ms: float) -> float:
        return ms / total if total > 0 else 0.0

    ordered = sorted(rows, key=lambda r: float(r["ms"]), reverse=True)
    layers = [{"name": r["name"], "op_type": r.get("type") or "unknown", "ms": float(r["ms"]),
               "share": share(float(r["ms"])), "precision": r.get("precision"), "reformat": bool(r.get("reformat"))}
              for r in ordered[:PROFILE_TOP_LAYERS]]
    merged: dict[str, dict[str, Any]] = {}
    for r in rows:
        op = r.get("type") or "unknown"
        row = merged.setdefault(op, {"op_type": op, "ms": 0.0, "share": 0.0, "count": 0})
        row["ms"] += float(r["ms"])
        row["count"] += 1
    for row in merged.values():
        row["share"] = share(row["ms"])
    precisions: dict[str, int] = {}
    for r in rows:
        precisions[str(r.get("precision"))] = precisions.get(str(r.get("precision")), 0) + 1
    return {"source": "tensorrt-iprofiler", "batch_size": batch_size, "layers": layers,
            "by_op_type": sorted(merged.values(), key=lambda r: r["ms"], reverse=True), "layer_count": len(rows),
            "precision_counts": precisions, "reformat_layers": sum(1 for r in rows if r.get("reformat"))}


# ---------------------------------------------------------------------------------- the cell result


def calibration_provenance(calibration: Any) -> dict[str, Any] | None:
    """The artifact's calibration provenance (None when calibration is absent or unavailable)."""
    if calibration is None:
        return None
    try:
        return dict(calibration.provenance)
    except Exception:  # noqa: BLE001 - UnavailableCalibration raises its setup error: the cell failed anyway
        return None


def build_cell_result(*, session: Session, timings: list[dict[str, Any]], device_report: dict[str, Any],
                      accuracy: dict[str, Any] | None, accuracy_note: str | None, original_size_bytes: int | None,
                      prune_report: dict[str, Any] | None, prep: dict[str, float], notes: dict[str, Any],
                      versions: dict[str, Any], commit: str | None, timing_config: dict[str, Any],
                      predictions: dict[str, Any] | None = None, layer_profile: dict[str, Any] | None = None,
                      calibration: dict[str, Any] | None = None, executor: str = "local") -> CellResult:
    info = session.info
    return CellResult(
        accuracy=accuracy,
        accuracy_note=accuracy_note,
        timings=timings,
        original_size_bytes=original_size_bytes,
        compressed_size_bytes=info.artifact_bytes,
        pruning=prune_report,
        prep_phases_s=prep,
        prep_time_s=sum(v for k, v in prep.items() if k != "load"),
        session={"backend": info.backend, "precision": info.precision, "device": info.device,
                 "details": info.details},
        device=info.device,
        device_name=device_name(info.device),
        device_report=device_report.get("report"),
        device_warnings=device_report.get("warnings", []),
        versions=versions,
        harness_commit=commit,
        timing_config=timing_config,
        artifact_notes=dict(notes),
        layer_profile=layer_profile,
        predictions=predictions,
        calibration=calibration if info.precision == "int8" else None,
        node=node_facts(info.device, executor),
    )


__all__ = ["PREDICTIONS_ENCODING", "Window", "build_cell_result", "calibration_provenance", "encode_predictions",
           "layer_profile", "lock_device_id", "trt_layer_profile", "node_facts", "session_accuracy", "time_session"]
