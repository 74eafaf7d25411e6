#!/usr/bin/env bash
# HAWIS small-scale study (docs/hawis.md "Small-scale study"): DDPG vs random search on digits, vs U-kx.
# A shortcut to the one study driver, `python -m cimnas.pipelines.studies.hawis_study run`: stage A once, the U-kx
# baselines, lambda calibrated on the super-net's U-kx sub-nets (held-out data), both searches from the same
# super-net, then compare.md. Each part is its own resumable run folder: run the script again after a kill.
#   bash scripts/hawis_study.sh [SEED]        (outputs under runs/hawis_study/seed$SEED; WORKERS=2 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
SEED=${1:-0}
CFG=${CFG:-configs/hawis/digits_study.yaml}
OUT=${OUT:-runs/hawis_study/seed$SEED}
exec .venv/bin/python -m cimnas.pipelines.studies.hawis_study run "$CFG" "$OUT" --set seed="$SEED" \
    --workers "${WORKERS:-2}" --title "${TITLE:-digits: DDPG vs random search vs U-kx}"
