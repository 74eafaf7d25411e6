#!/usr/bin/env bash
# HAWIS small-scale study (docs/hawis.md "Small-scale study"): DDPG vs random search on digits.
# Exact commands behind the numbers in docs/hawis.md. ~25-35 CPU-minutes on 1 thread.
#   bash scripts/hawis_study.sh [SEED]        (outputs under runs/hawis_study/seed$SEED)
#   CFG=configs/hawis/fashion_small.yaml OUT=runs/hawis_fashion/seed0 bash scripts/hawis_study.sh 0   (not run here)
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
LAM=$(.venv/bin/python - "$CFG" "$OUT/pretrain" "$SEED" <<'PY'
import sys, math, tempfile
import numpy as np
from cimnas.pipelines.hawis import (load_hawis_config, make_context, RunFolder, build_supernet, _load_state,
                                    _uniform)
from cimnas.search.env import accuracy, cycle_batches
from cimnas.utils.io import load_checkpoint
from cimnas.utils.seed import make_generator
cfg = load_hawis_config(sys.argv[1], [f"seed={sys.argv[3]}"])
ctx = make_context(cfg, RunFolder(tempfile.mkdtemp()))
net = build_supernet(ctx)
p = f"{sys.argv[2]}/checkpoints/supernet.pt"
_load_state(net, load_checkpoint(p), p)
qb = ctx.energy(ctx.build(ctx.base_widths))["energy_uj"]
rows = []
for k in (0.5, 0.75, 1, 1.25, 1.5, 2):
    w = _uniform(ctx, k)
    nb = cfg.search.env.bn_recal_batches
    net.recalibrate_bn(w, cycle_batches(ctx.splits.search_train, cfg.search.env.batch_size, nb, make_generator(0)), nb)
    acc = accuracy(net, ctx.splits.search_eval)
    with net.subnet(w):
        q = ctx.energy(net.model)["energy_uj"]
    rows.append((k, acc, q / qb))
    print(f"U-{k:g}x: held-out acc {acc:.4f}  Q/Q(A_b) {q / qb:.3f}", file=sys.stderr)
x = np.log([r[2] for r in rows]); err = np.array([1 - r[1] for r in rows])
def slope(loglam):  # least-squares slope of R_k = -err_k (x_k - log lam) against x_k
    return np.polyfit(x, -err * (x - loglam), 1)[0]
lo, hi = math.log(1e-4), math.log(min(r[2] for r in rows))  # lam < Q_min/Q(A_b): all rewards negative
if slope(lo) * slope(hi) > 0:
    print(f"no sign change; using lam = {math.exp(hi) / 2:.4f}", file=sys.stderr); print(f"{math.exp(hi) / 2:.4f}")
else:
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) * slope(lo) > 0 else (lo, mid)
    lam = math.exp((lo + hi) / 2)
    for k, a, r in rows:
        print(f"  U-{k:g}x reward at lam {lam:.4f}: {-(1 - a) * math.log(r / lam):+.4f}", file=sys.stderr)
    print(f"{lam:.4f}")
PY
)
echo "lambda = $LAM" | tee "$OUT/lambda.txt"

# Stage B + C for both agents, same super-net, same seed, same episodes; U-kx trained once (DDPG run).
for AGENT in ddpg random; do
  mkdir -p "$OUT/$AGENT/checkpoints"
  cp -n "$OUT/pretrain/checkpoints/supernet.pt" "$OUT/$AGENT/checkpoints/supernet.pt"
done
$CLI hawis run --config $CFG --out "$OUT/ddpg" --resume --set seed=$SEED --set search.env.lam=$LAM \
    > "$OUT/ddpg.out" 2>&1 &
P1=$!
$CLI hawis run --config $CFG --out "$OUT/random" --resume --set seed=$SEED --set search.env.lam=$LAM \
    --set search.agent=random --set 'search.agent_options={}' --set 'retrain.baselines=[]' \
    > "$OUT/random.out" 2>&1 &
P2=$!
wait $P1
wait $P2
$CLI hawis report "$OUT/ddpg"
$CLI hawis report "$OUT/random"

# Both agents and the U-kx baselines on one Fig. 1-style plot + a summary table (compare.md).
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from scipy.stats import spearmanr
out = Path(sys.argv[1])
sc = {a: json.loads((out / a / "stage_c.json").read_text()) for a in ("ddpg", "random")}
eps = {a: [json.loads(l) for l in (out / a / "episodes.jsonl").read_text().splitlines() if l.strip()]
       for a in ("ddpg", "random")}
fig, ax = plt.subplots(figsize=(6.4, 4.4))
uni = sorted(((k, v) for k, v in sc["ddpg"].items() if k.startswith("U-")), key=lambda kv: kv[1]["energy_uj"])
ax.plot([v["energy_uj"] for _, v in uni], [100 * v["test_accuracy"] for _, v in uni], "-s", c="#1f77b4",
        label="uniform U-kx (stage C, test)")
for k, v in uni:
    ax.annotate(k, (v["energy_uj"], 100 * v["test_accuracy"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
lines = ["| model | source | energy (uJ) | test acc. (%) | held-out acc. in search (%) | reward |", "|---|---|---|---|---|---|"]
for k, v in uni:
    lines.append(f"| {k} | uniform | {v['energy_uj']:.3f} | {100 * v['test_accuracy']:.2f} | - | - |")
pairs = []
for a, col, mk in (("ddpg", "#d62728", "*"), ("random", "#2ca02c", "P")):
    e = eps[a]
    ax.scatter([r["energy_uj"] for r in e], [100 * r["accuracy"] for r in e], s=8, c=col, alpha=0.25,
               label=f"{a} candidates (held-out)")
    for k, v in sc[a].items():
        if k.startswith("U-"):
            continue
        ep = int(k.split("ep")[1]) if k.startswith("pareto-ep") else None
        rec = next(r for r in e if r["widths"] == v["widths"])
        pairs.append((rec["accuracy"], v["test_accuracy"]))
        ax.plot(v["energy_uj"], 100 * v["test_accuracy"], mk, c=col, ms=12 if k == "searched" else 7,
                label=f"{a} {'best reward' if k == 'searched' else 'Pareto pts'} (stage C, test)"
                if k == "searched" or ep == min(int(x.split('ep')[1]) for x in sc[a] if x.startswith('pareto-ep')) else None)
        lines.append(f"| {a} {k} (ep. {rec['episode']}) | search | {v['energy_uj']:.3f} | {100 * v['test_accuracy']:.2f} | "
                     f"{100 * rec['accuracy']:.2f} | {rec['reward']:+.4f} |")
ax.set_xscale("log"); ax.set_xlabel("energy per inference (uJ)"); ax.set_ylabel("accuracy (%)")
ax.set_title("digits: DDPG vs random search vs U-kx"); ax.grid(alpha=0.3); ax.legend(fontsize=6, loc="lower right")
fig.tight_layout(); fig.savefig(out / "compare_fig1.png", dpi=120)
rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic if len(pairs) > 2 else float("nan")
lines.append(f"\nSpearman rho (search held-out acc. vs stage-C test acc., {len(pairs)} searched models): {rho:.2f}")
for a in ("ddpg", "random"):
    r = [x["reward"] for x in eps[a]]
    lines.append(f"{a}: best reward {max(r):+.4f}, mean reward all {sum(r) / len(r):+.4f}, last 20 {sum(r[-20:]) / 20:+.4f}")
(out / "compare.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
