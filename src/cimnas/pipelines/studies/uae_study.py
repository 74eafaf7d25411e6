"""UAE Table 3 at small scale as one study: QuantNAS / NACIM / UAE-M / UAE-95 searches over seeds, the cross
retrains, then one report (`uae_study_report`).

    python -m cimnas.pipelines.studies.uae_study run OUT [--seeds 0 1] [--methods quantnas nacim uae_m uae_95]
                                                 [--config-dir configs/uae] [--set KEY=VALUE ...] [--no-cross]
                                                 [--workers N | --ray-address A]
    python -m cimnas.pipelines.studies.uae_study report OUT [--figures DIR] [--json FILE]

`run` (`run_study`) runs every (method, seed) as one task of `cimnas.parallel.run_tasks` (in this process, on N
local Ray workers, or on a Ray cluster), each its own resumable `uae search` run folder (search + final evaluation,
as `cimnas uae search` does) in the layout `scripts/uae_study.sh` always used, so its folders resume:

    seed<k>/<method>/                          the search of `<config-dir>/<method>.yaml` (or NAME=FILE.yaml) with
                                               the --set overrides, seed=k, progress=false
    seed<k>/cross/<method>_arch_<training>/    phase 2: that search's chosen child retrained with the other
                                               training (train.noise_aware flipped; `cimnas uae final --from`)

OUT itself is a run folder (kind "uae-study": config.yaml holds every method's resolved config without its seed,
the method files and the seeds; run.json how each phase ran). Each task is a function of (config, method, seed)
that writes only its own folder, so the runs do not depend on the worker count or the order tasks finish in.
Rerunning resumes: a folder whose final.json exists under the same config is read, not redone; an unfinished one
continues (`run_search(resume=True)`: logged episodes replayed, not retrained). A resume may add seeds and methods,
raise `search.episodes` and change `final.*` (those runs continue); any other change of a method's config is
refused. A folder made by the old script (only seed<k>/ inside, no run.json) is adopted as the study folder.
"""

from __future__ import annotations

import copy
import platform
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from cimnas.cli import STUDY_INTERRUPTED, HelpFormatter, OneLineParser, doc_summary, guarded
from cimnas.config import apply_overrides, diff_configs, from_dict, read_yaml, to_dict, validate
from cimnas.errors import check
from cimnas.parallel import Parallelism, add_parallel_args, parallelism_from_args, run_tasks
from cimnas.pipelines.studies.uae_study_report import report
from cimnas.pipelines.uae import search as uae_search
from cimnas.pipelines.uae.config import SEARCH_RESUMABLE, UAESearchConfig
from cimnas.pipelines.uae.final import final_evaluation
from cimnas.pipelines.uae.search import load_run_config, run_search
from cimnas.runs import RUN_FORMAT, RunFolder
from cimnas.utils.io import atomic_write_bytes, read_json, write_json
from cimnas.utils.seed import resolve_device

KIND = "uae-study"
METHODS = ("quantnas", "nacim", "uae_m", "uae_95")
CONFIG_DIR = "configs/uae"
#: keys that say how a run ran, not what it computes: a finished folder that differs only there is reused
NOT_RESULTS = ("progress", "train.progress", "device", "tensorboard")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# ============================================================================ configs
def method_files(methods: Sequence[str], config_dir: str | Path = CONFIG_DIR) -> dict[str, str]:
    """{method: config file} of `--methods` items `NAME` (= CONFIG_DIR/NAME.yaml) or `NAME=FILE.yaml`."""
    files: dict[str, str] = {}
    for item in methods:
        name, _, path = item.partition("=")
        check(bool(_NAME.match(name)), f"--methods: {name!r} is not a folder name (letters, digits, _ . -); "
              "give NAME or NAME=CONFIG.yaml")
        check(name not in files, f"--methods lists {name!r} twice")
        files[name] = path or str(Path(config_dir) / f"{name}.yaml")
        check(Path(files[name]).is_file(), f"--methods {name}: config file {files[name]} not found; run from the "
              "repository root, give --config-dir DIR, or NAME=CONFIG.yaml")
    check(bool(files), "--methods must name at least one method")
    return files


def method_config(path: str | Path, overrides: Sequence[str]) -> dict:
    """The resolved config of one method for every seed: YAML + overrides, progress off (the study shows one
    progress bar over all tasks), checked, without its seed (each task sets it)."""
    check(not any(o.split("=", 1)[0].strip() == "seed" for o in overrides),
          "--set seed=... is not a study setting: give the seeds with --seeds 0 1 ...")
    data = apply_overrides(read_yaml(path), [*overrides, "progress=false", "train.progress=false"])
    cfg = from_dict(UAESearchConfig, data)
    validate(cfg)
    out = to_dict(cfg)
    out.pop("seed")
    return out


def seeded(base: dict, seed: int) -> UAESearchConfig:
    """The search config of one (method, seed) task."""
    cfg = from_dict(UAESearchConfig, {**copy.deepcopy(base), "seed": seed})
    validate(cfg)
    return cfg


def cross_config(cfg: UAESearchConfig, method: str) -> tuple[UAESearchConfig, str]:
    """`cfg` with the other training (train.noise_aware flipped) and its label; returns (config, folder name)."""
    na = not cfg.noise_aware()
    training = "noise-aware" if na else "plain"
    d = to_dict(cfg)
    d["train"]["noise_aware"] = na
    d["label"] = f"{method} child, {training} training"  # the label scripts/uae_study.sh gave its cross runs
    out = from_dict(UAESearchConfig, d)
    validate(out)
    return out, f"{method}_arch_{'noise_aware' if na else 'plain'}"


def finished(out: Path, cfg: UAESearchConfig) -> dict | None:
    """final.json of run folder `out` when it is finished under `cfg` (apart from NOT_RESULTS keys), else None."""
    if not (out / "final.json").is_file():
        return None
    stored = to_dict(load_run_config(out))
    if any(k not in NOT_RESULTS for k in diff_configs(stored, to_dict(cfg))):
        return None  # another config: run_search / open_run resume it or refuse it with the differing keys
    return read_json(out / "final.json")


# ============================================================================ tasks
def search_task(label: str, payload: dict, shared: dict) -> dict:
    """One (method, seed) of the study (a `cimnas.parallel` task): its search + final evaluation, resumed or read
    back when finished; returns final.json's content."""
    cfg = seeded(payload["config"], payload["seed"])
    out = Path(shared["root"]) / payload["out"]
    done = finished(out, cfg)
    if done is not None:
        return done
    return run_search(cfg, out, resume=True)


def cross_task(label: str, payload: dict, shared: dict) -> dict:
    """One cross retrain: the chosen child of seed<k>/<method> trained with the other training into its own
    folder (what `cimnas uae final --from` does, resumable); returns final.json's content."""
    root = Path(shared["root"])
    src, out = root / payload["source"], root / payload["out"]
    cfg, _ = cross_config(seeded(payload["config"], payload["seed"]), payload["method"])
    done = finished(out, cfg)
    if done is not None:
        return done
    best = src / "best_arch.json"
    check(best.is_file(), f"{src} has no best_arch.json; the search phase did not finish")
    device = resolve_device(cfg.device)
    splits = uae_search.load_splits(cfg, device)
    with uae_search.open_run(cfg, out, resume=True) as run:  # a killed retrain starts again (no checkpoint)
        shutil.copyfile(best, run.path("best_arch.json"))
        return final_evaluation(run, cfg, splits, device)


def final_line(label: str, r: dict) -> str:
    return (f"{label}: {r['label']}: clean {100 * r['clean_acc']:.2f}%  mean {100 * r['mean']:.2f}%  "
            f"p5 {100 * r.get('p5', r.get('p95')):.2f}% ({r['mc_samples']} MC samples, {r['episodes']} episodes)")


# ============================================================================ the study folder
def _adopt_old_layout(root: Path, study: dict) -> None:
    """Make a folder of the old scripts/uae_study.sh (only seed<k>/ folders, no run.json) a study folder."""
    if not root.is_dir() or (root / "run.json").exists():
        return
    entries = [p for p in root.iterdir() if p.name != ".lock"]
    if entries and all(p.is_dir() and re.fullmatch(r"seed\d+", p.name) for p in entries):
        write_json(root / "run.json", {"format": RUN_FORMAT, "kind": KIND,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
                                       "torch": torch.__version__,
                                       "adopted": "seed<k>/ folders of the old scripts/uae_study.sh"})
        atomic_write_bytes(root / "config.yaml", yaml.safe_dump(study, sort_keys=False).encode())


def open_study(out: str | Path, study: dict) -> RunFolder:
    """Open (or resume) study folder `out`; a method already in it must keep its config apart from the keys a
    search resume may change (SEARCH_RESUMABLE). The stored config becomes the union of the old and new methods
    and seeds."""
    root = Path(out)
    _adopt_old_layout(root, study)
    run = RunFolder.open(root, KIND, study, resume=True, resumable=("methods.", "seeds", "configs."))
    try:
        if run.resumed:
            old = run.stored_config()
            for m, cfg in study["configs"].items():
                prev = old.get("configs", {}).get(m)
                diff = [k for k in diff_configs(prev, cfg) if not any(
                    k == r or (r.endswith(".") and k.startswith(r)) for r in SEARCH_RESUMABLE)] if prev else []
                check(not diff, f"cannot resume {root}: method {m}'s config differs from the study's at "
                      f"{', '.join(diff)}; use the study's config or a new study folder")
            study = {"methods": {**old.get("methods", {}), **study["methods"]},
                     "seeds": sorted(set(old.get("seeds", [])) | set(study["seeds"])),
                     "configs": {**old.get("configs", {}), **study["configs"]}}
            run.write_config(study)
    except BaseException:
        run.close()
        raise
    return run


def run_study(out: str | Path, *, seeds: Sequence[int] = (0,), methods: Sequence[str] = METHODS,
              config_dir: str | Path = CONFIG_DIR, overrides: Sequence[str] = (), cross: bool = True,
              par: Parallelism | None = None) -> dict:
    """The study (module doc) into study folder `out`; returns {task label: final.json content}."""
    par = par or Parallelism()
    seeds = [int(s) for s in seeds]
    check(bool(seeds) and len(set(seeds)) == len(seeds) and min(seeds) >= 0,
          f"--seeds must list distinct seeds >= 0, got {seeds}")
    files = method_files(methods, config_dir)
    configs = {m: method_config(path, overrides) for m, path in files.items()}
    run = open_study(out, {"methods": files, "seeds": sorted(seeds), "configs": configs})
    try:
        shared = {"root": str(run.root)}
        results: dict = {}

        def done(label: str, r: dict) -> None:
            results[label] = r
            run.log(final_line(label, r), echo=False)

        run.log(f"run: seeds {seeds}, methods {list(files)}, --set {list(overrides)}", echo=False)
        first = {f"seed{s}/{m}": {"config": configs[m], "seed": s, "out": f"seed{s}/{m}"}
                 for s in seeds for m in files}
        ex = run_tasks(search_task, first, shared=shared, on_result=done, desc="searches", **par.kwargs())
        run.record_execution(phase="search", seeds=seeds, methods=list(files), **ex.execution)
        if cross:
            second = {}
            for s in seeds:
                for m in files:
                    name = cross_config(seeded(configs[m], s), m)[1]
                    second[f"seed{s}/cross/{name}"] = {"config": configs[m], "seed": s, "method": m,
                                                       "source": f"seed{s}/{m}", "out": f"seed{s}/cross/{name}"}
            ex = run_tasks(cross_task, second, shared=shared, on_result=done, desc="cross retrains", **par.kwargs())
            run.record_execution(phase="cross", seeds=seeds, methods=list(files), **ex.execution)
        return results
    finally:
        run.close()


# ============================================================================ CLI
def main(argv: list[str] | None = None, prog: str = "python -m cimnas.pipelines.studies.uae_study") -> int:
    p = OneLineParser(prog=prog, description=doc_summary(__doc__), formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("run", help="the searches of every (method, seed), then the cross retrains, as parallel runs")
    q.add_argument("out", help="study folder (resumed when it exists)")
    q.add_argument("--seeds", type=int, nargs="+", default=[0], help="search seeds, each its folder seed<k>/")
    q.add_argument("--methods", nargs="+", default=list(METHODS), metavar="NAME[=FILE]",
                   help="methods: NAME reads CONFIG_DIR/NAME.yaml, NAME=FILE.yaml any config")
    q.add_argument("--config-dir", default=CONFIG_DIR, help="folder of the NAME.yaml method configs")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value of every method's config (repeatable), e.g. --set search.episodes=40")
    q.add_argument("--no-cross", action="store_true", help="skip the cross retrains (run the command again later)")
    add_parallel_args(q)
    q = sub.add_parser("report", help="OUT/table3.md, OUT/search_stats.md and the per-seed figures")
    q.add_argument("out", help="study folder")
    q.add_argument("--figures", help="folder of the figures (default OUT/figures)")
    q.add_argument("--json", dest="json_out", metavar="FILE",
                   help="also write table3.json there (e.g. docs/results/uae_table3.json)")
    args = p.parse_args(argv)

    def run() -> None:
        if args.cmd == "run":
            runs = run_study(args.out, seeds=args.seeds, methods=args.methods, config_dir=args.config_dir,
                             overrides=args.overrides, cross=not args.no_cross, par=parallelism_from_args(args))
            print("\n".join(final_line(label, r) for label, r in runs.items()))
        else:
            print(report(args.out, args.figures, args.json_out), end="")

    # finished models stay in their run folders
    return guarded(run, error="error:", interrupted=STUDY_INTERRUPTED, exiting=argv is None)


__all__ = ["METHODS", "cross_config", "cross_task", "finished", "method_config", "method_files", "open_study",
           "report", "run_study", "search_task", "seeded"]

if __name__ == "__main__":
    sys.exit(main())
