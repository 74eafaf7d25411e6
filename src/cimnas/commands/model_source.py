"""The command-line face of models from outside cimnas (cimnas.nn.zoo, cimnas.nn.convert), shared by `cimnas
energy`, `cimnas robustness`, `cimnas train` and `cimnas uae analyze`. No `register`: not a command itself.

    --model-file PATH.py:FACTORY   import PATH and call FACTORY() -> nn.Module (RUNS YOUR CODE)
    --model torchvision:NAME | timm:NAME   (optional extras; no pretrained weights are downloaded)
    --weights FILE                 a plain state_dict or a cimnas checkpoint loaded before conversion
    --rule PATTERN=PRECISION       per-layer precision by name (repeatable; binary, kbit[:k], float, digital)
    --keep-digital first,last      the words for the common cases
"""

from __future__ import annotations

import argparse

from cimnas.errors import check

MODEL_FILE_HELP = ("your model: PATH.py:FACTORY, a Python file and the function in it that returns an nn.Module "
                   "(it RUNS the code in that file, as `python PATH.py` would; FACTORY receives num_classes, "
                   "in_channels, image_size where its signature names them)")


def add_source_args(p: argparse.ArgumentParser, *, weights: bool = True) -> None:
    """--model-file, --rule, --keep-digital (and --weights) on a command parser (its own --model takes
    torchvision:NAME / timm:NAME as well as a cimnas model name)."""
    p.add_argument("--model-file", default=None, metavar="PATH.py:FACTORY", help=MODEL_FILE_HELP)
    if weights:
        p.add_argument("--weights", default=None, metavar="FILE",
                       help="weights for --model-file / --model torchvision:NAME: a plain state_dict "
                            "(torch.save(model.state_dict(), FILE)) or a cimnas checkpoint")
    p.add_argument("--rule", dest="rules", action="append", default=[], metavar="PATTERN=PRECISION",
                   help="precision of the layers whose name matches PATTERN (fnmatch glob, or re:REGEX): binary, "
                        "kbit, kbit:BITS, float or digital (kept off the crossbars); repeatable, first match wins")
    p.add_argument("--keep-digital", default=None, metavar="first,last",
                   help="keep the first and / or last conv / FC layer digital (off the crossbars)")


def source_of(args: argparse.Namespace) -> str | None:
    """The outside model source the command line names (--model-file, or --model torchvision:/timm:), else None."""
    from cimnas.nn.zoo import is_external

    model = getattr(args, "model", None)
    ext_model = model if is_external(model) else None
    check(args.model_file is None or ext_model is None,
          f"give --model-file {args.model_file} or --model {ext_model}, not both")
    if args.model_file is not None:
        check(".py:" in args.model_file, f"--model-file takes PATH.py:FACTORY, got {args.model_file!r}")
    return args.model_file or ext_model


def rules_of(args: argparse.Namespace) -> dict[str, str]:
    """{pattern: precision} of --keep-digital and --rule, in order (--keep-digital first: it names layers)."""
    rules: dict[str, str] = {}
    if args.keep_digital:
        words = [w.strip() for w in args.keep_digital.split(",") if w.strip()]
        bad = [w for w in words if w not in ("first", "last")]
        check(words and not bad, f"--keep-digital takes first, last or first,last, got {args.keep_digital!r}")
        rules.update({w: "digital" for w in words})
    for text in args.rules:
        pattern, sep, precision = text.rpartition("=")
        check(bool(sep and pattern and precision), f"--rule takes PATTERN=PRECISION (e.g. 'layer4.*=kbit:4'), "
              f"got {text!r}")
        rules[pattern] = precision
    return rules


def check_no_source_flags(args: argparse.Namespace) -> None:
    """--rule / --keep-digital / --weights mean nothing for a cimnas model: refuse them (never ignore)."""
    given = [f for f, v in (("--rule", args.rules), ("--keep-digital", args.keep_digital),
                            ("--weights", getattr(args, "weights", None))) if v]
    check(not given, f"{', '.join(given)} apply to --model-file / --model torchvision:NAME / timm:NAME models "
          "only (a cimnas model sets its precision with --bits / --precision)")
