"""`cimnas groups`: the coupled channel groups of your network, one width each in a HAWIS width search.

    cimnas groups --model-file PATH.py:FACTORY --input-shape 1x8x8 [--rule PATTERN=PRECISION] [--json]

The network is built and converted as `cimnas energy` does (`--rule` / `--keep-digital`: a group touching a
digital layer keeps its width); its groups come from cimnas.nn.groups (the `groups` extra, torch-pruning).
"""

from __future__ import annotations

import json

from cimnas.commands.model_source import add_source_args, rules_of, source_of
from cimnas.errors import check


def register(subparsers) -> None:
    p = subparsers.add_parser("groups", help="the coupled channel groups of your network (one width each in a "
                                             "HAWIS search with model.name PATH.py:FACTORY)")
    p.add_argument("--model", default=None, help="an outside architecture torchvision:NAME / timm:NAME "
                   "(optional extras, built without pretrained weights)")
    add_source_args(p)
    p.add_argument("--dataset", default=None, help="take input shape / classes from this dataset")
    p.add_argument("--input-shape", default=None, help="C x H x W when --dataset is not given (default 3x32x32)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs when --dataset is not given "
                   "(default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from cimnas.commands.hardware import _shape_and_classes
    from cimnas.nn.slimmable import GroupSlimmable
    from cimnas.nn.zoo import external_model

    source = source_of(args)
    check(source is not None, "cimnas groups needs your network: --model-file PATH.py:FACTORY (or --model "
          "torchvision:NAME / timm:NAME)")
    shape, num_classes = _shape_and_classes(args)
    model = external_model(source, in_channels=shape[0], num_classes=num_classes, image_size=shape[1:],
                           rules=rules_of(args), default="binary", weights=args.weights)
    rows = GroupSlimmable(model, shape).groups.describe()
    if args.json:
        print(json.dumps({"model": source, "input_shape": list(shape), "groups": rows}, indent=2))
        return 0
    searchable = [r for r in rows if r["searchable"]]
    print(f"{source} on {'x'.join(map(str, shape))}: {len(searchable)} searchable channel groups "
          f"(of {len(rows)}), one width each")
    print(f"{'group':<28} {'channels':>8}  producers / why fixed")
    for r in rows:
        tail = ", ".join(r["producers"]) + ("" if r["searchable"] else f"  [fixed: {r['fixed']}]")
        print(f"{r['group']:<28} {r['channels']:>8}  {tail}")
    return 0
