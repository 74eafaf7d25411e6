"""The UAE search space: a fixed-point quantized CNN (UAE Table 2), described as a config.

Each of `n_conv` conv layers takes four decisions, in this order: number of output channels,
square filter size, integer bits and fraction bits of its fixed-point weights and output
activations. The FC part (`n_fc` layers, hidden size `fc_hidden`) is fixed. The choices per
decision are config values, so the paper's space (channels {24, 36, 48, 64}, filter
{1, 3, 5, 7}, integer bits {0..3}, fraction bits {0..6}) is only the default.

An `UAEArch` is one point of the space (a frozen dataclass, JSON round trip). Agents never see
it: they emit one index per decision and `UAESpaceConfig.arch_from_indices` decodes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cimnas.errors import CimnasError, check

#: the decision names of one conv layer, in the order the controller emits them
LAYER_DECISIONS = ("channels", "kernel", "int_bits", "frac_bits")


@dataclass(frozen=True)
class ConvChoice:
    """Hyper-parameters of one searched conv layer (UAE Table 2, lower half)."""

    channels: int
    kernel: int
    int_bits: int
    frac_bits: int

    def to_dict(self) -> dict:
        return {"channels": self.channels, "kernel": self.kernel, "int_bits": self.int_bits,
                "frac_bits": self.frac_bits}


@dataclass(frozen=True)
class UAEArch:
    """One child network of the UAE space: one `ConvChoice` per conv layer."""

    layers: tuple[ConvChoice, ...]

    def key(self) -> str:
        """A short stable string naming the child ('64-3-1-4|36-5-0-6|...'), used as cache key."""
        return "|".join(f"{c.channels}-{c.kernel}-{c.int_bits}-{c.frac_bits}" for c in self.layers)

    def to_dict(self) -> dict:
        return {"layers": [c.to_dict() for c in self.layers]}

    @classmethod
    def from_dict(cls, data: dict) -> UAEArch:
        try:
            layers = tuple(ConvChoice(int(d["channels"]), int(d["kernel"]), int(d["int_bits"]),
                                      int(d["frac_bits"])) for d in data["layers"])
        except (KeyError, TypeError, ValueError) as e:
            raise CimnasError(f"not a UAE architecture record ({e}); expected "
                              "{'layers': [{channels, kernel, int_bits, frac_bits}, ...]}") from e
        return cls(layers)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> UAEArch:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise CimnasError(f"architecture JSON is malformed: {e.msg}") from e

    def model_kwargs(self) -> dict:
        """The per-layer lists `build_model('uae_cnn', ...)` takes."""
        return {"channels": [c.channels for c in self.layers], "kernels": [c.kernel for c in self.layers],
                "int_bits": [c.int_bits for c in self.layers], "frac_bits": [c.frac_bits for c in self.layers]}


#: Bounds of a UAE search space (far above UAE Table 2: 64 channels, 7x7 kernels, 6 convs, FC 1024): a choice
#: beyond them is a typo that would only fail after minutes of allocation.
MAX_CHANNELS = 4096
MAX_KERNEL = 31
MAX_LAYERS = 64
MAX_FC_HIDDEN = 65_536


@dataclass
class UAESpaceConfig:
    """The quantized-CNN search space of UAE Table 2 (defaults = the paper's CIFAR-10 space)."""

    n_conv: int = 6
    """number of searched conv layers"""
    n_fc: int = 2
    """number of FC layers after the convs (the last one is the classifier)"""
    fc_hidden: int = 1024
    """width of the hidden FC layers"""
    channels: list[int] = field(default_factory=lambda: [24, 36, 48, 64])
    """choices of output channels per conv layer"""
    kernels: list[int] = field(default_factory=lambda: [1, 3, 5, 7])
    """choices of (odd) square filter size"""
    int_bits: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    """choices of fixed-point integer bits (weights and output activations of the layer)"""
    frac_bits: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6])
    """choices of fixed-point fraction bits"""
    fc_int_bits: int = 2
    """fixed-point integer bits of the (not searched) FC weights and activations"""
    fc_frac_bits: int = 6
    """fixed-point fraction bits of the FC weights and activations"""
    input_bits: int = 8
    """bits of the image fed to the first layer's DACs (unsigned, [0, 1])"""
    pool_after: list[int] = field(default_factory=lambda: [2, 4])
    """1-based conv indices followed by 2x2 max-pooling (skipped when the map is smaller than 4)"""

    def validate(self) -> None:
        check(1 <= self.n_conv <= MAX_LAYERS, f"space.n_conv must be in 1..{MAX_LAYERS}, got {self.n_conv}")
        check(1 <= self.n_fc <= MAX_LAYERS, f"space.n_fc must be in 1..{MAX_LAYERS} (the last is the classifier), "
              f"got {self.n_fc}")
        check(1 <= self.fc_hidden <= MAX_FC_HIDDEN, f"space.fc_hidden must be in 1..{MAX_FC_HIDDEN}, "
              f"got {self.fc_hidden}")
        for name in LAYER_DECISIONS:
            values = self.choices(name)
            check(len(values) > 0, f"space.{self._key(name)} is an empty choice list; give at least one value")
            check(len(set(values)) == len(values), f"space.{self._key(name)} has repeated values {values}")
        check(all(1 <= c <= MAX_CHANNELS for c in self.channels),
              f"space.channels must be in 1..{MAX_CHANNELS} (a CiM conv layer), got {self.channels}")
        check(all(1 <= k <= MAX_KERNEL and k % 2 == 1 for k in self.kernels),
              f"space.kernels must be odd and in 1..{MAX_KERNEL} (same-size padding), got {self.kernels}")
        check(all(0 <= b <= 15 for b in self.int_bits), f"space.int_bits must be in 0..15, got {self.int_bits}")
        check(all(0 <= b <= 15 for b in self.frac_bits), f"space.frac_bits must be in 0..15, got {self.frac_bits}")
        check(self.fc_int_bits >= 0 and self.fc_frac_bits >= 0 and self.fc_int_bits + self.fc_frac_bits >= 1,
              "space.fc_int_bits / fc_frac_bits must be >= 0 with at least one bit in total")
        check(1 <= self.input_bits <= 16, f"space.input_bits must be in 1..16, got {self.input_bits}")
        check(all(1 <= p <= self.n_conv for p in self.pool_after),
              f"space.pool_after entries must be conv indices in 1..{self.n_conv}, got {self.pool_after}")

    @staticmethod
    def _key(name: str) -> str:
        return "kernels" if name == "kernel" else name

    def choices(self, name: str) -> list[int]:
        """The value list of decision `name` (one of LAYER_DECISIONS)."""
        return list(getattr(self, self._key(name)))

    def decision_sizes(self) -> list[int]:
        """Number of choices of every decision, in emission order (n_conv * 4 entries)."""
        return [len(self.choices(n)) for _ in range(self.n_conv) for n in LAYER_DECISIONS]

    def decision_names(self) -> list[str]:
        return [f"conv{i + 1}.{n}" for i in range(self.n_conv) for n in LAYER_DECISIONS]

    def size(self) -> int:
        """Number of distinct children."""
        out = 1
        for s in self.decision_sizes():
            out *= s
        return out

    def arch_from_indices(self, indices: list[int]) -> UAEArch:
        """Decode one index per decision into an architecture."""
        sizes = self.decision_sizes()
        check(len(indices) == len(sizes), f"expected {len(sizes)} decisions, got {len(indices)}")
        for i, (j, s) in enumerate(zip(indices, sizes, strict=True)):
            check(0 <= int(j) < s, f"decision {i} index {j} outside 0..{s - 1}")
        layers = []
        for li in range(self.n_conv):
            vals = [self.choices(n)[int(indices[4 * li + d])] for d, n in enumerate(LAYER_DECISIONS)]
            layers.append(ConvChoice(*vals))
        return UAEArch(tuple(layers))

    def indices_of(self, arch: UAEArch) -> list[int]:
        """Inverse of `arch_from_indices`; an architecture outside the space is a CimnasError."""
        check(len(arch.layers) == self.n_conv, f"architecture has {len(arch.layers)} conv layers, space {self.n_conv}")
        out = []
        for li, layer in enumerate(arch.layers):
            for n in LAYER_DECISIONS:
                value, values = getattr(layer, n), self.choices(n)
                check(value in values, f"conv{li + 1}.{n} = {value} is not in the space choices {values}")
                out.append(values.index(value))
        return out

    def largest_arch(self) -> UAEArch:
        """Most channels, largest filter and most bits everywhere (the energy reference)."""
        c = ConvChoice(max(self.channels), max(self.kernels), max(self.int_bits), max(self.frac_bits))
        return UAEArch(tuple([c] * self.n_conv))

    def model_kwargs(self, arch: UAEArch) -> dict:
        """Everything `build_model('uae_cnn', ...)` needs besides the dataset shape."""
        kw = arch.model_kwargs()
        kw.update(fc_hidden=self.fc_hidden, n_fc=self.n_fc, fc_int_bits=self.fc_int_bits,
                  fc_frac_bits=self.fc_frac_bits, input_bits=self.input_bits, pool_after=list(self.pool_after))
        return kw
