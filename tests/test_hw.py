"""``harness hw``: collection and rendering on this GPU-less machine, with made-up backends and GPUs.

The availability *rules* belong to the backends and are tested in tests/test_availability_rules.py;
here a made-up registry checks that hw asks every backend x precision with the machine's facts and
shows each answer unchanged.
"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from harness import hw
from harness.hw import collect as hw_collect
from harness.machine import MachineFacts, probe_machine
from tests.facts import gpu_facts
from tests.fake_nvml import FakeNvml

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


class FakeRule:
    """A backend whose rule is written down: refuses what ``refuse`` maps, records every question."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.refuse = refuse or {}
        self.asked: list[tuple[str, MachineFacts]] = []

    def unavailable_reason(self, precision: str, facts: MachineFacts) -> str | None:
        self.asked.append((precision, facts))
        return self.refuse.get(precision)


def _rules() -> dict[str, FakeRule]:
    return {
        "cpu-thing": FakeRule({"fp16": "cpu-thing runs fp32 and int8 only", "bf16": "no [bf16] here"}),
        "gpu-thing": FakeRule({p: "needs a GPU" for p in PRECISIONS}),
    }


def _render(report: hw.HwReport) -> str:
    console = Console(record=True, width=200, color_system=None)
    hw.render_hw_report(report, console)
    return console.export_text()


@pytest.fixture(scope="module")
def facts() -> MachineFacts:
    return probe_machine()


# ---------------------------------------------------------------------------------- asking the backends


def test_availability_asks_every_backend_with_the_facts(facts: MachineFacts) -> None:
    rules = _rules()
    rows = hw.availability_matrix(facts, rules, PRECISIONS)
    assert [(a.backend, a.precision) for a in rows] == [(b, p) for b in rules for p in PRECISIONS]
    for rule in rules.values():
        assert [p for p, _ in rule.asked] == list(PRECISIONS)
        assert all(f is facts for _, f in rule.asked)
    by = {(a.backend, a.precision): a for a in rows}
    assert by["cpu-thing", "fp32"].ok and by["cpu-thing", "fp32"].reason is None
    assert not by["cpu-thing", "fp16"].ok and by["cpu-thing", "fp16"].reason == "cpu-thing runs fp32 and int8 only"
    assert all(not by["gpu-thing", p].ok for p in PRECISIONS)


def test_installed_rules_are_the_registered_backends() -> None:
    import backends

    rules = hw.installed_rules()
    assert tuple(rules) == backends.BACKEND_NAMES
    assert all(rules[name] is backends.backend_class(name) for name in rules)


def test_default_precisions_are_the_backends() -> None:
    from backends.base import PRECISIONS as BACKEND_PRECISIONS

    rows = hw.availability_matrix(MachineFacts(), {"x": FakeRule()})
    assert tuple(a.precision for a in rows) == tuple(BACKEND_PRECISIONS)


# ---------------------------------------------------------------------------------- the real machine


@pytest.fixture(scope="module")
def real_report(facts: MachineFacts) -> hw.HwReport:
    return hw.collect_hw_report(facts=facts, rules=_rules())


def test_real_report_without_gpu(real_report: hw.HwReport) -> None:
    if real_report.gpus:  # pragma: no cover - this test documents the GPU-less CI machine
        pytest.skip("this machine has a GPU")
    r = real_report
    assert r.gpu_note is not None and r.gpu_note.startswith("no NVIDIA GPU visible")
    assert "torch.cuda.is_available() is False" in r.gpu_note
    assert r.host.cpu_count and r.host.cpu_count >= 1
    assert r.host.cpu_model
    assert r.python_version.count(".") == 2
    assert r.packages["torch"] is not None
    assert set(hw.PACKAGE_DISTS) <= set(r.packages)
    assert not r.torch_cuda_available
    assert r.availability("cpu-thing", "fp16").reason == "cpu-thing runs fp32 and int8 only"


def test_real_report_json_and_render(real_report: hw.HwReport) -> None:
    data = json.loads(hw.to_json(real_report))
    assert data["gpus"] == [] or real_report.gpus
    assert {"host", "packages", "backend_availability", "gpu_note", "ort_providers", "image"} <= set(data)
    assert len(data["backend_availability"]) == 2 * 6  # two made-up backends x fp32 tf32 fp16 bf16 int8 fp8
    first = data["backend_availability"][0]
    assert first == {"backend": "cpu-thing", "precision": "fp32", "ok": True, "reason": None}
    text = _render(real_report)
    assert "Backend availability" in text and "Host" in text and "Why not" in text
    assert "no [bf16] here" in text  # reasons print literally (no rich markup)
    assert "cpu-thing runs fp32 and int8 only" in text and "needs a GPU" in text
    if not real_report.gpus:
        assert "no NVIDIA GPU visible" in text
        assert "CPU backends only" in text


def test_image_variant_is_reported(monkeypatch: pytest.MonkeyPatch, facts: MachineFacts) -> None:
    monkeypatch.setenv("HARNESS_IMAGE", "trt11")
    report = hw.collect_hw_report(facts=facts, rules=_rules(), use_nvml=False)
    assert report.image == "trt11"
    assert "trt11" in _render(report)


# ---------------------------------------------------------------------------------- injected NVML


def test_report_with_fake_nvml_gpu(facts: MachineFacts) -> None:
    fake = FakeNvml(name="NVIDIA A100-SXM4-40GB", cc=(8, 0), sm_clock=1410, sm_max=1410, count=1)
    report = hw.collect_hw_report(nvml=fake, facts=facts, rules=_rules())
    assert len(report.gpus) == 1
    g = report.gpus[0]
    assert g.source == "nvml" and g.name == "NVIDIA A100-SXM4-40GB"
    assert g.compute_capability == (8, 0) and g.architecture == "Ampere"
    assert g.tensor_cores["bf16"] and g.tensor_cores["int8"] and not g.tensor_cores["fp8"]
    assert g.driver_version == "560.35.03" and g.cuda_driver_version == "12.6"
    assert report.gpu_note is None
    if not report.torch_cuda_available:  # this machine: NVML (fake) sees a GPU, torch cannot
        assert any("torch cannot use it" in w for w in report.warnings)
    assert not any("INT8 tensor cores" in w for w in report.warnings)
    text = _render(report)
    assert "NVIDIA A100-SXM4-40GB" in text and "Tensor-core precisions" in text and "Ampere" in text


def test_mig_and_v100_warnings() -> None:
    # the facts of the machine the fake NVML describes (a real GPU machine's own facts would say otherwise)
    v100 = gpu_facts(gpu_cc=(7, 0), gpu_name="Tesla V100-SXM2-32GB")
    report = hw.collect_hw_report(nvml=FakeNvml(cc=(7, 0), mig=1), facts=v100, rules=_rules())
    text = "\n".join(report.warnings)
    assert "MIG mode is enabled" in text
    assert "7.0 has no INT8 tensor cores" in text


# ---------------------------------------------------------------------------------- warnings from the facts




def test_pairing_warnings() -> None:
    assert hw_collect._library_warnings(gpu_facts()) == []
    minor = hw_collect._library_warnings(gpu_facts(tensorrt_version="10.8.0.43"))
    assert len(minor) == 1 and "built against TensorRT 10.4" in minor[0]


def test_trt11_without_ort_gpu_says_why() -> None:
    facts = gpu_facts(
        onnxruntime_version="1.22.0", ort_providers=("CPUExecutionProvider",), tensorrt_version="11.4.0.106"
    )
    (note,) = hw_collect._library_warnings(facts)
    assert "no PyPI onnxruntime-gpu links TensorRT 11" in note and "ort-cuda and ort-trt" in note
    assert hw_collect._library_warnings(gpu_facts(ort_providers=("CPUExecutionProvider",))) == []
