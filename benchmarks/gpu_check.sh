#!/usr/bin/env bash
# GPU check: what only a CUDA GPU can tell about automix, on one GPU in under 8 minutes, into one results file.
#
#   bash benchmarks/gpu_check.sh            # from the root of a checkout, on a machine with one CUDA GPU
#   bash benchmarks/gpu_check.sh --tiny     # every stage for a step or two on the CPU (tests/test_gpu_check.py)
#
# Stages, in this order, each under its own `timeout` and all within --budget seconds (default 420):
#   env            python, torch, CUDA and the device; the check stops here when torch sees no CUDA device
#   eager          benchmarks/step_time.py on every registered method (vanilla, mixup, cutmix, AutoMix, SAMix first),
#                  bf16 autocast, channels_last, CIFAR PreAct-ResNet-18 width 64, batch 128, with peak memory
#   train-none, train-automix
#                  `automix train` for 2 epochs on CIFAR-10-sized synthetic data (no network and no data files
#                  needed) with --sync-debug warn: every host synchronisation inside the training step, by line
#   resize         the loader's per-batch resize (CIFAR held at 32 px, trained at 224) on the device against the CPU
#   train-vit      `automix train` vit_tiny + TransMix for 1 epoch on that synthetic CIFAR at 224 px (patch 16)
#   compiled       step_time.py --compile for vanilla, mixup, cutmix, AutoMix and SAMix
#   backbone-*     vanilla and AutoMix on timm:resnet50, timm:vit_small_patch16_224 and torchvision:resnet18 at
#                  224 px, each skipped with the reason when its library is not importable
#   compiled-rest  step_time.py --compile for every other method, in the time left
# then one markdown file, benchmarks/results/gpu_check/<host>-<UTC date>.md (or --out FILE), whose path is printed.
# A stage that fails or runs out of time is reported as such and the next one runs; the exit status is 1 if any
# stage failed or timed out (the results file is written in any case), else 0.
#
# Options: --device DEV (default cuda; cpu with --tiny), --budget SECONDS (default 420; 900 with --tiny), --out FILE,
# --tiny.
# Needs bash, coreutils' timeout and python3 with torch (PYTHON=/path/to/python to use another); it sets
# PYTHONPATH=src itself.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
COMMAND="bash benchmarks/gpu_check.sh${*:+ $*}"

TINY=0 DEVICE="" BUDGET="" OUTFILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --device) DEVICE=${2:?--device needs a value}; shift ;;
    --budget) BUDGET=${2:?--budget needs a value}; shift ;;
    --out) OUTFILE=${2:?--out needs a value}; shift ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# The GPU lease is minutes: 420 s there; the CPU rehearsal only checks the stages run, so it may take longer.
[ -z "$BUDGET" ] && { [ "$TINY" = 1 ] && BUDGET=900 || BUDGET=420; }
case "$BUDGET" in
  ''|*[!0-9]*) echo "gpu_check.sh: --budget must be a whole number of seconds, got '$BUDGET'" >&2; exit 2 ;;
esac
if [ "$BUDGET" -lt 60 ]; then
  echo "gpu_check.sh: --budget must be at least 60 seconds, got $BUDGET" >&2; exit 2
fi

if [ "$TINY" = 1 ]; then
  # The CPU rehearsal: the same stages and files, a step or two each; compile traces with the eager backend
  # (inductor's code generation takes minutes on a CPU).
  DEVICE=${DEVICE:-cpu}
  STEP=(--widths 8 --batch-size 8 --steps 1 --warmup 1)
  BACKEND=eager REST_MAX=2 BACKBONE=(--img-size 64 --batch-size 2 --steps 1 --warmup 1)
  TRAIN=(--width 4 --batch-size 16) PER_FILE=40 VIT_SIZE=48 VIT_PATCH=8 VIT_BATCH=16 VIT_OPTS=(--model-opt depth=2)
else
  DEVICE=${DEVICE:-cuda}
  STEP=(--widths 64 --batch-size 128 --steps 10 --warmup 3)
  BACKEND=inductor REST_MAX=100 BACKBONE=(--img-size 224 --batch-size 64 --steps 5 --warmup 2)
  TRAIN=(--batch-size 128) PER_FILE=1000 VIT_SIZE=224 VIT_PATCH=16 VIT_BATCH=128 VIT_OPTS=()
fi
COMMON=(--device "$DEVICE" --amp bf16 --channels-last --wait-quiet 0 --no-breakdown)

START=$(date +%s)
RESERVE=20    # seconds kept for the report
WORK=$(mktemp -d "${TMPDIR:-/tmp}/automix-gpu-check.XXXXXX") || exit 2
STAGES="$WORK/stages.tsv"
: > "$STAGES"
FAILED=0
echo "gpu_check: device $DEVICE, budget ${BUDGET}s, work files in $WORK"

# stage NAME MAX_SECONDS CMD...: run CMD under timeout (MAX_SECONDS, or less when the budget is nearly spent),
# output to $WORK/NAME.log, one line per stage in stages.tsv: name, status, seconds, detail.
stage() {
  local name=$1 max=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - RESERVE ))
  if [ "$left" -lt 10 ]; then
    printf '%s\tskipped\t0\tno time left in the %ss budget\n' "$name" "$BUDGET" >> "$STAGES"
    echo "gpu_check: $name: skipped, no time left"
    return 0
  fi
  local limit=$(( max < left ? max : left )) t0 rc status detail
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  # The last line that says something (not a line of the metrics JSON automix train prints at the end).
  detail=$(grep -vE '^\s*([][{},]*|"[^"]*": .*)\s*$' "$WORK/$name.log" | tail -n 1 | tr '\t|' '  ' | cut -c1-200)
  if [ "$rc" = 0 ]; then
    status=ok
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status="timed out after ${limit}s"; FAILED=1
  else
    status="failed (exit $rc)"; FAILED=1
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$detail" >> "$STAGES"
  echo "gpu_check: $name: $status in $(( $(date +%s) - t0 ))s"
  return "$rc"
}

# env: stop at once if the device is not usable (no CUDA device, no torch).
if ! stage env 60 "$PY" benchmarks/_gpu_check.py env "$DEVICE"; then
  cat "$WORK/env.log" >&2
  exit 1
fi
cp "$WORK/env.log" "$WORK/env.txt"
ALL=$("$PY" benchmarks/_gpu_check.py methods) || exit 1
CORE=none,mixup,cutmix,automix,samix
REST=$(echo "$ALL" | tr ',' '\n' | grep -vxE 'none|mixup|cutmix|automix|samix' | head -n "$REST_MAX" | paste -sd, -)

stage eager 100 "$PY" benchmarks/step_time.py "${COMMON[@]}" "${STEP[@]}" --methods "$ALL" \
  --json "$WORK/steps-eager.json"

"$PY" benchmarks/_gpu_check.py fake-cifar "$WORK/cifar" "$PER_FILE" > /dev/null || FAILED=1
for method in none automix; do
  stage "train-$method" 90 "$PY" -m automix train --dataset cifar10 --data-dir "$WORK/cifar" --val-split 0.1 \
    --epochs 2 --method "$method" --device "$DEVICE" --amp bf16 --channels-last "${TRAIN[@]}" --sync-debug warn \
    --output "$WORK/train-$method" --cache-dir "$WORK/cache" --no-progress --no-save-images
done

# CIFAR at 224 px is held at 32 and resized per batch on the device: its pixels against the CPU's, then a ViT run
# through that path (TransMix reads the attention of the run's own forward pass).
stage resize 30 "$PY" benchmarks/_gpu_check.py resize "$DEVICE"
stage train-vit 60 "$PY" -m automix train --dataset cifar10 --data-dir "$WORK/cifar" --val-split 0.1 --epochs 1 \
  --img-size "$VIT_SIZE" --model vit_tiny --model-opt patch_size="$VIT_PATCH" ${VIT_OPTS[@]+"${VIT_OPTS[@]}"} --method transmix --opt adamw \
  --lr 1e-3 --device "$DEVICE" --amp bf16 --batch-size "$VIT_BATCH" --sync-debug warn --output "$WORK/train-vit" \
  --cache-dir "$WORK/cache" --no-progress --no-save-images

stage compiled 150 "$PY" benchmarks/step_time.py "${COMMON[@]}" "${STEP[@]}" --methods "$CORE" \
  --compile --compile-backend "$BACKEND" --json "$WORK/steps-compiled.json"

: > "$WORK/backbones-skipped.txt"
for model in timm:resnet50 timm:vit_small_patch16_224 torchvision:resnet18; do
  lib=${model%%:*}
  if ! why=$("$PY" -c "import $lib" 2>&1); then
    why=$(echo "$why" | tail -n 1)
    echo "$model: $lib is not importable ($why)" >> "$WORK/backbones-skipped.txt"
    printf 'backbone-%s\tskipped\t0\t%s is not importable: %s\n' "$model" "$lib" "$why" >> "$STAGES"
    echo "gpu_check: backbone-$model: skipped, $lib is not importable ($why)"
    continue
  fi
  stage "backbone-$model" 60 "$PY" benchmarks/step_time.py "${COMMON[@]}" "${BACKBONE[@]}" --model "$model" \
    --methods none,automix --json "$WORK/backbone-${model//[:\/]/_}.json"
done

if [ -n "$REST" ]; then
  stage compiled-rest 120 "$PY" benchmarks/step_time.py "${COMMON[@]}" "${STEP[@]}" --methods "none,$REST" \
    --compile --compile-backend "$BACKEND" --json "$WORK/steps-compiled-rest.json"
fi

if [ -z "$OUTFILE" ]; then
  if [ "$TINY" = 1 ]; then
    OUTFILE="$WORK/gpu_check-tiny.md"
  else
    OUTFILE="benchmarks/results/gpu_check/$(hostname)-$(date -u +%Y%m%d-%H%M).md"
  fi
fi
"$PY" benchmarks/_gpu_check.py report "$WORK" "$OUTFILE" "$COMMAND" > /dev/null || exit 1
echo "gpu_check: $(( $(date +%s) - START ))s in all; results in $OUTFILE"
exit "$FAILED"
