#!/usr/bin/env bash
# HAWIS small-scale study (docs/hawis.md "Small-scale study"): DDPG vs random search on digits.
# Exact commands behind the numbers in docs/hawis.md. ~25-35 CPU-minutes on 1 thread.
#   bash scripts/hawis_study.sh [SEED]        (outputs under runs/hawis_study/seed$SEED)
#   (Fashion-MNIST: scripts/hawis_fashion_study.sh, which trains the U-kx baselines in parallel with stage A)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
SEED=${1:-0}
CFG=${CFG:-configs/hawis/digits_study.yaml}
OUT=${OUT:-runs/hawis_study/seed$SEED}
CLI=.venv/bin/cimnas
mkdir -p "$OUT"

# Stage A once; both searches start from this super-net.
$CLI hawis pretrain --config $CFG --out "$OUT/pretrain" --set seed=$SEED

# Lambda calibration (Eq. 5): the lambda at which the U-kx sub-nets of the pretrained super-net
# (BN recalibrated, held-out accuracy) get equal reward, i.e. the reward neither prefers nor penalises
# moving along the uniform curve; the search is then rewarded for beating that curve.
LAM=$(.venv/bin/python -m cimnas.pipelines.studies.hawis_study lambda "$CFG" "$OUT/pretrain" "$SEED")
echo "lambda = $LAM" | tee "$OUT/lambda.txt"

# Stage B + C for both agents, same super-net (pretrain.from_run), same seed, same episodes; U-kx trained once
# (DDPG run). Stage C trains on search_train and records val_accuracy (held-out) and test_accuracy (once).
$CLI hawis run --config $CFG --out "$OUT/ddpg" --resume --set seed=$SEED --set search.env.lam=$LAM \
    --set pretrain.from_run="$OUT/pretrain" \
    > "$OUT/ddpg.out" 2>&1 &
P1=$!
$CLI hawis run --config $CFG --out "$OUT/random" --resume --set seed=$SEED --set search.env.lam=$LAM \
    --set pretrain.from_run="$OUT/pretrain" \
    --set search.agent=random --set 'search.agent_options={}' --set 'retrain.baselines=[]' \
    > "$OUT/random.out" 2>&1 &
P2=$!
wait $P1
wait $P2
$CLI hawis report "$OUT/ddpg"
$CLI hawis report "$OUT/random"

# Both agents and the U-kx baselines on one Fig. 1-style plot + a summary table (compare.md).
.venv/bin/python -m cimnas.pipelines.studies.hawis_study compare "$OUT" --title "digits: DDPG vs random search vs U-kx"
