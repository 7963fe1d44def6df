"""Record real timing windows of tinycnn on ONNX Runtime (CPU) as JSON fixtures for the stability tests.

Each window is measured with the harness's own engine (``harness.measure.timing.measure`` with the
``timing:`` defaults: duration-based repeats) on real batches of the ``shapes`` evaluation split,
inside a ``HostLoadSampler``, and written with its host load and loop settings to
``tests/data/timing_samples/<name>.json``.

Scenarios:

* ``quiet``: as the machine is (run it when nothing else runs; the load average is stored);
* ``load-step``: one busy process starts after the first repeat and runs to the end of the window
  (what happens when another job starts during a measurement).

Usage (from the repository root, through the CPU semaphore on a shared machine)::

    PYTHONPATH=. python bench/record_timing_samples.py --scenario quiet --batch-size 1 --definition compute
    PYTHONPATH=. python bench/record_timing_samples.py --scenario load-step --batch-size 1 --definition compute
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPIN = "import time\nend = time.time() + 60\nwhile time.time() < end: pass\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["quiet", "load-step"], default="quiet")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--definition", choices=["compute", "e2e"], default="compute")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("HARNESS_CACHE_DIR", ".harness-cache")))
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "timing_samples")
    parser.add_argument("--name", default=None, help="fixture name (default: scenario-b<batch>-<definition>)")
    args = parser.parse_args()

    from backends.base import ModelArtifact
    from backends.ort_cpu import OrtCpuBackend
    from harness.data.registry import open_split
    from harness.data.stream import StreamingEvalData
    from harness.store.fingerprint import model_content_hash
    from harness.measure.hostload import HostLoadSampler, loadavg
    from harness.models import load_model
    from harness.onnx_export import export_onnx
    from harness.measure.timing import TimingSettings, measure, timer_for

    cache = args.cache_dir
    loaded = load_model("tinycnn", weights="pretrained", cache_dir=cache, data_root=Path("data"))
    data = StreamingEvalData.for_model(loaded, open_split("shapes", "val", data_root=Path("data"), cache_dir=cache))
    content = model_content_hash(loaded.module)
    artifact = ModelArtifact(
        name=loaded.name, module=loaded.module, input_shape=loaded.input_shape, num_outputs=loaded.num_outputs,
        content_hash=content,
        onnx=lambda: export_onnx(loaded.module, loaded.input_shape, content_hash=content, cache_dir=cache,
                                 name=loaded.name).path,
    )
    session = OrtCpuBackend({}).activate(artifact, "fp32", (args.batch_size,), cache)
    settings = TimingSettings()
    host = data.timing_inputs(args.batch_size, settings.batches)
    if args.definition == "compute":
        inputs, fn = [session.stage(x) for x in host], session.run
    else:
        inputs, fn = host, session.infer
    spinner: list[subprocess.Popen] = []

    def on_repeat(rep: int) -> None:
        if args.scenario == "load-step" and rep == 0:
            spinner.append(subprocess.Popen([sys.executable, "-c", SPIN]))

    before = loadavg()
    try:
        with HostLoadSampler() as sampler:
            result = measure(fn, inputs, batch_size=args.batch_size, config=settings, definition=args.definition,
                             timer=timer_for("cpu", args.definition, None), on_repeat=on_repeat, device="cpu")
    finally:
        for proc in spinner:
            proc.kill()
            proc.wait()
        session.close()
    load = sampler.result
    record = {
        "what": f"tinycnn ort-cpu fp32 b{args.batch_size} {args.definition} (shapes), {args.scenario}",
        "scenario": args.scenario,
        "device": "cpu",
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": socket.gethostname(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "loadavg_before": before,
        "settings": {**settings.loop_dict(), **settings.duration_dict("cpu")},
        "batch_size": args.batch_size,
        "definition": args.definition,
        "timer": result.timer,
        "repeat_times": result.repeat_times,
        "host_load": None if load is None else load.to_dict(),
        "repeats_ns": result.repeats_ns,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"{args.scenario}-b{args.batch_size}-{args.definition}"
    path = args.out / f"{name}.json"
    path.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    counts = [len(r) for r in result.repeats_ns]
    busy = load.reason if load is not None and load.busy else "not busy"
    print(f"{path}: {counts} samples per repeat; load average before {before}; host: {busy}")


if __name__ == "__main__":
    main()
