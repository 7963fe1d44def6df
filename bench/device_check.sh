#!/usr/bin/env bash
# One prepared run on a GPU machine (the H200 the workplace's device tool lends), in stages, each writing
# its results to $OUT as it goes (a run killed at its time limit still leaves what it finished):
#
#   bench/device_check.sh suite            the whole test suite (gpu tests included), then a short probe
#   bench/device_check.sh checks [TESTS]   the gpu lane, TESTS (e.g. earlier failures), gpu_smoke, and a
#                                          resnet50 torch sweep, eager and with cuda_graphs, compared
#   bench/device_check.sh all SECONDS      checks, then the suite for what is left of SECONDS
#
# Every failure is appended to $OUT/failures.log as it happens (PQ_FAILURE_LOG, tests/conftest.py).
#
# The project is installed as the README says (pip install -e .), with the packages the machine lacks
# taken from .whl/ (pydantic, torch-pruning, ...: no network there). At most 8 files come back from $OUT.
set -u
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/pq-out}
export PQ_FAILURE_LOG="$OUT/failures.log"
began=$(date +%s)
mkdir -p "$OUT"
stage=${1:-suite}
shift || true

{
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl
  fi
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv
  python3 -c "import torch, onnxruntime, pydantic; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'| onnxruntime', onnxruntime.__version__, '| pydantic', pydantic.__version__, '| cores', __import__('os').cpu_count())"
} > "$OUT/setup.log" 2>&1
tail -3 "$OUT/setup.log"

probe() {
  timeout 120 python3 - <<'PY' 2>&1 | tee -a "$OUT/probe.log"
import torch, torchvision
from backends.base import SessionInfo
from backends.torch_eager import TorchSession
from harness.sweep.cell_timing import device_monitor, energy_meter, window_entry
from harness.measure.timing import CudaEventTimer, TimingSettings, measure

settings = TimingSettings(warmup=5, iterations=20, repeats=3, min_seconds=0.5, warmup_seconds=0.2)
for precision, batch in (("fp16", 1), ("fp16", 64), ("fp32", 64), ("tf32", 64)):
    dtype = torch.float16 if precision == "fp16" else torch.float32
    module = torchvision.models.resnet50(weights=None).eval().to("cuda", dtype=dtype).to(memory_format=torch.channels_last)
    for graphs in (False, True):
        s = TorchSession(module, precision, "cuda", SessionInfo("torch", precision, "cuda"), True, cuda_graphs=graphs)
        inputs = [s.stage(torch.randn(batch, 3, 224, 224)) for _ in range(2)]
        with device_monitor("cuda", True) as mon:
            r = measure(s.run, inputs, batch_size=batch, config=settings, definition="compute",
                        timer=CudaEventTimer(s.cuda_stream), device="cuda", meter=energy_meter(mon))
        e = window_entry(r, "cuda", window={}, host_load=None, warnings=[], until=None, backend="torch")
        print(f"resnet50 {precision} b{batch} graphs={graphs}: {e.median_ms:.3f} ms, launch {e.launch}, "
              f"energy {e.energy}", flush=True)
        s.close()
PY
}

suite() {
  echo "== the whole suite (-n 15, each test's result as it ends)"
  timeout "$1" python3 -m pytest -v -n 15 -p no:cacheprovider --timeout 100 -rfEs 2>&1 \
    | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" > "$OUT/suite.log"
  grep -cE " PASSED" "$OUT/suite.log"; grep -E "FAILED|ERROR|passed|failed" "$OUT/suite.log" | tail -30
}

case "$stage" in
  suite)
    suite 330
    echo "== probe: resnet50 eager vs CUDA graphs, host-bound verdict, per-window energy"
    probe
    ;;
  checks|all)
    echo "== the gpu lane"
    timeout 180 python3 -m pytest -m gpu -v -p no:cacheprovider 2>&1 | tee "$OUT/gpu.log" | tail -15
    if [ "$stage" = checks ] && [ "$#" -gt 0 ]; then
      echo "== tests that failed before: $*"
      timeout 150 python3 -m pytest -q -p no:cacheprovider --timeout 120 -rfEs "$@" 2>&1 | tee -a "$OUT/gpu.log" | tail -15
    fi
    echo "== gpu smoke"
    timeout 130 python3 bench/gpu_smoke.py --out "$OUT" --budget-seconds 110 --no-tests 2>&1 | tail -30
    echo "== resnet50 torch sweep fp32/tf32/fp16 x b1/b64, one unit, eager and cuda_graphs"
    cp configs/gpu-resnet50.yaml /tmp/sweep-eager.yaml
    { cat configs/gpu-resnet50.yaml; echo "backend_options: {torch: {cuda_graphs: true}}"; } > /tmp/sweep-graphs.yaml
    for mode in eager graphs; do
      timeout 150 harness run --config "/tmp/sweep-$mode.yaml" --out "/tmp/sweep-$mode" 2>&1 | tail -20
    done >> "$OUT/sweep.txt"
    for mode in eager graphs; do
      echo "== $mode: compare fp32 vs tf32, fp32 vs fp16"
      harness compare --out "/tmp/sweep-$mode" --baseline precision=fp32 --candidate precision=tf32
      harness compare --out "/tmp/sweep-$mode" --baseline precision=fp32 --candidate precision=fp16
      harness recommend --out "/tmp/sweep-$mode" --objective energy
      harness report --out "/tmp/sweep-$mode" >/dev/null && cat "/tmp/sweep-$mode/report.md"
    done >> "$OUT/sweep.txt" 2>&1
    python3 - <<'PY' >> "$OUT/sweep.txt" 2>&1
import json
rows = []
for mode in ("eager", "graphs"):
    for cell in json.load(open(f"/tmp/sweep-{mode}/results.json")):
        t = (cell.get("result") or {}).get("timings") or [{}]
        t = t[0]
        i = cell["identity"]
        rows.append(f"{mode} {i['precision']} b{i['batch_size']}: {t.get('stats', {}).get('median_ms')} ms, "
                    f"energy {t.get('energy_mj_per_image')} mJ/image ({(t.get('energy') or {}).get('mean_power_w')} W), "
                    f"launch {(t.get('launch') or {}).get('verdict')} {(t.get('launch') or {}).get('ratio')}")
print("\n".join(rows))
PY
    tail -40 "$OUT/sweep.txt"
    if [ "$stage" = all ]; then
      left=$(( ${1:-600} - ($(date +%s) - began) - 10 ))
      [ "$left" -gt 30 ] && suite "$left"
    fi
    ;;
esac
