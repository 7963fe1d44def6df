"""Every provider option key the ONNX Runtime GPU backends pass is accepted by each pinned onnxruntime-gpu.

The accepted names were read from the real wheels' shared objects by ``bench/ort_provider_options.py``
and committed under ``tests/data/ort_provider_options/<version>/``. The keys under test are collected
by calling the functions that build the options, over every build plan, so a new key cannot slip by.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import sys
from pathlib import Path

import pytest

from backends.ort_cuda import ort_cuda_provider_options
from backends.ort_trt import ort_trt_provider_options
from backends.trt_plan import plan_build
from harness.errors import UnsupportedCombination

ROOT = Path(__file__).resolve().parents[1]
LISTS = ROOT / "tests" / "data" / "ort_provider_options"
sys.path.insert(0, str(ROOT / "bench"))
from ort_provider_options import accepts, cuda_keys, printable_strings, read_names, tensorrt_keys  # noqa: E402

DOCKER_PIN = re.compile(r"^ARG ORT_GPU_VERSION=(\S+)", re.M)


def pinned_patterns() -> list[str]:
    """The onnxruntime-gpu versions the images install (``ARG ORT_GPU_VERSION=1.21.*``)."""
    found = [m.group(1) for p in sorted((ROOT / "docker").glob("Dockerfile.*")) for m in DOCKER_PIN.finditer(p.read_text())]
    assert found, "no Dockerfile pins ORT_GPU_VERSION"
    return found


def listed_versions() -> list[str]:
    return sorted(p.name for p in LISTS.iterdir() if p.is_dir())


def trt_ep_keys(tmp: Path) -> set[str]:
    """Every key ort-trt passes to the TensorRT EP, over all plans and option switches."""
    keys: set[str] = set()
    for version, precision, mode, sparse in itertools.product(
            ("10.4.0", "10.8.0", "10.15.1"), ("fp32", "fp16", "int8"), ("implicit", "explicit"), (False, True)):
        try:
            plan = plan_build(precision, version, mode, True, sparse, (1, 8, 32))
        except UnsupportedCombination:
            continue
        table = "table.flatbuffers" if plan.use_calibrator else None
        for native, stream, detailed in itertools.product((False, True), (None, 1234), (False, True)):
            keys |= set(ort_trt_provider_options(
                plan, engine_dir=tmp / "e", timing_dir=tmp / "t", input_shape=(3, 8, 8), calibration_table_name=table,
                native_calibration_table=native, stream_handle=stream, detailed_build_log=detailed, device_id=1))
    return keys


def cuda_ep_keys() -> set[str]:
    keys: set[str] = set()
    for stream, limit, tf32 in itertools.product((None, 1234), (None, 1 << 30), (None, False, True)):
        keys |= set(ort_cuda_provider_options(device_id=1, stream_handle=stream, gpu_mem_limit=limit, use_tf32=tf32))
    return keys


def test_every_pinned_version_has_lists() -> None:
    versions = listed_versions()
    for pattern in pinned_patterns():
        assert any(fnmatch.fnmatch(v, pattern) for v in versions), (
            f"no provider option list for onnxruntime-gpu {pattern}: run bench/ort_provider_options.py <version>")


@pytest.mark.parametrize("version", listed_versions())
def test_tensorrt_ep_keys_are_accepted(version: str, tmp_path: Path) -> None:
    names = read_names(LISTS / version / "tensorrt.txt")
    rejected = sorted(k for k in trt_ep_keys(tmp_path) if k not in names)  # the binding compares whole keys
    assert not rejected, f"onnxruntime-gpu {version}'s Python binding raises 'Invalid TensorRT EP option' for {rejected}"


@pytest.mark.parametrize("version", listed_versions())
def test_cuda_ep_keys_are_accepted(version: str) -> None:
    names = read_names(LISTS / version / "cuda.txt")
    rejected = sorted(k for k in cuda_ep_keys() if not accepts(k, names))
    assert not rejected, f"onnxruntime-gpu {version}'s CUDA provider reports 'Unknown provider option' for {rejected}"


def test_extraction_rules_on_a_string_table() -> None:
    """The rules the lists were made with, on a string table shaped like the real ones."""
    pybind = b"\0".join([
        b"N11onnxruntime6python", b"TensorrtExecutionProvider", b"ORT_TENSORRT_UNAVAILABLE", b"user_compute_stream",
        b"stoull", b"trt_fp16_enable", b"True", b"true", b"False", b"Invalid TensorRT EP option: ", b"Failed to create ",
        b"[ERROR] [TensorRT] The value for the key 'device_id' should be a number i.e. '0'.", b"set_cuda_device_id",
        b"trt_not_in_block"])
    assert tensorrt_keys(printable_strings(pybind)) == {"user_compute_stream", "trt_fp16_enable", "device_id"}
    cuda = b"\0".join([
        b"pads", b"cudnnDestroy(cudnn_handle_)", b"device_id", b"\" already has a value parser.", b"Provider option \"",
        b"has_user_compute_stream", b"use_tf32", b"Invalid device ID: ", b"Parse", b"Unknown provider option: \"",
        b"FromProviderOptions", b"unrelated_name"])
    names = cuda_keys(printable_strings(cuda))
    assert names == {"device_id", "has_user_compute_stream", "use_tf32"}
    assert accepts("user_compute_stream", names)  # a literal merged into the tail of a longer one
    assert not accepts("ser_compute_stream", names) and not accepts("pads", names)


def test_real_lists_hold_the_known_differences() -> None:
    """Hand-checked facts of the two pinned wheels (their strings were read with ``strings -t d``)."""
    for version in ("1.20.2", "1.21.1"):
        trt = read_names(LISTS / version / "tensorrt.txt")
        assert "has_user_compute_stream" not in trt and {"user_compute_stream", "device_id"} <= trt
        assert "use_tf32" not in trt  # the TensorRT EP has no TF32 switch in either binding
        cuda = read_names(LISTS / version / "cuda.txt")
        assert {"has_user_compute_stream", "use_tf32", "device_id"} <= cuda
    assert "trt_op_types_to_exclude" in read_names(LISTS / "1.21.1" / "tensorrt.txt")
    assert "trt_op_types_to_exclude" not in read_names(LISTS / "1.20.2" / "tensorrt.txt")
