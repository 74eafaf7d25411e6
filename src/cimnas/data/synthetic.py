"""`synthetic`: seeded random images of any shape, labelled by a fixed random teacher network.

Images are smooth random fields: Gaussian noise on a coarse grid (a quarter of the image side),
bilinearly upsampled, plus a little pixel noise, stored as uint8 codes (scale 255) like CIFAR-10.
Labels come from a seeded random teacher on a smoothed view of the image (average-pooled to at
most 4x4 per channel -> ReLU layer -> linear layer -> argmax), with per-class offsets tuned so
the classes are roughly balanced. The teacher is a function of the pixels a student sees, so a
model trained on the set rises clearly above chance; nothing is read from disk.

Every draw comes from a generator seeded by (options.seed, split, chunk): the same options give
the same data on every machine, whatever the run seed (which, as for real datasets, only picks
the search split and limit subsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from cimnas.data.base import DATASETS, Augmentation, DatasetSpec, RawData
from cimnas.errors import CimnasError
from cimnas.utils.seed import derive_seed, make_generator

CHUNK = 4096  # images drawn per generator: bounds float memory, and keeps a prefix fixed as sizes grow
MAX_BYTES = 1 << 34  # 16 GiB of uint8 codes: larger option values are almost surely typos
TEACHER_HIDDEN = 32
TEACHER_GRID = 4  # the teacher sees each channel average-pooled to at most 4x4


@dataclass(frozen=True)
class SyntheticOptions:
    """What `data.options` may set for `synthetic` (defaults: the CIFAR-10 shape and sizes)."""

    channels: int = 3  # image channels
    image_size: int = 32  # image side in pixels (square images)
    num_classes: int = 10  # labels 0..num_classes-1
    train_size: int = 50000  # training images
    test_size: int = 10000  # test images
    seed: int = 0  # the dataset's own seed: images and teacher (not the run seed)

    def __post_init__(self) -> None:
        lows = {"channels": 1, "image_size": 2, "num_classes": 2, "train_size": 2, "test_size": 1, "seed": 0}
        for key, low in lows.items():
            v = getattr(self, key)
            if type(v) is not int:
                raise CimnasError(f"synthetic option {key} must be an integer, got {v!r}")
            if v < low:
                raise CimnasError(f"synthetic option {key} must be >= {low}, got {v}")
        n_bytes = (self.train_size + self.test_size) * self.channels * self.image_size ** 2
        if n_bytes > MAX_BYTES:
            raise CimnasError(f"synthetic data of {n_bytes / 2**30:.1f} GiB is too large (limit "
                              f"{MAX_BYTES / 2**30:.0f} GiB); lower train_size, test_size or image_size")


def smooth_images(n: int, channels: int, size: int, seed: int, split: str) -> torch.Tensor:
    """(n, channels, size, size) uint8 smooth random images, drawn in seeded chunks of CHUNK."""
    out = torch.empty(n, channels, size, size, dtype=torch.uint8)
    coarse = max(1, size // 4)
    for i, start in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - start)
        g = make_generator(derive_seed(seed, "synthetic", split, i))
        z = F.interpolate(torch.randn(m, channels, coarse, coarse, generator=g), size=(size, size),
                          mode="bilinear", align_corners=False)
        z.add_(torch.randn(m, channels, size, size, generator=g), alpha=0.25)
        # codes = round(128 + 48 z) clipped to 0..255 (+0.5 then truncation rounds the non-negatives)
        out[start:start + m] = z.mul_(48.0).add_(128.5).clamp_(0.0, 255.0).to(torch.uint8)
    return out


def pooled_view(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C * grid^2): uint8 images scaled to [-0.5, 0.5] and average-pooled to grid x grid."""
    out = [F.adaptive_avg_pool2d(x[s:s + CHUNK].float(), grid).flatten(1) for s in range(0, len(x), CHUNK)]
    return torch.cat(out).div_(255.0).sub_(0.5)


class Teacher:
    """A fixed random ReLU network on the pooled view f: logits = relu(f W1 + b1) W2 + offset.

    `calibrate(f_train)` sets b1 so each hidden unit is active on half the training images (the
    ReLUs then shape the class boundaries) and the offsets so the classes are about balanced.
    """

    def __init__(self, n_in: int, num_classes: int, seed: int):
        g = make_generator(derive_seed(seed, "synthetic", "teacher"))
        self.w1 = torch.randn(n_in, TEACHER_HIDDEN, generator=g) / n_in ** 0.5
        self.w2 = torch.randn(TEACHER_HIDDEN, num_classes, generator=g) / TEACHER_HIDDEN ** 0.5
        self.b1 = torch.zeros(TEACHER_HIDDEN)
        self.offset = torch.zeros(num_classes)

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        return torch.relu(f @ self.w1 + self.b1) @ self.w2 + self.offset

    def calibrate(self, f: torch.Tensor, steps: int = 400) -> None:
        self.b1 = -(f @ self.w1).median(0).values
        logits = self.logits(f)
        k = logits.shape[1]
        step = float(logits.std())
        offset = torch.zeros(k)
        for t in range(steps):  # raise the offsets of rare classes, lower those of common ones
            share = torch.bincount((logits + offset).argmax(1), minlength=k).float() / len(logits)
            offset += step * (1.0 - k * share) / (1.0 + 0.05 * t)
        self.offset = offset

    def labels(self, f: torch.Tensor) -> torch.Tensor:
        return self.logits(f).argmax(1)


def read_synthetic(opts: SyntheticOptions, _: Path | None) -> RawData:
    """Draw the train and test images and label both with one teacher (calibrated on train)."""
    c, s = opts.channels, opts.image_size
    grid = min(TEACHER_GRID, s)
    train_x = smooth_images(opts.train_size, c, s, opts.seed, "train")
    test_x = smooth_images(opts.test_size, c, s, opts.seed, "test")
    f_train, f_test = pooled_view(train_x, grid), pooled_view(test_x, grid)
    teacher = Teacher(f_train.shape[1], opts.num_classes, opts.seed)
    teacher.calibrate(f_train)
    return RawData(train_x, teacher.labels(f_train), test_x, teacher.labels(f_test), 255.0)


@DATASETS.register("synthetic", "seeded random images, any CxHxW and class count, labels from a random teacher "
                                "(default 3x32x32, 10 classes, 50k/10k; data.options)")
def synthetic(channels: int = 3, image_size: int = 32, num_classes: int = 10, train_size: int = 50000,
              test_size: int = 10000, seed: int = 0) -> DatasetSpec:
    opts = SyntheticOptions(channels, image_size, num_classes, train_size, test_size, seed)
    return DatasetSpec(
        name="synthetic", in_channels=channels, image_size=image_size, num_classes=num_classes,
        train_size=train_size, test_size=test_size, search_fraction=0.2,
        # a one-pixel shift keeps the teacher's pooled view nearly unchanged; a flip would not
        augmentation=Augmentation(crop_padding_px=max(1, image_size // 16), hflip=False),
        augment_default=False, read=partial(read_synthetic, opts), generated=True)
