"""The search cost at paper shape (issue 13 item 5): a few real stage-B episodes of
configs/hawis/resnet20_cifar10.yaml and a few real UAE children of configs/uae/paper_cifar10_uae_m_k5.yaml on
the `synthetic` dataset (CIFAR-10's shape, 3x32x32, 10 classes), extrapolated to each search's full cost.

Scale: the runs use `--scale` of CIFAR-10's 50,000 training images (data.limit), so each data-proportional
phase does `scale` of its full work; the extrapolation divides those phases by `scale`:
- HAWIS episode = slimmable fine-tune + candidate fine-tune + evaluation (proportional) + BN recalibration
  (a fixed 20 batches) + energy + agent update + checkpoint (fixed); search = 600 episodes, one after the other
  (each episode's agent step depends on the previous reward, so N devices do not shorten it). Stage A (120
  sandwich epochs over search_train) is timed on one epoch and reported apart.
- UAE child = `train.epochs` epochs (run with `--child-epochs`, scaled to the config's 15) + K=5 noisy
  evaluations of search_eval (proportional); search = 2000 children; the controller samples
  `controller.batch_rollouts` (5) children per update, which run in parallel on up to that many devices
  (`cimnas.parallel`), so N devices divide it by min(N, 5). The final retrain (60 epochs on the 50k training
  images) and its 10,000-sample Monte-Carlo evaluation of the 10,000 test images are reported apart.
The HAWIS episodes' widths are the DDPG warm-up's uniform random draws and the UAE children are uniform random
architectures of the space (seeded), so the figures are averages over each space.

Paper anchors: HAWIS ResNet-20 1.25 GPU-days (30 h), UAE-M K=5 118 GPU-hours (one 1080 Ti).
Goals on one modern GPU: HAWIS search <= 0.1 GPU-day (2.4 h), UAE K=5 search <= 10 GPU-hours.

    PYTHONPATH=src python3 benchmarks/bench_paper_cost.py [--scale 0.05] [--episodes 3] [--children 3]
        [--device auto] [--out cost.json] [--tiny]

`--tiny` is the CPU smoke path (8x8 images, 64 samples, small widths, one episode and one child): it checks the
plumbing end to end in seconds; its extrapolations mean nothing. `run()` (benchmarks/run_all.py) runs the
default scale on a GPU and `--tiny` otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HAWIS_CONFIG = ROOT / "configs/hawis/resnet20_cifar10.yaml"
UAE_CONFIG = ROOT / "configs/uae/paper_cifar10_uae_m_k5.yaml"
CIFAR_TRAIN = 50_000
CIFAR_TEST = 10_000
PAPER = {"hawis_h": 1.25 * 24, "uae_k5_h": 118.0}
GOALS = {"hawis_h": 0.1 * 24, "uae_k5_h": 10.0}
PROPORTIONAL = ("slimmable_ft", "candidate_ft", "eval")


def _limit(scale: float) -> int:
    return max(16, round(CIFAR_TRAIN * scale))


def hawis_cost(scale: float, episodes: int, device: str, tiny: bool, workdir: Path) -> dict:
    from cimnas.pipelines.hawis import load_hawis_config
    from cimnas.pipelines.hawis.context import make_context, open_run
    from cimnas.pipelines.hawis.stage_a import stage_pretrain
    from cimnas.pipelines.hawis.stage_b import stage_search

    sets = [f"device={device}", "data.name=synthetic", "data.data_dir=null", f"data.limit={_limit(scale)}",
            f"data.test_limit={max(16, round(CIFAR_TEST * scale))}", "pretrain.epochs=1",
            f"search.episodes={episodes}", "pretrain.progress=false"]
    if tiny:
        sets += ["data.options={image_size: 8}", "space.r_max=1.5", "search.env.bn_recal_batches=1",
                 "search.env.batch_size=16", "pretrain.batch_size=16"]
    cfg = load_hawis_config(HAWIS_CONFIG, sets)
    run = open_run(cfg, workdir / "hawis", resume=False)
    try:
        ctx = make_context(cfg, run)
        t0 = time.perf_counter()
        net = stage_pretrain(ctx)
        pretrain_epoch_s = time.perf_counter() - t0
        records = stage_search(ctx, net)
    finally:
        run.close()
    per_episode = []
    for r in records:
        times = r["times_s"]
        fixed = r["wall_s"] - sum(times[k] for k in PROPORTIONAL)
        per_episode.append(sum(times[k] for k in PROPORTIONAL) / scale + fixed)
    episode_s = statistics.mean(per_episode)
    full = load_hawis_config(HAWIS_CONFIG, [])
    search_h = full.search.episodes * episode_s / 3600
    pretrain_h = full.pretrain.epochs * pretrain_epoch_s / scale / 3600
    return {"hawis_episode_s": episode_s, "hawis_episodes_timed": len(records),
            "hawis_phase_s": {k: statistics.mean(r["times_s"][k] for r in records) for k in records[0]["times_s"]},
            "hawis_search_h_1dev": search_h, "hawis_search_h_ndev": search_h, "hawis_pretrain_h_1dev": pretrain_h,
            "hawis_search_vs_paper": search_h / PAPER["hawis_h"], "hawis_search_goal_h": GOALS["hawis_h"]}


def uae_cost(scale: float, children: int, child_epochs: int, device: str, tiny: bool) -> dict:
    from cimnas.config import load_config
    from cimnas.pipelines.uae.child import evaluate_child
    from cimnas.pipelines.uae.config import UAESearchConfig
    from cimnas.pipelines.uae.search import load_splits
    from cimnas.utils.seed import derive_seed, make_generator, resolve_device

    sets = [f"device={device}", "data.name=synthetic", "data.data_dir=null", f"data.limit={_limit(scale)}",
            f"train.epochs={child_epochs}", "progress=false"]
    if tiny:
        sets += ["data.options={image_size: 8}", "train.batch_size=16"]
    cfg = load_config(UAESearchConfig, UAE_CONFIG, sets)
    full_epochs = load_config(UAESearchConfig, UAE_CONFIG, []).train.epochs
    dev = resolve_device(cfg.device)
    splits = load_splits(cfg, dev)
    space = cfg.space
    g = make_generator(derive_seed(cfg.seed, "cost-children"))
    rows = []
    for i in range(children):
        idx = [int(torch.randint(0, n, (1,), generator=g)) for n in space.decision_sizes()]
        res = evaluate_child(space.arch_from_indices(idx), cfg, splits, derive_seed(cfg.seed, "cost", i), dev)
        rows.append(res)
    k = cfg.eval.k
    train_s = statistics.mean(r["train_s"] for r in rows)
    eval_s = statistics.mean(r["eval_s"] for r in rows)
    child_s = train_s * (full_epochs / child_epochs) / scale + eval_s / scale
    episodes = load_config(UAESearchConfig, UAE_CONFIG, []).search.episodes
    parallel = cfg.controller.batch_rollouts
    search_h = episodes * child_s / 3600
    n_eval = len(splits.search_eval)
    pass_s_per_image = eval_s / (k + 1) / n_eval  # clean pass + K noisy passes over search_eval
    final = load_config(UAESearchConfig, UAE_CONFIG, []).final
    epoch_s_full = train_s / child_epochs / scale * (CIFAR_TRAIN / (CIFAR_TRAIN * 0.8))
    final_h = (final.epochs * epoch_s_full + final.samples * CIFAR_TEST * pass_s_per_image) / 3600
    return {"uae_child_s": child_s, "uae_children_timed": children,
            "uae_child_train_s_per_epoch": train_s / child_epochs / scale, "uae_child_eval_s": eval_s / scale,
            "uae_search_h_1dev": search_h, "uae_parallel_children": parallel,
            "uae_search_h_ndev": search_h / parallel, "uae_final_h_1dev": final_h,
            "uae_search_vs_paper": search_h / PAPER["uae_k5_h"], "uae_search_goal_h": GOALS["uae_k5_h"]}


def estimate(scale: float = 0.05, episodes: int = 3, children: int = 3, child_epochs: int = 1,
             device: str = "auto", tiny: bool = False) -> dict:
    if tiny:
        scale, episodes, children = 64 / CIFAR_TRAIN, 1, 1
    with tempfile.TemporaryDirectory() as tmp:
        out = {"cost_scale": scale, "cost_device": device, "cost_tiny": tiny}
        out.update(hawis_cost(scale, episodes, device, tiny, Path(tmp)))
        out.update(uae_cost(scale, children, child_epochs, device, tiny))
    return out


def run() -> dict:
    device = os.environ.get("CIMNAS_BENCH_DEVICE", "auto")
    gpu = torch.cuda.is_available() and device != "cpu"
    return {k: v for k, v in estimate(device=device, tiny=not gpu).items() if not isinstance(v, dict)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.05, help="share of CIFAR-10's training set per run")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--children", type=int, default=3)
    ap.add_argument("--child-epochs", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke path (seconds; the figures mean nothing)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)
    if not 0 < a.scale <= 1 or a.episodes < 1 or a.children < 1 or a.child_epochs < 1:
        print("error: --scale must be in (0, 1]; --episodes, --children, --child-epochs >= 1", file=sys.stderr)
        return 2
    res = estimate(a.scale, a.episodes, a.children, a.child_epochs, a.device, a.tiny)
    text = json.dumps(res, indent=2, sort_keys=True)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
