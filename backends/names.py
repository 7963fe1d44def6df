"""Backend names, their devices and the precisions: plain data, importing neither torch nor any runtime,
so the CLI and the config can reject a bad name or precision at once."""

from __future__ import annotations

#: Where each backend class lives (imported only when a backend is used).
BACKEND_CLASSES: dict[str, str] = {
    "torch": "backends.torch_eager:TorchBackend",
    "ort-cpu": "backends.ort_cpu:OrtCpuBackend",
    "ort-cuda": "backends.ort_cuda:OrtCudaBackend",
    "ort-trt": "backends.ort_trt:OrtTensorrtBackend",
    "trt-native": "backends.trt_native:TrtNativeBackend",
}

#: The one list of backend names (config, CLI and ``harness hw`` use it).
BACKEND_NAMES: tuple[str, ...] = tuple(BACKEND_CLASSES)

#: Every precision some backend offers; each backend declares its own subset. "fp32" is IEEE single
#: precision everywhere; "tf32" is FP32 tensors with TF32 tensor-core math (sm_80+); "fp8" is E4M3
#: (explicit Q/DQ: TensorRT on sm_89+, ONNX Runtime's CPU EP as an emulated accuracy reference).
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")

#: The precisions that quantize from calibration data (calibration images, Q/DQ models, ``int8:`` variants).
QUANTIZED_PRECISIONS: tuple[str, ...] = ("int8", "fp8")

CPU = "cpu"
CUDA = "cuda"
