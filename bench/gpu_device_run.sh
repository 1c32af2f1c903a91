#!/usr/bin/env bash
# The GPU node's one device run (bench/README.md): run ON the GPU benchmark machine, from the repository
# root, with .whl and .gpu_run carried (made by bench/prepare_gpu_run.sh). Under 10 minutes:
#   1. install the carried wheels (no index there), print the machine;
#   2. the CUDA/NVDEC tests that CPU CI skips (torch SCRFD on CUDA, compiled bf16 detector, real NVDEC);
#   3. bench/bench_gpu_node.py -> $OUT/gpu_node.md (copy it to bench/results/gpu_node.md afterwards);
#   4. bench/bench_train_step.py -> $OUT/train_step.md (bench/results/train_step_gpu.md), if time is left.
# `bash bench/gpu_device_run.sh train` runs step 4 alone (after 1), for a second, short call.
# Every log goes to $OUT as well, so a step cut short still reports what it did.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CUDA_VISIBLE_DEVICES=0 \
  CLIPGUARD_ASSETS="$PWD/.gpu_run/assets" CLIPGUARD_MODEL_DIR="$PWD/.gpu_run/assets/models" \
  CLIPGUARD_GPU_CLIPS="$PWD/.gpu_run/clips"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, PyNvVideoCodec as n; print('torch', torch.__version__, torch.cuda.get_device_name(), 'PyNvVideoCodec', n.__version__)"
} 2>&1 | tee "$OUT/machine.log"
ONLY=${1:-all}
if [ "$ONLY" = train ]; then
  timeout 240 python3 -m bench.bench_train_step --out "$OUT/train_step.md" 2>&1 | tee "$OUT/train_step.log"
  echo "train step bench exit ${PIPESTATUS[0]}"; exit 0
fi
timeout 180 python3 -m pytest -q -p no:cacheprovider -rs -o addopts="" \
  tests/workers/test_face_detector_torch.py tests/clipguard/model/test_device_scorer.py \
  tests/workers/test_frame_decoder_device.py -k "cuda or real_nvdec" 2>&1 | tee "$OUT/gpu_tests.log"
timeout 390 python3 -m bench.bench_gpu_node --clips .gpu_run/clips --out "$OUT/gpu_node.md" 2>&1 | tee "$OUT/bench.log"
echo "bench exit ${PIPESTATUS[0]}"
# What is left of the call's 600 s (the steps above stop at their own limits first).
timeout 120 python3 -m bench.bench_train_step --variants autocast,bf16-frozen --steps 5 --out "$OUT/train_step.md" \
  2>&1 | tee "$OUT/train_step.log"
echo "train step bench exit ${PIPESTATUS[0]}"
