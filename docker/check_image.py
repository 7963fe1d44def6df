#!/usr/bin/env python3
"""Build-time checks for the PQ Harness images (run by the Dockerfiles; no GPU needed).

    check_image.py trt --min 10.0 --max 10.4        # the base image's TensorRT is in range
    check_image.py constraints OUT --lock docker/constraints-a100.txt --record docker/bases/pytorch-25.01.json
                                                    # pin the base image's torch/torchvision/tensorrt/numpy and
                                                    # whatever its torch pins exactly, then the project's lock
                                                    # (names NGC's own constraint file pins are left to it:
                                                    # added to, never replacing; a locked package the base
                                                    # image already ships keeps the base image's version,
                                                    # except packaging, filelock and typing-extensions);
                                                    # --record: say where the image differs from its record
    check_image.py final --constraints OUT --trt-min 10.0 --trt-max 10.4 --ort 1.20.*
                                                    # after installing: nothing pinned was replaced,
                                                    # one onnxruntime flavour, the CUDA/TensorRT provider
                                                    # libraries load with every linked library present,
                                                    # a recorded ORT<->TRT pairing, `harness` on PATH
    check_image.py final ... --ort none             # an image without ONNX Runtime GPU backends (trt11)
    check_image.py providers --session              # on a GPU host: a real InferenceSession must keep
                                                    # the TensorRT and CUDA providers it asked for

Standard library and ``packaging`` (every base image ships it, and pip vendors a copy); the ``final``
step also uses ``harness.gpu.capabilities`` when importable.
Exits non-zero with a one-line reason, so ``docker build`` stops at the step that is wrong.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PINNED = ("torch", "torchvision", "tensorrt", "numpy")
#: Packages the lock may upgrade over the base image's version: pure-Python, and their releases keep
#: the APIs older callers use, while the lock's other pins need newer ones (ray: packaging>=24.2;
#: pydantic: typing-extensions>=4.16; virtualenv: filelock>=3.24.2). Everything else the base image
#: ships stays as NVIDIA built and tested it.
UPGRADABLE = frozenset({"packaging", "filelock", "typing-extensions"})
TRT_DISTS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13")
#: ONNX Runtime's GPU provider libraries (in onnxruntime/capi/), loaded after the shared one.
PROVIDER_LIBS: dict[str, str] = {
    "CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
    "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so",
}
PROVIDERS_SHARED = "libonnxruntime_providers_shared.so"
#: Libraries the NVIDIA Container Toolkit injects from the host driver at run time (absent at build).
DRIVER_LIBS = frozenset({"libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"})
BASE_HEADER = "# base image"
LOCK_HEADER = "# project lock"
#: Marks a lock pin replaced by the version the base image ships (the lock's version follows).
BASE_MARK = "# base image; lock:"
#: Marks a lock pin that upgrades what the base image ships (its version follows).
UPGRADE_MARK = "# upgrades the base image's"
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


def dist_requires(name: str) -> list[str]:
    try:
        return list(md.requires(name) or [])
    except md.PackageNotFoundError:
        return []


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


def requirement_name(line: str) -> str | None:
    """``"Foo_Bar==1.0"`` -> ``"foo-bar"``; None for blank lines and comments."""
    line = line.split("#", 1)[0].strip()
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return None if not line or m is None else re.sub(r"[-_.]+", "-", m.group()).lower()


def other_constraint_files(ours: Path, env: str | None = None) -> list[Path]:
    """The constraint files already in PIP_CONSTRAINT besides ours (NGC ships one from 25.03 on)."""
    value = os.environ.get("PIP_CONSTRAINT", "") if env is None else env
    out = []
    for item in value.split():
        path = Path(item)
        if path.resolve() != ours.resolve() and path.is_file():
            out.append(path)
    return out


def merge_constraints(
    base: list[str], lock_lines: list[str], foreign: set[str], installed: dict[str, str | None] | None = None,
    recorded: set[str] | None = None,
) -> tuple[list[str], list[str]]:
    """(lines, notes): base pins, then every lock line whose name neither the base pins nor another
    constraint file (``foreign``) constrains, so the two never disagree. ``installed`` maps the lock's
    names to the version the base image already has (None: not installed).

    A lock pin of something the base image ships and its record lists (``recorded``; every shipped
    package when no record is given) is pinned to the *base image's* version (``name==<base>  # base
    image; lock: <lock version>``): pip keeps NVIDIA's build, as CI resolved it. The :data:`UPGRADABLE`
    packages keep the lock's version. A shipped package the record does not list takes the newer of the
    two: never a downgrade of what NVIDIA ships, and the lock's version where the lock needs a newer one
    (CI resolved the lock without knowing the base image's version)."""
    installed = installed or {}
    taken = {requirement_name(line) for line in base} | foreign
    lines = [BASE_HEADER, *base, LOCK_HEADER]
    notes = []
    for raw in lock_lines:
        name = requirement_name(raw)
        if name is None:
            continue
        line = raw.split("#", 1)[0].strip()
        if name in taken and "==" in line:  # a bound (numpy<2) is kept: it must hold for the base pin too
            notes.append(f"{line}: left to the base image's constraints")
            continue
        present = installed.get(name)
        if present is None or "==" not in line:
            lines.append(line)
            continue
        locked = line.partition("==")[2].strip()
        requirement = line.partition("==")[0].strip()
        if name in UPGRADABLE or (recorded is not None and name not in recorded and not newer(present, locked)):
            lines.append(line if same_version(present, locked) else f"{line}  {UPGRADE_MARK} {present}")
            continue
        lines.append(f"{requirement}=={present}" + ("" if present == locked else f"  {BASE_MARK} {locked}"))
    return lines, notes


def _packaging(module: str) -> Any:
    """``packaging.<module>``: installed in every base image, and pip vendors a copy."""
    try:
        return importlib.import_module(f"packaging.{module}")
    except ImportError:  # pragma: no cover - an image without packaging still has pip's copy
        return importlib.import_module(f"pip._vendor.packaging.{module}")


def newer(a: str, b: str) -> bool:
    """``a`` is a later version than ``b`` (PEP 440; by number where one does not parse)."""
    version = _packaging("version")
    try:
        return version.Version(a) > version.Version(b)
    except version.InvalidVersion:
        return vtuple(a) > vtuple(b)


def exact_pins(requires: list[str], python_version: str | None = None) -> list[str]:
    """The ``name==version`` requirements among ``requires`` (a distribution's Requires-Dist) whose
    markers hold for ``python_version`` (default: this interpreter): what NGC's torch pins exactly
    (sympy) must stay as it is."""
    Requirement = _packaging("requirements").Requirement
    env = _packaging("markers").default_environment()
    if python_version:
        env.update(python_version=".".join(python_version.split(".")[:2]), python_full_version=python_version)
    pins = []
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
            pins.append(f"{requirement_name(req.name)}=={specs[0].version}")
    return pins


def build_constraints(
    version_of: Callable[[str], str | None], lock_lines: list[str], foreign: set[str], no_tensorrt: bool = False,
    torch_requires: list[str] | None = None, python_version: str | None = None, recorded: set[str] | None = None,
) -> tuple[list[str], list[str]]:
    """(lines, notes) of our constraint file for an image where ``version_of(name)`` is the installed
    version (None: absent) and ``recorded`` the names its record lists (see :func:`merge_constraints`).
    The Dockerfiles' ``constraints`` step and docker/resolve_image.py (the CI resolution of every
    image) both call this."""
    base = []
    for name in PINNED:
        if name == "tensorrt" and no_tensorrt:
            continue
        version = version_of(name)
        if version:
            base.append(f"{name}=={version}")
    if not any(line.startswith("torch==") for line in base):
        fail("the base image has no torch distribution to pin")
    pinned = {requirement_name(line) for line in base}
    for pin in exact_pins(torch_requires or [], python_version):
        name = requirement_name(pin)
        if name not in pinned:  # the version installed beside torch (the same release, maybe spelled longer)
            base.append(f"{name}=={version_of(name)}" if version_of(name) else pin)
    installed = {n: version_of(n) for n in filter(None, map(requirement_name, lock_lines))}
    return merge_constraints(base, lock_lines, foreign, installed, recorded)


def same_version(a: str | None, b: str | None) -> bool:
    """Equal as PEP 440 versions (``nv25.01`` is ``nv25.1``); as text where one does not parse."""
    if a is None or b is None:
        return a == b
    version = _packaging("version")
    try:
        return version.Version(a) == version.Version(b)
    except version.InvalidVersion:
        return a == b


def recorded_names(record: dict[str, Any]) -> set[str]:
    """The names a base image record (docker/bases/*.json) gives versions for."""
    return {requirement_name(n) for section in ("distributions", "packages") for n in record.get(section, {})}


def record_differences(
    record: dict[str, Any], version_of: Callable[[str], str | None], lock_lines: list[str]
) -> list[str]:
    """Where the image differs from the record CI resolved against: a recorded version that is not the
    image's, and a locked package the image ships at another version while the record does not list it
    (the newer of the two is installed: CI saw the lock's)."""
    recorded = {requirement_name(n): e["version"] for n, e in record.get("distributions", {}).items()}
    recorded |= {requirement_name(n): e["version"] for n, e in record.get("packages", {}).items()}
    out = []
    for name, version in sorted(recorded.items()):
        found = version_of(name)
        if not same_version(found, version):
            out.append(f"{name}: the record says {version}, the image has {found or 'none'}")
    locked = {requirement_name(line): line.split("#", 1)[0].partition("==")[2].strip() for line in lock_lines
              if "==" in line.split("#", 1)[0]}
    for name in sorted(set(locked) - set(recorded) - UPGRADABLE):
        found = version_of(name)
        if found is not None and not same_version(found, locked[name]):
            kept = found if newer(found, locked[name]) else locked[name]
            out.append(f"{name}: the image ships {found}, the record does not list it (the lock has {locked[name]}; "
                       f"pinned to {kept})")
    return out


def cmd_constraints(args: argparse.Namespace) -> None:
    out = Path(args.out)
    foreign: set[str] = set()
    for path in other_constraint_files(out):
        foreign |= {n for n in map(requirement_name, path.read_text().splitlines()) if n}
    lock = Path(args.lock).read_text().splitlines() if args.lock else []
    record = json.loads(Path(args.record).read_text()) if args.record else None
    lines, notes = build_constraints(dist_version, lock, foreign, args.no_tensorrt, dist_requires("torch"),
                                     recorded=recorded_names(record) if record is not None else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("check_image: constraints:\n  " + "\n  ".join(lines + notes))
    if record is not None:
        differences = record_differences(record, dist_version, lock)
        for line in differences:
            print(f"check_image: not as recorded: {line}")
        if differences:
            print(f"check_image: CI resolved the lock against {Path(args.record).name}; if pip fails below, record "
                  "this image on the host (docker run --rm <base image> pip list --format=freeze > base.txt; python "
                  "docker/resolve_image.py record <record> --freeze base.txt), then re-resolve the lock")


def check_pins(lines: list[str], have: dict[str, str | None]) -> list[str]:
    """Problems with the installed versions ``have`` (name -> version or None) against our file:
    base pins must be installed unchanged; a lock pin, when installed, at its version, or a lock pin
    that upgrades the base image's package at either (a target that does not depend on it leaves the
    base image's in place); ``name<N`` (e.g. ``numpy<2``) below major N."""
    problems = []
    section = None
    for raw in lines:
        if raw.strip() in (BASE_HEADER, LOCK_HEADER):
            section = raw.strip()
            continue
        name = requirement_name(raw)
        if name is None:
            continue
        line = raw.split("#", 1)[0].strip()
        installed = have.get(name)
        if "==" in line:
            want = line.partition("==")[2].strip()
            if section == LOCK_HEADER and installed is None:
                continue  # not needed by anything installed
            base = raw.partition(UPGRADE_MARK)[2].strip() if UPGRADE_MARK in raw else None
            if not same_version(installed, want) and not (base and same_version(installed, base)):
                problems.append(f"{name} changed from {want} to {installed}: a dependency reinstalled it")
        elif m := re.fullmatch(r"[A-Za-z0-9._-]+\s*<\s*(\d+)", line):
            if installed is not None and vtuple(installed)[0] >= int(m.group(1)):
                problems.append(f"{name} {installed} breaks {line} (the base image's torch needs it)")
        else:
            problems.append(f"unsupported constraint line {line!r}: use name==version or name<major")
    return problems


# ---------------------------------------------------------------------------------- provider libraries


def missing_libraries(ldd_output: str) -> list[str]:
    """Libraries ``ldd`` could not find, except the driver's (the container toolkit injects those)."""
    missing = []
    for line in ldd_output.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+not found", line)
        if m and m.group(1) not in DRIVER_LIBS:
            missing.append(m.group(1))
    return missing


def check_provider_libraries(capi: Path, providers: tuple[str, ...] = tuple(PROVIDER_LIBS)) -> list[str]:
    """Problems loading each provider library for real: absent files, linked libraries the loader
    cannot find (``ldd``, transitively), and, where the driver is present, ``dlopen`` itself."""
    problems = []
    ldd = shutil.which("ldd")
    driver = _loadable("libcuda.so.1")
    shared = capi / PROVIDERS_SHARED
    for provider in providers:
        lib = capi / PROVIDER_LIBS[provider]
        if not lib.is_file():
            problems.append(f"{provider}: {lib.name} is missing from {capi}")
            continue
        if ldd is not None:
            proc = subprocess.run([ldd, str(lib)], capture_output=True, text=True)
            missing = missing_libraries(proc.stdout + proc.stderr)
            if missing:
                problems.append(f"{provider}: {lib.name} links libraries that are not installed: {', '.join(missing)}")
                continue
        if driver or ldd is None:
            try:
                if shared.is_file():
                    ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
                ctypes.CDLL(str(lib))
            except OSError as err:
                problems.append(f"{provider}: {lib.name} does not load: {err}")
    return problems


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def onnxruntime_capi() -> Path:
    import onnxruntime  # noqa: PLC0415

    return Path(onnxruntime.__file__).resolve().parent / "capi"


def session_providers(asked: list[str]) -> list[str]:
    """The providers a real InferenceSession on a one-node model keeps (needs onnx and a GPU)."""
    import onnx  # noqa: PLC0415
    import onnxruntime  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path))
        session = onnxruntime.InferenceSession(str(path), providers=asked)
        return list(session.get_providers())


def cmd_providers(args: argparse.Namespace) -> None:
    problems = check_provider_libraries(onnxruntime_capi())
    if problems:
        fail("; ".join(problems))
    if args.session:
        asked = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        kept = session_providers(asked)
        lost = [p for p in asked if p not in kept]
        if lost:
            fail(f"an InferenceSession asked for {asked} kept only {kept}: {', '.join(lost)} failed to load")
    print("check_image: provider libraries load" + (" and a session keeps them" if args.session else ""))


def check_pairing(ort_version: str, trt_version: str) -> str:
    """The pairing reason; fails on a known mismatch *and* on an undetermined pairing."""
    try:
        from harness.gpu.capabilities import check_ort_trt_pair  # noqa: PLC0415
    except ImportError as err:
        fail(f"the harness package is not importable: {err}")
    pair = check_ort_trt_pair(ort_version, trt_version)
    if pair.ok is not True:
        fail(("undetermined pairing: " if pair.ok is None else "") + pair.reason)
    return pair.reason


def cmd_final(args: argparse.Namespace) -> None:
    # 1. nothing pinned was replaced, the lock held
    lines = Path(args.constraints).read_text().splitlines()
    have = {n: dist_version(n) for n in filter(None, map(requirement_name, lines))}
    problems = check_pins(lines, have)
    if problems:
        fail("; ".join(problems))
    # 2. exactly one onnxruntime flavour
    cpu, gpu = dist_version("onnxruntime"), dist_version("onnxruntime-gpu")
    # 3. TensorRT range
    version, source = tensorrt_version()
    if version is None:
        fail("TensorRT disappeared from the image")
    v = vtuple(version)[:2]
    if not vtuple(args.trt_min)[:2] <= v <= vtuple(args.trt_max)[:2]:
        fail(f"TensorRT {version} ({source}) outside {args.trt_min}..{args.trt_max}")
    if args.ort == "none":
        # 4a. no ONNX Runtime GPU backends in this image (no PyPI onnxruntime-gpu links its TensorRT)
        if gpu is not None:
            fail(f"onnxruntime-gpu {gpu} is installed, but this image has no ONNX Runtime GPU backends")
        if cpu is None:
            fail("onnxruntime (CPU) is not installed: ort-cpu would be unavailable")
        ort_note = f"onnxruntime {cpu} (CPU only)"
    else:
        # 4b. onnxruntime-gpu whose provider libraries load for real, paired with this TensorRT
        if gpu is None:
            fail("onnxruntime-gpu is not installed")
        if cpu is not None:
            fail(f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed; they share one module")
        if args.ort and not re.fullmatch(args.ort.replace(".", r"\.").replace("*", r".*"), gpu):
            fail(f"onnxruntime-gpu {gpu} does not match the pin {args.ort}")
        problems = check_provider_libraries(onnxruntime_capi())
        if problems:
            fail("; ".join(problems))
        print(f"check_image: onnxruntime-gpu {gpu} + TensorRT {version}: {check_pairing(gpu, version)}")
        ort_note = f"onnxruntime-gpu {gpu}"
    # 5. the CLI the compose entrypoint runs
    if shutil.which("harness") is None:
        fail("no `harness` executable on PATH (console script missing from the project metadata?)")
    proc = subprocess.run(["harness", "--help"], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"`harness --help` exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    print(f"check_image: OK (torch {dist_version('torch')}, {ort_note}, TensorRT {version})")


def constraints_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``constraints`` step's arguments (docker/resolve_image.py parses the Dockerfiles' with it)."""
    p = p or argparse.ArgumentParser(prog="check_image.py constraints")
    p.add_argument("out")
    p.add_argument("--no-tensorrt", action="store_true", help="do not pin TensorRT (the TRT 11 image replaces it)")
    p.add_argument("--lock", default=None, help="the project's lock file (docker/constraints-<image>.txt)")
    p.add_argument("--record", default=None, help="the base image's record (docker/bases/<name>.json)")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("trt")
    p.add_argument("--min", required=True)
    p.add_argument("--max", required=True)
    constraints_parser(sub.add_parser("constraints"))
    p = sub.add_parser("final")
    p.add_argument("--constraints", required=True)
    p.add_argument("--trt-min", required=True)
    p.add_argument("--trt-max", required=True)
    p.add_argument("--ort", default=None, help="the onnxruntime-gpu pin, e.g. 1.20.*; 'none': CPU onnxruntime only")
    p = sub.add_parser("providers")
    p.add_argument("--session", action="store_true", help="also run a real InferenceSession (needs a GPU)")
    args = parser.parse_args(argv)
    commands = {"trt": cmd_trt, "constraints": cmd_constraints, "final": cmd_final, "providers": cmd_providers}
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
