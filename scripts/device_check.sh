#!/usr/bin/env bash
# The one-call device check (issue 13 item 7): at most ~8 minutes on one GPU, from the source tree, nothing
# installed (needs python3 with torch; pytest for the cuda tests, numpy, pyyaml, tqdm as cimnas itself does).
#
#   bash scripts/device_check.sh            # on the GPU machine; results in $OUT (default outputs/device_check)
#   bash scripts/device_check.sh --tiny     # CPU smoke path: tiny budgets, seconds per step, numbers meaningless
#
# Steps, each under its own time limit (a step that runs over is stopped and marked so in the JSON):
#   1. tests/test_cuda.py (the `cuda` tests: training step, super-net step, mapping, every defect model, the
#      Monte-Carlo evaluator, the UAE analysis on the GPU)
#   2. benchmarks/run_all.py --device cuda, one bench file at a time into $OUT/bench.json, until its budget ends
#   3. benchmarks/bench_paper_cost.py: HAWIS / UAE search cost at paper shape (synthetic CIFAR-10-shaped data)
#   4. binarized ResNet-20 U-1x and U-2x (configs/train/fashion_binary_resnet20.yaml) on the full Fashion-MNIST
#      (copied beside the source tree in .data/fashion-mnist: `cp -r /usr/share/datasets/fashion-mnist .data/`),
#      4 epochs each (lr 0.1, x0.1 at epochs 2 and 3); stated accuracy: test >= 0.84 (U-1x), >= 0.85 (U-2x)
# and writes everything into one JSON: $OUT/device_check.json.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/outputs/device_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
DATA=$ROOT/.data/fashion-mnist
[ -d "$DATA" ] || DATA=/usr/share/datasets/fashion-mnist
: > "$OUT/steps.tsv"

if [ "$TINY" = 1 ]; then
  T_TESTS=120; T_BENCH=60; T_COST=240; T_TRAIN=240; DEVICE=cpu
  BENCHES="bench_agents"
  COST_ARGS=(--tiny --device cpu)
  TRAIN_ARGS=(--set device=cpu --set data.limit=128 --set train.epochs=1 --set "train.milestones=[]")
else
  T_TESTS=100; T_BENCH=170; T_COST=80; T_TRAIN=50; DEVICE=cuda
  BENCHES=$(cd benchmarks && ls bench_*.py | sed 's/\.py$//' | grep -v '^bench_paper_cost$')
  COST_ARGS=(--scale 0.05 --episodes 2 --children 2 --device cuda)
  TRAIN_ARGS=(--set device=cuda --set train.epochs=4 --set "train.milestones=[2,3]")
fi

step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, record rc and seconds
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$limit" >> "$OUT/steps.tsv"
  echo "[device_check] $name: rc $rc, $(( $(date +%s) - start )) s (limit $limit s)"
}

step environment 60 "$PY" -c "
import json, platform, torch
d = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.cuda.is_available()}
if torch.cuda.is_available():
    d['gpu'] = torch.cuda.get_device_name(0)
    d['gpu_memory_gib'] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
print(json.dumps(d))
json.dump(d, open('$OUT/environment.json', 'w'))
"

step cuda_tests "$T_TESTS" "$PY" -m pytest tests/test_cuda.py -q -p no:cacheprovider -o addopts="" -rs

bench_end=$(( $(date +%s) + T_BENCH ))
for b in $BENCHES; do
  left=$(( bench_end - $(date +%s) ))
  if [ "$left" -le 5 ]; then
    printf '%s\tskipped\t0\t0\n' "bench:$b" >> "$OUT/steps.tsv"
    continue
  fi
  step "bench:$b" "$left" "$PY" benchmarks/run_all.py --device "$DEVICE" --only "$b" --out "$OUT/bench.json"
done

step cost "$T_COST" "$PY" benchmarks/bench_paper_cost.py "${COST_ARGS[@]}" --out "$OUT/cost.json"

for k in 1 2; do
  rm -rf "$OUT/train_u${k}x"
  step "train_u${k}x" "$T_TRAIN" "$PY" -m cimnas train --config configs/train/fashion_binary_resnet20.yaml \
    --out "$OUT/train_u${k}x" --set data.data_dir="$DATA" --set model.width_mult="$k" --set train.progress=false \
    "${TRAIN_ARGS[@]}"
  rm -rf "$OUT/train_u${k}x/checkpoints"  # keep the results, not the weights
done

"$PY" - "$OUT" "$TINY" <<'EOF'
import json, sys
from pathlib import Path

out, tiny = Path(sys.argv[1]), sys.argv[2] == "1"
def load(p):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError):
        return None
steps = {}
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, secs, limit = line.split("\t")
    steps[name] = {"rc": rc, "seconds": int(secs), "limit_s": int(limit),
                   "timed_out": rc in ("124", "137")}
targets = {"train_u1x": 0.84, "train_u2x": 0.85}
train = {}
for name, target in targets.items():
    final = load(out / name / "final.json") or {}
    acc = final.get("test_acc")
    train[name] = {"test_acc": acc, "val_acc": final.get("val_acc"), "target": target,
                   "reached": (acc is not None and acc >= target) if not tiny else None}
tests_log = (out / "cuda_tests.log").read_text() if (out / "cuda_tests.log").exists() else ""
result = {"tiny": tiny, "environment": load(out / "environment.json"), "steps": steps,
          "cuda_tests_summary": tests_log.strip().splitlines()[-1] if tests_log.strip() else None,
          "benchmarks": load(out / "bench.json"), "cost": load(out / "cost.json"), "fashion_mnist": train,
          "total_s": sum(s["seconds"] for s in steps.values())}
(out / "device_check.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
print(json.dumps({k: result[k] for k in ("tiny", "cuda_tests_summary", "fashion_mnist", "total_s")}, indent=2))
EOF
