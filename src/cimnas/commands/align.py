"""`cimnas align`: crossbar-filling neighbours of each width, per-layer fill, and the aligned-uniform net."""

from __future__ import annotations

import json

from cimnas.errors import check

MAX_WIDTH = 1 << 16


def register(subparsers) -> None:
    from cimnas.commands.hardware import _spec_args, arch_args

    p = subparsers.add_parser("align", help="crossbar-filling widths: per-layer neighbours, fill, saving, and the "
                              "aligned-uniform net (hardware.align)")
    arch_args(p)  # --model, --width-mult (U-kx, rounded to multiples of --d here), --widths, --arch, --thermometer, ...
    p.add_argument("--d", type=int, default=4, help="channel granularity: widths are multiples of d (Eq. 8)")
    p.add_argument("--min-jump", type=float, default=None,
                   help="a count change is a step when its energy jump exceeds the slope beside it by this share "
                   "(default 0.25, hardware.align.MIN_JUMP); a negative value keeps every count change")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _spec_args(p)
    p.set_defaults(func=cmd_align)


def cmd_align(args) -> int:
    from cimnas.commands.hardware import energy_arch_args, spec_from_args
    from cimnas.hardware.align import MIN_JUMP, ArchProbe, align, aligned_uniform, check_d

    spec = spec_from_args(args)
    check_d(args.d)
    kw, shape = energy_arch_args(args)  # --thermometer included
    widths = kw.pop("widths")
    k = kw.pop("width_mult")
    min_jump = MIN_JUMP if args.min_jump is None else None if args.min_jump < 0 else args.min_jump
    probe = ArchProbe(args.model, spec, **kw)
    if widths is None:
        widths = probe.uniform(k, args.d)
    check(len(widths) == len(probe.base), f"{args.model} expects {len(probe.base)} widths (one per searchable "
          f"layer), got {len(widths)}")
    for i, w in enumerate(widths):
        check(1 <= w <= MAX_WIDTH, f"width {i} is {w}; widths must be in 1..{MAX_WIDTH}")
    out = align(probe, widths, args.d, min_jump)
    out["input_shape"] = list(shape)
    given = args.widths is not None or args.arch is not None
    out["aligned_uniform"] = (aligned_uniform(args.model, spec, energy_budget=out["energy_uj"], d=args.d,
                                              min_jump=min_jump, probe=probe) if given else
                              aligned_uniform(args.model, spec, width_mult=k, d=args.d, min_jump=min_jump, probe=probe))
    out["aligned_uniform"]["rule"] = ("largest energy at or below the given widths'" if given
                                      else f"U-{k:g}x snapped down")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print_table(out, spec)
    return 0


def _w(v: int | None) -> str:
    return "-" if v is None else str(v)


def print_table(out: dict, spec) -> None:
    fills = {r["name"]: r for r in out["layers"]}
    print(f"{out['model']} on {out['preset']} ({spec.rows}x{spec.columns}), input "
          f"{'x'.join(map(str, out['input_shape']))}, widths multiples of {out['d']}: {out['energy_uj']:.4g} uJ")
    print(f"{'layer':<20}{'width':>6}{'lower':>6}{'upper':>6}{'E lower':>9}{'E upper':>9}{'saving %':>9}"
          f"{'fill %':>8}{'rows %':>8}")
    for r in out["neighbours"]:
        f = fills.get(r["layer"], {})
        fill, rows = f.get("fill_pct", float("nan")), f.get("row_fill_pct", float("nan"))
        el = "-" if r["lower_energy_uj"] is None else f"{r['lower_energy_uj']:.4g}"
        eu = "-" if r["upper_energy_uj"] is None else f"{r['upper_energy_uj']:.4g}"
        print(f"{r['layer']:<20}{r['width']:>6}{_w(r['lower']):>6}{_w(r['upper']):>6}{el:>9}{eu:>9}"
              f"{r['saving_pct']:>9.2f}{fill:>8.2f}{rows:>8.2f}")
    a, u = out["aligned"], out["aligned_uniform"]
    print(f"every layer at its lower neighbour: {a['energy_uj']:.4g} uJ ({a['saving_pct']:.1f} % less): {a['widths']}")
    print(f"aligned-uniform ({u['rule']}): {u['energy_uj']:.4g} uJ, widths {u['widths']} "
          f"(from U-{u['width_mult']:g}x {u['uniform_widths'][:1]}..., {u['uniform_energy_uj']:.4g} uJ)")
