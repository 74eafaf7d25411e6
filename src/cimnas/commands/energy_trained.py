"""`cimnas energy --checkpoint FILE|RUN_DIR` and `--arch final.json`: the energy of a model as it was built
(input coding, widths, bits, refactor options), rebuilt from its `arch_meta` on the meta device (no weights
read into a model), under the crossbar spec of the run's own `hardware` section unless --preset / --spec / --set
say otherwise. The number equals the pipeline's (`Context.energy` = `estimate_model` of the built model)."""

from __future__ import annotations

from pathlib import Path

from cimnas.errors import check

#: where a run folder keeps its model, in the order looked for (HAWIS / UAE final model, `cimnas train`)
RUN_CHECKPOINTS = ("checkpoints/final_model.pt", "checkpoints/checkpoint.pt", "checkpoints/model.pt")
#: energy options that describe a model (with their defaults), which a checkpoint or arch metadata already fixes
DESCRIBING = {"model": "resnet20", "width_mult": 1.0, "bits": 1, "widths": None, "shortcut": None, "thermometer": None,
              "num_classes": None, "input_shape": None, "dataset": None, "model_file": None}


def add_args(p) -> None:
    p.add_argument("--checkpoint", default=None, metavar="FILE|RUN_DIR",
                   help="the energy of a trained model as built (input coding, widths, bits): a checkpoint, or a run "
                        f"folder holding one of {', '.join(RUN_CHECKPOINTS)}; the run's own hardware section is "
                        "used (with any --set on top) unless --preset / --spec is given")


def checkpoint_path(path: str) -> Path:
    """A checkpoint file, or the model checkpoint inside a run folder."""
    p = Path(path)
    if p.is_dir():
        found = [p / c for c in RUN_CHECKPOINTS if (p / c).is_file()]
        check(bool(found), f"{p} holds none of {', '.join(RUN_CHECKPOINTS)}; give a checkpoint file or a finished "
              "run folder")
        return found[0]
    check(p.is_file(), f"checkpoint not found: {p}")
    return p


def arch_meta_of(data: object) -> dict | None:
    """The full model description (`model.arch_meta`) in a checkpoint or a results file's `arch` key, if any."""
    arch = data.get("arch") if isinstance(data, dict) else None
    return arch if isinstance(arch, dict) and "name" in arch else None


def trained_source(args) -> tuple[dict, dict | None, str] | None:
    """(arch_meta, the run's hardware section or None, what it came from) for --checkpoint, or for an --arch file
    holding a full `arch` description (a final.json); None when the model is described by the options."""
    check(args.arch is None or args.widths is None, "give --arch FILE or --widths LIST, not both")
    given = [f"--{k.replace('_', '-')}" for k, default in DESCRIBING.items() if getattr(args, k, default) != default]
    if args.checkpoint is not None:
        from cimnas.utils.io import load_checkpoint

        check(args.arch is None, "give --checkpoint or --arch, not both")
        path = checkpoint_path(args.checkpoint)
        ckpt = load_checkpoint(path)
        arch = arch_meta_of(ckpt)
        check(arch is not None, f"{path} has no model description (arch); point to a checkpoint written by cimnas")
        hardware = (ckpt.get("config") or {}).get("hardware") if isinstance(ckpt.get("config"), dict) else None
        source = str(path)
    elif args.arch is not None:
        from cimnas.utils.io import read_json

        arch = arch_meta_of(read_json(args.arch))
        if arch is None:
            return None
        hardware, source = None, args.arch
    else:
        return None
    check(not given, f"{', '.join(given)}: the model is fixed by {source}; drop them")
    return arch, hardware if isinstance(hardware, dict) else None, source


def trained_energy(args, uses: tuple[str, ...]):
    """(estimate, input shape, spec, source) of the --checkpoint / --arch model, or None."""
    src = trained_source(args)
    if src is None:
        return None
    import torch

    from cimnas.hardware.crossbar import spec_from_section
    from cimnas.hardware.energy import estimate_model
    from cimnas.nn.models import rebuild_model

    arch, hardware, source = src
    if args.preset is None and args.spec is None and hardware is not None:  # the run's own section, --set on top
        section = {**hardware, "overrides": [*(hardware.get("overrides") or []), *args.overrides]}
        spec = spec_from_section(section, uses)
    else:
        from cimnas.commands.hardware import spec_from_args

        spec = spec_from_args(args, uses)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = rebuild_model(arch)
    size = arch["image_size"]
    h, w = (size, size) if isinstance(size, int) else size
    shape = (int(arch["in_channels"]), int(h), int(w))
    return estimate_model(model, shape, spec), shape, spec, f"{arch['name']} from {source}"
