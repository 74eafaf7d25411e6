#!/usr/bin/env bash
# UAE Table 3 at small scale (docs/uae-search.md): QuantNAS (K 0), NACIM (K 1), UAE-M (K 5, mean)
# and UAE-95 (K 10, p95) on digits, same seed and episode limit, two searches at a time, one
# thread each. Each search ends with its chosen child retrained (final.epochs) and evaluated
# under final.samples Monte-Carlo noise samples on the test set.
#
#   scripts/uae_study.sh [SEED] [OUT_ROOT] [extra --set key=value ...]
#   e.g. scripts/uae_study.sh 0 runs/uae_study
#        scripts/uae_study.sh 1 runs/uae_study --set search.episodes=40
#
# Re-running resumes unfinished searches (--resume); finished ones are left as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-0}
ROOT=${2:-runs/uae_study}
shift $(( $# < 2 ? $# : 2 ))
EXTRA=("$@")
OUT="$ROOT/seed$SEED"
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CIMNAS=${CIMNAS:-.venv/bin/cimnas}

run_one() {
    local m=$1
    if [ -f "$OUT/$m/final.json" ]; then echo "$m: done already"; return 0; fi
    local resume=()
    [ -f "$OUT/$m/config.yaml" ] && resume=(--resume)
    /usr/bin/time -v "$CIMNAS" uae search --config "configs/uae/$m.yaml" --out "$OUT/$m" "${resume[@]}" \
        --set seed="$SEED" --set progress=false "${EXTRA[@]}" >>"$OUT/$m.log" 2>&1
    echo "$m: finished"
}
# QuantNAS (cheapest) next to UAE-95 (dearest), then NACIM next to UAE-M
( run_one quantnas; run_one nacim ) &
p1=$!
( run_one uae_95; run_one uae_m ) &
p2=$!
wait $p1 $p2
"$CIMNAS" uae report --runs "$OUT/quantnas" "$OUT/nacim" "$OUT/uae_m" "$OUT/uae_95" | tee "$OUT/table3.md"
