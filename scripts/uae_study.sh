#!/usr/bin/env bash
# UAE Table 3 at small scale (docs/uae-search.md): QuantNAS (K 0), NACIM (K 1), UAE-M (K 5, mean)
# and UAE-95 (K 10, p5 = the 95%-minimum) on digits, same seed and episode limit, two searches at a time, one
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
    # --resume on a missing or empty folder starts a fresh run (cimnas.runs), so every call may pass it
    /usr/bin/time -v "$CIMNAS" uae search --config "configs/uae/$m.yaml" --out "$OUT/$m" --resume \
        --set seed="$SEED" --set progress=false "${EXTRA[@]}" >>"$OUT/$m.log" 2>&1
    echo "$m: finished"
}
# QuantNAS (cheapest) next to UAE-95 (dearest), then NACIM next to UAE-M
( run_one quantnas; run_one nacim ) &
p1=$!
( run_one uae_95; run_one uae_m ) &
p2=$!
wait $p1 $p2
# cross-check: is the gap the architecture or the training? Each chosen child retrained with the
# other training (QuantNAS's child noise-aware, the noise-aware methods' children plain), same
# final seed, epochs and Monte-Carlo samples; results in $OUT/cross/*/final.json
cross_one() {
    local m=$1 na=$2 dst="$OUT/cross/${1}_arch_$([ "$2" = true ] && echo noise_aware || echo plain)"
    [ -f "$dst/final.json" ] && return 0
    mkdir -p "$OUT/cross"
    "$CIMNAS" uae final --from "$OUT/$m" --out "$dst" --set train.noise_aware="$na" \
        --set "label=$m child, $([ "$na" = true ] && echo noise-aware || echo plain) training" >>"$dst.log" 2>&1
}
if [ "${CROSS:-1}" = 1 ]; then
    ( cross_one quantnas true; cross_one nacim false ) &
    p1=$!
    ( cross_one uae_m false; cross_one uae_95 false ) &
    p2=$!
    wait $p1 $p2
fi
# figures of the study: reward over episodes (all four methods) and clean vs noisy accuracy of every child
FIG=${FIG_DIR:-docs/figures}
mkdir -p "$FIG"
.venv/bin/python - "$OUT" "$FIG" "$SEED" <<'PY'
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, fig_dir, seed = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
runs = [("quantnas", "QuantNAS"), ("nacim", "NACIM"), ("uae_m", "UAE-M"), ("uae_95", "UAE-95")]
logs = {m: [json.loads(l) for l in (out / m / "episodes.jsonl").read_text().splitlines() if l.strip()]
        for m, _ in runs if (out / m / "episodes.jsonl").exists()}
fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharey=True)
for ax, (m, lab) in zip(axes, runs):
    log = logs.get(m, [])
    ep = [r["episode"] for r in log]
    rew = [r["reward"] for r in log]
    ax.scatter(ep, rew, s=7, alpha=0.6, label="reward")
    best, run = [], float("-inf")
    for r in rew:
        run = max(run, r)
        best.append(run)
    win = 10
    avg = [sum(rew[max(0, i - win + 1):i + 1]) / len(rew[max(0, i - win + 1):i + 1]) for i in range(len(rew))]
    ax.plot(ep, best, color="C3", label="best so far")
    ax.plot(ep, avg, color="C2", label=f"mean of last {win}")
    ax.set_title(lab)
    ax.set_xlabel("episode")
axes[0].set_ylabel("reward")
axes[0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(fig_dir / f"uae_study_rewards_seed{seed}.png", dpi=110)
plt.close(fig)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for i, (m, lab) in enumerate(runs):
    fresh = [r for r in logs.get(m, []) if not r["cache_hit"] and r["noisy"]]
    if fresh:
        axes[0].scatter([r["clean_acc"] for r in fresh], [r["noisy"]["mean"] for r in fresh], s=9, alpha=0.6,
                        color=f"C{i}", label=f"{lab} children")
    f = out / m / "final.json"
    if f.exists():
        fj = json.loads(f.read_text())
        axes[0].scatter([fj["clean_acc"]], [fj["mean"]], marker="*", s=180, color=f"C{i}", edgecolor="k",
                        label=f"{lab} final (test, MC)")
        p5 = fj.get("p5", fj.get("p95"))  # final.json of older runs named the 5th percentile p95
        axes[1].errorbar([i], [fj["mean"]], yerr=[[fj["mean"] - p5], [0]], fmt="o", color=f"C{i}", capsize=4)
        axes[1].scatter([i], [fj["clean_acc"]], marker="_", s=300, color=f"C{i}")
axes[0].plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
axes[0].set_xlabel("clean accuracy")
axes[0].set_ylabel("mean accuracy under noise (sigma 0.04)")
axes[0].set_title("children (search_eval) and chosen child (test)")
axes[0].legend(fontsize=7)
axes[1].set_xticks(range(4), [lab for _, lab in runs])
axes[1].set_ylabel("test accuracy")
axes[1].set_title("chosen child: clean (-), MC mean (o) down to 95%-min")
fig.tight_layout()
fig.savefig(fig_dir / f"uae_study_clean_vs_noisy_seed{seed}.png", dpi=110)
plt.close(fig)
PY
"$CIMNAS" uae report --runs "$OUT/quantnas" "$OUT/nacim" "$OUT/uae_m" "$OUT/uae_95" | tee "$OUT/table3.md"
# search statistics, and how well each method's search reward predicts the others' on children
# they share (NACIM / UAE-M / UAE-95 train a shared child identically: same seeds, noise-aware)
.venv/bin/python - "$OUT" <<'PY' | tee "$OUT/search_stats.md"
import json, sys
from pathlib import Path
import numpy as np
from scipy.stats import spearmanr
out = Path(sys.argv[1])
runs = [("quantnas", "QuantNAS"), ("nacim", "NACIM"), ("uae_m", "UAE-M"), ("uae_95", "UAE-95")]
logs = {m: [json.loads(l) for l in (out / m / "episodes.jsonl").read_text().splitlines() if l.strip()] for m, _ in runs}
print("| Method | episodes | unique children | cache hits | children at chance (clean < 15%) | mean reward, first 10 | mean reward, last 10 | best reward | chosen child (search_eval: clean / noisy mean / p5 of K) |")
print("|---|---|---|---|---|---|---|---|---|")
for m, lab in runs:
    L = logs[m]
    R = [r["reward"] for r in L]
    fresh = [r for r in L if not r["cache_hit"]]
    b = max(L, key=lambda r: r["reward"])
    nz = b["noisy"]
    ch = f"{100 * b['clean_acc']:.1f} / {100 * nz['mean']:.1f} / {100 * nz.get('p5', nz.get('p95')):.1f}" if nz else f"{100 * b['clean_acc']:.1f} / - / -"
    print(f"| {lab} | {len(L)} | {len(fresh)} | {len(L) - len(fresh)} | {sum(r['clean_acc'] < 0.15 for r in fresh)} | "
          f"{np.mean(R[:10]):.3f} | {np.mean(R[-10:]):.3f} | {max(R):.3f} | `{b['arch_key']}`: {ch} |")
# all noise-aware children (union over NACIM / UAE-M / UAE-95; identical training, so pooled by arch)
pool = {}
for m in ("nacim", "uae_m", "uae_95"):
    for r in logs[m]:
        if not r["cache_hit"]:
            pool.setdefault(r["arch_key"], {})[m] = r
print()
both = [v for v in pool.values() if "uae_95" in v]
if len(both) >= 3:
    r95 = [v["uae_95"] for v in both]
    k1 = [r["noisy_accs"][0] for r in r95]
    k5 = [float(np.mean(r["noisy_accs"][:5])) for r in r95]
    k10 = [float(np.mean(r["noisy_accs"])) for r in r95]
    p5s = [r["noisy"].get("p5", r["noisy"].get("p95")) for r in r95]  # the 95%-minimum (p5)
    clean = [r["clean_acc"] for r in r95]
    rho = lambda a, b: spearmanr(a, b).statistic
    print(f"UAE-95's {len(r95)} children (K = 10 noisy accuracies each; the first 1 / 5 of them are exactly "
          "what NACIM / UAE-M would measure for the same child):")
    print(f"- Spearman vs the K=10 mean: K=1 {rho(k1, k10):.3f}, K=5 mean {rho(k5, k10):.3f}, "
          f"K=10 p5 {rho(p5s, k10):.3f}, clean accuracy {rho(clean, k10):.3f}")
    print(f"- Spearman vs the K=10 p5: K=1 {rho(k1, p5s):.3f}, K=5 mean {rho(k5, p5s):.3f}, clean {rho(clean, p5s):.3f}")
    print(f"- mean |K=1 - K=10 mean| = {100 * np.mean(np.abs(np.subtract(k1, k10))):.2f} points; "
          f"mean std of the K=10 accuracies = {100 * np.mean([r['noisy']['std'] for r in r95]):.2f} points")
    best = lambda v: int(np.argmax(v))
    print(f"- child ranked first by: K=1 `{r95[best(k1)]['arch_key']}` (K=10 mean {100 * k10[best(k1)]:.1f}), "
          f"K=5 mean `{r95[best(k5)]['arch_key']}` (K=10 mean {100 * k10[best(k5)]:.1f}), "
          f"K=10 p5 `{r95[best(p5s)]['arch_key']}` (K=10 mean {100 * k10[best(p5s)]:.1f}), "
          f"clean `{r95[best(clean)]['arch_key']}` (K=10 mean {100 * k10[best(clean)]:.1f})")
q = [r for r in logs["quantnas"] if not r["cache_hit"]]
print(f"QuantNAS children (plain training, clean reward): clean accuracy {100 * np.mean([r['clean_acc'] for r in q]):.1f}% on average "
      f"(min {100 * min(r['clean_acc'] for r in q):.1f}%, max {100 * max(r['clean_acc'] for r in q):.1f}%) over {len(q)} children")
PY
