"""`cimnas devices`: the device presets (programming / read noise, drift, relaxation, levels, periphery) as YAML;
and the device options of `cimnas robustness` (`--device-model PRESET --time 0,1h,1d,1y`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from cimnas.errors import check


def register(subparsers) -> None:
    p = subparsers.add_parser("devices", help="list device presets (noise, drift, periphery) and their parameters")
    p.add_argument("name", nargs="?", default=None, help="one preset: print it whole, with its sources")
    p.set_defaults(func=cmd_devices)


def add_device_args(p) -> None:
    """The device options of a Monte-Carlo command (`--device` stays the torch device: cpu / cuda)."""
    p.add_argument("--device-model", default=None, metavar="PRESET",
                   help="device preset (see `cimnas devices`; e.g. reram-wan2022, pcm-joshi2020)")
    p.add_argument("--device-file", default=None, metavar="YAML", help="device YAML file (instead of --device-model)")
    p.add_argument("--device-set", action="append", default=[], metavar="device.FIELD=VALUE",
                   help="override a device or periphery field, e.g. --device-set periphery.adc_bits=6 (repeatable)")
    p.add_argument("--time", default=None, metavar="LIST",
                   help="times since programming, e.g. 0,1h,1d,1y: accuracy over time (needs a device model)")


def wants_devices(args) -> bool:
    return bool(args.device_model or args.device_file or args.device_set or args.time)


def preset_from_args(args):
    from cimnas.hardware.devices import load_device

    check(bool(args.device_model or args.device_file), "--time / --device-set need a device: give --device-model "
          "PRESET (see `cimnas devices`) or --device-file YAML")
    return load_device(args.device_model, args.device_set, args.device_file)


def check_device_flags(args) -> None:
    """Refuse combinations the device path would silently ignore (before any loading)."""
    if not wants_devices(args):
        return
    check(not args.sweep, "--sweep sweeps defect levels; --device-model / --time give accuracy over time: run them "
          "separately")
    check(getattr(args, "workers", 1) in (None, 1), "--device-model runs in this process; drop --workers")
    from cimnas.hardware.aging import parse_times

    parse_times(args.time or "0")


def run_over_time(args, models: dict, split, spec, dataset: str) -> int:
    """The `--device-model ... --time ...` branch of `cimnas robustness`."""
    from cimnas.device import resolve_device
    from cimnas.hardware.aging import accuracy_over_time, parse_times
    from cimnas.hardware.defects import DefectConfig

    preset = preset_from_args(args)
    times = parse_times(args.time or "0")
    out = Path(args.out) if args.out else None
    if out is not None:
        check(not out.exists() or out.is_dir(), f"--out {out} is a file; give a folder for over_time.json")
        check(not (out / "over_time.json").exists(), f"{out / 'over_time.json'} exists; choose a new --out folder")
    defects = DefectConfig(args.sa0_rate, args.sa1_rate, args.variation_sigma, args.gaussian_sigma, args.gaussian_mode)
    res = accuracy_over_time(models, split, spec, preset, times, args.trials, args.seed, defects=defects,
                             batch_size=args.batch_size, device=str(resolve_device(args.device)),
                             max_samples=args.max_samples, progress=sys.stderr.isatty())
    res.update(dataset=dataset, split=args.split, defects=vars(defects), preset=spec.name,
               checkpoints=dict(zip(models, args.checkpoint, strict=True)))
    if out is not None:
        from cimnas.reports.aging_plot import plot_over_time
        from cimnas.utils.io import write_json

        write_json(out / "over_time.json", res)
        plot_over_time(res, out / "over_time.png", title=f"{dataset}: {preset.name} on {spec.name}")
    if args.json:
        print(json.dumps(res["times"], indent=2))
        return 0
    print(f"{preset.name} on {spec.name}, {args.trials} trials, {dataset}: mean % [min, max]")
    for row in res["times"]:
        for label, by in row["models"].items():
            cells = "  ".join(f"{k} {100 * v['mean']:6.2f} [{100 * v['min']:.2f}, {100 * v['max']:.2f}]"
                              for k, v in by.items())
            print(f"t={row['time']:<6} {label:<16} {cells}")
    if out is not None:
        print(f"wrote {out / 'over_time.json'} and over_time.png")
    return 0


def cmd_devices(args) -> int:
    from cimnas.hardware.devices import list_device_presets, load_device

    if args.name is not None:
        print(yaml.safe_dump(load_device(args.name).to_dict(), sort_keys=False, width=100), end="")
        return 0
    out = {}
    for name in list_device_presets():
        d = load_device(name).to_dict()
        out[name] = {"device": d["device"], "periphery": d["periphery"]}
    print(yaml.safe_dump(out, sort_keys=False, width=100, default_flow_style=None), end="")
    return 0
