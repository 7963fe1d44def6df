#!/usr/bin/env python3
"""List the provider option names each pinned onnxruntime-gpu wheel accepts, from its shared objects.

No GPU is needed: the names are read from the wheels' string tables.

TensorRT EP (``onnxruntime_pybind11_state*.so``)
    The Python binding compares every key against its own literals and raises
    "Invalid TensorRT EP option" for any other. Two sources, united:

    * the identifier strings of the block that ends with the "Invalid TensorRT EP option: " message
      (the compiler emits the literals of that function together);
    * the keys named by the binding's own value errors, "[TensorRT] The value for the key 'K' ...";
      they also name keys whose literal the linker merged into the tail of a longer string
      (``device_id`` lives only as the end of ``set_cuda_device_id``).

CUDA EP (``libonnxruntime_providers_cuda.so``)
    The provider parses its options itself and fails on "Unknown provider option". The identifier
    strings of the block before that message are its option names. The linker keeps one copy of a
    literal that ends another (``user_compute_stream`` is the tail of ``has_user_compute_stream``),
    so a key is accepted when it is a listed name or a ``_``-bounded tail of one
    (:func:`accepts`).

Usage::

    python3 bench/ort_provider_options.py --out-dir tests/data/ort_provider_options 1.20.2 1.21.1

Each version: ``pip download --no-deps`` into ``--wheel-dir``, extract the two shared objects, write
``<out-dir>/<version>/{tensorrt,cuda}.txt``, delete the wheel and the extracted files.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{4,}")
OPTION_NAME = re.compile(r"[a-z][a-z0-9_]*[a-z0-9]\Z")
TRT_VALUE_ERROR = re.compile(r"\[TensorRT\] The value for the key '([a-z0-9_]+)'")
TRT_BLOCK_END = "Invalid TensorRT EP option: "
TRT_BLOCK_START = "TensorrtExecutionProvider"
CUDA_BLOCK_END = 'Unknown provider option: "'
#: The parser's own messages sit among the CUDA EP's names (they have spaces; "Parse" is a function name).
CUDA_PARSER_TEXT = re.compile(r" |\AParse\Z")
PYBIND = re.compile(r"onnxruntime/capi/onnxruntime_pybind11_state[^/]*\.so\Z")
CUDA_LIB = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
#: a TensorRT EP key block is a few dozen literals; stop looking further back than this
MAX_BLOCK = 120


def printable_strings(data: bytes) -> list[str]:
    """The NUL-separated printable runs of a binary, in file order (like ``strings -n 4``)."""
    return [m.group().decode("ascii") for m in PRINTABLE_RUN.finditer(data)]


def tensorrt_keys(strings: list[str]) -> set[str]:
    """The TensorRT EP keys the Python binding accepts (see the module docstring)."""
    keys = {m.group(1) for s in strings for m in TRT_VALUE_ERROR.finditer(s)}
    for end, text in enumerate(strings):
        if text != TRT_BLOCK_END:
            continue
        for back in range(end - 1, max(-1, end - MAX_BLOCK), -1):
            if strings[back] == TRT_BLOCK_START:
                break
            if OPTION_NAME.match(strings[back]):
                keys.add(strings[back])
    if not keys:
        raise SystemExit(f"no TensorRT EP option block found (no '{TRT_BLOCK_END}' message): is this the GPU wheel?")
    return keys - {"stoull", "true"}


def cuda_keys(strings: list[str]) -> set[str]:
    """The CUDA EP option names of the provider library (see the module docstring)."""
    keys: set[str] = set()
    for end, text in enumerate(strings):
        if text != CUDA_BLOCK_END:
            continue
        for back in range(end - 1, max(-1, end - MAX_BLOCK), -1):
            s = strings[back]
            if OPTION_NAME.match(s):
                keys.add(s)
            elif not CUDA_PARSER_TEXT.search(s):
                break  # a symbol-like string: the literals of the previous function begin
    if not keys:
        raise SystemExit(f"no CUDA EP option block found (no '{CUDA_BLOCK_END}' message)")
    return keys


def accepts(key: str, names: set[str] | frozenset[str]) -> bool:
    """``key`` is listed, or is the ``_``-bounded tail of a listed name (a merged literal)."""
    return key in names or any(n.endswith("_" + key) for n in names)


def read_names(path: Path) -> frozenset[str]:
    """A committed list: one name a line, ``#`` comments."""
    return frozenset(ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#"))


def extract(wheel: Path) -> dict[str, set[str]]:
    """``{"tensorrt": ..., "cuda": ...}`` from one onnxruntime-gpu wheel."""
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
        members = zf.namelist()
        pybind = [m for m in members if PYBIND.search(m)]
        if not pybind or CUDA_LIB not in members:
            raise SystemExit(f"{wheel.name}: no Python binding or CUDA provider library inside: not onnxruntime-gpu")
        out: dict[str, set[str]] = {}
        for kind, member, fn in (("tensorrt", pybind[0], tensorrt_keys), ("cuda", CUDA_LIB, cuda_keys)):
            path = Path(zf.extract(member, tmp))
            out[kind] = fn(printable_strings(path.read_bytes()))
            path.unlink()
        return out


def download(version: str, wheel_dir: Path) -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_28_x86_64",
         f"onnxruntime-gpu=={version}", "-d", str(wheel_dir)],
        check=True,
    )
    found = sorted(wheel_dir.glob(f"onnxruntime_gpu-{version}-*.whl"))
    if not found:
        raise SystemExit(f"pip download left no onnxruntime_gpu-{version} wheel in {wheel_dir}")
    return found[0]


def write_lists(version: str, wheel_name: str, names: dict[str, set[str]], out_dir: Path) -> None:
    target = out_dir / version
    target.mkdir(parents=True, exist_ok=True)
    sources = {"tensorrt": "onnxruntime_pybind11_state*.so (TensorRT EP keys of the Python binding)",
               "cuda": "libonnxruntime_providers_cuda.so (CUDA EP option names; a key may be a _-bounded tail)"}
    for kind, keys in names.items():
        header = f"# onnxruntime-gpu {version}: {sources[kind]}\n# from {wheel_name} by bench/ort_provider_options.py\n"
        (target / f"{kind}.txt").write_text(header + "".join(f"{k}\n" for k in sorted(keys)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="+", help="onnxruntime-gpu versions (concrete, e.g. 1.21.1)")
    parser.add_argument("--out-dir", type=Path, default=Path("tests/data/ort_provider_options"))
    parser.add_argument("--wheel-dir", type=Path, default=Path("/tmp/ort-gpu-wheels"))
    parser.add_argument("--keep", action="store_true", help="keep the downloaded wheels")
    args = parser.parse_args(argv)
    for version in args.versions:
        wheel = download(version, args.wheel_dir)
        try:
            names = extract(wheel)
        finally:
            if not args.keep:
                wheel.unlink()
        write_lists(version, wheel.name, names, args.out_dir)
        print(f"{version}: {len(names['tensorrt'])} TensorRT EP keys, {len(names['cuda'])} CUDA EP names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
