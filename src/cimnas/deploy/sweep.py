"""Accuracy of the integer residual path against the float-residual fused model, per stream width.

    python -m cimnas.deploy.sweep --checkpoint runs/x/checkpoints/checkpoint.pt [--bits 6-16,18] [--range-sigmas 4]
        [--dataset NAME] [--max-samples N] [--model-file PATH.py:FACTORY] [--json]

For each width B: test accuracy of `fixed_residual_model(model, B)`, its change against `fuse_model(model)` (the
float-residual model, which equals the trained model) in points, and the share of test images on which both
predict the same class. `--model-file` names the factory of a converted outside model's checkpoint (cimnas never
runs code a checkpoint names). docs/deploy.md quotes the tables.
"""

from __future__ import annotations

import json
import sys

import torch

from cimnas.errors import check


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def sweep(checkpoint: str, bits: list[int], sigmas: float | None, dataset: str | None,
          max_samples: int | None, model_file: str | None = None) -> dict:
    """{'float_residual': acc, 'rows': [{bits, accuracy, delta_points, agreement}]} on the test split."""
    from cimnas.data import load_dataset
    from cimnas.deploy.fixed_point import fixed_residual_model
    from cimnas.nn.fusion import fuse_model
    from cimnas.nn.models import load_model

    model, ckpt = load_model(checkpoint, model_file=model_file)
    name = dataset or ckpt["dataset"]["name"]
    split = load_dataset(name, seed=0).test
    x, y = split.tensors()
    x, y = x[:max_samples], y[:max_samples]
    ref = _accuracy(fuse_model(model), x, y)
    base = float((ref == y).double().mean())
    rows = []
    for b in bits:
        pred = _accuracy(fixed_residual_model(model, b, sigmas)[0], x, y)
        acc = float((pred == y).double().mean())
        rows.append({"bits": b, "accuracy": acc, "delta_points": 100 * (acc - base),
                     "agreement": float((pred == ref).double().mean())})
        sys.stderr.write(json.dumps(rows[-1]) + "\n")  # progress, one row per width
    return {"checkpoint": checkpoint, "dataset": name, "samples": len(y), "range_sigmas": sigmas,
            "float_residual": base, "rows": rows}


def _bits(text: str) -> list[int]:
    """'6-16,18' -> [6, ..., 16, 18]."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        check(lo.isdigit() and (hi or lo).isdigit(), f"--bits must look like 6-16,18,20, got {text!r}")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def main(argv: list[str] | None = None) -> int:
    from cimnas.cli import OneLineParser, guarded

    p = OneLineParser(prog="python -m cimnas.deploy.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--bits", default="6-16,18,20,24", help="stream widths: ranges LO-HI and single values")
    p.add_argument("--range-sigmas", type=float, default=4.0, help="0 = the provable bound")
    p.add_argument("--dataset", default=None)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--model-file", default=None, help="PATH.py:FACTORY of a converted outside model's checkpoint")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def run() -> int:
        res = sweep(args.checkpoint, _bits(args.bits), args.range_sigmas or None, args.dataset, args.max_samples,
                    args.model_file)
        if args.json:
            print(json.dumps(res, indent=2))
            return 0
        print(f"{res['dataset']} ({res['samples']} test images), float residual {100 * res['float_residual']:.2f}%")
        print("| bits | accuracy % | change (points) | same prediction % |\n|---|---|---|---|")
        for r in res["rows"]:
            print(f"| {r['bits']} | {100 * r['accuracy']:.2f} | {r['delta_points']:+.2f} | "
                  f"{100 * r['agreement']:.2f} |")
        return 0

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
