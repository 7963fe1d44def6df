"""The native TensorRT entropy calibrator's logic, without TensorRT or a GPU.

``CalibratorCore`` gets a CPU buffer factory (a CPU torch tensor has a ``data_ptr``
too); the TensorRT subclass is exercised against a stand-in base class, and the
attributes the module uses are checked against the extracted TRT binding symbols.
"""

from __future__ import annotations

import importlib.util
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import calib.trt_calibrator as trt_calibrator
from calib.provenance import CacheRebuiltWarning, Provenance, sidecar_path
from calib.trt_calibrator import (
    TRT_API_USED,
    CalibratorCore,
    calibration_cache_provenance,
    make_entropy_calibrator,
)
from harness.errors import BackendUnavailable, HarnessError, UnsupportedCombination

SYMBOLS = Path(__file__).parent / "data" / "trt_symbols"
SHAPE = (3, 8, 8)
BATCH = 4


def _batches(n: int, batch: int = BATCH) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn((batch, *SHAPE), generator=g) for _ in range(n)]


class CountingFactory:
    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        self.calls.append(shape)
        return torch.empty(shape, dtype=torch.float32)


def _prov(**changes: object) -> Provenance:
    base = calibration_cache_provenance(model_hash="ab" * 32, calib_file_list_hash="cd" * 32, count=20, seed=0,
                                        batch_size=BATCH, input_shape=SHAPE, tensorrt_version="10.15.1.29")
    return base.replace(**changes) if changes else base


def test_batching_into_one_stable_buffer() -> None:
    batches = _batches(5)
    factory = CountingFactory()
    core = CalibratorCore(batches, BATCH, SHAPE, factory, None)
    assert core.get_batch_size() == BATCH
    pointers = []
    for expected in batches:
        result = core.get_batch(["input"])
        assert result is not None and len(result) == 1
        pointers.append(result[0])
        assert torch.equal(core.buffer, expected)  # the buffer holds exactly this batch
        assert core.buffer.data_ptr() == result[0]
    assert core.get_batch(["input"]) is None  # exhausted
    assert core.get_batch(["input"]) is None
    assert len(set(pointers)) == 1  # one buffer, created once
    assert factory.calls == [(BATCH, *SHAPE)]
    assert core.batches_served == 5
    assert core.read_calibration_cache() is None  # no cache path
    core.write_calibration_cache(b"ignored")  # no cache path: nothing written


def test_numpy_batches_and_nchw_shape() -> None:
    arrays = [b.numpy() for b in _batches(2)]
    core = CalibratorCore(iter(arrays), BATCH, (BATCH, *SHAPE), CountingFactory(), None)
    core.get_batch(["input"])
    assert np.array_equal(core.buffer.numpy(), arrays[0])
    core.get_batch(None)
    assert np.array_equal(core.buffer.numpy(), arrays[1])
    with pytest.raises(HarnessError, match="does not match"):
        CalibratorCore([], BATCH, (BATCH + 1, *SHAPE), CountingFactory(), None)


def test_rejects_batches_of_another_shape() -> None:
    core = CalibratorCore(_batches(1) + _batches(1, batch=BATCH - 1), BATCH, SHAPE, CountingFactory(), None)
    assert core.get_batch(["input"]) is not None
    with pytest.raises(HarnessError, match="full batches"):
        core.get_batch(["input"])
    core = CalibratorCore(_batches(1), BATCH, SHAPE, CountingFactory(), None)
    with pytest.raises(HarnessError, match="one input"):
        core.get_batch(["input", "other"])
    with pytest.raises(HarnessError, match="asked for 'x'"):
        core.get_batch(["x"])


def test_cache_round_trip_and_stale_provenance(tmp_path: Path) -> None:
    cache = tmp_path / "calib" / "trt.cache"
    payload = b"TRT-10151-EntropyCalibration2\ninput: 3c010a14\n"
    writer = CalibratorCore(_batches(2), BATCH, SHAPE, CountingFactory(), cache, provenance=_prov())
    assert writer.read_calibration_cache() is None and not writer.has_valid_cache
    writer.write_calibration_cache(memoryview(payload))  # TensorRT hands over a buffer
    assert cache.read_bytes() == payload and sidecar_path(cache).exists() and writer.cache_written
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]

    reader = CalibratorCore(_batches(2), BATCH, SHAPE, CountingFactory(), cache, provenance=_prov())
    assert reader.read_calibration_cache() == payload and reader.cache_read

    for stale in (_prov(calib_file_list_hash="ef" * 32), _prov(versions={"tensorrt": "10.4.0", "torch": "x"}),
                  _prov(options={"batch_size": 8, "input_shape": list(SHAPE)}), _prov(model_hash="00" * 32)):
        core = CalibratorCore(_batches(2), BATCH, SHAPE, CountingFactory(), cache, provenance=stale)
        assert core.read_calibration_cache() is None  # TensorRT recalibrates and overwrites

    # --rebuild-calib: the cache is dropped.
    rebuilt = CalibratorCore(_batches(2), BATCH, SHAPE, CountingFactory(), cache, provenance=_prov(), rebuild=True)
    assert rebuilt.read_calibration_cache() is None and not cache.exists()

    with pytest.raises(HarnessError, match="provenance"):
        CalibratorCore(_batches(1), BATCH, SHAPE, CountingFactory(), cache)


def test_corrupt_cache_is_dropped_and_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "trt.cache"
    CalibratorCore([], BATCH, SHAPE, CountingFactory(), cache, provenance=_prov()).write_calibration_cache(b"abc" * 9)
    cache.write_bytes(b"abc" * 8)  # truncated
    with pytest.warns(CacheRebuiltWarning, match="corrupt"):
        core = CalibratorCore([], BATCH, SHAPE, CountingFactory(), cache, provenance=_prov())
    assert core.read_calibration_cache() is None and not cache.exists()
    CalibratorCore([], BATCH, SHAPE, CountingFactory(), cache, provenance=_prov()).write_calibration_cache(b"abc" * 9)
    sidecar_path(cache).write_text("{not json")
    with pytest.warns(CacheRebuiltWarning, match="corrupt"):
        core = CalibratorCore([], BATCH, SHAPE, CountingFactory(), cache, provenance=_prov())
    assert core.read_calibration_cache() is None and not cache.exists()


def _fake_trt() -> types.SimpleNamespace:
    class IInt8EntropyCalibrator2:  # stands in for the pybind11 base class
        init_calls = 0

        def __init__(self) -> None:
            IInt8EntropyCalibrator2.init_calls += 1

    return types.SimpleNamespace(IInt8EntropyCalibrator2=IInt8EntropyCalibrator2)


def test_trt_subclass_delegates_and_contains_errors(tmp_path: Path) -> None:
    fake = _fake_trt()
    batches = _batches(2) + _batches(1, batch=BATCH - 1)
    core = CalibratorCore(batches, BATCH, SHAPE, CountingFactory(), tmp_path / "c.cache", provenance=_prov())
    calibrator = make_entropy_calibrator(core, trt=fake)
    assert isinstance(calibrator, fake.IInt8EntropyCalibrator2) and fake.IInt8EntropyCalibrator2.init_calls == 1
    assert calibrator.get_batch_size() == BATCH
    assert calibrator.read_calibration_cache() is None
    assert calibrator.get_batch(["input"]) == [core.buffer.data_ptr()]
    assert calibrator.get_batch(["input"]) == [core.buffer.data_ptr()]
    assert calibrator.get_batch(["input"]) is None  # wrong-shaped batch: recorded, not raised into TensorRT
    assert isinstance(core.error, HarnessError)
    with pytest.raises(HarnessError, match="full batches"):
        core.raise_if_failed()

    ok = CalibratorCore(_batches(1), BATCH, SHAPE, CountingFactory(), tmp_path / "ok.cache", provenance=_prov())
    wrapped = make_entropy_calibrator(ok, trt=fake)
    assert wrapped.get_batch(["input"]) is not None and wrapped.get_batch(["input"]) is None
    wrapped.write_calibration_cache(b"table")
    ok.raise_if_failed()
    assert (tmp_path / "ok.cache").read_bytes() == b"table"
    again = CalibratorCore([], BATCH, SHAPE, CountingFactory(), tmp_path / "ok.cache", provenance=_prov())
    assert make_entropy_calibrator(again, trt=fake).read_calibration_cache() == b"table"


def test_trt_11_has_no_calibrator() -> None:
    core = CalibratorCore([], BATCH, SHAPE, CountingFactory(), None)
    with pytest.raises(UnsupportedCombination, match="TensorRT 11"):
        make_entropy_calibrator(core, trt=types.SimpleNamespace())


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_missing_tensorrt_is_a_clear_error() -> None:
    core = CalibratorCore([], BATCH, SHAPE, CountingFactory(), None)
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        make_entropy_calibrator(core)


def _symbols(version: str) -> set[str]:
    path = SYMBOLS / f"tensorrt-{version}.txt"
    if not path.exists():
        pytest.skip(f"{path.name} not extracted")
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def test_trt_api_used_exists_in_trt10_and_is_gone_in_trt11() -> None:
    for version in ("10.15", "10.4"):
        missing = [name for name in TRT_API_USED if name not in _symbols(version)]
        assert not missing, (version, missing)
    trt11 = _symbols("11.4")
    assert "IInt8EntropyCalibrator2" not in trt11
    # Every ``trt.<name>`` in the module is declared in TRT_API_USED.
    source = Path(trt_calibrator.__file__).read_text()
    used = set(re.findall(r"\btrt\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)", source))
    assert used and used <= set(TRT_API_USED), used - set(TRT_API_USED)


def test_cache_provenance_records_trt_version_and_batch() -> None:
    prov = _prov()
    assert prov.artifact_kind == "trt-calib-cache" and prov.method == "entropy"
    assert prov.versions["tensorrt"] == "10.15.1.29" and prov.options["batch_size"] == BATCH
    assert _prov(options={**prov.options, "batch_size": 8}).key() != prov.key()
