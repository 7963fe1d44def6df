"""GPU smoke test: the one script a GPU session runs. Prints a pass/fail table, writes JSON to --out ($OUT).

Default run (under 5 minutes on one GPU):

0. `harness selftest` (torch CUDA, NVML, TensorRT build/run/compare, ORT CUDA and TensorRT EPs); the run
   goes on after a failure so the matrix shows what works.
1. The matrix: every backend x precision this machine can run (each backend's ``unavailable_reason``
   on ``probe_machine()`` facts; the others are listed as skipped with the reason) on tinycnn and
   resnet18 (random weights, no download) on the synthetic shapes dataset, batch 1 and 8, few
   iterations, through real sweeps; one pass/fail row per cell.
2. `harness hw` (the capability report, as JSON summary).
3. The torch CUDA path: the harness's CUDA-event timing against a bare CUDA-event loop around the
   same callable (ratio), fp32/tf32/fp16/bf16, resnet18 (random weights) at batch 1 and 32, with the
   e2e (host-to-host) definition beside it, the host-bound check and each window's energy per image.

4. The gpu test lane (``pytest -m gpu``) in a child process (``--no-tests`` leaves it out).

Every section is timed against ``--budget-seconds`` (default 280): a section that would not fit is
skipped with the reason, and the JSON is written after every section, so a run stopped at its time
limit keeps what it finished. The matrix times short compute windows without NVML (a metered GPU
repeat lasts ten energy-counter periods, about a second on an H200); the torch section measures each
window's own energy per image with the harness's meter.

``--plan-only`` probes the machine and prints the plan (what would run, what is skipped and why)
without touching a GPU; it works on any machine.

Usage: python bench/gpu_smoke.py [--out DIR] [--plan-only] [--no-tests] [--budget-seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare_event_loop(fn: Any, x: Any, stream: torch.cuda.Stream, warmup: int, iterations: int, repeats: int) -> float:
    samples: list[float] = []
    with torch.cuda.stream(stream):
        for _ in range(repeats):
            for _ in range(warmup):
                fn(x)
            stream.synchronize()
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
            for i in range(iterations):
                starts[i].record(stream)
                fn(x)
                ends[i].record(stream)
            stream.synchronize()
            samples.extend(s.elapsed_time(e) for s, e in zip(starts, ends))
    return statistics.median(samples)


def torch_cuda_section(report: dict[str, Any]) -> None:
    """The torch CUDA path: the harness's CUDA-event median against a bare CUDA-event loop around the
    same callable, the host-bound check, and each window's own energy per image (the harness's figures:
    its repeats' joules over the images they timed)."""
    import torchvision

    from backends.base import ModelArtifact
    from backends.torch_eager import TorchBackend
    from harness.sweep.cell_timing import device_monitor, energy_meter, window_entry
    from harness.store.fingerprint import model_content_hash
    from harness.machine import probe_machine
    from harness.measure.timing import CudaEventTimer, PerfCounterTimer, TimingSettings, measure

    module = torchvision.models.resnet18(weights=None).eval()
    artifact = ModelArtifact(name="resnet18", module=module, input_shape=(3, 224, 224), num_outputs=1000,
                             content_hash=model_content_hash(module), onnx=lambda: Path("unused"))
    config = TimingSettings(warmup=10, iterations=50, repeats=3, min_seconds=0.3, warmup_seconds=0.2)
    quick = TimingSettings(warmup=5, iterations=20, repeats=1, min_seconds=0, warmup_seconds=0)
    rows: list[dict[str, Any]] = []
    report["torch_cuda"] = rows
    facts = probe_machine()
    for precision in ("fp32", "tf32", "fp16", "bf16"):
        reason = TorchBackend.unavailable_reason(precision, facts)
        if reason:
            rows.append({"precision": precision, "skipped": reason})
            continue
        session = TorchBackend().activate(artifact, precision, (1, 32), Path("/tmp"))
        for bs in (1, 32):
            host = torch.randn(bs, 3, 224, 224)
            staged = session.stage(host)
            with device_monitor("cuda", True) as monitor:
                result = measure(session.run, [staged], batch_size=bs, config=config, definition="compute",
                                 timer=CudaEventTimer(session.cuda_stream), device="cuda", meter=energy_meter(monitor))
            window = window_entry(result, "cuda", window={}, host_load=None, warnings=[], until=None, backend="torch")
            bare = bare_event_loop(session.run, staged, session.cuda_stream, 10, 50, 3)
            e2e = measure(session.infer, [host], batch_size=bs, config=quick, definition="e2e", timer=PerfCounterTimer())
            rows.append({"precision": precision, "batch": bs, "compute_median_ms": round(window.median_ms, 4),
                         "bare_event_median_ms": round(bare, 4), "ratio": round(window.median_ms / bare, 4),
                         "e2e_median_ms": round(e2e.stats.median_ms, 4), "launch": window.launch,
                         "energy_mj_per_image": window.energy_mj_per_image, "energy": window.energy,
                         "fp32_math": session.info.details.get("fp32_math"),
                         "nvml_warnings": monitor.result.warnings if monitor.result else None})
        session.close()


def sweep_section(name: str, overrides: dict[str, Any], out: Path, report: dict[str, Any]) -> None:
    from harness.config import load_config
    from harness.store.results import ResultStore, export_csv, flat_rows
    from harness.sweep.driver import run_sweep

    work = Path(os.environ.get("PQ_SMOKE_WORK", "/tmp/pq-gpu-smoke"))  # caches stay out of --out
    config = load_config(None, {**overrides, "out_dir": work / name, "cache_dir": work / "cache",
                                "data_root": work / "data"})
    started = time.perf_counter()
    with ResultStore(work / name / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        export_csv(store, work / name / "results.csv")  # out holds the JSON only
        rows = []
        for record in store.records():
            for row in flat_rows(record):
                rows.append({k: row.get(k) for k in (
                    "Model", "Pruner", "backend", "precision", "Batch Size", "timing_definition", "timer", "Accuracy",
                    "Inference Time (ms)", "latency_p99_ms", "throughput_ips", "energy_mj_per_image",
                    "Compressed Size", "device_warnings", "error")})
    report[name] = {"counts": counts, "seconds": round(time.perf_counter() - started, 1), "rows": rows}


def pytest_section(report: dict[str, Any], timeout: float) -> None:
    """The gpu lane (``pytest -m gpu``) in a child process: its exit status, summary and skips."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider"],
                          cwd=root, env=_env(root), capture_output=True, text=True, timeout=max(30.0, timeout))
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    report["gpu_tests"] = {"returncode": proc.returncode, "summary": lines[-1] if lines else "",
                           "failed": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))],
                           "skipped": [ln for ln in lines if ln.startswith("SKIPPED")]}


def _env(root: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


MATRIX_MODELS = ("tinycnn", "resnet18")
MATRIX_BATCHES = (1, 8)
#: Short windows, compute only, and no NVML energy (a metered GPU repeat lasts ten counter periods, ~1 s on an
#: H200): the matrix proves each backend x precision runs; the torch section measures energy.
MATRIX_TIMING = {"warmup": 5, "iterations": 20, "repeats": 2, "min_seconds": 0.1, "warmup_seconds": 0.05,
                 "definitions": ["compute"]}


def plan_matrix(facts: Any) -> dict[str, Any]:
    """``{"run": {backend: [precisions]}, "skipped": {"backend precision": reason}}`` from machine facts."""
    from backends import BACKEND_NAMES, backend_class

    run: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for name in BACKEND_NAMES:
        cls = backend_class(name)
        for precision in cls.precisions:
            reason = cls.unavailable_reason(precision, facts)
            if reason is None:
                run.setdefault(name, []).append(precision)
            else:
                skipped[f"{name} {precision}"] = reason
    return {"models": list(MATRIX_MODELS), "batch_sizes": list(MATRIX_BATCHES), "run": run, "skipped": skipped,
            "cells": len(MATRIX_MODELS) * len(MATRIX_BATCHES) * sum(len(p) for p in run.values())}


def matrix_overrides(model: str, run: dict[str, list[str]]) -> dict[str, Any]:
    return {"models": [model], "weights": "random", "datasets": ["shapes"], "batch_sizes": list(MATRIX_BATCHES),
            "backends": run, "timing": MATRIX_TIMING, "calibration": {"count": 64}, "max_eval_samples": 128,
            "device_checks": False}


def selftest_section(report: dict[str, Any]) -> None:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "selftest", "--json"], cwd=root, capture_output=True,
                          text=True, timeout=600, env=_env(root))
    try:
        checks = json.loads(proc.stdout)
    except ValueError:
        checks = [{"name": "selftest", "status": "FAIL", "detail": (proc.stderr or proc.stdout).strip()[-500:]}]
    report["selftest"] = {"returncode": proc.returncode, "checks": checks}


def matrix_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per matrix cell (and per skipped backend x precision): model, backend, precision, batch, status."""
    rows = []
    for model in MATRIX_MODELS:
        section = report.get(f"matrix_{model}") or {}
        if "error" in section:
            rows.append({"model": model, "backend": "*", "precision": "*", "batch": None, "status": "FAIL",
                         "detail": section["error"].strip().splitlines()[-1]})
        for row in section.get("rows", []):
            ms = row.get("Inference Time (ms)")
            rows.append({"model": model, "backend": row.get("backend"), "precision": row.get("precision"),
                         "batch": row.get("Batch Size"), "status": "FAIL" if row.get("error") else "ok",
                         "detail": row.get("error") or (f"{ms:.3f} ms, acc {row.get('Accuracy')}" if ms else "")})
    for pair, reason in (report.get("plan") or {}).get("skipped", {}).items():
        backend, precision = pair.split(" ", 1)
        rows.append({"model": "*", "backend": backend, "precision": precision, "batch": None, "status": "skipped",
                     "detail": reason})
    return rows


def print_table(report: dict[str, Any]) -> None:
    for check in (report.get("selftest") or {}).get("checks", []):
        print(f"selftest  {check['status']:<8} {check['name']:<30} {check['detail']}")
    for row in report.get("table", []):
        batch = "" if row["batch"] is None else row["batch"]
        print(f"{row['status']:<8} {row['model']:<9} {row['backend']:<11} {row['precision']:<5} {batch!s:<3} "
              f"{str(row['detail'])[:150]}")


#: Rough seconds each section needs on an H200 (a section is skipped, with the reason, when less is left).
SECTION_SECONDS = {"selftest": 20.0, "matrix_tinycnn": 30.0, "matrix_resnet18": 45.0, "hw": 5.0,
                   "torch_cuda": 45.0, "gpu_tests": 60.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-smoke")))
    parser.add_argument("--budget-seconds", type=float, default=280.0,
                        help="stop starting sections once this much time is spent (default 280: under 5 minutes)")
    parser.add_argument("--plan-only", action="store_true", help="print what would run (and why not) and stop")
    parser.add_argument("--no-tests", action="store_true", help="leave out the gpu test lane (pytest -m gpu)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from harness.machine import probe_machine

    facts = probe_machine()
    plan = plan_matrix(facts)
    if args.plan_only:
        summary = {"plan": plan, "cuda_available": torch.cuda.is_available(), "torch": torch.__version__}
        (args.out / "gpu_smoke_plan.json").write_text(json.dumps(summary, indent=2, default=str))
        print(f"{plan['cells']} cells on {', '.join(plan['models'])} x batch {plan['batch_sizes']}:")
        for name, precisions in plan["run"].items():
            print(f"  run      {name:<11} {' '.join(precisions)}")
        for pair, reason in plan["skipped"].items():
            print(f"  skipped  {pair:<16} {reason}")
        return 0
    report: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "plan": plan,
                              "budget_seconds": args.budget_seconds, "skipped_sections": {}}
    started = time.perf_counter()

    def hw() -> None:
        from harness.hw import collect_hw_report

        data = collect_hw_report().to_dict()
        report["hw_gpus"] = data.get("gpus")
        report["backend_availability"] = data.get("backend_availability")

    sections: list[tuple[str, Any]] = [("selftest", lambda: selftest_section(report))]
    for model in MATRIX_MODELS:
        sections.append((f"matrix_{model}", lambda model=model: sweep_section(
            f"matrix_{model}", matrix_overrides(model, plan["run"]), args.out, report)))
    sections.append(("hw", hw))
    if torch.cuda.is_available():
        sections.append(("torch_cuda", lambda: torch_cuda_section(report)))
        if not args.no_tests:
            sections.append(("gpu_tests", lambda: pytest_section(
                report, args.budget_seconds - (time.perf_counter() - started))))
    for name, fn in sections:
        left = args.budget_seconds - (time.perf_counter() - started)
        if left < SECTION_SECONDS[name]:
            report["skipped_sections"][name] = (f"budget: {left:.0f} s left of --budget-seconds {args.budget_seconds:g}, "
                                                f"the section needs about {SECTION_SECONDS[name]:g} s")
            print(f"section {name}: skipped ({report['skipped_sections'][name]})", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            fn()
        except Exception:  # a smoke test reports every section it can
            report[name] = {"error": traceback.format_exc()}
        report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        report["table"] = matrix_rows(report)
        report["seconds"] = round(time.perf_counter() - started, 1)
        # written after every section: a run stopped at its time limit keeps what it finished
        (args.out / "gpu_smoke.json").write_text(json.dumps(report, indent=2, default=str))
        print(f"section {name}: {report['section_seconds'][name]} s", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "gpu_smoke.json").write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    print(f"{report['seconds']} s; JSON: {args.out / 'gpu_smoke.json'}")
    failed = any(r["status"] == "FAIL" for r in report.get("table", []))
    failed = failed or (report.get("selftest") or {}).get("returncode", 0) != 0
    failed = failed or (report.get("gpu_tests") or {}).get("returncode", 0) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
