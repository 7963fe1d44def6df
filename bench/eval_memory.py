"""Peak memory of streaming evaluation does not grow with the split's size.

Generates two ImageFolder datasets of 224 px JPEGs (default 2,000 and 20,000 images) under a
temporary folder, evaluates a small CNN over each with harness.data.stream.StreamingEvalData in a
fresh subprocess per run, and prints the peak resident memory of each run (VmHWM of the evaluating
process; the decoding workers' peak from getrusage(RUSAGE_CHILDREN) beside it), the ratio
large/small (acceptance: < 1.5) and the decoding throughput with 0 and with 2 workers.

    nice python bench/eval_memory.py                 # 2,000 and 20,000 images
    nice python bench/eval_memory.py --small 500 --large 5000 --keep /tmp/evalmem

The JPEGs are fast to make: a few distinct 224 px images are encoded once and their bytes are
copied to every file (decoding cost is that of real 224 px JPEGs).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NUM_CLASSES = 10


def _vm_hwm_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def generate(root: Path, count: int, size: int, *, distinct: int = 32, seed: int = 0) -> Path:
    """``root/val/c<k>/<i>.jpg`` with `count` images over NUM_CLASSES classes; returns root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    blobs = []
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(distinct):
        base = rng.integers(0, 256, size=3)
        img = np.stack([(base[c] + (xx * (c + 1) + yy * (k + 1)) // 3) % 256 for c in range(3)], axis=-1)
        img = (img + rng.integers(0, 24, size=img.shape)).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=75)
        blobs.append(buf.getvalue())
    for k in range(NUM_CLASSES):
        (root / "val" / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / "val" / f"c{i % NUM_CLASSES}" / f"{i:06d}.jpg").write_bytes(blobs[i % distinct])
    return root


def _small_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 7, stride=4, padding=3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, NUM_CLASSES),
    ).eval()


def child(root: Path, workers: int, batch_size: int, mode: str) -> dict:
    """One run in this (fresh) process: 'eval' = stream + infer + score; 'decode' = decode only."""
    import torch
    from torchvision import transforms

    from harness.accuracy import LabelMapping, evaluate
    from harness.data.registry import open_split
    from harness.data.stream import StreamingEvalData

    torch.set_num_threads(1)
    split = open_split("folder", "val", data_root=root, cache_dir=root / "cache")
    transform = transforms.Compose([
        transforms.Resize(224, antialias=True), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    data = StreamingEvalData(split, transform, num_workers=workers)
    rss_before = _vm_hwm_kib()
    start = time.perf_counter()
    if mode == "decode":
        n = sum(len(labels) for _, labels in data.decoded_batches(batch_size))
        top1 = None
    else:
        model = _small_model()
        with torch.inference_mode():
            result = evaluate(model, data.eval_batches(batch_size), LabelMapping("direct"), batch_size=batch_size)
        n, top1 = result.samples, result.top1
    seconds = time.perf_counter() - start
    return {"images": n, "workers": workers, "mode": mode, "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 1), "top1": top1,
            "peak_rss_mib": round(_vm_hwm_kib() / 1024, 1), "rss_after_imports_mib": round(rss_before / 1024, 1),
            "workers_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def run_child(root: Path, workers: int, batch_size: int, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(root), "--workers", str(workers),
           "--batch-size", str(batch_size), "--mode", mode]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=2000)
    p.add_argument("--large", type=int, default=20000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-workers", type=int, default=0, help="decoding workers for the memory runs")
    p.add_argument("--decode-workers", default="0,2", help="worker counts for the throughput runs (small set)")
    p.add_argument("--keep", type=Path, default=None, help="generate into (and keep) this folder")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="eval", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.workers, args.batch_size, args.mode)))
        return 0

    base = args.keep or Path(tempfile.mkdtemp(prefix="pq-evalmem-"))
    try:
        roots = {}
        for label, count in (("small", args.small), ("large", args.large)):
            root = base / f"{label}-{count}"
            if not (root / "val").is_dir():
                t = time.perf_counter()
                generate(root, count, args.size)
                print(f"generated {count} JPEGs ({args.size} px) in {time.perf_counter() - t:.1f} s under {root}")
            roots[label] = root
        runs = {label: run_child(root, args.eval_workers, args.batch_size, "eval") for label, root in roots.items()}
        for label, r in runs.items():
            workers = (f"; decoding workers' peak {r['workers_peak_rss_mib']} MiB" if r["workers"] else "")
            print(f"{label}: {r['images']} images, workers={r['workers']}: peak RSS {r['peak_rss_mib']} MiB "
                  f"(after imports {r['rss_after_imports_mib']} MiB{workers}), {r['images_per_s']} images/s "
                  "end to end")
        ratio = runs["large"]["peak_rss_mib"] / runs["small"]["peak_rss_mib"]
        verdict = "PASS" if ratio < 1.5 else "FAIL"
        print(f"peak RSS ratio large/small = {ratio:.3f} ({verdict}: must be < 1.5 "
              f"for {args.large / args.small:.0f}x the images)")
        for w in (int(x) for x in args.decode_workers.split(",")):
            r = run_child(roots["small"], w, args.batch_size, "decode")
            print(f"decoding {r['images']} images with {w} workers: {r['images_per_s']} images/s "
                  f"({r['seconds']} s)")
        return 0 if ratio < 1.5 else 1
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
