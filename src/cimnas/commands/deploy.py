"""`cimnas export` (checkpoint -> crossbar image) and `cimnas simulate` (image -> integer-only accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

from cimnas.errors import CimnasError, check

DEFAULT_RESIDUAL_BITS = 22
DEFAULT_RANGE_SIGMAS = 4.0


def register(subparsers) -> None:
    from cimnas.commands.hardware import _spec_args

    e = subparsers.add_parser(
        "export", help="write a fully binarized checkpoint as crossbar arrays + integer comparators (.npz + JSON)",
        description="Lower a fully binarized checkpoint to integer ops: crossbar cell levels per physical array "
                    "(positive / negative, bit slices), comparator thresholds, fixed-point residual scales, the "
                    "layer graph and the crossbar spec (docs/export-format.md). The same checkpoint exports to "
                    "the same bytes.")
    e.add_argument("--checkpoint", required=True, help="model checkpoint (cimnas train / hawis)")
    e.add_argument("--out", required=True, help="folder for model.json and arrays.npz (new, empty or an export)")
    e.add_argument("--model-file", default=None, metavar="PATH.py:FACTORY",
                   help="the factory of a converted outside model's checkpoint (cimnas never runs code a checkpoint "
                        "names)")
    e.add_argument("--residual-bits", type=int, default=DEFAULT_RESIDUAL_BITS,
                   help=f"width B of the fixed-point residual streams (default {DEFAULT_RESIDUAL_BITS}; docs/deploy.md)"
                        )
    e.add_argument("--range-sigmas", type=float, default=DEFAULT_RANGE_SIGMAS,
                   help="stream range = this many BN standard deviations per term (0 = the provable integer bound)")
    _spec_args(e)
    e.set_defaults(func=cmd_export)

    s = subparsers.add_parser("simulate", help="run an export with integer arithmetic on the crossbar dataflow",
                              description="Integer-only inference of a `cimnas export` folder: bit-serial inputs, "
                                          "per-array column sums, optional ADC, comparators and integer adds.")
    s.add_argument("folder", help="the --out folder of cimnas export")
    s.add_argument("--dataset", default=None, help="dataset (default: the one the checkpoint was trained on)")
    s.add_argument("--data-dir", default=None, help="folder of the dataset files (default: the dataset's usual places)")
    s.add_argument("--split", default="test", choices=["test", "search_eval", "train"], help="split to evaluate")
    s.add_argument("--max-samples", type=int, default=None, help="simulate at most this many images")
    s.add_argument("--batch-size", type=int, default=128, help="evaluation batch size")
    s.add_argument("--adc", action="store_true", help="read columns through the spec's ADC (row groups, clipping)")
    s.add_argument("--sa0-rate", "--sa0", dest="sa0", type=float, default=0.0,
                   help="stuck-at-0 rate per cell, stuck at Gmax (--sa0: old name)")
    s.add_argument("--sa1-rate", "--sa1", dest="sa1", type=float, default=0.0,
                   help="stuck-at-1 rate per cell, stuck at Gmin (--sa1: old name)")
    s.add_argument("--variation-sigma", "--sigma", dest="sigma", type=float, default=0.0,
                   help="lognormal resistance variation sigma, HAWIS Eq. 3 (--sigma: old name)")
    s.add_argument("--seed", type=int, default=0, help="seed of the defect draw (one chip)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_simulate)


def _check_out(out: Path) -> None:
    from cimnas.deploy.fileformat import JSON_NAME, NPZ_NAME

    check(not out.exists() or out.is_dir(), f"--out {out} is a file; give a folder")
    if out.is_dir():
        extra = sorted(p.name for p in out.iterdir() if p.name not in (JSON_NAME, NPZ_NAME))
        if extra:
            raise CimnasError(f"--out {out} holds other files ({extra[0]}); give a new or empty folder")


def cmd_export(args) -> int:
    from cimnas.commands.hardware import spec_from_args
    from cimnas.deploy.fileformat import make_doc, write_export
    from cimnas.deploy.fixed_point import check_bits, integer_kind
    from cimnas.deploy.lower import lower, verify_export
    from cimnas.nn.models import load_model

    out = Path(args.out)
    _check_out(out)
    check_bits(args.residual_bits)
    check(args.range_sigmas >= 0 and args.range_sigmas < 1e6, f"--range-sigmas must be >= 0, got {args.range_sigmas}")
    spec = spec_from_args(args)
    model, ckpt = load_model(args.checkpoint, model_file=args.model_file)
    kind = integer_kind(model)
    sigmas = args.range_sigmas or None
    ops, arrays = lower(model, args.residual_bits, spec, sigmas)
    if kind == "kbit":
        sigmas = None
    meta = {"kind": kind, "residual_bits": args.residual_bits if kind == "binary" else None, "range_sigmas": sigmas,
            "input_shape": list(model.input_shape), "model": ckpt.get("arch"), "dataset": ckpt.get("dataset"),
            "crossbar": spec.to_dict()}
    doc = make_doc(meta, ops, arrays)
    verify_export(model, doc, arrays, spec)
    write_export(out, doc, arrays)
    cells = sum(int(a.size) for n, a in arrays.items() if n.endswith((".g_pos", ".g_neg")))
    print(f"exported {sum(o['op'] == 'crossbar' for o in ops)} crossbar layers ({cells:,} cells), "
          f"{len(ops)} integer ops, residual streams of {meta['residual_bits']} bits to {out}")
    return 0


def cmd_simulate(args) -> int:
    import numpy as np

    from cimnas.commands.hardware import data_dir_arg
    from cimnas.config import check_seed
    from cimnas.data import load_dataset
    from cimnas.deploy.fileformat import read_export
    from cimnas.deploy.simulate import Chip, predict
    from cimnas.hardware.defects import DefectConfig

    check_seed(args.seed, "--seed")
    data_dir_arg(args.data_dir)
    check(args.max_samples is None or args.max_samples >= 1, f"--max-samples must be >= 1, got {args.max_samples}")
    check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    defects = DefectConfig(args.sa0, args.sa1, args.sigma)
    models = defects.build()
    doc, arrays, spec = read_export(args.folder)
    dataset = args.dataset or (doc.get("dataset") or {}).get("name")
    check(isinstance(dataset, str), "the export names no dataset; pass --dataset")
    splits = load_dataset(dataset, data_dir=args.data_dir, seed=0)
    split = getattr(splits, args.split)
    idx = split.indices[: args.max_samples] if args.max_samples else split.indices
    pixels, labels = split.images[idx].cpu().numpy(), split.labels[idx].cpu().numpy()
    check(list(pixels.shape[1:]) == doc["input_shape"], f"{dataset} images are {list(pixels.shape[1:])}, the export "
          f"takes {doc['input_shape']}; simulate it on the dataset it was trained for")
    chip = Chip(doc, arrays, spec, models, args.seed, args.adc)
    pred = predict(chip, pixels, split.scale, args.batch_size)
    acc = float((pred == labels).mean()) if len(labels) else 0.0
    res = {"folder": str(args.folder), "dataset": dataset, "split": args.split, "samples": int(len(labels)),
           "accuracy": acc, "adc": args.adc, "adc_bits": spec.adc_bits if args.adc else None,
           "defects": {"sa0_rate": args.sa0, "sa1_rate": args.sa1, "variation_sigma": args.sigma}, "seed": args.seed,
           "residual_bits": doc["residual_bits"], "predictions_sha256": _digest(np.asarray(pred, np.int64))}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"integer simulation: {100 * acc:.2f}% on {len(labels)} {dataset} {args.split} images "
              f"(residual {doc['residual_bits']} bits, ADC {'on' if args.adc else 'off'}, "
              f"sa0_rate {args.sa0}, sa1_rate {args.sa1}, variation_sigma {args.sigma}, seed {args.seed})")
    return 0


def _digest(a) -> str:
    from cimnas.deploy.fileformat import sha256

    return sha256(a)
