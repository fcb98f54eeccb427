#!/usr/bin/env bash
# The GPU figures the trunk, training and inference issues ask for, as one prepared run of about 9 minutes
# on one H100 / H200, most important first (each step has its own time limit, so a slow one cannot starve
# the rest). Results: markdown tables and logs under $OUT (at most 8 files).
#
# Before the device call, once per checkout:  bash ../shared/tools/device-wheels.sh   (wheels into .whl/)
# Device call:  carry [".whl"], command "bash tools/gpu_checks.sh", timeout_s 600.
set -uo pipefail
OUT=${OUT:-/tmp/msaformer_gpu_checks}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
LOG="$OUT/logs.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; date -u; } > "$OUT/gpu.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...: its stdout (a markdown table) goes to NAME.md, its stderr to logs.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" >> "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.md" 2>> "$LOG"
    echo "== $name: rc=$? in $((SECONDS - t0)) s" | tee -a "$LOG"
}

B="python3 tools/bench_trunk.py --device cuda --steps 10 --warmup 3"
# 1. Training speed vs fair-esm (target >= 3x tokens/s) and checkpointing (<= 9 GiB at 1x512x128).
step trunk_train 150 $B --cases train-1x64x256,train-1x16x1024
step trunk_ckpt 90 $B --cases train-1x512x128 --impls msaformer --ckpt 1
# 2. Inference speed and memory vs fair-esm at 1x1024x256 (>= 2x at <= 1/4 memory); contacts at 1x1024x1023.
step trunk_infer 150 $B --cases infer-1x1024x256,contacts-1x512x256,contacts-1x1024x1023
# 3. The estimator's figures for the same cases, to compare with what was just measured.
step estimate 60 python3 tools/estimate_memory.py \
    --cases train-1x64x256,train-1x16x1024,infer-1x1024x256,contacts-1x512x256,contacts-1x1024x1023
# 4. Full training loop (loader + DeepSpeed ZeRO-2, bf16) vs the raw trunk (target >= 90%).
step train_loop 120 python3 tools/bench_train.py loop --preset esm_msa1b --shape 1x64x256 --steps 30 --loop-workers 2
ls -la "$OUT"
