"""NVML queries and monitor: decoding, name fallbacks, NotSupported tolerance, energy and warnings (fake NVML)."""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from harness.errors import BackendUnavailable
from harness.gpu import nvml_monitor as gm
from harness.gpu import nvml_query as gq
from tests.fake_nvml import (  # noqa: E402
    FakeNvml,
    NVMLError_DriverNotLoaded,
    NVMLError_GpuIsLost,
    NVMLError_NotFound,
    NVMLError_NotSupported,
)


class OldPynvml(FakeNvml):
    """An old nvidia-ml-py without the new function names at all."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetTemperatureV"):
            raise AttributeError(name)
        return super().__getattribute__(name)


class ManualClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------------- decoding


def test_decode_clock_event_reasons() -> None:
    assert gq.decode_clock_event_reasons(0) == []
    assert gq.decode_clock_event_reasons(0x1) == ["GpuIdle"]
    assert gq.decode_clock_event_reasons(0x4 | 0x40 | 0x80) == ["SwPowerCap", "HwThermalSlowdown", "HwPowerBrakeSlowdown"]
    assert gq.decode_clock_event_reasons(0x2 | 0x8 | 0x10 | 0x20 | 0x100) == [
        "ApplicationsClocksSetting",
        "HwSlowdown",
        "SyncBoost",
        "SwThermalSlowdown",
        "DisplayClockSetting",
    ]
    assert gq.decode_clock_event_reasons(0x1 | 0x400) == ["GpuIdle", "Unknown(0x400)"]


def test_bits_match_pynvml_when_installed() -> None:
    pynvml = pytest.importorskip("pynvml")
    for bit, name in gq.CLOCK_EVENT_REASONS:
        assert getattr(pynvml, f"nvmlClocksEventReason{name}", bit) == bit
        assert getattr(pynvml, f"nvmlClocksThrottleReason{name}") == bit
    assert pynvml.NVML_CLOCK_SM == 1 and pynvml.NVML_CLOCK_MEM == 2 and pynvml.NVML_TEMPERATURE_GPU == 0


def test_snapshot_decodes_fields() -> None:
    fake = FakeNvml(reasons=0x4, processes=((os.getpid(), 100 * 2**20), (4242, 512 * 2**20)), mig=0)
    snap = gq.take_snapshot(0, fake.nvmlDeviceGetHandleByIndex(0), fake, frozenset({os.getpid()}))
    assert snap.name == "Tesla V100-SXM2-32GB"
    assert snap.uuid.startswith("GPU-")
    assert (snap.sm_clock_mhz, snap.sm_clock_max_mhz, snap.mem_clock_mhz, snap.mem_clock_max_mhz) == (1530, 1530, 877, 877)
    assert snap.clock_event_reasons == ["SwPowerCap"]
    assert snap.temperature_c == 45
    assert snap.power_w == pytest.approx(250.0)
    assert snap.memory_total_mib == pytest.approx(32 * 1024)
    assert [p.pid for p in snap.other_processes] == [4242]
    assert snap.other_processes[0].name == "python3"
    assert snap.other_processes[0].used_memory_mib == pytest.approx(512)
    assert snap.mig_enabled is False and snap.ecc_enabled is True and snap.persistence_mode is True
    assert snap.perf_state == 0
    assert snap.utilization == gq.Utilization(gpu_pct=97, memory_pct=41)
    assert fake.calls.count("events") == 1 and "throttle" not in fake.calls
    assert "tempV" in fake.calls and "temp" not in fake.calls
    json.dumps(snap.to_dict())


@pytest.mark.parametrize("fake", [FakeNvml(new_api=False, reasons=0x8), OldPynvml(reasons=0x8)], ids=["old-driver", "old-pynvml"])
def test_snapshot_falls_back_to_old_names(fake: FakeNvml) -> None:
    snap = gq.take_snapshot(0, object(), fake)
    assert snap.clock_event_reasons == ["HwSlowdown"]
    assert snap.temperature_c == 45
    assert "throttle" in fake.calls and "temp" in fake.calls


def test_not_supported_fields_are_none() -> None:
    fake = FakeNvml(energy=False, power_w=None, ecc=None, temperature=None, mig=None)
    snap = gq.take_snapshot(0, object(), fake)
    assert snap.power_w is None
    assert snap.energy_counter_mj is None
    assert snap.ecc_enabled is None
    assert snap.temperature_c is None
    assert snap.mig_enabled is None
    assert snap.name == "Tesla V100-SXM2-32GB"


def test_fatal_nvml_errors_propagate() -> None:
    class Lost(FakeNvml):
        def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
            raise NVMLError_GpuIsLost()

    with pytest.raises(NVMLError_GpuIsLost):
        gq.take_snapshot(0, object(), Lost())


# ---------------------------------------------------------------------------------- availability


def test_nvml_unavailable_on_this_machine_is_explained() -> None:
    """Real pynvml, no driver here: a reason, never an exception."""
    pytest.importorskip("pynvml")
    reason = gq.nvml_unavailable_reason()
    if reason is None:  # pragma: no cover - only on a machine with a GPU
        pytest.skip("this machine has a working NVML")
    assert "NVML" in reason
    with pytest.raises(BackendUnavailable, match="NVML could not be initialised"):
        with gm.DeviceMonitor(0):
            pass


def test_nvml_unavailable_reason_with_fakes() -> None:
    assert gq.nvml_unavailable_reason(FakeNvml()) is None
    assert "no NVIDIA GPU" in (gq.nvml_unavailable_reason(FakeNvml(count=0)) or "")
    reason = gq.nvml_unavailable_reason(FakeNvml(init_error=NVMLError_DriverNotLoaded))
    assert reason is not None and "DriverNotLoaded" in reason and "--gpus all" in reason


def test_missing_pynvml_raises_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(BackendUnavailable, match="nvidia-ml-py"):
        gq.load_nvml()
    assert "pynvml" in (gq.nvml_unavailable_reason() or "")


def test_init_failure_raises_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="no NVIDIA driver"):
        with gm.DeviceMonitor(0, nvml=FakeNvml(init_error=NVMLError_DriverNotLoaded)):
            pass


def test_list_devices() -> None:
    fake = FakeNvml(count=2)
    devices = gq.list_devices(fake)
    assert len(devices) == 2
    d = devices[1]
    assert d.index == 1 and d.compute_capability == (7, 0)
    assert d.driver_version == "560.35.03" and d.cuda_driver_version == "12.6"
    assert d.power_limit_w == pytest.approx(300.0)
    assert fake.init_calls == fake.shutdown_calls == 1
    assert gq.cuda_version_text(13000) == "13.0" and gq.cuda_version_text(None) is None


# ---------------------------------------------------------------------------------- energy


def test_energy_per_image() -> None:
    assert gm.energy_per_image_mj(1000.0, 250) == pytest.approx(4.0)
    assert gm.energy_per_image_mj(None, 250) is None
    assert gm.energy_per_image_mj(1000.0, 0) is None


def test_integrate_power_trapezoid() -> None:
    assert gm.integrate_power_mj([]) is None
    assert gm.integrate_power_mj([(0.0, 100.0)]) is None
    # 0-1 s ramp 100->200 W (150 J) then 1-2 s flat 200 W (200 J)
    assert gm.integrate_power_mj([(0.0, 100.0), (1.0, 200.0), (2.0, 200.0)]) == pytest.approx(350_000.0)


def test_monitor_uses_energy_counter() -> None:
    clock = ManualClock()
    fake = FakeNvml(power_w=250.0, clock=clock)
    with gm.DeviceMonitor(0, nvml=fake, clock=clock, reason_interval_s=None) as mon:
        clock.t += 2.0  # the timed window: 2 s at 250 W
    res = mon.result
    assert res is not None
    assert res.energy_source == "counter"
    assert res.energy_mj == pytest.approx(500_000.0)  # 500 J
    assert res.duration_s == pytest.approx(2.0)
    assert res.mean_power_w == pytest.approx(250.0)
    assert res.energy_per_image_mj(1000) == pytest.approx(500.0)
    assert res.warnings == []
    assert res.before.index == res.after.index == 0
    assert fake.init_calls == fake.shutdown_calls == 1
    json.dumps(res.to_dict())


def test_monitor_falls_back_to_power_sampling() -> None:
    fake = FakeNvml(energy=False, power_w=200.0)
    with gm.DeviceMonitor(0, nvml=fake, sample_interval_s=0.005) as mon:
        time.sleep(0.15)
    res = mon.result
    assert res is not None
    assert res.energy_source == "power-sampling"
    assert res.samples >= 5
    # constant 200 W: the trapezoids sum to exactly P x window
    assert res.energy_mj == pytest.approx(200.0 * res.duration_s * 1000.0, rel=1e-9)
    assert res.mean_power_w == pytest.approx(200.0)
    assert res.duration_s >= 0.15
    assert not any("power samples" in w for w in res.warnings)


def test_power_sampling_with_too_few_samples_warns() -> None:
    clock = ManualClock()
    fake = FakeNvml(energy=False, power_w=100.0, clock=clock)
    with gm.DeviceMonitor(0, nvml=fake, clock=clock, sample_interval_s=60.0) as mon:
        clock.t += 0.5
    res = mon.result
    assert res is not None and res.energy_source == "power-sampling"
    assert res.energy_mj == pytest.approx(50_000.0)
    assert any("only 2 power samples" in w for w in res.warnings)


def test_no_energy_at_all() -> None:
    fake = FakeNvml(energy=False, power_w=None)
    with gm.DeviceMonitor(0, nvml=fake, sample_interval_s=0.005) as mon:
        time.sleep(0.02)
    res = mon.result
    assert res is not None
    assert res.energy_mj is None and res.energy_source is None and res.mean_power_w is None
    assert any("energy unknown" in w for w in res.warnings)


# ---------------------------------------------------------------------------------- warnings


def test_clean_window_has_no_warnings() -> None:
    fake = FakeNvml(reasons=0x1 | 0x2, processes=((os.getpid(), 10),))
    with gm.DeviceMonitor(0, own_pid=os.getpid(), nvml=fake, reason_interval_s=0.005) as mon:
        time.sleep(0.03)
    assert mon.result is not None and mon.result.warnings == []
    assert set(mon.result.clock_event_reasons_seen) == {"GpuIdle", "ApplicationsClocksSetting"}


def test_warnings_for_throttling_low_clock_other_processes_and_mig() -> None:
    fake = FakeNvml(
        name="NVIDIA A100-SXM4-40GB",
        cc=(8, 0),
        reasons=0x4 | 0x20,
        sm_clock=1100,
        sm_max=1410,
        processes=((os.getpid(), 10), (4242, 2**30)),
        mig=1,
    )
    with gm.DeviceMonitor(0, own_pid=os.getpid(), nvml=fake, reason_interval_s=0.005) as mon:
        time.sleep(0.03)
    res = mon.result
    assert res is not None
    text = "\n".join(res.warnings)
    assert "SwPowerCap" in text and "SwThermalSlowdown" in text
    assert "1100 MHz" in text and "1410 MHz" in text
    assert "4242" in text and str(os.getpid()) not in text
    assert "MIG" in text
    assert res.sm_clock_median_mhz == pytest.approx(1100)
    assert len(res.warnings) == 4


def test_low_clock_while_idle_is_not_a_warning() -> None:
    fake = FakeNvml(reasons=0x1, sm_clock=300, sm_max=1530)
    with gm.DeviceMonitor(0, nvml=fake, reason_interval_s=0.005) as mon:
        time.sleep(0.02)
    assert mon.result is not None and mon.result.warnings == []
    assert mon.result.sm_clock_median_mhz is None


def test_monitor_result_survives_exception_in_window() -> None:
    fake = FakeNvml()
    mon = gm.DeviceMonitor(0, nvml=fake, reason_interval_s=None)
    with pytest.raises(RuntimeError):
        with mon:
            raise RuntimeError("benchmark failed")
    assert mon.result is not None and fake.shutdown_calls == 1


# ---------------------------------------------------------------------------------- device selection


def test_monitor_by_uuid_reports_nvml_index() -> None:
    fake = FakeNvml()
    with gm.DeviceMonitor("GPU-3f1c2a9e-0000-1111-2222-333344445555", nvml=fake, reason_interval_s=None) as mon:
        pass
    assert mon.result is not None and mon.result.index == 3 and mon.index == 3
    with pytest.raises(BackendUnavailable, match="GPU-nope"):
        with gm.DeviceMonitor("GPU-nope", nvml=FakeNvml()):
            pass


def test_nvml_device_for_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    props = SimpleNamespace(uuid="b36e34ca-5b68-c870-ca63-a64ab8aaa055")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    # torch prints no prefix and cannot say full GPU or MIG: the bare UUID goes to resolve_device
    assert gq.nvml_device_for_torch(0) == "b36e34ca-5b68-c870-ca63-a64ab8aaa055"

    def no_cuda(i: int) -> Any:
        raise RuntimeError("no CUDA")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_cuda)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gq.nvml_device_for_torch(1) == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,MIG-bbbb")
    assert gq.nvml_device_for_torch(0) == "GPU-aaaa"
    assert gq.nvml_device_for_torch(1) == "MIG-bbbb"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")


# ---------------------------------------------------------------------------------- MIG


GPU_UUID = "GPU-3f1c2a9e-0000-1111-2222-333344445555"
MIG_BARE = "7d1f0c2b-aaaa-bbbb-cccc-ddddeeeeffff"


class MigNvml(FakeNvml):
    """An A100 in MIG mode (NVML index 3) with two instances; MIG handles refuse power and clocks.

    ``uuid_lookup_finds_mig=False`` is a driver whose nvmlDeviceGetHandleByUUID knows only full GPUs.
    """

    def __init__(self, *, uuid_lookup_finds_mig: bool = True, **kw: Any) -> None:
        kw.setdefault("name", "NVIDIA A100-SXM4-40GB")
        kw.setdefault("cc", (8, 0))
        kw.setdefault("mig", 1)
        kw.setdefault("count", 4)
        super().__init__(**kw)
        self.uuid_lookup_finds_mig = uuid_lookup_finds_mig
        self.instances = ["MIG-00000000-1111-2222-3333-444444444444", "MIG-" + MIG_BARE]
        self.uuid_tries: list[str] = []

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        self.uuid_tries.append(uuid)
        if uuid == GPU_UUID:
            return SimpleNamespace(index=3)
        if self.uuid_lookup_finds_mig and uuid in self.instances:
            return SimpleNamespace(index=3, mig=self.instances.index(uuid))
        raise NVMLError_NotFound()

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        on = int(handle.index == 3)
        return [on, on]

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> Any:
        return ctypes.c_uint(int(hasattr(handle, "mig")))  # what pynvml returns (seen on an H200)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> Any:
        return SimpleNamespace(index=handle.index)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, slot: int) -> Any:
        if slot >= len(self.instances):
            raise NVMLError_NotFound()
        return SimpleNamespace(index=handle.index, mig=slot)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if hasattr(handle, "mig"):
            return self.instances[handle.mig]
        return GPU_UUID if handle.index == 3 else f"GPU-0000000{handle.index}-0000-0000-0000-000000000000"

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        if hasattr(handle, "mig"):
            raise NVMLError_NotSupported()  # MIG handles have no power/energy: the GPU's must be used
        return super().nvmlDeviceGetPowerUsage(handle)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if hasattr(handle, "mig"):
            raise NVMLError_NotSupported()
        return super().nvmlDeviceGetTotalEnergyConsumption(handle)


def test_bare_full_gpu_uuid_tries_gpu_prefix_first() -> None:
    """On a real H200 (driver of 2026): torch's bare UUID + "GPU-" resolves, "MIG-" raises NotFound."""
    fake = MigNvml()
    resolved = gq.resolve_device(fake, gq.bare_uuid(GPU_UUID))
    assert resolved.index == 3 and resolved.uuid == GPU_UUID and not resolved.is_mig
    assert fake.uuid_tries == [GPU_UUID]


@pytest.mark.parametrize("finds_mig", [True, False], ids=["driver-resolves-MIG", "walk-instances"])
def test_bare_mig_uuid_maps_to_its_gpu(finds_mig: bool) -> None:
    fake = MigNvml(uuid_lookup_finds_mig=finds_mig)
    resolved = gq.resolve_device(fake, MIG_BARE)  # as torch prints it: no prefix
    assert resolved.is_mig and resolved.mig_uuid == "MIG-" + MIG_BARE
    assert resolved.index == 3 and resolved.uuid == GPU_UUID  # the parent GPU: power and energy live there
    assert not hasattr(resolved.handle, "mig")
    assert fake.uuid_tries[:2] == ["GPU-" + MIG_BARE, "MIG-" + MIG_BARE]


def test_monitor_on_a_mig_instance_measures_its_gpu() -> None:
    clock = ManualClock()
    fake = MigNvml(clock=clock, power_w=300.0)
    with gm.DeviceMonitor(MIG_BARE, nvml=fake, clock=clock, reason_interval_s=None) as mon:
        clock.t += 1.0
    res = mon.result
    assert res is not None and res.index == 3 and res.mig_uuid == "MIG-" + MIG_BARE
    assert res.energy_source == "counter" and res.energy_mj == pytest.approx(300_000.0)
    mig_warnings = [w for w in res.warnings if "MIG" in w]
    assert len(mig_warnings) == 1 and MIG_BARE in mig_warnings[0] and "whole GPU" in mig_warnings[0]


def test_unmapped_device_warns_instead_of_failing() -> None:
    fake = MigNvml()
    mon = gm.DeviceMonitor("ffffffff-0000-0000-0000-000000000000", nvml=fake, unmapped="warn")
    with mon:
        pass
    res = mon.result
    assert res is not None and res.before is None and res.energy_mj is None
    (warning,) = res.warnings
    assert "device checks skipped" in warning
    assert "GPU-ffffffff-0000-0000-0000-000000000000" in warning and "MIG-ffffffff" in warning
    assert fake.init_calls == fake.shutdown_calls == 1
    json.dumps(res.to_dict())
    with pytest.raises(gq.DeviceNotMapped):  # the default still raises
        with gm.DeviceMonitor("ffffffff-0000-0000-0000-000000000000", nvml=MigNvml()):
            pass


def test_for_torch_device_warns_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=MIG_BARE))
    with gm.DeviceMonitor.for_torch_device(0, nvml=MigNvml(), reason_interval_s=None) as mon:
        pass
    assert mon.result is not None and mon.result.mig_uuid == "MIG-" + MIG_BARE
    with gm.DeviceMonitor.for_torch_device(0, nvml=FakeNvml(), reason_interval_s=None) as mon:
        pass
    assert mon.result is not None and "device checks skipped" in mon.result.warnings[0]
