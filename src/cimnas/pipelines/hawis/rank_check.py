"""Does the super-net rank widths? (`cimnas hawis rank-check RUN_DIR --archs FILE`, issue 12)

Each width vector is measured two ways, and the two lists are compared by rank:
- proxy: the stage-B path on the finished stage-A super-net of RUN_DIR, `HawisEnv.run_episode` with phase (a)
  switched off (slice, optional candidate fine-tune with the weights restored afterwards, BN recalibration,
  held-out `search_eval` accuracy). Without phase (a) the super-net never changes, so each proxy is a function
  of (super-net, widths, seed) and the order of the architectures does not matter.
- stand-alone: the architecture trained from scratch, validation accuracy only (held-out training data; the test
  split is never read here: tuning stage A against test accuracy would leak it into a design choice). Taken from
  a headroom study (`--standalone DIR`: mean val_acc over its seeds) where it has the same widths, else trained
  through stage C's `train_model` with the run's `retrain` section (one seed) into this folder.
Statistics: `cimnas.stats.rank_correlation` (Kendall's tau-b, Spearman's rho, percentile-bootstrap and Fisher-z
95 % intervals over the architectures).

Output folder (a RunFolder of kind "hawis-rank-check", default RUN_DIR/rank_check; `--resume` keeps every finished
architecture): config.yaml, run.log, proxy.jsonl and standalone.jsonl (one line per finished architecture),
rank_check.json, rank_check.md, figures/rank_check.png. `--set` may change `search.env.*` (the proxy's budget) and
`retrain.*` (the stand-alone budget) of the run's config; a resume refuses changes to either.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from cimnas.config import MAX_CONFIG_BYTES, load_config, read_yaml, safe_yaml, to_dict
from cimnas.errors import CimnasError, check
from cimnas.nn.widths import WidthSpace
from cimnas.pipelines.hawis.config import HawisConfig
from cimnas.pipelines.hawis.context import check_multiples, make_context
from cimnas.pipelines.hawis.stage_a import DONE, build_supernet, load_supernet
from cimnas.pipelines.hawis.stage_b import make_env
from cimnas.pipelines.hawis.stage_c import train_model
from cimnas.reports.figures import finish
from cimnas.runs import RunFolder
from cimnas.stats import rank_correlation
from cimnas.utils.io import os_errors, read_json, read_jsonl
from cimnas.utils.seed import derive_seed, seed_everything
from cimnas.utils.units import pct, uj

KIND = "hawis-rank-check"
RESUMABLE = ("archs", "archs_file", "standalone_dir")  # architectures may be added or dropped on resume
OVERRIDABLE = ("search.env.", "retrain.")
PROXY, STANDALONE = "proxy.jsonl", "standalone.jsonl"


class _NoTestSplit:
    """Stands in for the test split: any use is a bug in this command (the test set must not be read)."""

    def __getattr__(self, name: str) -> Any:
        raise CimnasError("hawis rank-check must not read the test split (validation accuracy only)")

    def __len__(self) -> int:
        raise CimnasError("hawis rank-check must not read the test split (validation accuracy only)")


# ---------------------------------------------------------------------------- inputs
def read_archs(path: str | Path) -> list[dict]:
    """A YAML/JSON list of {name, widths} (or a mapping with that list under `archs`), structure checked."""
    path = Path(path)
    check(path.is_file(), f"--archs file not found: {path}")
    with os_errors(path, "read"):
        size = path.stat().st_size
        check(size <= MAX_CONFIG_BYTES, f"--archs file {path} is {size:,} bytes; a list of architectures is a "
              f"small YAML/JSON file (at most {MAX_CONFIG_BYTES:,} bytes): check the path")
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CimnasError(f"--archs file {path} is not a text (UTF-8 YAML/JSON) file; check the path") from e
    check("\x00" not in text, f"--archs file {path} is a binary file, not YAML/JSON; check the path")
    data = safe_yaml(text, f"--archs file {path}")
    if isinstance(data, dict):
        check(set(data) == {"archs"}, f"--archs file {path}: give a list of {{name, widths}} (or archs: [...])")
        data = data["archs"]
    check(isinstance(data, list) and len(data) > 0, f"--archs file {path} holds no architectures; give a "
          "non-empty list of {name, widths}")
    out = []
    for i, a in enumerate(data):
        check(isinstance(a, dict) and set(a) == {"name", "widths"}, f"--archs entry {i} must be a mapping with "
              f"exactly name and widths, got {a!r:.80}")
        check(isinstance(a["name"], str) and a["name"].strip() != "", f"--archs entry {i}: name must be a "
              "non-empty string")
        w = a["widths"]
        check(isinstance(w, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in w),
              f"--archs {a['name']!r}: widths must be a list of integers")
        out.append({"name": a["name"], "widths": list(w)})
    names = [a["name"] for a in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    check(not dup, f"--archs file {path}: name {dup[0] if dup else ''!r} appears twice; names must be unique")
    return out


def read_headroom(root: str | Path, cfg: HawisConfig) -> list[dict]:
    """Architectures of a headroom study with their stand-alone val accuracies (one value per seed); or those an
    earlier rank-check trained (its folder: same data, model and seed required)."""
    root = Path(root)
    if (root / STANDALONE).is_file():
        return read_rank_check_standalone(root, cfg)
    check((root / "headroom.json").is_file(), f"{root} has no headroom.json; finish the headroom study first "
          f"(python -m cimnas.pipelines.studies.headroom CONFIG {root})")
    base = read_yaml(root / "config.yaml").get("base", {}) if (root / "config.yaml").is_file() else {}
    for key, mine in (("data", cfg.data.name), ("model", cfg.model.name)):
        theirs = (base.get(key) or {}).get("name")
        check(theirs in (None, mine), f"headroom study {root} trained {key} {theirs!r}, the HAWIS run uses "
              f"{mine!r}: give a headroom study on the same {key}")
    _check_same_split(root, base, cfg)
    rows = read_json(root / "headroom.json").get("rows")
    check(isinstance(rows, list) and rows, f"{root}/headroom.json lists no models")
    out = []
    for r in rows:
        vals = list((r.get("val_acc") or {}).get("values") or [])
        if not vals:  # a row without val_acc: the seeds' own final.json files
            finals = [read_json(p) for p in sorted((root / "runs" / r["label"]).glob("seed*/final.json"))]
            vals = [f["val_acc"] for f in finals if isinstance(f, dict) and f.get("val_acc") is not None]
        out.append({"name": r["label"], "widths": [int(w) for w in r["widths"]], "values": vals})
    return out


def _check_same_split(root: Path, base: dict, cfg: HawisConfig) -> None:
    """A headroom study's validation accuracies compare with the proxy only on the same held-out split and input
    coding: the data keys that carve the split (limit, search_fraction, the data seed) and the model's input
    options must match the HAWIS run's where the study's config states them."""
    data, model = base.get("data") or {}, base.get("model") or {}
    pairs = [(f"data.{k}", data[k], getattr(cfg.data, k)) for k in ("limit", "search_fraction") if k in data]
    if "seed" in data or "seed" in base:
        theirs = data.get("seed") if data.get("seed") is not None else base.get("seed", 0)
        pairs.append(("data seed", theirs, cfg.data.resolved_seed(cfg.seed)))
    pairs += [(f"model.{k}", model[k], getattr(cfg.model, k)) for k in ("thermometer", "thermometer_levels",
                                                                         "topology_mod") if k in model]
    for what, theirs, mine in pairs:
        check(theirs == mine, f"headroom study {root} has {what} {theirs!r}, the HAWIS run {mine!r}: its validation "
              "split or input coding differs; pretrain with the same data and model settings (--set ...)")


def read_standalone(dirs: list[str | Path], cfg: HawisConfig) -> list[dict]:
    """The architectures and stand-alone values of every `--standalone` folder (headroom studies or earlier
    rank-checks), in order; an architecture found in several folders keeps the first folder's values."""
    out: list[dict] = []
    seen: set[tuple] = set()
    for d in dirs:
        for h in read_headroom(d, cfg):
            if tuple(h["widths"]) not in seen:
                seen.add(tuple(h["widths"]))
                out.append(h)
    return out


def read_rank_check_standalone(root: Path, cfg: HawisConfig) -> list[dict]:
    """The stand-alone records of an earlier rank-check folder, if its HAWIS run has the same data, model, seed."""
    other = read_yaml(root / "config.yaml").get("hawis_run")
    check(isinstance(other, str), f"{root}/config.yaml names no hawis_run; it is not a rank-check folder")
    theirs = load_config(HawisConfig, Path(other) / "config.yaml")
    for key in ("data", "model", "seed"):
        check(to_dict(theirs)[key] == to_dict(cfg)[key], f"{root} trained its stand-alone models with another "
              f"{key} section than this HAWIS run; give a rank-check (or headroom) folder with the same {key}")
    recs = {r["name"]: r for r in read_jsonl(root / STANDALONE)}
    return [{"name": r["name"], "widths": [int(w) for w in r["widths"]], "values": [float(r["val_accuracy"])]}
            for r in recs.values()]


def check_archs(archs: list[dict], space: WidthSpace) -> None:
    """Each width vector: one positive multiple of d per searchable layer, at most the super-net's width."""
    top = space.max_widths().widths
    for a in archs:
        check_multiples(a["widths"], space.n_steps, space.d, f"arch {a['name']!r} widths")
        over = [i for i, (w, m) in enumerate(zip(a["widths"], top, strict=True)) if w > m]
        check(not over, f"arch {a['name']!r}: layer {over[0] if over else 0} width exceeds the super-net's "
              f"{top[over[0]] if over else 0} (space.r_max={space.r_max:g}); drop it or use a wider super-net")


def load_inputs(run_dir: str | Path, archs_file: str | None, standalone_dir: str | list[str] | None,
                overrides: list[str]) -> tuple[HawisConfig, WidthSpace, list[dict], dict[str, list[float]]]:
    """Config (with `--set` applied), width space, architectures and known stand-alone values; all checked."""
    run_dir = Path(run_dir)
    check((run_dir / "config.yaml").is_file() and (run_dir / "space.json").is_file(),
          f"{run_dir} is not a HAWIS run folder (no config.yaml / space.json)")
    check((run_dir / "checkpoints" / DONE).is_file(), f"{run_dir} has no checkpoints/{DONE}: finish stage A "
          f"first (cimnas hawis pretrain --out {run_dir})")
    check(archs_file is not None or _dirs(standalone_dir), "give --archs FILE or --standalone HEADROOM_DIR")
    for o in overrides:
        check(o.split("=", 1)[0].startswith(OVERRIDABLE), f"--set {o}: rank-check may change only search.env.* "
              "(the proxy) and retrain.* (stand-alone training); the super-net's own settings are fixed")
    cfg = load_config(HawisConfig, run_dir / "config.yaml", overrides)
    raw = read_json(run_dir / "space.json")
    check(isinstance(raw, dict) and isinstance(raw.get("base_widths"), list), f"{run_dir}/space.json is not a width "
          "space (no base_widths list); the run folder was edited: restore it")
    space = WidthSpace.from_dict(raw)
    head = read_standalone(_dirs(standalone_dir), cfg)
    archs = read_archs(archs_file) if archs_file is not None else [{k: h[k] for k in ("name", "widths")} for h in head]
    check_archs(archs, space)
    check(len(archs) >= 3, f"rank-check needs at least 3 architectures to rank, got {len(archs)} (12 or more "
          "give useful intervals)")
    known = {tuple(h["widths"]): h["values"] for h in head if h["values"]}
    return cfg, space, archs, {a["name"]: known[tuple(a["widths"])] for a in archs if tuple(a["widths"]) in known}


def _dirs(standalone_dir: str | Path | list | None) -> list[str]:
    if standalone_dir is None:
        return []
    return [str(d) for d in standalone_dir] if isinstance(standalone_dir, list | tuple) else [str(standalone_dir)]


# ---------------------------------------------------------------------------- the command
def _done(run: RunFolder, name: str, archs: list[dict]) -> dict[str, dict]:
    """Finished records of the current architectures (same name and widths; the latest line wins)."""
    wanted = {a["name"]: a["widths"] for a in archs}
    recs = run.records(name) if run.has(name) else []
    return {r["name"]: r for r in recs if wanted.get(r.get("name")) == r.get("widths")}


def run_rank_check(run_dir: str | Path, *, archs_file: str | None = None,
                   standalone_dir: str | list[str] | None = None,
                   out: str | Path | None = None, candidate_ft: bool = False, resume: bool = False,
                   overrides: list[str] | None = None, resamples: int = 2000, proxy_only: bool = False) -> dict:
    """Proxy and stand-alone accuracy of every architecture, their rank correlations; returns rank_check.json.
    `proxy_only`: stop after the proxies (proxy.jsonl; returns {"proxy": rows}), e.g. while the stand-alone models
    still train in a headroom study; a later `--resume` adds the rest."""
    cfg, space, archs, known = load_inputs(run_dir, archs_file, standalone_dir, list(overrides or []))
    env_cfg = dataclasses.replace(cfg.search.env, slimmable_ft=False, candidate_ft=candidate_ft)
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, env=env_cfg))
    run_dir = Path(run_dir).resolve()
    dirs = _dirs(standalone_dir)
    config = {"hawis_run": str(run_dir), "archs_file": archs_file,
              "standalone_dir": dirs[0] if len(dirs) == 1 else (dirs or None),
              "archs": archs, "candidate_ft": candidate_ft, "seed": cfg.seed, "resamples": resamples,
              "env": to_dict(env_cfg), "retrain": to_dict(cfg.retrain)}
    run = RunFolder.open(out if out is not None else run_dir / "rank_check", KIND, config, resume=resume,
                         resumable=RESUMABLE)
    try:
        ctx = make_context(cfg, run)
        ctx.splits = dataclasses.replace(ctx.splits, test=_NoTestSplit())
        check(list(ctx.space.base_widths) == list(space.base_widths), f"{run_dir}/space.json does not match the "
              "model of its config; the run folder was edited")
        proxy = _done(run, PROXY, archs)
        missing = [a for a in archs if a["name"] not in proxy]
        if missing:
            net = build_supernet(ctx)
            load_supernet(ctx, net, run_dir / "checkpoints" / DONE)
            env, _ = make_env(ctx, net)
            for a in missing:
                res = env.run_episode(a["widths"], derive_seed(cfg.seed, "rank-check", a["name"]))
                rec = {"name": a["name"], "widths": a["widths"], "proxy_accuracy": res.accuracy,
                       "energy_uj": res.energy_uj, "times_s": res.times_s}
                run.append(PROXY, rec)
                proxy[a["name"]] = rec
                run.log(f"proxy {a['name']}: held-out accuracy {pct(res.accuracy)}, energy {uj(res.energy_uj)}")
        if proxy_only:
            run.log(f"proxies of {len(proxy)} architectures done (--proxy-only: no stand-alone models, no statistics)")
            return {"proxy": [proxy[a["name"]] for a in archs]}
        trained = _done(run, STANDALONE, archs)
        for a in archs:
            if a["name"] in known or a["name"] in trained:
                continue
            seed_everything(derive_seed(cfg.seed, "retrain-init", a["name"]))
            res = train_model(ctx, ctx.build(a["widths"]), cfg.retrain, a["name"], test=False)
            rec = {"name": a["name"], "widths": a["widths"], "val_accuracy": res["val_accuracy"],
                   "train_s": res["train_s"]}
            run.append(STANDALONE, rec)
            trained[a["name"]] = rec
            run.log(f"stand-alone {a['name']}: val accuracy {pct(res['val_accuracy'])} ({res['train_s']:.0f} s)")
        result = summarize_rank_check(archs, space, proxy, known, trained, cfg, run_dir, candidate_ft,
                                      derive_seed(cfg.seed, "rank-check-bootstrap"), resamples)
        run.write_result("rank_check.json", result)
        run.path("rank_check.md").write_text(table(result))
        plot(result, run.figures / "rank_check.png")
        run.log(f"rank-check over {result['stats']['n']} architectures: Kendall tau {_fmt(result['stats'], 'kendall')}"
                f", Spearman rho {_fmt(result['stats'], 'spearman')}")
        return result
    finally:
        run.close()


def stage_a_cost(run_dir: Path, cfg: HawisConfig) -> dict:
    """Stage A's budget (config) and wall time (summed from the run's log lines 'stage A epoch e/E: ... (t s)')."""
    p = cfg.pretrain
    text = (run_dir / "run.log").read_text(errors="replace") if (run_dir / "run.log").is_file() else ""
    secs = [float(s) for s in re.findall(r"stage A epoch \d+/\d+: .*\(([0-9.]+) s\)", text)]
    return {"epochs": p.epochs, "batch_size": p.batch_size, "max_batches": p.max_batches, "lr": p.lr,
            "n_random": p.n_random, "inplace_distill": p.inplace_distill, "subnets_per_step": 2 + p.n_random,
            "wall_s": round(sum(secs), 1) if secs else None, "source": p.from_run}


def summarize_rank_check(archs: list[dict], space: WidthSpace, proxy: dict, known: dict, trained: dict,
                         cfg: HawisConfig, run_dir: Path, candidate_ft: bool, seed: int, resamples: int) -> dict:
    lo, hi = space.min_widths().widths, space.max_widths().widths
    rows = []
    for a in archs:
        w = a["widths"]
        ratios = {round(v / b, 6) for v, b in zip(w, space.base_widths, strict=True)}
        sa = ({"val_accuracy": sum(known[a["name"]]) / len(known[a["name"]]), "seeds": len(known[a["name"]]),
               "source": "--standalone folder"} if a["name"] in known else
              {"val_accuracy": trained[a["name"]]["val_accuracy"], "seeds": 1, "source": "trained here"})
        rows.append({"name": a["name"], "widths": w, "uniform": len(ratios) == 1,
                     "in_space": all(x <= v <= y for v, x, y in zip(w, lo, hi, strict=True)),
                     "energy_uj": proxy[a["name"]]["energy_uj"], "proxy_accuracy": proxy[a["name"]]["proxy_accuracy"],
                     "standalone_val_accuracy": sa["val_accuracy"], "standalone_seeds": sa["seeds"],
                     "standalone_source": sa["source"]})
    for key in ("proxy_accuracy", "standalone_val_accuracy"):
        order = sorted(range(len(rows)), key=lambda i: -rows[i][key])
        for rank, i in enumerate(order, 1):
            rows[i][key.split("_")[0] + "_rank"] = rank
    stats = rank_correlation([r["proxy_accuracy"] for r in rows], [r["standalone_val_accuracy"] for r in rows],
                             seed=seed, resamples=resamples)
    # the trivial proxy "more energy = more accurate": a super-net that ranks no better than this adds nothing
    by_energy = rank_correlation([r["energy_uj"] for r in rows], [r["standalone_val_accuracy"] for r in rows],
                                 seed=seed, resamples=resamples)
    env = cfg.search.env
    return {"stats": stats, "energy_stats": by_energy, "rows": rows, "n_uniform": sum(r["uniform"] for r in rows),
            "proxy": {"candidate_ft": candidate_ft, "candidate_epochs": env.candidate_epochs if candidate_ft else 0,
                      "bn_recal_batches": env.bn_recal_batches, "eval_max_batches": env.eval_max_batches,
                      "batch_size": env.batch_size,
                      "proxy_s": round(sum(sum(p["times_s"].values()) for p in proxy.values()), 2)},
            "stage_a": stage_a_cost(run_dir, cfg), "hawis_run": str(run_dir),
            "standalone_budget": {"epochs": cfg.retrain.epochs, "lr": cfg.retrain.lr,
                                  "train_s": round(sum(t["train_s"] for t in trained.values()), 1)}}


# ---------------------------------------------------------------------------- report
def _fmt(s: dict, which: str) -> str:
    v = s.get("kendall_tau" if which == "kendall" else "spearman_rho")
    ci = s.get(f"{which}_ci")
    return "n/a" if v is None else f"{v:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"{v:+.3f}"


def table(result: dict) -> str:
    s = result["stats"]
    lines = ["| architecture | uniform | energy µJ | proxy acc. % (rank) | stand-alone val acc. % (rank, seeds) |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        name = r["name"] + ("" if r["in_space"] else " (outside the space)")
        lines.append(f"| {name} | {'yes' if r['uniform'] else 'no'} | {r['energy_uj']:.4g} | "
                     f"{100 * r['proxy_accuracy']:.2f} ({r['proxy_rank']}) | {100 * r['standalone_val_accuracy']:.2f} "
                     f"({r['standalone_rank']}, {r['standalone_seeds']}) |")
    boot = s["bootstrap"]
    lines += ["", f"n = {s['n']} ({result['n_uniform']} uniform). Kendall's tau-b {_fmt(s, 'kendall')}, Spearman's "
              f"rho {_fmt(s, 'spearman')}: 95 % percentile-bootstrap intervals over the architectures "
              f"({boot['used']} of {boot['resamples']} resamples usable, seed {boot['seed']})."]
    if s.get("kendall_fisher_ci") or s.get("spearman_fisher_ci"):
        f = [s.get("kendall_fisher_ci"), s.get("spearman_fisher_ci")]
        lines.append("Fisher-z cross-check (Fieller-Hartley-Pearson variances): " + ", ".join(
            f"{n} [{c[0]:+.3f}, {c[1]:+.3f}]" for n, c in zip(("tau", "rho"), f, strict=True) if c) + ".")
    e = result.get("energy_stats")
    if e:
        lines.append(f"Baseline proxy 'more energy = more accurate' (energy vs stand-alone): tau {_fmt(e, 'kendall')}, "
                     f"rho {_fmt(e, 'spearman')}.")
    if s.get("note"):
        lines.append(s["note"] + ".")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib  # lazy: matplotlib (+pyplot) costs 1.1-1.5 s to import, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for uniform, marker, label in ((True, "o", "uniform"), (False, "s", "non-uniform")):
        rows = [r for r in result["rows"] if r["uniform"] == uniform]
        if rows:
            ax.scatter([100 * r["proxy_accuracy"] for r in rows], [100 * r["standalone_val_accuracy"] for r in rows],
                       marker=marker, label=label)
    for r in result["rows"]:
        ax.annotate(r["name"], (100 * r["proxy_accuracy"], 100 * r["standalone_val_accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 3))
    s = result["stats"]
    finish(fig, ax, path, xlabel="super-net proxy: held-out accuracy (%)",
           ylabel="stand-alone: validation accuracy (%)",
           title=f"n={s['n']}  tau {_fmt(s, 'kendall')}  rho {_fmt(s, 'spearman')}", title_size=9)


__all__ = ["KIND", "check_archs", "load_inputs", "read_archs", "read_headroom", "run_rank_check", "table"]
