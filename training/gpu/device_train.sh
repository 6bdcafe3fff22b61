#!/usr/bin/env bash
# One run on a lent GPU machine (issue 11's GPU recipe), started from the repository root there:
#   device run, carry [gpu-pack, .whl]:  bash training/gpu/device_train.sh
# Installs the carried wheels (pydicom, platformdirs: the machine has torch, numpy, scipy,
# scikit-image, PyYAML, tqdm and safetensors, but nothing can be fetched there), trains preset
# gpu-scanner on the carried pack for TRAIN_MINUTES, exports the model (fp16 safetensors) and times
# inference on the GPU. Everything worth keeping lands in $OUT (at most 8 files come back).
set -euo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/LDCTDenoise:$PWD" PYTHONUNBUFFERED=1 LDCTDENOISE_CACHE_DIR=/tmp/ldct-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" || true
overrides=(--set "schedule.max_minutes=${TRAIN_MINUTES:-8}")
for override in ${TRAIN_SET:-}; do overrides+=(--set "$override"); done  # e.g. TRAIN_SET="schedule.batch=32"
python3 -m training.cli stage1 --config gpu-scanner --out /tmp/run --quiet "${overrides[@]}" 2>&1 | tee "$OUT/train.log"
cp /tmp/run/log.csv /tmp/run/validation.csv "$OUT/" 2>/dev/null || true
python3 -m training.cli export /tmp/run --out "$OUT/model" --half --name default
python3 benchmarks/inference.py --device cuda --weights "$OUT/model" --skip-full-volume \
  --json "$OUT/inference.json" 2>&1 | tail -n 20 >> "$OUT/train.log"
