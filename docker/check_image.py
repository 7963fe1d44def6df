#!/usr/bin/env python3
"""Build-time checks for the PQ Harness images (run by the Dockerfiles; no GPU needed).

    check_image.py trt --min 10.0 --max 10.4        # the base image's TensorRT is in range
    check_image.py constraints OUT                  # pin the base image's torch/torchvision/tensorrt/numpy
    check_image.py final --constraints OUT --trt-min 10.0 --trt-max 10.4
                                                    # after installing: nothing pinned was replaced,
                                                    # one onnxruntime flavour, TensorRT/CUDA EPs present,
                                                    # ORT<->TRT pairing, `harness` on PATH

Standard library only (the ``final`` step also uses ``harness.gpu.capabilities`` when importable).
Exits non-zero with a one-line reason, so ``docker build`` stops at the step that is wrong.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
from pathlib import Path

PINNED = ("torch", "torchvision", "tensorrt", "numpy")
TRT_DISTS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13")
NVINFER_VERSION_HEADERS = (
    "/usr/include/x86_64-linux-gnu/NvInferVersion.h",
    "/usr/include/aarch64-linux-gnu/NvInferVersion.h",
    "/usr/include/NvInferVersion.h",
    "/usr/local/tensorrt/include/NvInferVersion.h",
)


def fail(message: str) -> None:
    print(f"check_image: FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def vtuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.group() != piece:
            break
    return tuple(parts)


def dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def tensorrt_version() -> tuple[str | None, str]:
    """(version, where it came from): package metadata, the module, or the C header."""
    version = dist_version(*TRT_DISTS)
    if version:
        return version, "package metadata"
    try:
        trt = importlib.import_module("tensorrt")
        return str(trt.__version__), "import tensorrt"
    except Exception:  # noqa: BLE001 - any failure: try the header next
        pass
    for header in NVINFER_VERSION_HEADERS:
        path = Path(header)
        if path.is_file():
            text = path.read_text()
            fields = []
            for key in ("MAJOR", "MINOR", "PATCH"):
                m = re.search(rf"#define\s+(?:NV_TENSORRT|TRT)_{key}(?:_ENTERPRISE)?\s+(\d+)", text)
                if not m:
                    break
                fields.append(m.group(1))
            if len(fields) == 3:
                return ".".join(fields), header
    return None, "not found"


def cmd_trt(args: argparse.Namespace) -> None:
    version, source = tensorrt_version()
    if version is None:
        fail("TensorRT not found in the base image (no tensorrt package, module or NvInferVersion.h)")
    v = vtuple(version)[:2]
    lo, hi = vtuple(args.min)[:2], vtuple(args.max)[:2]
    print(f"check_image: TensorRT {version} ({source}); required {args.min} <= x.y <= {args.max}")
    if not lo <= v <= hi:
        fail(
            f"base image has TensorRT {version}, outside {args.min}..{args.max}"
            + (" (TensorRT 10.5 dropped V100/sm_70: use an older base image, e.g. pytorch:24.08-py3)" if hi <= (10, 4) else "")
        )


def cmd_constraints(args: argparse.Namespace) -> None:
    lines = []
    for name in PINNED:
        if name == "tensorrt" and args.no_tensorrt:
            continue
        version = dist_version(name)
        if version:
            lines.append(f"{name}=={version}")
    if not any(line.startswith("torch==") for line in lines):
        fail("the base image has no torch distribution to pin")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("check_image: constraints:\n  " + "\n  ".join(lines))


def cmd_final(args: argparse.Namespace) -> None:
    # 1. nothing pinned was replaced
    for line in Path(args.constraints).read_text().split():
        name, _, want = line.partition("==")
        have = dist_version(name)
        if have != want:
            fail(f"{name} changed from {want} to {have}: a dependency reinstalled it")
    # 2. exactly one onnxruntime flavour
    cpu, gpu = dist_version("onnxruntime"), dist_version("onnxruntime-gpu")
    if gpu is None:
        fail("onnxruntime-gpu is not installed")
    if cpu is not None:
        fail(f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed; they share one module")
    if args.ort and not re.fullmatch(args.ort.replace(".", r"\.").replace("*", r".*"), gpu):
        fail(f"onnxruntime-gpu {gpu} does not match the pin {args.ort}")
    import onnxruntime  # noqa: PLC0415

    providers = onnxruntime.get_available_providers()
    for ep in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if ep not in providers:
            fail(f"onnxruntime-gpu {gpu} lists no {ep} (providers: {providers})")
    # 3. TensorRT range and ORT pairing
    version, source = tensorrt_version()
    if version is None:
        fail("TensorRT disappeared from the image")
    v = vtuple(version)[:2]
    if not vtuple(args.trt_min)[:2] <= v <= vtuple(args.trt_max)[:2]:
        fail(f"TensorRT {version} ({source}) outside {args.trt_min}..{args.trt_max}")
    try:
        from harness.gpu.capabilities import check_ort_trt_pair  # noqa: PLC0415
    except ImportError as err:
        fail(f"the harness package is not importable: {err}")
    pair = check_ort_trt_pair(gpu, version)
    print(f"check_image: onnxruntime-gpu {gpu} + TensorRT {version}: {pair.reason}")
    if pair.ok is False:
        fail(pair.reason)
    # 4. the CLI the compose entrypoint runs
    if shutil.which("harness") is None:
        fail("no `harness` executable on PATH (console script missing from the project metadata?)")
    proc = subprocess.run(["harness", "--help"], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"`harness --help` exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    print(f"check_image: OK (torch {dist_version('torch')}, onnxruntime-gpu {gpu}, TensorRT {version})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("trt")
    p.add_argument("--min", required=True)
    p.add_argument("--max", required=True)
    p = sub.add_parser("constraints")
    p.add_argument("out")
    p.add_argument("--no-tensorrt", action="store_true", help="do not pin TensorRT (the TRT 11 image replaces it)")
    p = sub.add_parser("final")
    p.add_argument("--constraints", required=True)
    p.add_argument("--trt-min", required=True)
    p.add_argument("--trt-max", required=True)
    p.add_argument("--ort", default=None, help="the onnxruntime-gpu pin, e.g. 1.20.*")
    args = parser.parse_args(argv)
    {"trt": cmd_trt, "constraints": cmd_constraints, "final": cmd_final}[args.cmd](args)


if __name__ == "__main__":
    main()
