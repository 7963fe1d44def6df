"""GPU smoke test: run on any NVIDIA machine; prints a compact summary (and JSON).

1. `harness hw` (the capability report, as JSON summary).
2. The torch CUDA path: the harness's CUDA-event timing against a bare CUDA-event loop around the
   same callable (ratio), fp32/fp16/bf16, resnet18 (random weights) at batch 1 and 32, with the
   e2e (host-to-host) definition beside it.
3. NVML device checks and energy per image around each timed window.
4. A real harness sweep on the GPU (tinycnn on shapes, torch fp32/fp16/bf16, results database).
5. Where TensorRT / onnxruntime-gpu exist: trt-native fp16/int8 and ort-trt fp16/int8 on resnet18
   at batch 1 and 32 through the same sweep; otherwise the reason they were skipped.
6. The GPU test files (real TensorRT calibrator, INT8 layers, CUDA-graph capture fallback, per-batch
   profiles, the runtime against a real CUDA copy engine) through pytest; they skip without TensorRT.

Usage: python bench/gpu_smoke.py [--out DIR] [--quick]
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


def torch_cuda_section(iterations: int, report: dict[str, Any]) -> None:
    import torchvision

    from backends.base import ModelArtifact
    from backends.torch_eager import TorchBackend
    from harness.fingerprint import model_content_hash
    from harness.gpu.nvml_monitor import DeviceMonitor
    from harness.gpu.nvml_query import nvml_unavailable_reason
    from harness.machine import probe_machine
    from harness.timing import CudaEventTimer, PerfCounterTimer, TimingSettings, measure

    module = torchvision.models.resnet18(weights=None).eval()
    artifact = ModelArtifact(name="resnet18", module=module, input_shape=(3, 224, 224), num_outputs=1000,
                             content_hash=model_content_hash(module), onnx=lambda: Path("unused"))
    config = TimingSettings(warmup=10, iterations=iterations, repeats=3)
    rows = []
    nvml_reason = nvml_unavailable_reason()
    facts = probe_machine()
    for precision in ("fp32", "fp16", "bf16"):
        reason = TorchBackend.unavailable_reason(precision, facts)
        if reason:
            rows.append({"precision": precision, "skipped": reason})
            continue
        session = TorchBackend().activate(artifact, precision, (1, 32), Path("/tmp"))
        for bs in (1, 32):
            host = torch.randn(bs, 3, 224, 224)
            staged = session.stage(host)
            timer = CudaEventTimer(session.cuda_stream)
            monitor = DeviceMonitor.for_torch_device(torch.cuda.current_device()) if nvml_reason is None else None
            if monitor:
                monitor.__enter__()
            harness_res = measure(session.run, [staged], batch_size=bs, config=config, definition="compute",
                                  timer=timer)
            if monitor:
                monitor.__exit__(None, None, None)
            bare = bare_event_loop(session.run, staged, session.cuda_stream, 10, iterations, 3)
            e2e = measure(session.infer, [host], batch_size=bs, config=config, definition="e2e",
                          timer=PerfCounterTimer())
            h = harness_res.stats.median_ms
            row = {"precision": precision, "batch": bs, "compute_median_ms": round(h, 4),
                   "compute_p99_ms": round(harness_res.stats.p99_ms, 4), "bare_event_median_ms": round(bare, 4),
                   "ratio": round(h / bare, 4), "e2e_median_ms": round(e2e.stats.median_ms, 4),
                   "throughput_ips": round(harness_res.stats.throughput_ips, 1)}
            if monitor and monitor.result:
                images = bs * (config.iterations + config.warmup) * config.repeats
                row["energy_mj_per_image"] = monitor.result.energy_per_image_mj(images)
                row["energy_source"] = monitor.result.energy_source
                row["sm_clock_median_mhz"] = monitor.result.sm_clock_median_mhz
                row["nvml_warnings"] = monitor.result.warnings
            rows.append(row)
        session.close()
    report["torch_cuda"] = rows
    report["nvml"] = nvml_reason or "ok"


def sweep_section(name: str, overrides: dict[str, Any], out: Path, report: dict[str, Any]) -> None:
    from harness.config import load_config
    from harness.results import ResultStore, export_csv, flat_rows
    from harness.driver import run_sweep

    work = Path(os.environ.get("PQ_SMOKE_WORK", "/tmp/pq-gpu-smoke"))  # caches stay out of --out
    config = load_config(None, {**overrides, "out_dir": work / name, "cache_dir": work / "cache",
                                "data_root": work / "data"})
    started = time.perf_counter()
    with ResultStore(work / name / "results.db") as store:
        counts = run_sweep(config, store, resume=False)
        export_csv(store, out / f"{name}.csv")
        rows = []
        for record in store.records():
            for row in flat_rows(record):
                rows.append({k: row.get(k) for k in (
                    "Model", "Pruner", "backend", "precision", "Batch Size", "timing_definition", "timer", "Accuracy",
                    "Inference Time (ms)", "latency_p99_ms", "throughput_ips", "energy_mj_per_image",
                    "Compressed Size", "device_warnings", "error")})
    report[name] = {"counts": counts, "seconds": round(time.perf_counter() - started, 1), "rows": rows}


GPU_TEST_FILES = ("tests/test_trt_gpu.py", "tests/test_trt_native_logic.py", "tests/test_trt_runner.py")


def pytest_section(out: Path, report: dict[str, Any]) -> None:
    """Run the GPU test files in a child process; keep its exit status, summary line and JUnit XML."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    xml = out / "gpu_tests.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", f"--junitxml={xml}", *GPU_TEST_FILES],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=1800,
    )
    (out / "gpu_tests.log").write_text(proc.stdout + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    report["gpu_tests"] = {"returncode": proc.returncode, "summary": lines[-1] if lines else "",
                           "skipped": [ln for ln in lines if ln.startswith("SKIPPED")], "junit": str(xml)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-smoke")))
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--pytest-only", action="store_true", help="run only the GPU test files (section 6)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}

    from harness.hw import collect_hw_report

    hw = collect_hw_report().to_dict()
    (args.out / "hw.json").write_text(json.dumps(hw, indent=2, default=str))
    report["hw_gpus"] = hw.get("gpus")
    report["backend_availability"] = hw.get("backend_availability")
    if not torch.cuda.is_available():
        print(json.dumps(report, indent=2, default=str))
        sys.exit("no CUDA GPU visible: nothing more to smoke-test")

    if args.pytest_only:
        pytest_section(args.out, report)
        (args.out / "gpu_smoke.json").write_text(json.dumps(report, indent=2, default=str))
        print(json.dumps(report, indent=1, default=str))
        sys.exit(0 if report["gpu_tests"]["returncode"] == 0 else 1)

    sections = [
        ("torch_cuda", lambda: torch_cuda_section(args.iterations, report)),
        ("sweep_torch_gpu", lambda: sweep_section("sweep_torch_gpu", {
            "models": ["tinycnn"], "datasets": ["shapes"], "batch_sizes": [1, 32],
            "backends": {"torch": ["fp32", "fp16", "bf16"]},
            "timing": {"warmup": 10, "iterations": 50, "repeats": 3}}, args.out, report)),
    ]
    from backends import backend_class
    from harness.machine import probe_machine

    gpu_pairs = {}
    for name, precisions in (("trt-native", ["fp16", "int8"]), ("ort-trt", ["fp16", "int8"])):
        ok = [p for p in precisions if backend_class(name).unavailable_reason(p, probe_machine()) is None]
        skipped = {p: backend_class(name).unavailable_reason(p, probe_machine()) for p in precisions if p not in ok}
        if skipped:
            report.setdefault("skipped", {})[name] = skipped
        if ok:
            gpu_pairs[name] = ok
    if gpu_pairs:
        sections.append(("sweep_trt", lambda: sweep_section("sweep_trt", {
            "models": ["resnet18"], "weights": "random", "datasets": ["shapes"], "batch_sizes": [1, 32],
            "backends": {"torch": ["fp16"], **gpu_pairs}, "calibration": {"count": 256},
            "timing": {"warmup": 10, "iterations": 100, "repeats": 3}}, args.out, report)))
    sections.append(("gpu_tests", lambda: pytest_section(args.out, report)))
    for name, fn in sections:
        try:
            fn()
        except Exception:  # a smoke test reports every section it can
            report[name] = {"error": traceback.format_exc()}
    (args.out / "gpu_smoke.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
