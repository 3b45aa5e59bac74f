#!/usr/bin/env bash
# Issue 20, item 7, on a CPU: which network size and which resolution learn the emoji data fastest
# at equal minutes. Each arm trains from scratch for MINUTES, one after another (nothing else
# running), with the recipe pinned below (the defaults of 2026-12-06: issue 23's), then is read by
# `diffuse eval --read-size 32` at its defaults, seed 0: one judge, the shipped 32-px reader, for
# both sizes (a 64-px model's images are resized to 32 px, antialiased, as the 32-px folder's are).
#
#   bash benchmarks/emoji_size.sh        # ARMS="tiny:32 small:32 medium:32 small:64" MINUTES=20
#
# The table lands in $OUT/emoji_size.md, each arm's figures in $OUT/eval_PRESET_SIZE.json.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/emoji_size}
MIN=${MINUTES:-20}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
R="$OUT/emoji_size.md"
RECIPE=(--data emoji --device cpu --precision fp32 --batch-size 32 --grad-accum 1 --lr 2e-3 --lr-schedule rsqrt
        --lr-ref-steps 1000 --ema-halflife-kimg 2 --seed 0 --preview-every 0 --checkpoint-every 100000 --quiet)
{ echo "# benchmarks/emoji_size.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), $MIN minutes an arm"; echo '```'
  lscpu | grep "Model name" | sed 's/  */ /g'; echo "cores $(nproc)"
  $PY -c "import torch; print('torch', torch.__version__)"
  echo "git $(git rev-parse --short HEAD)"; echo '```'; } | tee "$R"
for arm in ${ARMS:-tiny:32 small:32 medium:32 small:64}; do
  preset=${arm%:*}; size=${arm#*:}; run=$OUT/${preset}_$size
  # The folder of this size is built into the cache before the clock starts (about 100 s at 64 px).
  $PY -c "from diffuse.emoji import cached_emoji_folder; cached_emoji_folder($size, progress=False)" || exit 1
  rm -rf "$run"
  $PY -m diffuse train "${RECIPE[@]}" --out "$run" --preset "$preset" --size "$size" --minutes "$MIN" \
    > "$run.txt" 2>&1 || { tail -3 "$run.txt"; exit 1; }
  echo "## $preset, $size px" | tee -a "$R"
  tail -1 "$run.txt" | tee -a "$R"
  $PY benchmarks/log_summary.py "$run" 2>&1 | tail -1 | tee -a "$R"
  $PY -m diffuse eval --model "$run" --read-size 32 --json "$OUT/eval_${preset}_$size.json" 2>&1 \
    | grep -v "generated\|reader step" | tail -16 | sed "s/^/    /" | tee -a "$R"
done
