"""Structural removal: theoretical speedup (MACs ratio) against measured speedup.

resnet18 at 224 px (random weights: latency does not depend on them), channel removal at
25/50/75 % with Torch-Pruning (L2 magnitude), timed with the harness's engine on `torch`
and `ort-cpu` (CPU), or on `torch` CUDA fp16 with --device cuda.

Usage: python bench/removal_speedup.py [--batch 8] [--iterations 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backends.base import ModelArtifact  # noqa: E402
from backends.ort_cpu import OrtCpuBackend  # noqa: E402
from backends.torch_eager import TorchBackend  # noqa: E402
from harness.compression import PruneSpec, apply_pruning  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402
from harness.onnx_export import export_onnx  # noqa: E402
from harness.measure.timing import TimingSettings, measure, timer_for  # noqa: E402


def time_session(session, batch: int, config: TimingSettings) -> float:
    staged = session.stage(torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    timer = timer_for(session.device, "compute", session.cuda_stream)
    return measure(session.run, [staged], batch_size=batch, config=config, definition="compute",
                   timer=timer).stats.median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    config = TimingSettings(warmup=5, iterations=args.iterations, repeats=3)
    base = torchvision.models.resnet18(weights=None).eval()
    example = torch.zeros(1, 3, 224, 224)
    cache = Path(tempfile.mkdtemp(prefix="pq-removal-"))
    rows = []
    for amount in [0.0, *args.amounts]:
        if amount == 0:
            module = base
            macs = params = None
        else:
            module, report = apply_pruning(base, PruneSpec(method="removal", amount=amount, importance="l2"),
                                           example_input=example)
            macs, params = (report.macs_before, report.macs_after), (report.params_before, report.params_after)
        content = model_content_hash(module)
        artifact = ModelArtifact(
            name="resnet18", module=module, input_shape=(3, 224, 224), num_outputs=1000, content_hash=content,
            onnx=lambda m=module, c=content: export_onnx(m, (3, 224, 224), content_hash=c, cache_dir=cache,
                                                         name="resnet18").path)
        row = {"amount": amount, "macs": macs, "params": params}
        if args.device == "cuda":
            session = TorchBackend({"device": "cuda"}).activate(artifact, "fp16", (args.batch,), cache)
            row["torch_cuda_fp16_ms"] = time_session(session, args.batch, config)
        else:
            row["torch_ms"] = time_session(TorchBackend().activate(artifact, "fp32", (args.batch,), cache),
                                           args.batch, config)
            row["ort_cpu_ms"] = time_session(OrtCpuBackend().activate(artifact, "fp32", (args.batch,), cache),
                                             args.batch, config)
        rows.append(row)
    base_row = rows[0]
    keys = [k for k in base_row if k.endswith("_ms")]
    print(f"resnet18 224 px, batch {args.batch}, {args.device}, median of {config.iterations}x{config.repeats}")
    print(f"{'removed':>8} {'params':>8} {'GMACs':>7} {'MACs x':>7} " + " ".join(f"{k:>12} {'x':>6}" for k in keys))
    for row in rows:
        macs_after = row["macs"][1] if row["macs"] else None
        macs_before = rows[1]["macs"][0] if len(rows) > 1 and rows[1]["macs"] else None
        mac_ratio = macs_before / macs_after if macs_after else 1.0
        params = row["params"][1] if row["params"] else (rows[1]["params"][0] if len(rows) > 1 else 0)
        gmacs = (macs_after or macs_before or 0) / 1e9
        row["macs_speedup"] = mac_ratio
        cells = []
        for k in keys:
            row[k.replace("_ms", "_speedup")] = base_row[k] / row[k]
            cells.append(f"{row[k]:12.2f} {base_row[k] / row[k]:6.2f}")
        print(f"{row['amount']:8.2f} {params / 1e6:7.2f}M {gmacs:7.2f} {mac_ratio:7.2f} " + " ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
