"""Shared pieces of the model zoo: the MODELS registry, named architectures, width handling.

Builder contract (for files that add models with `@MODELS.register`): the builder is called as
`fn(*, in_channels, num_classes, image_size, widths, **kw)` where `image_size` is an int (square
inputs) or an (H, W) tuple and `widths` is a validated list of ints or None (the 1x widths). It
also receives `precision` / `bits` when its signature names them. It returns an `nn.Module`
whose conv/FC layers are QConv2d/QLinear. Width-searchable models subclass `WidthSearchable`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from cimnas.errors import CimnasError
from cimnas.nn.layers import QConv2d, QLinear
from cimnas.registry import Registry

MODELS = Registry("model")

#: Published searched widths (REFERENCE-FACTS.md, HAWIS authors' public release).
NAMED_WIDTHS: dict[str, dict[str, list[int]]] = {
    "resnet20": {
        "hawis-a": [64] + [80] * 6 + [112] * 6 + [216, 216, 216, 216, 208, 216],
        "hawis-b": [84, 84, 84, 84, 84, 80, 84, 168, 168, 192, 224, 188, 224, 284, 284, 256, 248, 224, 224],
    },
    "resnet18": {
        "hawis-a": [256] * 5 + [448] * 4 + [896] * 4 + [1344] * 4,
    },
}


def named_widths(model_name: str, arch: str) -> list[int]:
    """The width list of a named architecture, e.g. `named_widths("resnet20", "hawis-a")`."""
    table = NAMED_WIDTHS.get(model_name, {})
    if arch not in table:
        known = ", ".join(f"{m}:{a}" for m in sorted(NAMED_WIDTHS) for a in sorted(NAMED_WIDTHS[m]))
        raise CimnasError(f"no named architecture {arch!r} for model {model_name!r}; known: {known}")
    return list(table[arch])


def uniform_widths(base: Sequence[int], width_mult: float) -> list[int]:
    """U-kx widening: every width times `width_mult`, rounded half-up, at least 1."""
    if not (isinstance(width_mult, int | float) and width_mult > 0 and math.isfinite(width_mult)):
        raise CimnasError(f"width_mult must be a positive number, got {width_mult!r}")
    return [max(1, int(math.floor(b * width_mult + 0.5))) for b in base]


def check_widths(model_name: str, widths: Sequence[int], n: int, what: str = "searchable layer") -> list[int]:
    """Validate a width list: exactly `n` positive integers, else a CimnasError saying so."""
    if isinstance(widths, str | bytes) or not isinstance(widths, Sequence | torch.Tensor):
        raise CimnasError(f"{model_name} widths must be a list of {n} positive integers "
                          f"(one per {what}), got {widths!r}")
    widths = list(widths)
    if len(widths) != n:
        raise CimnasError(f"{model_name} expects {n} widths (one per {what}), got {len(widths)}; "
                          f"pass a list of {n} positive integers")
    out = []
    for i, w in enumerate(widths):
        if isinstance(w, bool) or not float(w).is_integer() or int(w) < 1:
            raise CimnasError(f"{model_name} width {i} must be a positive integer, got {w!r}")
        out.append(int(w))
    return out


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int or a pair."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    elif isinstance(image_size, Sequence) and len(image_size) == 2:
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise CimnasError(f"image_size must be an int or [H, W], got {image_size!r}")
    if hw[0] < 1 or hw[1] < 1:
        raise CimnasError(f"image_size must be positive, got {image_size!r}")
    return hw


@torch.no_grad()
def traced_shape(fn: nn.Module | callable, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape (without batch) of `fn` on a zero batch of 2 (BN needs > 1 value per channel)."""
    try:
        out = fn(torch.zeros((2, *input_shape)))
    except RuntimeError as e:
        raise CimnasError(f"input of shape {tuple(input_shape)} is too small for this model ({e}); "
                          "use a larger image_size") from e
    return tuple(out.shape[1:])


def set_active(layer: QConv2d | QLinear, active_in: int | None, active_out: int | None) -> None:
    """Set the slice of a layer; a value equal to the full size becomes None (no slicing)."""
    full_in = layer.in_channels if isinstance(layer, QConv2d) else layer.in_features
    full_out = layer.out_channels if isinstance(layer, QConv2d) else layer.out_features
    for val, full, what in ((active_in, full_in, "input"), (active_out, full_out, "output")):
        if val is not None and val > full:
            raise CimnasError(f"width {val} exceeds the built {what} size {full} of a layer; "
                              "build the model with larger widths (the super-net maximum)")
    layer.active_in = None if active_in is None or active_in == full_in else int(active_in)
    layer.active_out = None if active_out is None or active_out == full_out else int(active_out)


def init_weights(model: nn.Module) -> None:
    """He init for convs (fan_out, ReLU), BN gamma 1 / beta 0; linear layers keep PyTorch's init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def residual_stages(block: Callable[[int, int, int, int], nn.Module], widths: Sequence[int], stages: int,
                    per_stage: int) -> tuple[nn.Sequential, list[str]]:
    """`stages` x `per_stage` residual blocks `block(c_in, c_mid, c_out, stride)` (stride 2 at the first
    block of every stage but the first); widths[0] is the stem's width, then two per block.
    Returns the blocks and the names of their convs in order (the searchable layers)."""
    blocks, names, c, i = [], [], widths[0], 1
    for stage in range(stages):
        for b in range(per_stage):
            blocks.append(block(c, widths[i], widths[i + 1], 2 if stage > 0 and b == 0 else 1))
            k = len(blocks) - 1
            names += [f"blocks.{k}.conv1", f"blocks.{k}.conv2"]
            c, i = widths[i + 1], i + 2
    return nn.Sequential(*blocks), names


class WidthSearchable(nn.Module):
    """Base of models with a per-layer width vector (HAWIS search space, slimmable super-nets).

    Subclasses call `_init_widths(name, base, built)` and implement `_apply_widths(widths)`,
    which sets `active_in` / `active_out` of their QConv2d/QLinear layers by module *name* (refactor
    may swap modules). `fusion_pairs()` names the BNs whose output reaches only the next
    layer's input binarizer (see cimnas.nn.fusion).
    """

    model_name: str = "model"

    def _init_widths(self, name: str, base: Sequence[int], built: Sequence[int]) -> None:
        self.model_name = name
        self._base_widths = [int(b) for b in base]
        self._built_widths = [int(b) for b in built]
        self._widths = list(self._built_widths)

    @property
    def base_widths(self) -> list[int]:
        """The 1x widths of the searchable layers, in order."""
        return list(self._base_widths)

    @property
    def built_widths(self) -> list[int]:
        """The widths the parameters were allocated with (the maximum `set_widths` accepts)."""
        return list(self._built_widths)

    @property
    def widths(self) -> list[int]:
        """The widths the model currently computes with."""
        return list(self._widths)

    def set_widths(self, widths: Sequence[int]) -> None:
        """Compute exactly like a model built with `widths` (first channels of every weight)."""
        w = check_widths(self.model_name, widths, len(self._base_widths))
        for i, (a, m) in enumerate(zip(w, self._built_widths, strict=True)):
            if a > m:
                raise CimnasError(f"{self.model_name} width {i} = {a} exceeds the built width {m}; "
                                  "build the model with larger widths (the super-net maximum)")
        self._apply_widths(w)
        self._widths = w

    def _apply_widths(self, widths: list[int]) -> None:
        raise NotImplementedError

    def searchable_layer_names(self) -> list[str]:
        """Module names of the layers whose output widths the width vector sets, in order."""
        raise NotImplementedError

    def fusion_pairs(self) -> list[tuple[str, str]]:
        """(bn_name, consumer_layer_name) pairs: the BN's output feeds only that layer."""
        return []

    def _layer(self, name: str) -> QConv2d | QLinear:
        return self.get_submodule(name)

    def _fc_spatial(self, fc_name: str, channels_built: int) -> int:
        """Input features of the classifier per channel (1 with avg-pool, H*W after flattening)."""
        return self._layer(fc_name).in_features // channels_built
