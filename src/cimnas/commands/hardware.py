"""`cimnas energy`, `cimnas presets`: the crossbar hardware model from the CLI (robustness: robustness.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cimnas.commands import energy_trained
from cimnas.commands.model_source import add_source_args, check_no_source_flags, rules_of, source_of
from cimnas.errors import CimnasError, check

DEFAULT_PRESET = "mnsim-default"
#: --sort choices: network order, or the largest first by this per-layer value
SORT_KEYS = {"order": None, "energy": "energy_uj", "latency": "latency_us", "crossbars": "crossbars",
             "positions": "positions"}
LAYER_COLUMNS = """per-layer columns (JSON keys in brackets):
  pos     output positions per image [positions]: each one a full pass over the layer's crossbars
          (an 8x8 output costs 16x a 2x2 one)
  rounds  crossbar read rounds per position [read_rounds]: input cycles x row rounds x column rounds
  xbars   pos/neg crossbar pairs holding the layer's weights [crossbars]
  fill    used cells / cells of those crossbars [utilization]: below 1 where C_in k^2 or C_out
          leaves rows or columns of a crossbar empty
  adc% buf%  the ADC and buffer shares of the layer's energy [energy_pj: cells, dac, adc, buffer, digital]"""


def _spec_args(p) -> None:
    p.add_argument("--preset", default=None, help="crossbar preset (see `cimnas presets`; default mnsim-default)")
    p.add_argument("--spec", default=None, help="YAML file of CrossbarSpec fields (instead of --preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="hardware.FIELD=VALUE",
                   help="override a CrossbarSpec field, e.g. --set hardware.rows=128, the same key as a config's "
                        "hardware section (spec.FIELD also read; repeatable)")


def arch_args(p, model_help: str = "registered model name (`cimnas models`)") -> None:
    """The model description of `cimnas energy` and `cimnas align` (read by `energy_arch_args`)."""
    p.add_argument("--model", default="resnet20", help=model_help)
    p.add_argument("--width-mult", type=float, default=1.0, help="uniform widening U-kx")
    p.add_argument("--widths", default=None, help="comma-separated per-layer widths (overrides --width-mult)")
    p.add_argument("--arch", default=None, help='JSON file with a "widths" or "arch" key (best_arch.json; a final.json '
                   "whose arch describes the whole model is costed as built)")
    p.add_argument("--bits", type=int, default=1, help="1 = fully binary (HAWIS); k > 1 = k-bit DoReFa")
    p.add_argument("--dataset", default=None, help="take input shape / classes from this dataset")
    p.add_argument("--input-shape", default=None, help="C x H x W when --dataset is not given (default 3x32x32)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs when --dataset is not given "
                   "(default 10)")
    p.add_argument("--shortcut", default=None, choices=["A", "B"],
                   help="ResNet shortcuts: A zero-pad (default), B 1x1 conv (MNSIM-2.0's ResNet-20)")
    p.add_argument("--no-topology-mod", action="store_true",
                   help="binary models keep the avg-pool before the classifier (MNSIM-2.0's ResNet-20)")
    p.add_argument("--thermometer", type=int, default=None, metavar="LEVELS",
                   help="binary models: feed the first layer a thermometer code with LEVELS planes per input channel "
                        "(HAWIS; the input channels widen LEVELS times; the HAWIS configs' model.thermometer)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "energy", help="crossbar energy / latency / area of one inference (MNSIM-style)",
        description="Energy, latency and area of one inference on ReRAM crossbars (MNSIM-2.0 accounting), per layer "
                    "and in total, of a model described by its options, an --arch file, a trained --checkpoint, or "
                    "an outside architecture (--model torchvision:NAME, --model-file).",
        epilog=LAYER_COLUMNS)
    arch_args(p, "registered model name (`cimnas models`), or an outside architecture torchvision:NAME / timm:NAME "
              "(optional extras, built without pretrained weights)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--sort", default="order", choices=SORT_KEYS,
                   help="order of the per-layer rows: network order (default) or the largest first")
    _spec_args(p)
    energy_trained.add_args(p)
    add_source_args(p)
    p.set_defaults(func=cmd_energy)

    s = subparsers.add_parser("presets", help="list crossbar presets, what each is for, and their fields")
    s.add_argument("name", nargs="?", default=None, help="print this preset's fields as JSON")
    s.set_defaults(func=cmd_presets)


def add_gaussian_args(p, default_sigma: float, old_sigma: str) -> None:
    """--gaussian-sigma / --gaussian-mode (UAE Eq. 1 weight noise; config keys noise.gaussian_sigma / _mode), with
    the command's old flag names read for one release."""
    p.add_argument("--gaussian-sigma", old_sigma, dest="gaussian_sigma", type=float, default=default_sigma,
                   help=f"std of the additive Gaussian weight noise, UAE Eq. 1 ({old_sigma}: old name)")
    p.add_argument("--gaussian-mode", "--mode", dest="gaussian_mode", default="absolute",
                   help="how --gaussian-sigma scales: absolute | relative | bitsliced (--mode: old name)")


def spec_from_args(args, uses: tuple[str, ...] = ("energy", "accuracy")):
    """The CrossbarSpec of --preset / --spec / --set (--spec replaces the preset, so giving both is a mistake);
    a --set field that no number of `uses` ("energy", "accuracy") depends on is refused."""
    from cimnas.hardware.crossbar import load_spec

    check(args.preset is None or args.spec is None, f"give --preset {args.preset} or --spec {args.spec}, not both "
          "(the spec file replaces the preset; change single fields with --set)")
    return load_spec(DEFAULT_PRESET if args.preset is None else args.preset, args.overrides, args.spec, uses=uses)


def data_dir_arg(path: str | None) -> str | None:
    """--data-dir, which must name an existing folder (a typo would otherwise be ignored for bundled datasets)."""
    check(path is None or Path(path).is_dir(), f"--data-dir {path} not found (no such folder); give the folder holding "
          "the dataset files (or leave --data-dir out for the dataset's usual places)")
    return path


# ---------------------------------------------------------------- energy
def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        parts = ()
    check(len(parts) == 3 and all(v > 0 for v in parts), f"--input-shape must look like 3x32x32, got {text!r}")
    return parts  # type: ignore[return-value]


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise CimnasError(f"{what} must be comma-separated integers, got {text!r}") from e


def _arch_widths(path: str) -> list[int]:
    from cimnas.utils.io import read_json

    data = read_json(path)
    w = data.get("widths") if isinstance(data, dict) else None
    if w is None and isinstance(data, dict) and isinstance(data.get("arch"), dict):
        w = data["arch"].get("widths")
    if w is None and isinstance(data, dict) and isinstance(data.get("arch"), list):
        w = data["arch"]
    check(isinstance(w, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in w),
          f'{path}: expected a JSON object with a "widths" (or "arch") list of integers')
    return w


def _shape_and_classes(args) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and classes from --dataset, or from --input-shape / --num-classes (default 3x32x32, 10)."""
    if args.dataset:
        from cimnas.data import DATASETS

        check(args.input_shape is None and args.num_classes is None, f"--dataset {args.dataset} sets the input "
              "shape and the classes; drop --input-shape / --num-classes (or drop --dataset)")
        ds = DATASETS.create(args.dataset)
        shape = (ds.in_channels, ds.image_size, ds.image_size)
        num_classes = ds.num_classes
    else:
        shape = _parse_shape(args.input_shape or "3x32x32")
        num_classes = 10 if args.num_classes is None else args.num_classes
    check(num_classes >= 1, f"--num-classes must be >= 1, got {num_classes}")
    return shape, num_classes


def energy_arch_args(args) -> tuple[dict, tuple[int, int, int]]:
    """`build_model` keyword arguments described by the energy command, and the input shape."""
    from cimnas.nn.models import MODELS

    shape, num_classes = _shape_and_classes(args)
    check(args.bits >= 1, f"--bits must be >= 1, got {args.bits}")
    from cimnas.pipelines.hawis.config import MAX_RATIO

    check(0 < args.width_mult <= MAX_RATIO, f"--width-mult must be in (0, {MAX_RATIO:g}], got {args.width_mult} "
          "(the paper's widest network is U-6x)")
    check(args.arch is None or args.widths is None, "give --arch FILE or --widths LIST, not both")
    widths = None
    if args.arch:
        widths = _arch_widths(args.arch)
    elif args.widths is not None:
        widths = _int_list(args.widths, "--widths")
        check(bool(widths), "--widths is empty; give comma-separated per-layer widths (or leave it out for 1x)")
    precision = "binary" if args.bits == 1 else "kbit"
    MODELS.get(args.model)  # an unknown name is its own error, not a width mismatch
    kw = dict(in_channels=shape[0], num_classes=num_classes, image_size=shape[1], widths=widths,
              width_mult=args.width_mult, precision=precision, bits=args.bits)
    if getattr(args, "shortcut", None):
        kw["shortcut"] = args.shortcut
    refactor = {}
    if getattr(args, "no_topology_mod", False):
        check(precision == "binary", "--no-topology-mod applies to --bits 1 only (k-bit models keep the pool)")
        refactor["topology_mod"] = False
    if getattr(args, "thermometer", None) is not None:
        check(precision == "binary" and 2 <= args.thermometer <= 256, "--thermometer applies to --bits 1 and takes "
              f"2..256 levels, got {args.thermometer}")
        refactor.update(thermometer=True, thermometer_levels=args.thermometer)
    if refactor:
        kw["refactor"] = refactor
    return kw, shape


def build_energy_model(args):
    """The model described by the energy command's arguments, and its input shape (weights allocated)."""
    from cimnas.nn.models import build_model

    kw, shape = energy_arch_args(args)
    try:
        model = build_model(args.model, **kw)
    except CimnasError as e:
        where = f"architecture file {args.arch}" if args.arch else "widths"
        raise CimnasError(f"{where} does not fit model {args.model}: {e}") from e
    return model, shape


def external_energy_model(args, source: str):
    """The converted outside model of the energy command, and its input shape (only the outside flags apply)."""
    from cimnas.nn.zoo import external_model

    zoo_only = [f for f, v in (("--widths", args.widths), ("--arch", args.arch), ("--shortcut", args.shortcut),
                               ("--no-topology-mod", args.no_topology_mod), ("--width-mult", args.width_mult != 1.0))
                if v]
    check(not zoo_only, f"{', '.join(zoo_only)} apply to cimnas models only; an outside model keeps its own "
          "structure (use --rule / --keep-digital for its precision)")
    check(1 <= args.bits <= 16, f"--bits must be in 1..16, got {args.bits}")
    shape, num_classes = _shape_and_classes(args)
    default = "binary" if args.bits == 1 else f"kbit:{args.bits}"
    model = external_model(source, in_channels=shape[0], num_classes=num_classes, image_size=shape[1:],
                           rules=rules_of(args), default=default, weights=args.weights)
    return model, shape


def cmd_energy(args) -> int:
    from cimnas.hardware.energy import estimate, estimate_model
    from cimnas.nn.counting import arch_geometry

    trained = energy_trained.trained_energy(args, ("energy",))
    if trained is not None:
        res, shape, spec, name = trained
        return _report_energy(args, name, spec, shape, res, None)
    spec = spec_from_args(args, ("energy",))
    source = source_of(args)
    if source is not None:
        model, shape = external_energy_model(args, source)
        res = estimate_model(model, shape, spec)
        conv = model.cimnas_conversion
        return _report_energy(args, source, spec, shape, res,
                              {"precision": dict(conv.layers), "digital": res["digital"], "summary": conv.summary()})
    check_no_source_flags(args)
    kw, shape = energy_arch_args(args)
    try:  # layer geometry only: no weights are allocated (closed form or the meta device)
        layers = arch_geometry(args.model, **kw)
    except CimnasError as e:
        where = f"architecture file {args.arch}" if args.arch else "widths"
        raise CimnasError(f"{where} does not fit model {args.model}: {e}") from e
    res = estimate(layers, spec)
    return _report_energy(args, args.model, spec, shape, res, None)


def _report_energy(args, name: str, spec, shape, res: dict, conversion: dict | None) -> int:
    """Print the energy result as JSON or a table (a converted model lists its digital layers too)."""
    keys = ("name", "in_channels", "out_channels", "kernel_size", "positions", "read_rounds", "input_cycles",
            "crossbars", "tiles", "utilization", "energy_uj", "energy_pj", "latency_us", "area_mm2", "biops", "flops",
            "row_tiles", "col_tiles", "weight_bits", "act_bits")
    out = {"model": name, "preset": spec.name, "input_shape": list(shape),
           **{k: res[k] for k in ("energy_uj", "latency_us", "area_mm2", "crossbars", "arrays", "tiles", "biops",
                                  "flops")},
           "energy_components_uj": res["energy_components_uj"], "energy_breakdown": res["energy_breakdown"],
           "layers": [{k: lay[k] for k in keys} for lay in res["layers"]]}
    if conversion is not None:
        out["conversion"] = conversion
    if spec.purpose.startswith("accuracy only"):
        sys.stderr.write(f"cimnas: warning: preset {spec.name} is for {spec.purpose}; use mnsim-default for "
                         "energy\n")
    if SORT_KEYS[args.sort]:
        out["layers"].sort(key=lambda r: -r[SORT_KEYS[args.sort]])
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{name} on {spec.name} ({spec.rows}x{spec.columns}), input {'x'.join(map(str, shape))}")
    if conversion is not None:
        print(f"converted: {conversion['summary']}")
    print(f"{'layer':<22}{'Cin':>6}{'Cout':>6}{'k':>3}{'pos':>6}{'rounds':>7}{'xbars':>6}{'fill':>6}"
          f"{'energy uJ':>11}{'adc%':>6}{'buf%':>6}{'lat us':>9}")
    for r in out["layers"]:
        total_pj = sum(r["energy_pj"].values()) or 1.0
        print(f"{r['name']:<22}{r['in_channels']:>6}{r['out_channels']:>6}{r['kernel_size']:>3}{r['positions']:>6}"
              f"{r['read_rounds']:>7}{r['crossbars']:>6}{r['utilization']:>6.2f}{r['energy_uj']:>11.3g}"
              f"{100 * r['energy_pj']['adc'] / total_pj:>6.1f}{100 * r['energy_pj']['buffer'] / total_pj:>6.1f}"
              f"{r['latency_us']:>9.3g}")
    print(f"total: energy {out['energy_uj']:.3g} uJ, latency {out['latency_us']:.3g} us, area "
          f"{out['area_mm2']:.3g} mm^2, {out['crossbars']} crossbars, BiOps {out['biops']:.3g}, "
          f"FLOPs {out['flops']:.3g}")
    print("energy share: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in out["energy_breakdown"].items()))
    if conversion is not None:
        digital = ", ".join(map(repr, conversion["digital"])) or "none"
        print(f"digital (off the crossbars, not in these totals): {digital}")
    return 0


def cmd_presets(args) -> int:
    from cimnas.hardware.crossbar import list_presets, load_spec

    if args.name is not None:
        print(json.dumps(load_spec(args.name).to_dict(), indent=2))
        return 0
    for name in list_presets():
        s = load_spec(name)
        print(f"{name:<18} {s.rows}x{s.columns}, Gmax {s.g_max_s:g} S, Gmin {s.g_min_s:g} S, "
              f"{s.read_voltage_v:g} V, ADC {s.adc_bits} b, DAC {s.dac_bits} b, {s.bits_per_cell} b/cell")
        print(f"{'':<18} for {s.purpose or 'custom use'}")
    return 0
