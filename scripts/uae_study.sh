#!/usr/bin/env bash
# UAE Table 3 at small scale (docs/uae-search.md): QuantNAS (K 0), NACIM (K 1), UAE-M (K 5, mean) and UAE-95
# (K 10, p5 = the 95%-minimum) on digits. A shortcut to the one study driver,
# `python -m cimnas.pipelines.studies.uae_study run` + `report`: every (method, seed) search with its final
# evaluation is one resumable run folder OUT_ROOT/seed<k>/<method>/, then the cross retrains
# OUT_ROOT/seed<k>/cross/, then OUT_ROOT/table3.md (over all seeds in OUT_ROOT), search_stats.md and figures.
#
#   scripts/uae_study.sh [SEED] [OUT_ROOT] [extra --set key=value ...]
#   e.g. scripts/uae_study.sh 0 runs/uae_study
#        scripts/uae_study.sh 1 runs/uae_study --set search.episodes=40
#        scripts/uae_study.sh "0 1 2" runs/uae_study          (several seeds in one call)
# Environment: WORKERS (default 2 Ray workers, 1 = in this process), CROSS=0 (skip the cross retrains),
# FIG_DIR (figures folder, default OUT_ROOT/figures).
# Re-running resumes: finished runs are read back, unfinished ones continue.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-0}
ROOT=${2:-runs/uae_study}
shift $(( $# < 2 ? $# : 2 ))
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
CROSS_FLAG=()
[ "${CROSS:-1}" = 1 ] || CROSS_FLAG=(--no-cross)
# shellcheck disable=SC2086  # SEED may list several seeds
"$PY" -m cimnas.pipelines.studies.uae_study run "$ROOT" --seeds $SEED --workers "${WORKERS:-2}" \
    "${CROSS_FLAG[@]}" "$@"
"$PY" -m cimnas.pipelines.studies.uae_study report "$ROOT" ${FIG_DIR:+--figures "$FIG_DIR"}
