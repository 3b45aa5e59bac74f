#!/usr/bin/env bash
# Emoji on one GPU (issue 20, items 4 and 7): which network learns emoji fastest at equal minutes,
# then a longer run of the winner as the next bundled candidate. Two device calls fit a 15-minute
# lease (the machine stays warm between them):
#
#   # here, once: the emoji folder into the cache, then packed for the GPU machine (the reader is
#   # shipped, diffuse/readers/emoji-32, and travels with the tree: it is used on this very folder)
#   .venv/bin/diffuse eval --model emoji            # builds ~/.cache/diffuse/emoji-32 on first use
#   tar czf .gpu/cache.tgz -C ~/.cache/diffuse emoji-32      # .gpu/ is in .git/info/exclude
#   # device call 1 (about 7 minutes), carry .gpu/cache.tgz:
#   PHASE=arms ARM_MINUTES=1.5 OUT=$OUT bash benchmarks/gpu_emoji.sh
#   # device call 2 (about 6 minutes), carry .gpu/cache.tgz, PRESET from call 1's table:
#   PHASE=final PRESET=medium MINUTES=5 OUT=$OUT bash benchmarks/gpu_emoji.sh
#
# Every run: 32 px, batch 256, fp32 (TF32), --clip-grad 1 --high-sigma-share 0.1
# --ema-halflife-kimg 20, the rsqrt schedule (the default), from scratch; the recipe of the
# first bundled emoji model (medium, 6 minutes of one H200).
# Arms: the presets small, medium and large for ARM_MINUTES each, one after
# another (alone on the GPU), each read by `diffuse eval` at its defaults (192 prompts, 384 images).
# The final run's model comes back split in 15 MB parts (the device returns files of at most 16 MB):
#   cat model.part.* > model.safetensors
# Resolution (64 px) is not compared here: the evaluator's reader is trained at 32 px.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_emoji}
PY=${PY:-python3}
PHASE=${PHASE:-arms}
export PYTHONUNBUFFERED=1 DIFFUSE_CACHE=${DIFFUSE_CACHE:-/tmp/diffuse_cache}
mkdir -p "$OUT" "$DIFFUSE_CACHE"
[ -d "$DIFFUSE_CACHE/emoji-32" ] || tar xzf .gpu/cache.tgz -C "$DIFFUSE_CACHE" || exit 1
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
R="$OUT/gpu_emoji_$PHASE.md"
RECIPE=(--data "$DIFFUSE_CACHE/emoji-32" --device "${DEVICE:-cuda}" --precision fp32 --batch-size 256 --clip-grad 1
        --high-sigma-share 0.1 --ema-halflife-kimg 20 --lr-schedule rsqrt --preview-every 0 --quiet)
{ echo "# benchmarks/gpu_emoji.sh PHASE=$PHASE, $(date -u '+%Y-%m-%d %H:%M UTC')"; echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"; echo '```'; } | tee "$R"

if [ "$PHASE" = arms ]; then
  MIN=${ARM_MINUTES:-1.5}
  for preset in ${PRESETS:-small medium large}; do
    run=/tmp/emoji_$preset
    timeout $(( ${MIN%.*} * 60 + 150 )) $PY -m diffuse train "${RECIPE[@]}" --out $run --preset $preset \
      --minutes "$MIN" --checkpoint-every 100000 > $run.txt 2>&1
    tail -1 $run.txt | sed "s/^/$preset: /" | tee -a "$R"
    $PY benchmarks/log_summary.py $run 2>&1 | tail -1 | tee -a "$R"
    timeout 200 $PY -m diffuse eval --model $run --json "$OUT/eval_$preset.json" 2>&1 | grep -v "generated\|reader step" \
      | tail -14 | sed "s/^/    /" | tee -a "$R"
  done
else
  PRESET=${PRESET:-medium}; MIN=${MINUTES:-5}
  run=/tmp/emoji_final
  timeout $(( ${MIN%.*} * 60 + 150 )) $PY -m diffuse train "${RECIPE[@]}" --out $run --preset "$PRESET" \
    --minutes "$MIN" --checkpoint-every 1000 > $run.txt 2>&1
  tail -2 $run.txt | tee -a "$R"
  $PY benchmarks/log_summary.py $run 2>&1 | tail -3 | tee -a "$R"
  timeout 200 $PY -m diffuse eval --model $run --json "$OUT/eval_final.json" 2>&1 | grep -v "generated\|reader step" \
    | tail -14 | sed "s/^/    /" | tee -a "$R"
  cp $run/config.json $run/log.jsonl "$OUT/"
  split -b 15M $run/model.safetensors "$OUT/model.part."
fi
echo "done" | tee -a "$R"
