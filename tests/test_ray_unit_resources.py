"""What a sweep unit asks Ray for (a pure function: no Ray needed)."""

from __future__ import annotations

from harness.compression.spec import PruneSpec
from harness.sweep.executors.ray_executor import UnitResources, unit_resources
from harness.sweep.plan import Cell, Unit


def _unit(*pairs: tuple[str, str]) -> Unit:
    spec = PruneSpec("none", 0.0)
    return Unit("tinycnn", "shapes", spec, tuple(Cell("tinycnn", "shapes", spec, b, p, 8) for b, p in pairs))


GPU = UnitResources(num_cpus=1, num_gpus=1)
CPU4 = UnitResources(num_cpus=4, num_gpus=0)


def test_torch_half_precisions_get_a_gpu() -> None:
    # fp16/bf16 on torch run only on CUDA: without a GPU Ray hides the devices and every such cell fails
    assert unit_resources(_unit(("torch", "fp16")), 4) == GPU
    assert unit_resources(_unit(("torch", "bf16")), 4) == GPU


def test_torch_fp32_follows_the_cluster_unless_a_device_is_set() -> None:
    # torch fp32 picks CUDA when it sees a GPU: on a GPU cluster the task must be given one
    assert unit_resources(_unit(("torch", "fp32")), 4, cluster_gpus=2) == GPU
    assert unit_resources(_unit(("torch", "fp32")), 4, cluster_gpus=0) == CPU4
    assert unit_resources(_unit(("torch", "fp32")), 4, {"torch": {"device": "cpu"}}, cluster_gpus=2) == CPU4
    assert unit_resources(_unit(("torch", "fp32")), 4, {"torch": {"device": "cuda"}}) == GPU


def test_cuda_backends_get_a_gpu_and_cpu_backends_cores() -> None:
    assert unit_resources(_unit(("ort-cpu", "fp32"), ("ort-cpu", "int8")), 4, cluster_gpus=1) == CPU4
    for backend in ("ort-cuda", "ort-trt", "trt-native"):
        assert unit_resources(_unit(("ort-cpu", "fp32"), (backend, "fp16")), 4) == GPU
