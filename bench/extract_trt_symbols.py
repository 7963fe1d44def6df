#!/usr/bin/env python3
"""Extract the Python-visible TensorRT API names from a ``tensorrt-cuXX-bindings`` wheel.

The PyPI bindings wheels hold only the pybind11 extension module (``tensorrt_bindings/tensorrt.so``);
it cannot load without ``libnvinfer``. This script still lists which names a TensorRT version
exposes, so that tests can check our TensorRT code against the API of the pinned version (and show
what TRT 11 removed) on a machine without TensorRT or a GPU.

Two methods:

``introspect`` (default when a C compiler is present)
    Builds tiny stub libraries that export the handful of C entry points the extension module
    imports from ``libnvinfer`` / ``libnvonnxparser`` / ``libnvinfer_plugin`` (``createInferBuilder_INTERNAL``
    and friends; everything else is reached through C++ virtual calls), imports the wheel's package
    in a subprocess with those stubs on ``LD_LIBRARY_PATH`` and walks ``dir()``. No stub is called
    by the module's initialisation. The result is qualified names: ``BuilderFlag.INT8``,
    ``IBuilderConfig.int8_calibrator``, ``ILogger.Severity.ERROR``.

``strings``
    Scans the extension module for printable runs that are whole Python identifiers (what pybind11
    registers as class, method, attribute and enum names). Unqualified; a fallback only.

Output: one file per wheel, ``<out-dir>/tensorrt-<version>.txt``, with ``#`` header lines (wheel
file name, sha256, method) and then one sorted name per line.

Usage::

    python3 -m pip download --no-deps -d /tmp/trtwheels tensorrt-cu12-bindings==10.15.1.29
    python3 bench/extract_trt_symbols.py /tmp/trtwheels/tensorrt_cu12_bindings-10.15.1.29-*.whl \
        --out-dir tests/data/trt_symbols

The import runs only when the wheel's Python tag matches the running interpreter (the extension is
built per CPython version); otherwise ``auto`` falls back to ``strings``.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,63}\Z")
PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{3,}")
NVIDIA_LIB = re.compile(r"lib(nvinfer|nvonnxparser|nvinfer_plugin|nvinfer_dispatch|nvinfer_lean)[A-Za-z0-9_]*\.so(\.\d+)*\Z")

# Runs inside the subprocess: import the package, walk it, print JSON.
_WALKER = r"""
import importlib, inspect, json, sys
mod = importlib.import_module(sys.argv[1])
names = set()
def public(n):
    return not n.startswith("_") or n in ("__init__", "__call__", "__enter__", "__exit__", "__len__", "__getitem__", "__version__")
def walk(obj, prefix, depth):
    for n in dir(obj):
        if not public(n):
            continue
        try:
            v = getattr(obj, n)
        except Exception:
            names.add(prefix + n)
            continue
        names.add(prefix + n)
        if inspect.isclass(v) and depth < 3 and (prefix == "" or v.__qualname__.split(".")[-1] == n):
            if getattr(v, "__module__", "").split(".")[0] in (sys.argv[1], "tensorrt"):
                walk(v, prefix + n + ".", depth + 1)
walk(mod, "", 0)
print(json.dumps({"version": getattr(mod, "__version__", None), "names": sorted(names)}))
"""


@dataclass
class WheelInfo:
    path: Path
    name: str
    version: str
    sha256: str
    python_tag: str


def wheel_info(path: Path) -> WheelInfo:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    parts = path.name[: -len(".whl")].split("-")
    if len(parts) < 5:
        raise SystemExit(f"{path.name}: not a wheel file name (name-version-python-abi-platform.whl)")
    return WheelInfo(path=path, name=parts[0], version=parts[1], sha256=digest, python_tag=parts[-3])


def find_extension(zf: zipfile.ZipFile) -> str:
    for member in zf.namelist():
        if re.fullmatch(r"tensorrt[A-Za-z_]*/tensorrt\.(so|cpython[^/]*\.so)", member):
            return member
    raise SystemExit("no tensorrt*/tensorrt.so extension module inside the wheel")


# ---------------------------------------------------------------------------------- ELF reading


def elf_dynamic_info(data: bytes) -> tuple[list[str], list[str]]:
    """(DT_NEEDED libraries, undefined GLOBAL dynamic symbols) of a 64-bit little-endian ELF."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        sh_name, sh_type, _flags, _addr, sh_offset, sh_size, sh_link, _info, _align, sh_entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, off
        )
        sections.append((sh_type, sh_offset, sh_size, sh_link, sh_entsize))

    def cstr(table_off: int, idx: int) -> str:
        end = data.index(b"\x00", table_off + idx)
        return data[table_off + idx : end].decode("ascii", "replace")

    needed: list[str] = []
    undefined: list[str] = []
    for sh_type, sh_offset, sh_size, sh_link, sh_entsize in sections:
        if sh_type == 6:  # SHT_DYNAMIC
            strtab = sections[sh_link][1]
            for off in range(sh_offset, sh_offset + sh_size, 16):
                tag, val = struct.unpack_from("<qQ", data, off)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(cstr(strtab, val))
        elif sh_type == 11:  # SHT_DYNSYM
            strtab = sections[sh_link][1]
            for off in range(sh_offset + sh_entsize, sh_offset + sh_size, sh_entsize):
                st_name, st_info, _other, st_shndx = struct.unpack_from("<IBBH", data, off)
                if st_shndx == 0 and (st_info >> 4) == 1 and st_name:  # UNDEF, STB_GLOBAL
                    undefined.append(cstr(strtab, st_name))
    return needed, undefined


def resolvable_here(symbol: str) -> bool:
    libs = [None, "libstdc++.so.6", "libgcc_s.so.1", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1"]
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
            getattr(handle, symbol)
            return True
        except (OSError, AttributeError):
            continue
    return False


# ---------------------------------------------------------------------------------- methods


def extract_strings(so_bytes: bytes) -> list[str]:
    names: set[str] = set()
    for match in PRINTABLE_RUN.finditer(so_bytes):
        token = match.group().decode("ascii")
        if IDENT.match(token) and not token.startswith(("_Z", "GLIBC", "CXXABI", "GCC_")):
            names.add(token)
    return sorted(names)


def extract_introspect(zf: zipfile.ZipFile, ext_member: str, work: Path, timeout: float = 120.0) -> list[str]:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) to build the stub libraries")
    package = ext_member.split("/")[0]
    pkg_dir = work / "site"
    for member in zf.namelist():
        if member.startswith(package + "/"):
            zf.extract(member, pkg_dir)
    so_bytes = zf.read(ext_member)
    needed, undefined = elf_dynamic_info(so_bytes)
    nvidia_libs = [lib for lib in needed if NVIDIA_LIB.match(lib)]
    stubs = {s for s in undefined if not s.startswith(("Py", "_Py", "_Z")) and not resolvable_here(s)}

    stub_dir = work / "stubs"
    stub_dir.mkdir()
    env = dict(os.environ, LD_LIBRARY_PATH=str(stub_dir), PYTHONPATH=str(pkg_dir), PYTHONDONTWRITEBYTECODE="1")
    for _attempt in range(10):
        source = stub_dir / "stub.c"
        source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in sorted(stubs)) or "int pq_stub;\n")
        first = stub_dir / "libpqstub.so"
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(first), str(source)], check=True)
        for lib in nvidia_libs:
            shutil.copyfile(first, stub_dir / lib)
        proc = subprocess.run(
            [sys.executable, "-c", _WALKER, package],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])["names"]
        missing = re.search(r"undefined symbol: (\S+)", proc.stderr)
        if missing and missing.group(1) not in stubs:
            stubs.add(missing.group(1))
            continue
        raise RuntimeError(f"importing the bindings with stub libraries failed:\n{proc.stderr[-2000:]}")
    raise RuntimeError("too many undefined symbols; giving up on introspection")


def extract(wheel: Path, out_dir: Path, method: str) -> Path:
    info = wheel_info(wheel)
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(prefix="trt-symbols-") as tmp:
        ext_member = find_extension(zf)
        chosen = method
        if method == "auto":
            chosen = "introspect" if info.python_tag == here and sys.platform.startswith("linux") else "strings"
        if chosen == "introspect":
            try:
                names = extract_introspect(zf, ext_member, Path(tmp))
            except (RuntimeError, subprocess.SubprocessError, OSError) as err:
                if method == "introspect":
                    raise
                print(f"{wheel.name}: introspection failed ({err}); using strings", file=sys.stderr)
                chosen = "strings"
        if chosen == "strings":
            names = extract_strings(zf.read(ext_member))
    short = ".".join(info.version.split(".")[:2])
    out = out_dir / f"tensorrt-{short}.txt"
    header = [
        "# TensorRT Python API names extracted by bench/extract_trt_symbols.py",
        f"# wheel: {wheel.name}",
        f"# sha256: {info.sha256}",
        f"# version: {info.version}",
        f"# method: {chosen}",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + names) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", nargs="+", type=Path, help="tensorrt-cuXX-bindings wheel files")
    parser.add_argument("--out-dir", type=Path, default=Path("tests/data/trt_symbols"))
    parser.add_argument("--method", choices=("auto", "introspect", "strings"), default="auto")
    args = parser.parse_args(argv)
    for wheel in args.wheels:
        out = extract(wheel, args.out_dir, args.method)
        lines = sum(1 for line in out.read_text().splitlines() if not line.startswith("#"))
        print(f"{out}: {lines} names, {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
