#!/usr/bin/env bash
# The GPU check: one command that runs clipva's CUDA paths and prints one table (markdown) of what each gave.
#
#   benchmarks/gpu_check.sh [OUT_DIR]     # OUT_DIR keeps the logs (default: a temporary folder)
#
# On a CUDA machine (under 8 minutes on one data-centre GPU):
#   - the tiny workflow end to end (snakemake, clipva-tiny, results/submission.csv);
#   - extraction of ViT-B-32 at 720x576 frames: end to end against the encoder alone (benchmarks/extraction.py);
#   - a LoRA training step of 64 frames (8 windows x 8) through ViT-B-32: steps/s and peak GPU memory
#     (benchmarks/training_step.py);
#   - one frozen and one LoRA fine-tuning epoch on the demo (ViT-B-32; the finetune rules' benchmark files).
# Without CUDA it runs the same steps at toy sizes (clipva-tiny throughout) in a few minutes on 2 cores: the
# script itself is tested that way (tests/test_benchmarks.py). Python and snakemake come from .venv unless
# PYTHON (and SNAKEMAKE) name others. STEP_TIMEOUT (seconds) ends a step that runs longer, so that one slow
# step cannot use up a short lease of the GPU and leave no table: the step's row says it timed out.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SNAKEMAKE=${SNAKEMAKE:-$(dirname "$PYTHON")/snakemake}
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    MODE=cuda MODEL=ViT-B-32 CLIPS=100 FRAME=720x576 BATCH=256 STEP_MODEL=ViT-B-32 STEP_STEPS=10 DEMO_CLIPS=64
    DEVICE=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))")
else
    MODE=cpu MODEL=clipva-tiny CLIPS=4 FRAME=192x144 BATCH=64 STEP_MODEL=clipva-tiny STEP_STEPS=3 DEMO_CLIPS=16
    DEVICE="CPU ($(nproc) cores), toy sizes"
fi
CORES=$(nproc)
ROWS=()

# row NAME SECONDS RESULT: one line of the table
row() { ROWS+=("| $1 | $3 | $2 |"); }

# timed NAME LOG CMD...: run CMD with its output in LOG; sets RC and SECONDS_TAKEN
timed() {
    local start=$SECONDS
    timeout "${STEP_TIMEOUT:-0}" "${@:3}" >"$2" 2>&1
    RC=$?
    SECONDS_TAKEN=$((SECONDS - start))
    [ $RC -ne 124 ] || echo "(ended by STEP_TIMEOUT after ${STEP_TIMEOUT} s)" >>"$2"
    [ $RC -eq 0 ] || echo "$1 failed (exit $RC); its log: $2" >&2
}

# failed LOG: the result of a step that did not finish
failed() {
    if [ "$RC" -eq 124 ]; then echo "FAILED (timed out after ${STEP_TIMEOUT} s, $1)"; else echo "FAILED (exit $RC, $1)"; fi
}

# line LOG PATTERN: the first line of LOG that starts with PATTERN, squeezed
line() { grep -m1 "^$2" "$1" | tr -s ' '; }

# 1. the tiny workflow end to end
work=$OUT/tiny
mkdir -p "$work"
cat >"$work/config.yaml" <<EOF
clip: {model: clipva-tiny}
demo: {n_clips: 14, n_actors: 4, min_frames: 12, max_frames: 24, seed: 0}
head: {d_model: 32, depth: 1, heads: 2, embed_dim: 32, window: 16, stride: 8}
pretrain: {epochs: 2, batch_size: 8}
finetune: {epochs: 4, batch_size: 8, patience: 10}
EOF
timed "tiny workflow" "$OUT/tiny.log" "$SNAKEMAKE" results/submission.csv -s "$REPO/Snakefile" -d "$work" \
    --cores "$CORES" --configfile "$work/config.yaml"
if [ $RC -eq 0 ]; then
    row "tiny workflow end to end" "$SECONDS_TAKEN" \
        "ok: $("$PYTHON" -c "import json,sys; m=json.load(open(sys.argv[1])); print('test mean CCC %.3f' % m['pooled']['mean_ccc'])" "$work/results/runs/main/eval/metrics.json")"
else
    row "tiny workflow end to end" "$SECONDS_TAKEN" "$(failed "$OUT/tiny.log")"
fi

# 2. extraction: end to end against the encoder alone
timed extraction "$OUT/extraction.log" "$PYTHON" benchmarks/extraction.py --model "$MODEL" --clips "$CLIPS" \
    --frame-size "$FRAME" --batch-size "$BATCH" --no-naive --repeat 1
if [ $RC -eq 0 ]; then
    row "extraction $MODEL, $FRAME frames" "$SECONDS_TAKEN" "$(line "$OUT/extraction.log" "end to end"); $(line "$OUT/extraction.log" "encoder only" | cut -d'(' -f1); $(line "$OUT/extraction.log" "ratio" | cut -d'(' -f1)"
else
    row "extraction $MODEL, $FRAME frames" "$SECONDS_TAKEN" "$(failed "$OUT/extraction.log")"
fi

# 3. a LoRA training step of 64 frames
timed "training step" "$OUT/training_step.log" "$PYTHON" benchmarks/training_step.py --model "$STEP_MODEL" \
    --batch 8 --window 8 --steps "$STEP_STEPS"
if [ $RC -eq 0 ]; then
    row "LoRA step, $STEP_MODEL, 8 x 8 frames" "$SECONDS_TAKEN" "$(line "$OUT/training_step.log" "LoRA end to end")"
else
    row "LoRA step, $STEP_MODEL, 8 x 8 frames" "$SECONDS_TAKEN" "$(failed "$OUT/training_step.log")"
fi

# 4. one frozen and one LoRA fine-tuning epoch on the demo
work=$OUT/demo
mkdir -p "$work"
cat >"$work/config.yaml" <<EOF
clip: {model: $MODEL}
demo: {n_clips: $DEMO_CLIPS, n_actors: 8, min_frames: 20, max_frames: 40, seed: 0}
pretrain: {epochs: 0}
finetune: {epochs: 1, patience: 1}
runs:
  lora:
    training: {backbone: lora}
    head: {window: 8, stride: 4}
    finetune: {epochs: 1, batch_size: 8, patience: 1}
EOF
timed "demo epochs" "$OUT/demo.log" "$SNAKEMAKE" results/runs/main/finetune/best.pt \
    results/runs/lora/finetune/best.pt -s "$REPO/Snakefile" -d "$work" --cores "$CORES" --configfile "$work/config.yaml"
for run in main lora; do
    name="fine-tuning epoch, $([ $run = main ] && echo frozen || echo LoRA), $MODEL, demo ($DEMO_CLIPS clips)"
    tsv=$work/benchmarks/out/runs/$run/finetune.tsv
    if [ -f "$tsv" ]; then
        row "$name" "$(awk 'NR == 2 {printf "%.0f", $1}' "$tsv")" "ok: $(grep -h -m1 'finetune epoch 1/' "$work/logs/runs/$run/finetune.log" | sed 's/.*finetune epoch/epoch/')"
    else
        row "$name" "$SECONDS_TAKEN" "$(failed "$OUT/demo.log")"
    fi
done

echo
echo "GPU check on $DEVICE ($MODE), $(date -u +%Y-%m-%d), logs in $OUT"
echo
echo "| check | result | seconds |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
! printf '%s\n' "${ROWS[@]}" | grep -q FAILED
