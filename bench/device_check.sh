#!/usr/bin/env bash
# One prepared device run (H200 lent through the workplace's device tool): wheels the image lacks,
# then the GPU smoke test, removal speedup on CUDA, and the GPU-marked tests. Output lands in $OUT.
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/pq-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
echo "== harness hw"; timeout 60 python3 -m harness.cli hw 2>&1 | tee "$OUT/hw.txt" | head -70
timeout 60 python3 -m harness.cli hw --json > "$OUT/hw.json" 2>&1 || echo "hw --json failed"
if python3 -c "import importlib.metadata as m; m.version('onnxruntime-gpu')" 2>/dev/null; then
  echo "== onnxruntime-gpu provider libraries (and a real session)"
  timeout 60 python3 docker/check_image.py providers --session 2>&1 | tail -3
fi
echo "== NVML mapping of torch's device (MIG-aware)"
timeout 60 python3 - <<'PY' 2>&1 | tail -4
import torch
from harness.gpu.nvml_monitor import DeviceMonitor
from harness.gpu.nvml_query import nvml_device_for_torch, nvml_unavailable_reason
print("nvml:", nvml_unavailable_reason() or "ok", "| torch device ->", nvml_device_for_torch(0))
with DeviceMonitor.for_torch_device(0, reason_interval_s=None) as mon:
    torch.ones(1, device="cuda").sum().item()
print("index", mon.result.index, "mig", mon.result.mig_uuid, "energy_source", mon.result.energy_source, "warnings", mon.result.warnings)
PY
echo "== gpu smoke (selftest, then every backend x precision on tinycnn and resnet18)"
timeout 330 python3 bench/gpu_smoke.py --out "$OUT" --iterations 100 > "$OUT/smoke.log" 2>&1; echo "rc=$?"
tail -60 "$OUT/smoke.log"
echo "== removal speedup (cuda fp16)"; timeout 100 python3 bench/removal_speedup.py --device cuda --batch 64 --iterations 50 --json "$OUT/removal_cuda.json" 2>&1 | tail -7
echo "== gpu tests"; timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_trt_native_logic.py tests/test_nvml.py tests/test_hw.py tests/test_availability_rules.py tests/test_capabilities.py tests/test_timing.py tests/test_backends_cpu.py 2>&1 | tail -6
