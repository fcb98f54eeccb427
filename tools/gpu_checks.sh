#!/usr/bin/env bash
# The GPU figures the trunk, training and inference issues ask for, as one prepared run of at most 9.5 minutes
# (570 s of step limits) on one H100 / H200, most important first (each step has its own time limit, so a slow one cannot starve
# the rest). Results: $OUT/results.md (every step's markdown table), logs.txt and gpu.txt.
#
# Before the device call, once per checkout:  bash ../shared/tools/device-wheels.sh   (wheels into .whl/)
# Device call:  carry [".whl", ".gpu_data/promoter/gue_prom_core_tata"], command "bash tools/gpu_checks.sh", timeout_s 600
# (the second path only for step 7, through a link: see there).
#
# Smoke test of the script itself on a CPU (small shapes, tiny model, the local venv):
#   DEVICE=cpu PRESET=tiny PYTHON=.venv/bin/python SKIP_WHEELS=1 TRAIN_CASES=train-1x8x32 \
#   CKPT_CASE=train-1x16x32 INFER_CASES=infer-1x16x32,contacts-1x16x32 LOOP_SHAPE=1x8x33 MULTI_THREADS=1 \
#   bash tools/gpu_checks.sh          (on 2 CPU cores contacts_potts and promoter_gpu run into their time limits)
set -uo pipefail
OUT=${OUT:-/tmp/msaformer_gpu_checks}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-esm_msa1b}
PY=${PYTHON:-python3}
TRAIN_CASES=${TRAIN_CASES:-train-1x64x256,train-1x16x1024}
CKPT_CASE=${CKPT_CASE:-train-1x512x128}
INFER_CASES=${INFER_CASES:-infer-1x1024x256,contacts-1x512x256,contacts-1x1024x1023}
LOOP_SHAPE=${LOOP_SHAPE:-1x64x256}
mkdir -p "$OUT"
if [ "${SKIP_WHEELS:-0}" != 1 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
LOG="$OUT/logs.txt"
: > "$LOG"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__)"; date -u; } > "$OUT/gpu.txt"

STEPS=()  # the names of the steps run, in order, for results.md
step() {  # step NAME SECONDS COMMAND...: its stdout (a markdown table) goes to NAME.md, its stderr to logs.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" >> "$LOG"
    local t0=$SECONDS
    STEPS+=("$name")
    timeout "$limit" "$@" > "$OUT/$name.md" 2>> "$LOG"
    echo "== $name: rc=$? in $((SECONDS - t0)) s" | tee -a "$LOG"
}

B=("$PY" tools/bench_trunk.py --device "$DEVICE" --preset "$PRESET" --steps 10 --warmup 3)
# 1. Training speed vs fair-esm (target >= 3x tokens/s) and checkpointing (<= 9 GiB at 1x512x128, <= 30% slower).
step trunk_train 110 "${B[@]}" --cases "$TRAIN_CASES"
step trunk_ckpt 60 "${B[@]}" --cases "$CKPT_CASE" --impls msaformer,msaformer_ckpt
# 2. Inference speed and memory vs fair-esm at 1x1024x256 (>= 2x at <= 1/4 memory); contacts at 1x1024x1023.
step trunk_infer 110 "${B[@]}" --cases "$INFER_CASES"
# 3. What torch.compile of each layer buys (compiles once per process).
step trunk_compile 60 "${B[@]}" --cases "${TRAIN_CASES%%,*},${INFER_CASES%%,*}" --impls msaformer_compile
# 4. Full training loop (loader + DeepSpeed ZeRO-2, bf16) vs the raw trunk (target >= 90%).
step train_loop 70 "$PY" tools/bench_train.py loop --device "$DEVICE" --preset "$PRESET" --shape "$LOOP_SHAPE" \
    --steps 30 --loop-workers 2
# 5. Potts (GREMLIN-style pseudo-likelihood) and MI contact fits on the shipped structure pairs (issue 15):
#    seconds per protein on the GPU, first 1,000 rows and every row; needs ../shared/datasets/structures.
if [ -f ../shared/datasets/structures/pairs.tsv ]; then
    step contacts_potts 60 "$PY" tools/bench_contacts.py --methods mi,potts --rows 1000,0 --device "$DEVICE"
else
    echo "== contacts_potts: skipped (no ../shared/datasets/structures/pairs.tsv)" | tee -a "$LOG"
fi
# 6. Multi-process inference (issue 12): 1 process vs one per GPU (two on a single GPU), outputs identical.
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$NGPU" -ge 2 ] || NGPU=2
step infer_multi 70 "$PY" tools/bench_infer_scaling.py --device "$DEVICE" --preset "$PRESET" --layers 0 \
    --procs "1,$NGPU" --threads "${MULTI_THREADS:-4}" --msas "${MULTI_MSAS:-256}" --rows 64 --length 256 --repeats 1
# 7. Promoter training on the GPU (issue 13: "in minutes on a GPU"): one seed of the prom_core_tata recipe (an
#    ensemble of 3); train_seconds per member and the test MCC go into results.md. Needs the GUE data: the
#    device gets no ../shared, but a carried path through a git-ignored link travels (nothing is copied here):
#    ln -s ../shared/datasets .gpu_data && echo /.gpu_data >> .git/info/exclude
#    then carry [".whl", ".gpu_data/promoter/gue_prom_core_tata"].
PDATA=${PROMOTER_DATA:-.gpu_data/promoter}; [ -d "$PDATA" ] || PDATA=../shared/datasets/promoter
if [ "${SKIP_PROMOTER:-0}" != 1 ] && [ -f "$PDATA/gue_prom_core_tata/train.csv" ]; then
    T="$PDATA/gue_prom_core_tata"
    rm -rf /tmp/msaformer_promoter_gpu  # a fresh run: members kept from an earlier one would not be timed
    step promoter_gpu 30 "$PY" -m msaformer promoter train -c configs/promoter/gue_prom_core_tata.yaml --seed 0 \
        --set "data.train=$T/train.csv" --set "data.dev=$T/dev.csv" --set "data.test=$T/test.csv" --set threads=4 \
        --out /tmp/msaformer_promoter_gpu
    cat /tmp/msaformer_promoter_gpu/member-*/results.csv /tmp/msaformer_promoter_gpu/results.csv >> "$OUT/promoter_gpu.md" 2>/dev/null
else
    echo "== promoter_gpu: skipped (no GUE prom_core_tata under $PDATA)" | tee -a "$LOG"
fi
# The memory estimates for the same cases need no GPU: python tools/estimate_memory.py (BENCHMARKS.md).
# The device returns at most 8 files: every step's table goes into one results.md, in step order.
for f in "${STEPS[@]}"; do
    [ -f "$OUT/$f.md" ] && { echo "## $f"; echo; cat "$OUT/$f.md"; echo; rm -f "$OUT/$f.md"; }
done > "$OUT/results.md.tmp" && mv "$OUT/results.md.tmp" "$OUT/results.md"
ls -la "$OUT"
