"""Stage B: the width search, `episodes` times agent -> widths -> environment (cimnas.search.env) -> reward.

Resume: every piece of state a later episode depends on (super-net weights, the slimmable optimiser, the agent's
state_dict with its RNGs, the episode records) is saved atomically in `checkpoints/search_state.pt` after each
episode, and every random draw of episode e comes from `derive_seed(seed, "episode", e)`; so a killed run resumed
with the same config repeats exactly what an uninterrupted run does (CPU). episodes.jsonl is rewritten to the
checkpointed records on resume (a torn or extra line goes).

Re-rank (`search.rerank_top` K > 0): phase (a) fine-tunes the super-net in every episode, so episodes are scored on
different super-net states and the proxy accuracy drifts upwards with the episode index (docs/hawis.md). After the
last episode the K best-reward unique width vectors are re-scored on the final super-net, phases (b)-(d) only
(`HawisEnv.run_episode(..., finetune_supernet=False)`, which restores the super-net after each), candidate of search
rank r with the seed `derive_seed(seed, "rerank", r)`; the best re-scored reward is the chosen net (best_arch.json
`reranked: true`, stage C). One record per candidate in rerank.jsonl; a resume keeps the finished ones that still
match the candidate list (every score is a function of the final super-net and its seed, so the result equals an
uninterrupted run's).
"""

from __future__ import annotations

import json
import time
from typing import Any

from cimnas.config import to_dict
from cimnas.errors import CimnasError, check
from cimnas.nn.counting import trace_layers
from cimnas.nn.models import model_payload
from cimnas.nn.supernet import SuperNet
from cimnas.pipelines.hawis.context import Context, mc_accuracies
from cimnas.runs import RunFolder, guarded, load_state
from cimnas.search.agents import make_agent
from cimnas.search.env import HawisEnv
from cimnas.utils.seed import derive_seed
from cimnas.utils.units import pct, uj

STATE = "search_state.pt"
RERANK = "rerank.jsonl"
STATE_FIELDS = {"state_dict": dict, "optimizer": dict, "agent": dict, "records": str, "episode": int}


def searchable_geoms(ctx: Context) -> tuple[list[Any], list[int]]:
    """Eq. 6 static columns are measured on A_fp: the traced geometry of its searchable layers,
    and a block index per layer (layers sharing a module prefix share a block)."""
    fp = ctx.build(None, precision="float")
    by_name = {g.name: g for g in trace_layers(fp, ctx.input_shape)}
    picked = [by_name[n] for n in fp.searchable_layer_names()]
    prefixes: list[str] = []
    blocks = []
    for g in picked:
        p = g.name.rsplit(".", 1)[0] if "." in g.name else g.name
        if p not in prefixes:
            prefixes.append(p)
        blocks.append(prefixes.index(p))
    return picked, blocks


def make_env(ctx: Context, net: SuperNet) -> tuple[HawisEnv, float]:
    """The environment over `net` and Q(A_b) (the 1x binarized baseline's energy)."""
    scfg = ctx.cfg.search
    geoms, blocks = searchable_geoms(ctx)
    with net.subnet(ctx.base_widths):
        base_energy = ctx.energy(net.model)["energy_uj"]
    with net.subnet(list(ctx.space.min_widths().widths)):
        min_ratio = ctx.energy(net.model)["energy_uj"] / base_energy
    if scfg.env.lam >= min_ratio:
        ctx.run.log(f"stage B: WARNING search.env.lam = {scfg.env.lam} >= Q_min/Q(A_b) = {min_ratio:.3g}: Eq. 5 "
                    "then gives candidates below lambda*Q(A_b) a reward >= 0 that grows with their error; "
                    f"choose lam < {min_ratio:.3g} (docs/hawis.md, 'Choosing lambda')")
    robust_fn = None
    if scfg.env.reward_accuracy != "clean":
        def robust_fn(model: Any, seed: int) -> list[float]:
            return mc_accuracies(ctx, model, ctx.splits.search_eval, scfg.env.robust_trials, seed)
    env = HawisEnv(net, ctx.space, ctx.splits, scfg.env, ctx.energy, base_energy, device=ctx.device,
                   robust_fn=robust_fn, layer_geoms=geoms, block_indices=blocks)
    return env, base_energy


def stage_search(ctx: Context, net: SuperNet, *, stop_after: int | None = None) -> list[dict]:
    """Stage B. `stop_after` (tests): raise RuntimeError after that many episodes of this call have been saved,
    simulating a kill."""
    cfg, run = ctx.cfg, ctx.run
    scfg = cfg.search
    env, base_energy = make_env(ctx, net)
    agent = make_agent(scfg.agent, env.state_table.shape[1], scfg.agent_options, derive_seed(cfg.seed, "agent"))
    warmup = int(getattr(getattr(agent, "cfg", None), "warmup_episodes", 0) or 0)
    if warmup >= scfg.episodes:
        run.log(f"warning: search.episodes={scfg.episodes} is not more than the {scfg.agent} agent's warm-up "
                f"({warmup} episodes of uniform random widths, no learning): this search is a random search; raise "
                "search.episodes or lower search.agent_options.warmup_episodes")
    records: list[dict] = []
    if run.has(f"checkpoints/{STATE}"):
        path = run.ckpt / STATE
        ck = run.load(STATE, STATE_FIELDS, map_location=ctx.device)
        load_state(net, ck["state_dict"], path)
        load_state(env.optimizer, ck["optimizer"], path)
        load_state(agent, ck["agent"], path)
        records = guarded(json.loads, path)(ck["records"])
        check(isinstance(records, list) and len(records) == ck["episode"],
              f"search checkpoint {path} is inconsistent (records vs episode); delete it to restart the search")
        run.check_extends("search.episodes", scfg.episodes, len(records), "episodes")
        run.log(f"stage B: resuming after episode {len(records)}")
    run.rewrite_records("episodes.jsonl", records)
    run.log(f"stage B: {scfg.episodes} episodes, agent {scfg.agent}, Q(A_b) = {uj(base_energy)}, "
            f"lambda = {scfg.env.lam}, {ctx.space.n_steps} layers")
    ran = 0
    for episode in range(len(records), scfg.episodes):
        t0 = time.perf_counter()
        states, actions = [], []
        prev_a, prev_c = 0.0, 0
        for t in range(ctx.space.n_steps):
            s = env.state(t, prev_a, prev_c)
            a = float(agent.act(s, episode))
            states.append(s)
            actions.append(a)
            prev_a, prev_c = a, ctx.space.layer_channels(a, t)
        widths = list(ctx.space.widths(actions).widths)
        res = env.run_episode(widths, derive_seed(cfg.seed, "episode", episode))
        t = time.perf_counter()
        agent.observe_episode(states, actions, res.reward)
        agent.update()
        times = dict(res.times_s)
        times["agent_update"] = round(time.perf_counter() - t, 4)
        rec = {"episode": episode + 1, "widths": res.widths, "reward": res.reward, "accuracy": res.accuracy,
               "energy_uj": res.energy_uj, "reward_accuracy": res.reward_accuracy, "robust": res.robust,
               "wall_s": round(time.perf_counter() - t0, 4), "times_s": times}
        records.append(rec)
        run.save(STATE, model_payload(net, dataset=ctx.splits.info(), config=to_dict(cfg), epoch=episode + 1,
                                      optimizer=env.optimizer, agent=agent.state_dict(),
                                      records=json.dumps(records), episode=episode + 1))
        run.append("episodes.jsonl", rec)
        run.log(f"episode {episode + 1}/{scfg.episodes}: reward {res.reward:+.4f} acc {pct(res.accuracy)} "
                f"energy {uj(res.energy_uj)}  widths {widths}  time {rec['wall_s']:.1f} s ("
                + ", ".join(f"{k} {v:.2f}" for k, v in times.items()) + ")")
        ran += 1
        if stop_after is not None and ran >= stop_after:
            raise RuntimeError(f"test hook: simulated kill after episode {episode + 1}")
    write_search_summary(run, records, rerank(ctx, env, records))
    return records


def rerank_candidates(records: list[dict], k: int) -> list[dict]:
    """The `k` best-reward unique width vectors of the search (ties: the earlier episode first), each as the record
    of its best-reward episode; fewer when the search has fewer unique vectors."""
    out: list[dict] = []
    seen: set[tuple[int, ...]] = set()
    for r in sorted(records, key=lambda r: (-r["reward"], r["episode"])):
        if len(out) >= k:
            break
        if tuple(r["widths"]) not in seen:
            seen.add(tuple(r["widths"]))
            out.append(r)
    return out


def _rerank_kept(run: RunFolder, cands: list[dict], n_episodes: int) -> list[dict]:
    """The finished re-rank records of rerank.jsonl that belong to `cands` (same rank, widths, episode and search
    length), in rank order up to the first that does not."""
    kept: list[dict] = []
    for i, (c, r) in enumerate(zip(cands, run.records(RERANK) if run.has(RERANK) else [], strict=False)):
        if (r.get("rank"), r.get("widths"), r.get("episode"), r.get("search_episodes")) != (
                i + 1, c["widths"], c["episode"], n_episodes):
            break
        kept.append(r)
    return kept


def rerank(ctx: Context, env: HawisEnv, records: list[dict]) -> list[dict] | None:
    """Re-score the `search.rerank_top` best unique candidates on the final super-net (module docstring);
    returns the rerank.jsonl records, or None when the re-rank is off."""
    run, k = ctx.run, ctx.cfg.search.rerank_top
    if k <= 0:
        if run.has(RERANK):  # left by an earlier resume with the re-rank on: it no longer chooses anything
            run.rewrite_records(RERANK, [])
        return None
    cands = rerank_candidates(records, k)
    kept = _rerank_kept(run, cands, len(records))
    run.rewrite_records(RERANK, kept)
    if kept:
        run.log(f"re-rank: resuming after {len(kept)} of {len(cands)} candidates")
    for rank in range(len(kept) + 1, len(cands) + 1):
        c = cands[rank - 1]
        res = env.run_episode(c["widths"], derive_seed(ctx.cfg.seed, "rerank", rank), finetune_supernet=False)
        rec = {"rank": rank, "widths": res.widths, "episode": c["episode"], "search_episodes": len(records),
               "search_reward": c["reward"], "search_accuracy": c["accuracy"], "reward": res.reward,
               "accuracy": res.accuracy, "energy_uj": res.energy_uj, "reward_accuracy": res.reward_accuracy,
               "robust": res.robust, "times_s": res.times_s}
        run.append(RERANK, rec)
        kept.append(rec)
        run.log(f"re-rank {rank}/{len(cands)} (episode {c['episode']}): reward {c['reward']:+.4f} -> "
                f"{res.reward:+.4f}, acc {pct(c['accuracy'])} -> {pct(res.accuracy)}, energy {uj(res.energy_uj)}")
    best = rerank_best(kept)
    clamped = f" (search.rerank_top = {k}, only {len(cands)} unique widths)" if len(cands) < k else ""
    run.log(f"re-rank: top {len(cands)} of {len(records)} episodes{clamped} on the final super-net: chosen "
            f"episode {best['episode']} (search rank {best['rank']}), reward {best['search_reward']:+.4f} -> "
            f"{best['reward']:+.4f}; the search's best, episode {kept[0]['episode']}, re-scored "
            f"{kept[0]['reward']:+.4f}")
    return kept


def rerank_best(reranked: list[dict]) -> dict:
    """Highest re-scored reward; ties go to the better search rank."""
    return max(reranked, key=lambda r: (r["reward"], -r["rank"]))


def chosen_record(run: RunFolder, records: list[dict], k: int) -> dict:
    """The searched net stage C retrains: `best_record(records)`, or with the re-rank on (k > 0) the best
    re-scored candidate of rerank.jsonl (which must be complete)."""
    if k <= 0:
        return best_record(records)
    cands = rerank_candidates(records, k)
    kept = _rerank_kept(run, cands, len(records))
    check(bool(cands) and len(kept) == len(cands), f"{run.root}: the re-rank (search.rerank_top = {k}) has not "
          f"finished ({len(kept)} of {len(cands)} candidates); resume the search (cimnas hawis search --resume)")
    return _rerank_summary(rerank_best(kept))


def _rerank_summary(best: dict) -> dict:
    return {"widths": best["widths"], "episode": best["episode"], "reward": best["reward"],
            "accuracy": best["accuracy"], "energy_uj": best["energy_uj"], "reranked": True,
            "search_reward": best["search_reward"], "search_accuracy": best["search_accuracy"],
            "search_rank": best["rank"]}


def pareto_front(records: list[dict]) -> list[dict]:
    """Records not dominated in (higher accuracy, lower energy), sorted by energy."""
    front = []
    for r in records:
        dominated = any(o["accuracy"] >= r["accuracy"] and o["energy_uj"] <= r["energy_uj"]
                        and (o["accuracy"] > r["accuracy"] or o["energy_uj"] < r["energy_uj"]) for o in records)
        if not dominated and not any(f["widths"] == r["widths"] for f in front):
            front.append(r)
    return sorted(front, key=lambda r: r["energy_uj"])


def best_record(records: list[dict]) -> dict:
    """Highest reward; ties go to the earlier episode."""
    if not records:
        raise CimnasError("no finished episodes; run the search stage first (cimnas hawis search)")
    return max(records, key=lambda r: (r["reward"], -r["episode"]))


def write_search_summary(run: RunFolder, records: list[dict], reranked: list[dict] | None = None) -> None:
    """best_arch.json (the best search record, or the best re-ranked one) and pareto.json (the search's front)."""
    if reranked:
        run.write_result("best_arch.json", _rerank_summary(rerank_best(reranked)))
    else:
        best = best_record(records)
        run.write_result("best_arch.json", {k: best[k] for k in ("widths", "episode", "reward", "accuracy",
                                                                  "energy_uj")})
    run.write_result("pareto.json", [{k: r[k] for k in ("episode", "widths", "reward", "accuracy", "energy_uj")}
                                     for r in pareto_front(records)])
