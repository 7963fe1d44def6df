"""Engine and timing-cache keys: every field matters, order does not, digests are stable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store.engine_cache import ENGINE_CACHE_FORMAT, IGNORED_BUILDER_OPTIONS, EngineCacheKey, TimingCacheKey

BASE = EngineCacheKey(
    backend="trt-native",
    onnx_hash="a" * 64,
    precision="int8",
    int8_mode="implicit",
    calibration_hash="c" * 16,
    trt_version="10.4.0.26",
    gpu_name="Tesla V100-SXM2-16GB",
    compute_capability=(7, 0),
    builder_options={"workspace_bytes": 4 << 30, "sparse": False, "opt_level": 3, "profile": [1, 128, 128],
                     "profiling_verbosity": "detailed"},
)

#: One changed value per field (and per builder option).
FIELD_CHANGES: dict[str, object] = {
    "backend": "ort-trt",
    "onnx_hash": "b" * 64,
    "precision": "fp16",
    "int8_mode": "explicit",
    "calibration_hash": "d" * 16,
    "trt_version": "10.15.1.29",
    "gpu_name": "NVIDIA A100-SXM4-40GB",
    "compute_capability": (8, 0),
}
OPTION_CHANGES: dict[str, object] = {
    "workspace_bytes": 2 << 30,
    "sparse": True,
    "opt_level": 5,
    "profile": [8, 128, 128],
    "profiling_verbosity": "layer_names_only",
}


def test_every_field_changes_the_key() -> None:
    assert {f.name for f in dataclasses.fields(EngineCacheKey)} == set(FIELD_CHANGES) | {"builder_options"}
    digests = {BASE.digest()}
    for name, value in FIELD_CHANGES.items():
        changed = dataclasses.replace(BASE, **{name: value})
        assert changed.digest() != BASE.digest(), name
        digests.add(changed.digest())
    assert len(digests) == len(FIELD_CHANGES) + 1


@pytest.mark.parametrize("option", sorted(OPTION_CHANGES))
def test_every_builder_option_changes_the_key(option: str) -> None:
    changed = dataclasses.replace(BASE, builder_options={**BASE.builder_options, option: OPTION_CHANGES[option]})
    assert changed.digest() != BASE.digest()


def test_none_versus_value_and_added_options_change_the_key() -> None:
    assert dataclasses.replace(BASE, calibration_hash=None).digest() != BASE.digest()
    assert dataclasses.replace(BASE, int8_mode=None).digest() != BASE.digest()
    added = dataclasses.replace(BASE, builder_options={**BASE.builder_options, "calibration_batch": 32})
    assert added.digest() != BASE.digest()


def test_cuda_graph_is_not_part_of_the_key() -> None:
    assert "cuda_graph" in IGNORED_BUILDER_OPTIONS
    with_graph = dataclasses.replace(BASE, builder_options={**BASE.builder_options, "cuda_graph": True})
    assert with_graph.digest() == BASE.digest()
    assert "cuda_graph" not in with_graph.to_dict()["builder_options"]


def test_option_order_and_tuple_or_list_spelling_do_not_matter() -> None:
    reordered = dataclasses.replace(BASE, builder_options=dict(reversed(list(BASE.builder_options.items()))))
    assert list(reordered.builder_options) != list(BASE.builder_options)
    assert reordered.digest() == BASE.digest()
    as_tuple = dataclasses.replace(BASE, builder_options={**BASE.builder_options, "profile": (1, 128, 128)})
    assert as_tuple.digest() == BASE.digest()
    assert dataclasses.replace(BASE, compute_capability=(7, 0)).digest() == BASE.digest()


def test_digest_is_stable_across_processes() -> None:
    code = (
        "from harness.store.engine_cache import EngineCacheKey as K;"
        "print(K('trt-native','a'*64,'int8','implicit','c'*16,'10.4.0.26','Tesla V100-SXM2-16GB',(7,0),"
        "{'workspace_bytes':4<<30,'sparse':False,'opt_level':3,'profile':[1,128,128],"
        "'profiling_verbosity':'detailed'}).digest())"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == BASE.digest()
    assert len(BASE.digest()) == 64 and int(BASE.digest(), 16) >= 0


def test_canonical_form_is_json_ready_and_versioned() -> None:
    data = BASE.to_dict()
    assert data["format"] == ENGINE_CACHE_FORMAT
    assert data["compute_capability"] == [7, 0]
    assert list(data["builder_options"]) == sorted(data["builder_options"])
    with pytest.raises(TypeError):
        dataclasses.replace(BASE, builder_options={"bad": object()}).digest()


def test_paths_are_readable_unique_and_under_the_cache_dir(tmp_path: Path) -> None:
    path = BASE.path(tmp_path, ".engine")
    assert path.parent == tmp_path
    assert path.name.startswith("int8-implicit-sm70-") and path.suffix == ".engine"
    assert BASE.digest()[:24] in path.name
    assert BASE.path(tmp_path, "").name == path.stem  # per-key directory (ort-trt)
    other = dataclasses.replace(BASE, gpu_name="Tesla V100-PCIE-32GB")
    assert other.path(tmp_path) != BASE.path(tmp_path)
    fp32 = dataclasses.replace(BASE, precision="fp32", int8_mode=None, calibration_hash=None)
    assert fp32.path(tmp_path, ".engine").name.startswith("fp32-sm70-")


def test_keys_are_hashable_and_comparable() -> None:
    same = dataclasses.replace(BASE)
    assert same == BASE
    assert hash(same) == hash(BASE)


def test_timing_cache_key_depends_on_trt_and_gpu_only(tmp_path: Path) -> None:
    key = TimingCacheKey("10.4.0.26", "Tesla V100-SXM2-16GB", (7, 0))
    assert dataclasses.replace(key, trt_version="10.4.1").digest() != key.digest()
    assert dataclasses.replace(key, gpu_name="Tesla V100-PCIE-32GB").digest() != key.digest()
    assert dataclasses.replace(key, compute_capability=(8, 0)).digest() != key.digest()
    assert {f.name for f in dataclasses.fields(TimingCacheKey)} == {"trt_version", "gpu_name", "compute_capability"}
    path = key.path(tmp_path)
    assert path.parent == tmp_path and path.name.startswith("timing-trt10-4-0-26-sm70-") and path.suffix == ".cache"
    # an engine key with the same TRT/GPU never collides with the timing cache file
    assert key.digest() != BASE.digest()
