"""``harness selftest``: does this machine (or image) run the GPU paths at all?

Each check runs the harness's own code on a tiny two-convolution model exported to ONNX, so a pass
means the real paths work (provider options, engine builds, stream binding), not just that a
library imports:

1. torch sees a CUDA GPU;
2. NVML answers (power, clocks, energy);
3. TensorRT imports;
4. trt-native builds an engine from the ONNX, runs it, and agrees with torch;
5. ort-cuda opens a session whose first provider is the CUDA EP and agrees with torch;
6. ort-trt opens a session whose first provider is the TensorRT EP, builds an engine, agrees with torch.

The checks run in order and stop at the first failure; the rest are reported as not run. A check of
something this machine does not ship is skipped with the reason and never fails the selftest: beside
TensorRT 11 without an ONNX Runtime that has the TensorRT EP (the trt11 image installs the CPU
onnxruntime: no PyPI onnxruntime-gpu links TensorRT 11), the two ONNX Runtime checks are skipped and
the TensorRT checks decide. Every import of a GPU library happens inside its check.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.machine import MachineFacts

Status = Literal["ok", "FAIL", "skipped", "not run"]

#: fp32 engines run TF32 convolutions on Ampere and newer: agreement within this (relative to the output's scale)
TOLERANCE = 2e-2
INPUT_SHAPE = (3, 16, 16)
BATCH = 2


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Check:
    """One named check: ``run(workspace)`` returns what it found, or raises with why it failed.
    ``skip(workspace)``, when given, says why this machine does not ship what the check needs (None:
    run it)."""

    name: str
    run: Callable[[SelftestWorkspace], str]
    skip: Callable[[SelftestWorkspace], str | None] | None = None


@dataclass
class SelftestWorkspace:
    """What the checks share: a scratch directory, the tiny model, its ONNX and a reference output."""

    root: Path
    #: The machine's facts (probed on first use; tests pass made-up ones).
    machine: MachineFacts | None = None
    _artifact: Any = field(default=None, init=False, repr=False)

    def facts(self) -> MachineFacts:
        if self.machine is None:
            from harness.machine import probe_machine

            self.machine = probe_machine()
        return self.machine

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def artifact(self) -> Any:
        if self._artifact is None:
            self._artifact = tiny_artifact(self.root)
        return self._artifact

    def host_batch(self) -> Any:
        import torch

        return torch.randn((BATCH, *INPUT_SHAPE), generator=torch.Generator().manual_seed(0))

    def agreement(self, output: Any) -> str:
        """``max abs diff`` against torch fp32 on the CPU, or an AssertionError saying by how much."""
        import torch

        host = self.host_batch()
        with torch.inference_mode():
            expected = self.artifact().module(host).float()
        got = torch.as_tensor(output).float().cpu()
        if tuple(got.shape) != tuple(expected.shape):
            raise AssertionError(f"output shape {tuple(got.shape)}, torch gives {tuple(expected.shape)}")
        diff = float((got - expected).abs().max())
        scale = max(1.0, float(expected.abs().max()))
        if not diff <= TOLERANCE * scale:
            raise AssertionError(f"disagrees with torch: max abs diff {diff:.3g} > {TOLERANCE * scale:.3g}")
        return f"max abs diff vs torch {diff:.2g}"


def tiny_artifact(root: Path) -> Any:
    """A two-convolution model with fixed random weights and its ONNX export (checked by ONNX Runtime)."""
    import torch

    from backends.base import ModelArtifact
    from harness.onnx_export import export_onnx
    from harness.store.fingerprint import model_content_hash

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ).eval()
    content_hash = model_content_hash(module)
    cache = root / "onnx"

    def onnx() -> Path:
        return export_onnx(module, INPUT_SHAPE, content_hash=content_hash, cache_dir=cache, name="selftest").path

    return ModelArtifact(name="selftest-2conv", module=module, input_shape=INPUT_SHAPE, num_outputs=4,
                         content_hash=content_hash, onnx=onnx)


# ------------------------------------------------------------------------------------------ the checks


def check_torch_cuda(ws: SelftestWorkspace) -> str:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA GPU (CUDA build: {torch.version.cuda or 'none'}); "
                           "run with a GPU (docker: --gpus all / the compose GPU reservation) and an NVIDIA driver")
    name = torch.cuda.get_device_name(0)
    cc = torch.cuda.get_device_capability(0)
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s), {name} sm_{cc[0]}{cc[1]}"


def check_nvml(ws: SelftestWorkspace) -> str:
    from harness.gpu.nvml_query import nvml_unavailable_reason

    reason = nvml_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    return "NVML answers"


def check_tensorrt_import(ws: SelftestWorkspace) -> str:
    from backends.trt_api import import_tensorrt

    trt = import_tensorrt()
    return f"tensorrt {trt.__version__}"


def _backend_check(name: str, first_provider: str | None) -> Callable[[SelftestWorkspace], str]:
    def run(ws: SelftestWorkspace) -> str:
        import backends

        session = backends.backend_class(name)().activate(ws.artifact(), "fp32", (1, BATCH), ws.cache_dir)
        try:
            found = []
            if first_provider is not None:
                providers = list(session.info.details.get("providers") or [])
                if not providers or providers[0] != first_provider:
                    raise AssertionError(f"session providers are {providers}, {first_provider} is not active")
                found.append(f"providers {providers}")
            found.append(ws.agreement(session.infer(ws.host_batch())))
            return "; ".join(found)
        finally:
            session.close()

    return run


check_trt_native = _backend_check("trt-native", None)
check_ort_cuda = _backend_check("ort-cuda", "CUDAExecutionProvider")
check_ort_trt = _backend_check("ort-trt", "TensorrtExecutionProvider")


def ort_gpu_not_shipped(provider: str) -> Callable[[SelftestWorkspace], str | None]:
    """Why ``provider``'s check does not apply here: TensorRT 11 beside an onnxruntime without that
    provider (no PyPI onnxruntime-gpu links TensorRT 11, so the trt11 image ships the CPU build).
    Anywhere else a missing provider is a failure of the check itself, never a skip."""

    def skip(ws: SelftestWorkspace) -> str | None:
        from harness.gpu.capabilities import ort_gpu_note

        facts = ws.facts()
        note = ort_gpu_note(facts.tensorrt_version, facts.ort_providers)
        if note is None or provider in (facts.ort_providers or ()):
            return None
        return f"not shipped here: {note}"

    return skip


def default_checks() -> list[Check]:
    return [
        Check("torch CUDA", check_torch_cuda),
        Check("NVML", check_nvml),
        Check("tensorrt import", check_tensorrt_import),
        Check("trt-native engine vs torch", check_trt_native),
        Check("ort-cuda CUDA EP vs torch", check_ort_cuda, ort_gpu_not_shipped("CUDAExecutionProvider")),
        Check("ort-trt TensorRT EP vs torch", check_ort_trt, ort_gpu_not_shipped("TensorrtExecutionProvider")),
    ]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def run_checks(checks: Sequence[Check], root: Path | None = None, machine: MachineFacts | None = None
               ) -> list[CheckResult]:
    """Run ``checks`` in order; a check whose ``skip`` gives a reason is ``skipped`` with it; after the
    first failure the remaining ones are ``not run``."""
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="pq-selftest-") as tmp:
        ws = SelftestWorkspace(Path(root) if root is not None else Path(tmp), machine)
        failed = False
        for check in checks:
            if failed:
                results.append(CheckResult(check.name, "not run", "an earlier check failed"))
                continue
            try:
                reason = check.skip(ws) if check.skip is not None else None
                if reason:
                    results.append(CheckResult(check.name, "skipped", " ".join(reason.split())))
                    continue
                detail = check.run(ws)
            except Exception as exc:  # a check's failure is its result, in one line
                failed = True
                results.append(CheckResult(check.name, "FAIL", _one_line(exc)))
            else:
                results.append(CheckResult(check.name, "ok", detail))
    return results


__all__ = ["Check", "CheckResult", "SelftestWorkspace", "default_checks", "run_checks", "tiny_artifact"]
