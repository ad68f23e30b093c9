#!/usr/bin/env bash
# Issue 19's GPU checks as one prepared script, for a lent GPU machine (run from the repository root):
#
#     bash bench/gpu_check.sh [OUT]          # OUT: where results go [$OUT, else ./gpu_check_out]
#
# In priority order, each step under its own time limit (about 7 minutes in all), each step's output in
# OUT/<step>.txt and its figures in OUT/<step>.json, a step that fails or times out noted in
# OUT/summary.txt and the next one run anyway:
#   1. bench/gpu_epoch.py: resnet20 and vgg, AL and BP, fp32 and bf16 autocast, batch 128, 100 timed
#      steps (epochs extrapolated), the kernel-busy share from the profiler, AL / BP
#   2. bench/bench_extract.py --device cuda: extraction against a plain forward pass on the GPU
#   3. the default job and its analysis on cuda (`alviz train --device cuda`, `alviz analyze --device cuda`)
#   4. tests/test_gpu.py (training, autocast, channels-last, fused Adam, extraction on cuda against the CPU)
#   5. the whole test suite, for what time is left (the browser tests skip without Chromium)
# GPU_CHECK_ONLY=name,name runs only those steps (tests/test_bench.py checks the script that way on the CPU).
# Dependencies: torch from the machine; alviz from this checkout (PYTHONPATH); its other requirements from
# the machine or, when the folder .whl/ (git-ignored) holds wheels, from there: installed without an index
# into /tmp/site, put first on PYTHONPATH. The lent H200 image (Python 3.12) lacks openTSNE and mlxtend;
# fetch them here and carry `.whl` with the command (docs in the device tool's README):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl openTSNE mlxtend
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-./gpu_check_out}}"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1

only=",${GPU_CHECK_ONLY:-},"  # GPU_CHECK_ONLY=gpu_epoch,test_gpu: only those steps (a check of this script)

step() {  # step NAME SECONDS CMD...: run CMD with a time limit, output to OUT/NAME.txt, a line in the summary
  local name=$1 limit=$2
  shift 2
  if [ "$only" != ",," ] && [[ "$only" != *",$name,"* ]]; then
    return 0
  fi
  local t0=$SECONDS rc
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s of $limit)" | tee -a "$summary"
}

{
  date -u
  nvidia-smi -L 2>&1 || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')"
} > "$out/env.txt" 2>&1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$out/pip.txt" 2>&1 && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
python3 - >> "$out/env.txt" 2>&1 <<'EOF'
import importlib
for m in ("alviz", "openTSNE", "mlxtend", "sklearn", "matplotlib", "safetensors", "yaml", "click"):
    try:
        importlib.import_module(m)
        print(m, "ok")
    except Exception as e:  # noqa: BLE001
        print(m, "MISSING:", type(e).__name__, e)
EOF

step gpu_epoch 200 python3 bench/gpu_epoch.py --device cuda --steps 100 --warmup 20 --variants fp32,amp \
  --json "$out/gpu_epoch.json"
step extract 60 python3 bench/bench_extract.py --device cuda --threads 0 --archs cnn,mlp --n 5000 --reps 5 \
  --no-memory --json "$out/extract.json"
step train_cuda 90 python3 -m alviz train --device cuda --out "$out/exp" --quiet
step analyze_cuda 90 python3 -m alviz analyze "$out/exp" --device cuda --out "$out/reports"
step test_gpu 60 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
step suite 150 python3 -m pytest -q -p no:cacheprovider --ignore=tests/test_gpu.py
cat "$summary"
