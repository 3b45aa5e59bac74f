#!/usr/bin/env bash
# GPU readiness (issue 23): one script, <= 8 minutes on one GPU, no internet. Run it first
# whenever a GPU is at hand, then copy its figures into benchmarks/RESULTS.md and docs/scaling.md.
#
#     bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check.md (OUT: outputs/gpu_check)
#
# The GPU machine has its own PyTorch with CUDA: the package is installed without dependencies
# (or put on PYTHONPATH). Phases, each with its own time limit so one hang cannot eat the rest:
#  1. the tests marked for CUDA (pytest -m cuda);
#  2. train and sample images/s per preset, fp32 (TF32) and bf16 (benchmarks/throughput.py);
#  3. four runs at once for $MINUTES minutes on shapes, from scratch:
#       old    - the recipe that diverged on the CPU (lr 2e-3 constant, batch 16, no clipping), fp32
#       clip   - the same with --clip-grad 1, fp32
#       dflt   - the defaults of 2026-12-04 on CUDA: batch 16, bf16 autocast (pinned: auto is fp32 now)
#       b256   - batch 256, --clip-grad 1, --high-sigma-share 0.1, --ema-halflife-kimg 20, bf16
#     (they share the GPU, so their images/s are lower than alone; phase 2 has the solo figures);
#  4. diffuse eval (defaults: 20 steps dpmpp_2m, guidance 2, 216 images) of dflt and b256.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
MINUTES=${MINUTES:-3}
PY=${PY:-python3}
RUNS=${RUNS:-outputs/gpu_runs}
export PYTHONUNBUFFERED=1 DIFFUSE_CACHE=${DIFFUSE_CACHE:-outputs/gpu_cache}
mkdir -p "$OUT" "$RUNS"
R="$OUT/gpu_check.md"
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
section() { printf '\n## %s (t=%ss)\n\n' "$1" $(( $(date +%s) - T0 )) | tee -a "$R"; }

{ echo "# benchmarks/gpu_check.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"; echo
  echo '```'; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs"; echo '```'; } | tee "$R"

section "1. tests marked for CUDA"
timeout 150 $PY -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee -a "$R"

section "2. throughput per preset (batch 256 training, 64 images per sampling call)"
timeout 150 $PY benchmarks/throughput.py --device cuda --presets tiny small medium large --batch 256 \
  --steps 10 --sample-n 64 2>&1 | grep -v Warning | tee -a "$R"

section "3. four runs at once, $MINUTES minutes each, from scratch on shapes"
train() { local name=$1; shift
  timeout $(( MINUTES * 60 + 150 )) $PY -m diffuse train --data shapes --out "$RUNS/$name" --device cuda \
    --minutes "$MINUTES" --preview-every 0 --checkpoint-every 2000 --quiet "$@" > "$RUNS/$name.txt" 2>&1; }
train old --precision fp32 --lr 2e-3 --lr-schedule constant --clip-grad 0 --batch-size 16 &
train clip --precision fp32 --lr 2e-3 --lr-schedule constant --clip-grad 1 --batch-size 16 &
train dflt --precision bf16 --lr 2e-3 --lr-schedule constant --clip-grad 0 --batch-size 16 &
train b256 --precision bf16 --batch-size 256 --clip-grad 1 --high-sigma-share 0.1 --ema-halflife-kimg 20 &
wait
for n in old clip dflt b256; do tail -2 "$RUNS/$n.txt" | sed "s/^/$n: /"; done | tee -a "$R"
$PY benchmarks/log_summary.py "$RUNS"/old "$RUNS"/clip "$RUNS"/dflt "$RUNS"/b256 2>&1 | tee -a "$R"

section "4. diffuse eval at its defaults"
for n in b256 dflt; do
  echo "### $n" | tee -a "$R"
  timeout 200 $PY -m diffuse eval "$RUNS/$n" --json "$OUT/eval_$n.json" 2>&1 | grep -v "reader step" | tail -25 | tee -a "$R"
done

section "done"
# What comes back (at most 8 files): this report, the eval JSONs, the logs, and the b256 model.
for n in old clip b256; do cp "$RUNS/$n/log.jsonl" "$OUT/log_$n.jsonl" 2>/dev/null; done
mkdir -p "$OUT/model_b256" && cp "$RUNS/b256/config.json" "$RUNS/b256/model.safetensors" "$OUT/model_b256/" 2>/dev/null
true
