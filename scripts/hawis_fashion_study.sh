#!/usr/bin/env bash
# HAWIS on Fashion-MNIST at CPU scale (docs/hawis.md "Fashion-MNIST, small scale"; issue 4 item 10):
# DDPG vs random search (same super-net, seed and episode count) vs uniformly widened U-kx BNNs.
# Two workers, one core each (OMP_NUM_THREADS=1):
#   A: stage A (super-net) -> lambda calibration -> DDPG search + stage C -> U-kx baselines $UNIFORM_A
#   B: U-kx baselines $UNIFORM_B (while stage A runs) -> random search + stage C
# Every step resumes: run the script again after a kill and finished work is kept.
#   CFG=configs/hawis/fashion_small.yaml OUT=runs/hawis_fashion/seed0 bash scripts/hawis_fashion_study.sh 0
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
SEED=${1:-0}
CFG=${CFG:-configs/hawis/fashion_small.yaml}
OUT=${OUT:-runs/hawis_fashion/seed$SEED}
UNIFORM_A=${UNIFORM_A:-"2"}
UNIFORM_B=${UNIFORM_B:-"0.5 1 1.5 0.75"}
PY=.venv/bin/python
CLI=.venv/bin/cimnas
mkdir -p "$OUT/uniform"
rm -f "$OUT/FAILED"

uniform() {  # U-kx baselines, each in its own run folder (stage C of retrain.widths: accuracy, energy, robustness)
  for K in "$@"; do
    W=$($PY -m cimnas.pipelines.studies.hawis_study uniform-widths "$CFG" "$K")
    $CLI hawis retrain --config "$CFG" --out "$OUT/uniform/U-${K}x" --set seed="$SEED" --set "retrain.widths=$W" \
        --set retrain.pareto_models=0 > "$OUT/uniform/U-${K}x.out" 2>&1
  done
}

search() {  # $1 = agent; stages B + C from the shared super-net, lambda from the calibration
  local AGENT=$1; shift
  $CLI hawis run --config "$CFG" --out "$OUT/$AGENT" --resume --set seed="$SEED" --set pretrain.from_run="$OUT/pretrain" \
      --set search.env.lam="$(cat "$OUT/lambda.txt")" "$@" > "$OUT/$AGENT.out" 2>&1
}

worker_a() {
  $CLI hawis pretrain --config "$CFG" --out "$OUT/pretrain" --set seed="$SEED" > "$OUT/pretrain.out" 2>&1
  if [ ! -f "$OUT/lambda.txt" ]; then
    # lambda (Eq. 5) at which the super-net's U-kx sub-nets get equal reward (docs/hawis.md "Choosing lambda")
    $PY -m cimnas.pipelines.studies.hawis_study lambda "$CFG" "$OUT/pretrain" "$SEED" > "$OUT/lambda.tmp" 2> "$OUT/lambda.log"
    mv "$OUT/lambda.tmp" "$OUT/lambda.txt"
  fi
  search ddpg
  uniform $UNIFORM_A
}

worker_b() {
  uniform $UNIFORM_B
  until [ -f "$OUT/lambda.txt" ]; do
    [ -f "$OUT/FAILED" ] && return 1
    sleep 10
  done
  search random --set search.agent=random --set 'search.agent_options={}'
}

( set -eE; trap 'touch "$OUT/FAILED"' ERR; worker_a ) &
PA=$!
( set -eE; trap 'touch "$OUT/FAILED"' ERR; worker_b ) &
PB=$!
wait $PA || { echo "worker A failed: see $OUT/*.out" >&2; wait $PB || true; exit 1; }
wait $PB || { echo "worker B failed: see $OUT/*.out" >&2; exit 1; }
$CLI hawis report "$OUT/ddpg" > /dev/null
$CLI hawis report "$OUT/random" > /dev/null
$PY -m cimnas.pipelines.studies.hawis_study compare "$OUT" --title "Fashion-MNIST: DDPG vs random search vs U-kx"
