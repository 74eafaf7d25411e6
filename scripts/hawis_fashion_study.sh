#!/usr/bin/env bash
# HAWIS on Fashion-MNIST at CPU scale (docs/hawis.md "Fashion-MNIST, small scale"): DDPG vs random search (same
# super-net, seed and episode count) vs uniformly widened U-kx BNNs, on two workers (one core each).
# A shortcut to the one study driver (`python -m cimnas.pipelines.studies.hawis_study run`); every part resumes.
#   CFG=configs/hawis/fashion_small.yaml OUT=runs/hawis_fashion/seed0 bash scripts/hawis_fashion_study.sh 0
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
SEED=${1:-0}
CFG=${CFG:-configs/hawis/fashion_small.yaml}
OUT=${OUT:-runs/hawis_fashion/seed$SEED}
exec .venv/bin/python -m cimnas.pipelines.studies.hawis_study run "$CFG" "$OUT" --set seed="$SEED" \
    --uniform 0.5 0.75 1 1.5 2 --workers "${WORKERS:-2}" \
    --title "${TITLE:-Fashion-MNIST: DDPG vs random search vs U-kx}"
