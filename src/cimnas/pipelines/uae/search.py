"""UAE uncertainty-aware architecture search (UAE Sec. 4) and its baselines as one pipeline.

Per episode: the LSTM controller samples a child of the quantized-CNN space -> the child is trained for
`train.epochs` on `search_train` (noise-aware when K > 0, plain for QuantNAS) -> evaluated under K noise samples on
`search_eval` -> reward = statistic of the K accuracies (minus an optional energy term) -> REINFORCE. Children
already evaluated (same architecture and seed) come from a cache at no cost. The search stops when the controller
proposes the same child `stop_repeats` times in a row, or at the episode limit. The highest-reward child is then
retrained and evaluated under Monte-Carlo noise (`cimnas.pipelines.uae.final`).

Baselines: QuantNAS = K 0 (plain training, clean reward), NACIM = K 1 (noise-aware training, one noisy
evaluation), UAE-M = K samples + mean, UAE-95 = K samples + p5 (the 95%-minimum; configs/uae/).

Run folder (`cimnas.runs.RunFolder`, kind "uae-search"): run.json, config.yaml, run.log, episodes.jsonl
(append-only, one line per finished episode), checkpoints/controller.pt (after every controller update),
best_arch.json, final.json, checkpoints/final_model.pt, figures/. `--resume` reloads the controller at its last
update, replays the logged episodes after it (the seeded controller proposes exactly the logged children; their
logged rewards are fed back without training) and continues, so a killed run loses at most the episode in progress
and ends exactly as an uninterrupted one. A resume may raise `search.episodes` (never below the episodes done) and
change the `final.` section; any other change is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cimnas.config import from_dict, read_yaml, validate
from cimnas.data import load_from_config
from cimnas.errors import CimnasError, check
from cimnas.hardware.montecarlo import check_mc_work, model_weights
from cimnas.parallel import Parallelism, Shared, run_tasks
from cimnas.pipelines.uae.child import build_child, child_energy_uj, evaluate_child
from cimnas.pipelines.uae.config import SEARCH_RESUMABLE, UAESearchConfig
from cimnas.runs import RunFolder, guarded
from cimnas.search.agents.controller import LSTMController
from cimnas.search.uae_rewards import uae_reward
from cimnas.stats import at_chance
from cimnas.utils.seed import derive_seed, resolve_device

KIND = "uae-search"
CONTROLLER = "controller.pt"


def load_splits(cfg: UAESearchConfig, device: torch.device) -> Any:
    return load_from_config(cfg.data, cfg.seed, device)


def open_run(cfg: UAESearchConfig, out: str | Path, resume: bool) -> RunFolder:
    """Open (or resume) the search run folder; a resume records the admitted config changes."""
    run = RunFolder.open(out, KIND, cfg, resume=resume, resumable=SEARCH_RESUMABLE, config_cls=UAESearchConfig)
    if run.resumed:
        run.write_config(cfg)
    return run


def load_run_config(out: str | Path) -> UAESearchConfig:
    """The config a search run folder was made with (validated)."""
    out = Path(out)
    check((out / "run.json").is_file() and (out / "config.yaml").is_file(),
          f"{out} holds no UAE search run (no run.json / config.yaml); give the --out folder of `uae search`")
    cfg = from_dict(UAESearchConfig, read_yaml(out / "config.yaml"))
    validate(cfg)
    return cfg


def make_controller(cfg: UAESearchConfig) -> LSTMController:
    c = cfg.controller
    return LSTMController(cfg.space.decision_sizes(), hidden=c.hidden, num_layers=c.layers, lr=c.lr,
                          baseline_decay=c.baseline_decay, entropy_weight=c.entropy_weight,
                          batch_rollouts=c.batch_rollouts, temperature=c.temperature,
                          seed=derive_seed(cfg.seed, "controller"))


def _save_controller(run: RunFolder, ctrl: LSTMController, episodes: int) -> None:
    run.save(CONTROLLER, {"episodes": episodes, "controller": ctrl.state_dict()})


def _restore_controller(run: RunFolder, ctrl: LSTMController, logged: int) -> int:
    """Load checkpoints/controller.pt into `ctrl` (if present); returns the episodes it covers."""
    if not (run.ckpt / CONTROLLER).exists():
        return 0
    path = run.ckpt / CONTROLLER
    ck = run.load(CONTROLLER, fields={"episodes": int, "controller": dict})
    guarded(ctrl.load_state_dict, path)(ck["controller"])
    start = ck["episodes"]
    check(0 <= start <= logged, f"{path} covers {start} episodes but episodes.jsonl holds {logged}; the run "
          "folder is inconsistent: start a new --out folder")
    return start


def _energy_ref(cfg: UAESearchConfig, splits: Any) -> float:
    if cfg.search.energy_ref_uj is not None:
        return cfg.search.energy_ref_uj
    big = build_child(cfg.space.largest_arch(), cfg.space, splits.in_channels, splits.num_classes,
                      splits.image_size, 0)
    return child_energy_uj(big, (splits.in_channels, splits.image_size, splits.image_size),
                           cfg.hardware)


def check_final_work(cfg: UAESearchConfig, splits: Any) -> None:
    """Refuse, before the search starts, a final Monte-Carlo evaluation above the work limit (estimated on the
    space's largest child) and K-sample evaluations likewise."""
    big = build_child(cfg.space.largest_arch(), cfg.space, splits.in_channels, splits.num_classes,
                      splits.image_size, 0, init="default")
    n = model_weights(big)
    check_mc_work(cfg.final.samples, n, "final.samples (Monte-Carlo samples of the final evaluation)")
    if cfg.eval.k > 0:
        check_mc_work(cfg.eval.k, n, "eval.k (noise samples per child)")


def _trailing_repeats(log: list[dict]) -> int:
    """How many of the last episodes proposed the same child as the very last one."""
    n = 0
    for rec in reversed(log):
        if rec["arch_key"] != log[-1]["arch_key"]:
            break
        n += 1
    return n


def _finished(cfg: UAESearchConfig, log: list[dict]) -> bool:
    stop = cfg.search.stop_repeats
    return len(log) >= cfg.search.episodes or bool(stop and log and _trailing_repeats(log) >= stop)


def _episode(cfg: UAESearchConfig, ctrl: LSTMController, splits: Any, cache: dict, energy_ref: float | None,
             i: int, device: torch.device) -> dict:
    decisions = ctrl.sample()
    arch = cfg.space.arch_from_indices(decisions)
    key = arch.key()
    t0 = time.perf_counter()
    hit = key in cache
    res = cache[key] if hit else evaluate_child(arch, cfg, splits, derive_seed(cfg.seed, "child", key), device)
    rec = _record(cfg, res, arch, decisions, i, hit, energy_ref)
    rec["time_s"] = 0.0 if hit else time.perf_counter() - t0
    return rec


def search(run: RunFolder, cfg: UAESearchConfig, splits: Any, device: torch.device,
           on_episode: Callable[[int], None] | None = None, parallel: Parallelism | None = None) -> dict:
    """The controller loop in an open run folder; writes best_arch.json and returns its content.

    With a `parallel` of several workers (or a Ray address) the children of one controller batch are trained
    on Ray workers at once (`_parallel_batches`); episodes.jsonl is the same as with one worker."""
    log = run.records("episodes.jsonl")
    run.check_extends("search.episodes", cfg.search.episodes, len(log), "episodes")
    ctrl = make_controller(cfg)
    start = _restore_controller(run, ctrl, len(log))
    energy_ref = _energy_ref(cfg, splits) if cfg.search.energy_weight > 0 else None
    cache = {rec["arch_key"]: rec for rec in log if not rec.get("cache_hit")}
    for i in range(start, len(log)):  # replay the episodes after the checkpoint: same proposals, logged rewards
        decisions = ctrl.sample()
        if decisions != log[i]["decisions"]:
            raise CimnasError(f"episode {i} in {run.path('episodes.jsonl')} does not match the controller's replay;"
                              " the run folder was edited or made by another version: start a new --out folder")
        if ctrl.observe(decisions, log[i]["reward"]):
            _save_controller(run, ctrl, i + 1)
    bar = tqdm(total=cfg.search.episodes, initial=len(log), desc=f"{cfg.label} episodes",
               disable=not cfg.progress or _finished(cfg, log))
    if parallel is not None and not parallel.in_process:
        _parallel_batches(run, cfg, ctrl, log, cache, energy_ref, Shared((cfg, splits), parallel), parallel,
                          bar, on_episode)
    while not _finished(cfg, log):
        rec = _episode(cfg, ctrl, splits, cache, energy_ref, len(log), device)
        run.append("episodes.jsonl", rec)
        log.append(rec)
        if not rec["cache_hit"]:
            cache[rec["arch_key"]] = rec
        if ctrl.observe(rec["decisions"], rec["reward"]):
            _save_controller(run, ctrl, len(log))
        bar.update(1)
        bar.set_postfix(reward=f"{rec['reward']:.3f}", cache=rec["cache_hit"])
        if on_episode is not None:
            on_episode(rec["episode"])
    bar.close()
    best = max(log, key=lambda r: r["reward"])
    repeats = _trailing_repeats(log)
    stop = "repeats" if cfg.search.stop_repeats and repeats >= cfg.search.stop_repeats else "episode_limit"
    summary = {"label": cfg.label, "episodes": len(log), "unique_children": len(cache), "stop_reason": stop,
               "cache_hits": sum(1 for r in log if r["cache_hit"]),
               "search_time_s": sum(r["time_s"] for r in log), "best_episode": best["episode"],
               "best_reward": best["reward"], "arch": best["arch"], "arch_key": best["arch_key"],
               "search_clean_acc": best["clean_acc"], "search_noisy": best["noisy"], "energy_uj": best["energy_uj"]}
    run.write_result("best_arch.json", summary)
    run.log(f"search: {len(log)} episodes ({stop}), best reward {best['reward']:.4f} ({best['arch_key']})",
            echo=cfg.progress)
    samples = min(len(splits.search_eval), cfg.eval.max_samples or len(splits.search_eval))
    chance = {r["arch_key"] for r in log if at_chance(r["clean_acc"], splits.num_classes, samples)}
    if chance:
        run.log(f"warning: {len(chance)} of {len(cache)} children scored at chance (clean accuracy near "
                f"1/{splits.num_classes}): they learned nothing in train.epochs={cfg.train.epochs}; their rewards "
                "rank nothing: train children longer or check train.lr")
    return summary


def _child_task(key: str, arch: Any, shared: tuple) -> dict:
    """One child on a worker: trained and evaluated with its seed from (run seed, child key)."""
    cfg, splits = shared
    return evaluate_child(arch, cfg, splits, derive_seed(cfg.seed, "child", key), resolve_device(cfg.device))


class _SearchDone(Exception):
    """Raised from on_result when the search stops inside a batch: the batch's other children are cancelled."""


def _parallel_batches(run: RunFolder, cfg: UAESearchConfig, ctrl: LSTMController, log: list[dict], cache: dict,
                      energy_ref: float | None, shared: Shared, parallel: Parallelism, bar: Any,
                      on_episode: Callable[[int], None] | None) -> None:
    """The controller loop, one batch at a time: propose the rest of the batch (the controller's weights do
    not change inside a batch, and observing draws no random numbers, so the proposals are those of the
    one-worker loop), train the new children in parallel, then log / observe them in episode order as soon as
    every earlier one is done (a kill loses no logged child; a resume replays them)."""
    while not _finished(cfg, log):
        n = min(ctrl.batch_rollouts - len(ctrl.pending), cfg.search.episodes - len(log))
        batch = _Batch(run, cfg, ctrl, log, cache, energy_ref, [ctrl.sample() for _ in range(n)], bar, on_episode)
        try:
            run_tasks(_child_task, batch.todo(), shared=shared, progress=False, on_result=batch.emit,
                      **parallel.kwargs())
            batch.emit()  # cache hits after the last new child
        except _SearchDone:
            return


class _Batch:
    """The proposals of one controller batch and the in-order logging of their episodes."""

    def __init__(self, run: RunFolder, cfg: UAESearchConfig, ctrl: LSTMController, log: list[dict], cache: dict,
                 energy_ref: float | None, proposals: list[list[int]], bar: Any,
                 on_episode: Callable[[int], None] | None):
        self.run, self.cfg, self.ctrl, self.log, self.cache = run, cfg, ctrl, log, cache
        self.energy_ref, self.proposals, self.bar, self.on_episode = energy_ref, proposals, bar, on_episode
        self.archs = [cfg.space.arch_from_indices(d) for d in proposals]
        self.results: dict[str, dict] = {}
        self.emitted = 0

    def todo(self) -> dict[str, Any]:
        """The new children, each once, in order of first proposal (task id = child key)."""
        out: dict[str, Any] = {}
        for a in self.archs:
            if a.key() not in self.cache:
                out.setdefault(a.key(), a)
        return out

    def emit(self, key: str | None = None, res: dict | None = None) -> None:
        """Record a finished child, then log every episode whose child is known, in order."""
        if key is not None:
            self.results[key] = res
        while self.emitted < len(self.archs):
            arch = self.archs[self.emitted]
            k = arch.key()
            if k not in self.cache and k not in self.results:
                return
            hit = k in self.cache
            rec = _record(self.cfg, self.cache[k] if hit else self.results[k], arch, self.proposals[self.emitted],
                          len(self.log), hit, self.energy_ref)
            self.run.append("episodes.jsonl", rec)
            self.log.append(rec)
            if not hit:
                self.cache[k] = rec
            if self.ctrl.observe(rec["decisions"], rec["reward"]):
                _save_controller(self.run, self.ctrl, len(self.log))
            self.emitted += 1
            self.bar.update(1)
            if self.on_episode is not None:
                self.on_episode(rec["episode"])
            if _finished(self.cfg, self.log):
                raise _SearchDone


def _record(cfg: UAESearchConfig, res: dict, arch: Any, decisions: list[int], i: int, hit: bool,
            energy_ref: float | None) -> dict:
    """One episodes.jsonl line (the same fields as `_episode`; time_s = the child's train + eval time)."""
    reward = uae_reward(res["clean_acc"], res["noisy_accs"], cfg.eval.statistic, res["energy_uj"],
                        cfg.search.energy_weight, energy_ref)
    return {"episode": i + 1, "arch_key": arch.key(), "arch": arch.to_dict(), "decisions": decisions, "reward": reward,
            "clean_acc": res["clean_acc"], "noisy": res["noisy"], "noisy_accs": res["noisy_accs"],
            "energy_uj": res["energy_uj"], "params": res["params"], "train_s": res["train_s"],
            "eval_s": res["eval_s"], "time_s": 0.0 if hit else res["train_s"] + res["eval_s"], "cache_hit": hit}


def run_search(cfg: UAESearchConfig, out: str | Path, *, resume: bool = False, splits: Any = None,
               on_episode: Callable[[int], None] | None = None, run_final: bool = True,
               figures: bool = True, parallel: Parallelism | None = None) -> dict:
    """Run (or resume) a UAE search in run folder `out`; returns final.json's content (or the search summary when
    `run_final` is False). `splits` overrides the dataset (tests); `on_episode(i)` is called after episode i is
    logged (tests simulate a kill with it); `parallel`: the children of each controller batch on Ray workers."""
    from cimnas.pipelines.uae.final import final_evaluation  # lazy: import cycle, final.py imports this module

    device = resolve_device(cfg.device)
    splits = splits if splits is not None else load_splits(cfg, device)
    check_final_work(cfg, splits)  # before the run folder is touched
    with open_run(cfg, out, resume) as run:
        par = parallel or Parallelism()
        run.record_execution(device=str(device), workers=par.workers, ray_address=par.ray_address)
        summary = search(run, cfg, splits, device, on_episode, par)
        if not run_final:
            return summary
        result = final_evaluation(run, cfg, splits, device, par)
        if figures:
            from cimnas.reports.uae_search import make_figures  # lazy: matplotlib, figures only

            make_figures(run.root)
        return result
