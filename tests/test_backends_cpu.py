"""CPU backends (torch, ort-cpu), the registry, and ONNX Runtime provider checks.

Regressions of the thesis tool: ONNX Runtime silently fell back from the TensorRT EP to CUDA because
``get_providers()`` was never checked; the PyTorch and ONNX Runtime paths were not timed the same way.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from backends import BACKEND_NAMES, backend_class, validate_request
from backends.base import ModelArtifact, Session
from backends.ort_common import check_providers, create_session
from backends.ort_cpu import OrtCpuBackend
from backends.torch_eager import TorchBackend
from harness.errors import BackendUnavailable, HarnessError, UnsupportedCombination
from harness.measure.timing import TimingSettings, measure, timer_for
from harness.onnx_export import export_onnx
from harness.store.fingerprint import model_content_hash
from tests.helpers import repo_env

REPO = Path(__file__).resolve().parent.parent
SHAPE = (3, 24, 24)
NUM_OUTPUTS = 6


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(16, NUM_OUTPUTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    torch.manual_seed(0)
    module = SmallCNN().eval()
    with torch.no_grad():
        module.features[1].running_mean.uniform_(-0.3, 0.3)
        module.features[1].running_var.uniform_(0.5, 1.5)
    content_hash = model_content_hash(module)
    cache = tmp_path_factory.mktemp("cache")
    return ModelArtifact(
        name="small-cnn", module=module, input_shape=SHAPE, num_outputs=NUM_OUTPUTS, content_hash=content_hash,
        onnx=lambda: export_onnx(module, SHAPE, content_hash=content_hash, cache_dir=cache, name="small-cnn").path,
    )


@pytest.fixture(scope="module")
def sessions(artifact: ModelArtifact, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Session]:
    cache = tmp_path_factory.mktemp("sessions")
    made = {
        "torch": TorchBackend({"device": "cpu"}).activate(artifact, "fp32", (1, 4), cache),
        "ort-cpu": OrtCpuBackend().activate(artifact, "fp32", (1, 4), cache),
    }
    yield made
    for session in made.values():
        session.close()


def _batch(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_torch_and_ort_cpu_agree(sessions: dict[str, Session], artifact: ModelArtifact, batch: int) -> None:
    x = _batch(batch, seed=batch)
    t = sessions["torch"].infer(x)
    o = sessions["ort-cpu"].infer(x)
    for out in (t, o):
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.float32
        assert out.device.type == "cpu"
        assert tuple(out.shape) == (batch, NUM_OUTPUTS)
    torch.testing.assert_close(o, t, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(t, artifact.module(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "ort-cpu"])
def test_run_of_stage_equals_infer(sessions: dict[str, Session], backend: str) -> None:
    session = sessions[backend]
    x = _batch(4, seed=11)
    staged = session.stage(x)
    out = session.run(staged)
    out_t = torch.as_tensor(np.asarray(out)) if not isinstance(out, torch.Tensor) else out
    torch.testing.assert_close(out_t.float().cpu(), session.infer(x), atol=1e-6, rtol=1e-6)


def test_torch_session_does_not_share_the_artifact_module(sessions: dict[str, Session],
                                                          artifact: ModelArtifact) -> None:
    """The session runs a copy; the artifact stays usable by other backends (e.g. for export)."""
    assert sessions["torch"]._module is not artifact.module  # type: ignore[attr-defined]


def test_session_info(sessions: dict[str, Session], artifact: ModelArtifact) -> None:
    ort_info, torch_info = sessions["ort-cpu"].info, sessions["torch"].info
    assert (ort_info.backend, ort_info.precision, ort_info.device) == ("ort-cpu", "fp32", "cpu")
    assert (torch_info.backend, torch_info.precision, torch_info.device) == ("torch", "fp32", "cpu")
    assert ort_info.details["providers"] == ["CPUExecutionProvider"]
    assert sessions["ort-cpu"].cuda_stream is None and sessions["torch"].cuda_stream is None


def test_artifact_bytes(sessions: dict[str, Session], artifact: ModelArtifact) -> None:
    onnx_path = artifact.onnx()
    assert sessions["ort-cpu"].info.artifact_bytes == onnx_path.stat().st_size
    buffer = io.BytesIO()
    torch.save(artifact.module.state_dict(), buffer)
    assert sessions["torch"].info.artifact_bytes == buffer.getbuffer().nbytes
    assert sessions["torch"].info.artifact_bytes > 0


# --------------------------------------------------------------------------- one timing definition


def test_same_timing_definition_across_backends(sessions: dict[str, Session]) -> None:
    cfg = TimingSettings(warmup=1, iterations=3, repeats=2, min_seconds=0, warmup_seconds=0)
    hosts = [_batch(2, seed=s) for s in (1, 2)]
    timers: dict[str, dict[str, str]] = {}
    for name, session in sessions.items():
        staged = [session.stage(x) for x in hosts]
        compute = measure(session.run, staged, batch_size=2, config=cfg, definition="compute",
                          timer=timer_for(session.device, "compute", session.cuda_stream))
        e2e = measure(session.infer, hosts, batch_size=2, config=cfg, definition="e2e",
                      timer=timer_for(session.device, "e2e", session.cuda_stream))
        for result in (compute, e2e):
            assert len(result.repeats_ns) == 2 and all(len(r) == 3 for r in result.repeats_ns)
            assert all(s > 0 for s in result.samples_ns)
        timers[name] = {"compute": compute.timer, "e2e": e2e.timer}
    assert timers["torch"]["compute"] == timers["ort-cpu"]["compute"] == "perf_counter_ns"
    assert timers["torch"]["e2e"] == timers["ort-cpu"]["e2e"] == "perf_counter_ns"


# --------------------------------------------------------------------------- provider checks


def test_check_providers_detects_fallback() -> None:
    with pytest.raises(HarnessError, match="fell back"):
        check_providers(actual=["CUDAExecutionProvider", "CPUExecutionProvider"],
                        requested=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    with pytest.raises(HarnessError, match="fell back"):
        check_providers(actual=[], requested=["CPUExecutionProvider"])


def test_check_providers_detects_dropped_secondary_provider() -> None:
    with pytest.raises(HarnessError, match="dropped"):
        check_providers(actual=["TensorrtExecutionProvider", "CPUExecutionProvider"],
                        requested=["TensorrtExecutionProvider", "CUDAExecutionProvider"])


def test_check_providers_accepts_what_was_asked() -> None:
    check_providers(actual=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                    requested=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    check_providers(actual=["CPUExecutionProvider"], requested=["CPUExecutionProvider"])


def test_create_session_with_an_unavailable_provider_fails_loudly(artifact: ModelArtifact) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP; the fallback case needs a CPU-only build")
    path = artifact.onnx()
    # What ORT itself does: it warns and quietly runs on the CPU provider instead.
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        plain = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    assert plain.get_providers() == ["CPUExecutionProvider"]
    # create_session must not accept that.
    with pytest.warns(UserWarning):
        with pytest.raises(HarnessError, match="fell back"):
            create_session(path, [("CUDAExecutionProvider", {})])


def test_create_session_on_cpu(artifact: ModelArtifact) -> None:
    session = create_session(artifact.onnx(), [("CPUExecutionProvider", {})], intra_op_threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_create_session_on_a_broken_file_is_a_harness_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(HarnessError, match="broken.onnx"):
        create_session(bad, [("CPUExecutionProvider", {})])


# --------------------------------------------------------------------------- registry and requests


def test_backend_names_are_final() -> None:
    assert BACKEND_NAMES == ("torch", "ort-cpu", "ort-cuda", "ort-trt", "trt-native")
    assert backend_class("torch") is TorchBackend
    assert backend_class("ort-cpu") is OrtCpuBackend


def test_unknown_backend_lists_names() -> None:
    with pytest.raises(HarnessError) as info:
        backend_class("tensorrt")
    for name in BACKEND_NAMES:
        assert name in str(info.value)
    with pytest.raises(HarnessError):
        validate_request("onnxruntime", "fp32")


def test_validate_request_on_cpu() -> None:
    assert validate_request("torch", "fp32") is TorchBackend
    assert validate_request("ort-cpu", "fp32") is OrtCpuBackend
    assert validate_request("ort-cpu", "int8") is OrtCpuBackend


@pytest.mark.parametrize(("name", "precision"), [("torch", "int8"), ("ort-cpu", "fp16"), ("ort-cpu", "bf16")])
def test_validate_request_rejects_unsupported_precisions(name: str, precision: str) -> None:
    with pytest.raises(UnsupportedCombination) as info:
        validate_request(name, precision)
    assert name in str(info.value) and precision in str(info.value)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_validate_request_torch_half_needs_a_gpu(precision: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible; the CPU-only refusal cannot be exercised")
    with pytest.raises(BackendUnavailable) as info:
        validate_request("torch", precision)
    message = str(info.value)
    assert "\n" not in message
    assert "torch" in message and "GPU" in message
    assert isinstance(info.value, HarnessError)


def test_int8_on_ort_cpu_without_calibration(artifact: ModelArtifact, tmp_path: Path) -> None:
    assert artifact.calibration is None
    with pytest.raises(HarnessError, match="calibration"):
        OrtCpuBackend().activate(artifact, "int8", (1,), tmp_path)


def test_activate_rejects_unsupported_precision(artifact: ModelArtifact, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedCombination):
        OrtCpuBackend().activate(artifact, "fp16", (1,), tmp_path)
    with pytest.raises(UnsupportedCombination):
        TorchBackend({"device": "cpu"}).activate(artifact, "int8", (1,), tmp_path)


def test_listing_backends_imports_no_runtime() -> None:
    code = ("import sys, backends; assert len(backends.BACKEND_NAMES) == 5; "
            "print(sorted(m for m in ('onnxruntime', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=repo_env(),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- availability rules from facts

from dataclasses import replace  # noqa: E402

from backends.base import PhaseTimes, SessionInfo, UnavailableCalibration  # noqa: E402
from harness.machine import MachineFacts  # noqa: E402

CPU_ONLY = MachineFacts(torch_version="2.5.0", torch_cuda_note="torch.cuda.is_available() is False",
                        onnxruntime_version="1.20.0", ort_providers=("CPUExecutionProvider",))
AMPERE = replace(CPU_ONLY, torch_cuda_available=True, torch_cuda_note=None, gpu_visible=True, gpu_cc=(8, 0),
                 gpu_name="A100")
VOLTA = replace(AMPERE, gpu_cc=(7, 0), gpu_name="V100")


def test_torch_rules_from_made_up_machines() -> None:
    assert TorchBackend.unavailable_reason("fp32", CPU_ONLY) is None
    assert "CUDA GPU" in TorchBackend.unavailable_reason("fp16", CPU_ONLY)
    assert TorchBackend.unavailable_reason("fp16", VOLTA) is None
    assert TorchBackend.unavailable_reason("bf16", AMPERE) is None
    volta_bf16 = TorchBackend.unavailable_reason("bf16", VOLTA)
    assert volta_bf16 is not None and "8.0" in volta_bf16 and "7.0" in volta_bf16  # no emulated bf16
    assert "int8" in TorchBackend.unavailable_reason("int8", AMPERE)
    assert TorchBackend.unavailable_reason("fp32", replace(CPU_ONLY, torch_version=None)) == "torch is not installed"


def test_ort_cpu_rules_from_made_up_machines() -> None:
    assert OrtCpuBackend.unavailable_reason("fp32", CPU_ONLY) is None
    assert OrtCpuBackend.unavailable_reason("int8", CPU_ONLY) is None
    assert OrtCpuBackend.unavailable_reason("fp16", CPU_ONLY) is not None
    missing = OrtCpuBackend.unavailable_reason("fp32", replace(CPU_ONLY, onnxruntime_version=None, ort_providers=None))
    assert missing is not None and "not installed" in missing
    no_cpu_ep = OrtCpuBackend.unavailable_reason("fp32", replace(CPU_ONLY, ort_providers=("CUDAExecutionProvider",)))
    assert no_cpu_ep is not None and "CPUExecutionProvider" in no_cpu_ep


def test_validate_request_asks_the_rule_with_given_facts() -> None:
    assert validate_request("torch", "bf16", AMPERE) is TorchBackend
    with pytest.raises(BackendUnavailable, match="8.0"):
        validate_request("torch", "bf16", VOLTA)
    with pytest.raises(BackendUnavailable, match="CPUExecutionProvider"):
        validate_request("ort-cpu", "fp32", replace(CPU_ONLY, ort_providers=()))


# --------------------------------------------------------------------------- typed options


@pytest.mark.parametrize(("cls", "typo", "allowed"), [
    (TorchBackend, "chanels_last", ("device", "channels_last", "compile", "compile_mode")),
    (OrtCpuBackend, "thread", ("threads",)),
])
def test_unknown_option_names_it_and_the_allowed_ones(cls, typo: str, allowed: tuple[str, ...]) -> None:
    with pytest.raises(HarnessError) as info:
        cls({typo: 1})
    message = str(info.value)
    assert "\n" not in message and f"backend_options.{cls.name}" in message and f"'{typo}'" in message
    for name in allowed:
        assert name in message


def test_options_are_typed() -> None:
    assert OrtCpuBackend({"threads": 2}).options.threads == 2
    assert OrtCpuBackend().options.threads == 0
    assert TorchBackend({"device": "cpu", "channels_last": True}).options.channels_last is True
    with pytest.raises(HarnessError, match="threads"):
        OrtCpuBackend({"threads": -1})
    with pytest.raises(HarnessError, match="device"):
        TorchBackend({"device": "tpu"})


# --------------------------------------------------------------------------- prep phases and calibration


class _RecordingCalibration:
    """A real CalibrationSource stand-in: returns a prepared ONNX file and records build time."""

    provenance: dict = {}
    provenance_hash = "x"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[tuple[str, PhaseTimes]] = []

    def qdq_onnx(self, target: str, phases: PhaseTimes) -> Path:
        self.calls.append((target, phases))
        phases.add("calibrate", 1.5)
        return self.path


def test_prep_phases_come_from_activate(artifact: ModelArtifact, tmp_path: Path) -> None:
    calibration = _RecordingCalibration(artifact.onnx())
    int8 = ModelArtifact(name=artifact.name, module=artifact.module, input_shape=SHAPE, num_outputs=NUM_OUTPUTS,
                         content_hash=artifact.content_hash, onnx=artifact.onnx, calibration=calibration)
    session = OrtCpuBackend().activate(int8, "int8", (1,), tmp_path)
    assert [t for t, _ in calibration.calls] == ["cpu"]
    assert session.info.prep_phases == {"calibrate": 1.5}
    again = OrtCpuBackend().activate(int8, "int8", (1,), tmp_path)
    assert again.info.prep_phases == {"calibrate": 1.5}  # each activation has its own phases
    assert OrtCpuBackend().activate(artifact, "fp32", (1,), tmp_path).info.prep_phases == {}
    assert SessionInfo("torch", "fp32", "cpu").prep_phases == {}


def test_unavailable_calibration_raises_its_error_from_every_method(tmp_path: Path) -> None:
    error = HarnessError("no train split")
    calibration = UnavailableCalibration(error)
    for call in (lambda: calibration.qdq_onnx("cpu", PhaseTimes()),
                 lambda: calibration.ort_trt_table(tmp_path, PhaseTimes()),
                 lambda: calibration.trt_calibrator_core(1, SHAPE, phases=PhaseTimes()),
                 lambda: calibration.batches(1),
                 lambda: calibration.provenance):
        with pytest.raises(HarnessError) as info:
            call()
        assert info.value is error
    with pytest.raises(AttributeError):
        calibration.no_such_method  # noqa: B018 - not a catch-all any more


# --------------------------------------------------------------------------- typed capabilities


def test_devices_are_sets_and_every_backend_names_its_own() -> None:
    devices = {name: backend_class(name).devices for name in BACKEND_NAMES}
    assert devices == {"torch": {"cpu", "cuda"}, "ort-cpu": {"cpu"}, "ort-cuda": {"cuda"}, "ort-trt": {"cuda"},
                       "trt-native": {"cuda"}}
    assert all(isinstance(d, frozenset) for d in devices.values())


def test_unavailable_reason_needs_the_machine_facts_and_never_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    import harness.machine
    from harness.machine import MachineFacts
    from tests.facts import gpu_facts

    def no_probe() -> None:
        raise AssertionError("unavailable_reason probed the machine")

    monkeypatch.setattr(harness.machine, "probe_machine", no_probe)
    for name in BACKEND_NAMES:
        cls = backend_class(name)
        assert inspect.signature(cls.unavailable_reason).parameters["facts"].default is inspect.Parameter.empty
        for precision in ("fp32", "fp16", "bf16", "int8"):
            for facts in (gpu_facts(), MachineFacts()):  # a reason or None, never a probe
                cls.unavailable_reason(precision, facts)


def test_sessions_profile_their_own_layers_and_close_as_context_managers(artifact: ModelArtifact,
                                                                         tmp_path: Path) -> None:
    batch = _batch(4, seed=3)
    with OrtCpuBackend().activate(artifact, "fp32", (4,), tmp_path) as ort_session:
        profile = ort_session.layer_profile(batch)
    assert profile is not None and profile["source"] == "onnxruntime-profiler" and profile["batch_size"] == 4
    assert profile["layers"] and {r["op_type"] for r in profile["by_op_type"]} >= {"Conv"}

    closed: list[bool] = []
    with TorchBackend({"device": "cpu"}).activate(artifact, "fp32", (4,), tmp_path) as torch_session:
        torch_session.close = lambda: closed.append(True)  # type: ignore[method-assign]
        assert torch_session.layer_profile(batch) is None  # torch has no per-layer profiler here
    assert closed == [True]
