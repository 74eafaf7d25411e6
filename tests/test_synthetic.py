"""The `synthetic` dataset: seeded, any shape, balanced teacher labels that a small model can learn."""

from __future__ import annotations

import pytest
import torch

from cimnas.data import DATASETS, dataset_table, load_dataset
from cimnas.data.synthetic import CHUNK, SyntheticOptions, read_synthetic, smooth_images
from cimnas.errors import CimnasError

SMALL = {"channels": 1, "image_size": 8, "num_classes": 4, "train_size": 1500, "test_size": 500}


def test_registered_with_cifar_shape_by_default():
    assert "synthetic" in DATASETS.names()
    row = {r["name"]: r for r in dataset_table()}["synthetic"]
    assert row["shape"] == [3, 32, 32] and row["classes"] == 10
    assert (row["train"], row["test"]) == (50000, 10000) and row["available"]
    assert row["where"] == "generated (no files)"


def test_shapes_dtype_and_info():
    opts = {"channels": 2, "image_size": 12, "num_classes": 5, "train_size": 300, "test_size": 70}
    s = load_dataset("synthetic", seed=1, options=opts)
    assert s.train.images.shape == (300, 2, 12, 12) and s.train.images.dtype == torch.uint8
    assert s.test.images.shape == (70, 2, 12, 12) and len(s.test) == 70
    assert s.info() == {"name": "synthetic", "in_channels": 2, "image_size": 12, "num_classes": 5}
    x, y = s.train.tensors()
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and x.std() > 0.05
    assert set(y.tolist()) == set(range(5))
    # image_size given the load_dataset way (as HAWIS does for ImageNet) reaches the builder too
    t = load_dataset("synthetic", image_size=6, options={"train_size": 20, "test_size": 4})
    assert t.train.images.shape == (20, 3, 6, 6) and t.image_size == 6


def test_same_seed_same_data_other_seed_other_data():
    a = read_synthetic(SyntheticOptions(**SMALL, seed=3), None)
    b = read_synthetic(SyntheticOptions(**SMALL, seed=3), None)
    c = read_synthetic(SyntheticOptions(**SMALL, seed=4), None)
    for f in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.train_x, c.train_x) and not torch.equal(a.test_x, c.test_x)
    assert (a.train_y != c.train_y).float().mean() > 0.3  # another teacher, not just other images
    # the run seed only picks splits; the images are the dataset's own
    r1 = load_dataset("synthetic", seed=0, options={**SMALL, "seed": 3})
    r2 = load_dataset("synthetic", seed=1, options={**SMALL, "seed": 3})
    assert torch.equal(r1.train.images, r2.train.images)
    assert not torch.equal(r1.search_eval.indices, r2.search_eval.indices)


def test_prefix_stable_and_train_test_distinct():
    n = CHUNK + 10
    big = smooth_images(n, 1, 4, 0, "train")
    small = smooth_images(CHUNK, 1, 4, 0, "train")
    assert torch.equal(big[:CHUNK], small)  # growing train_size keeps the first images
    assert not torch.equal(smooth_images(10, 1, 4, 0, "test"), big[:10])


def test_classes_balanced():
    k = 10
    r = read_synthetic(SyntheticOptions(channels=3, image_size=16, num_classes=k, train_size=4000,
                                        test_size=2000), None)
    share = torch.bincount(r.train_y, minlength=k).float() / len(r.train_y)
    assert float(share.min()) > 0.8 / k and float(share.max()) < 1.2 / k
    test_share = torch.bincount(r.test_y, minlength=k).float() / len(r.test_y)
    assert float(test_share.min()) > 0.5 / k and float(test_share.max()) < 1.5 / k


def test_small_mlp_beats_chance_clearly():
    s = load_dataset("synthetic", seed=0, options=SMALL)
    torch.manual_seed(0)
    n_in = 8 * 8
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        for x, y in s.train.batches(64, shuffle=True, generator=g):
            loss = torch.nn.functional.cross_entropy(model((x - 0.5) * 4), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt, yt = s.test.tensors()
    with torch.no_grad():
        acc = float((model((xt - 0.5) * 4).argmax(1) == yt).float().mean())
    assert acc > 0.55, acc  # chance is 0.25


@pytest.mark.parametrize("options, match", [
    ({"channels": 0}, "channels must be >= 1"),
    ({"num_classes": 1}, "num_classes must be >= 2"),
    ({"image_size": "32"}, "image_size must be an integer"),
    ({"train_size": 2.5}, "train_size must be an integer"),
    ({"image_size": 100000}, "too large"),
    ({"colour": True}, "no option colour; it takes: channels"),
])
def test_bad_options(options, match):
    with pytest.raises(CimnasError, match=match):
        load_dataset("synthetic", options=options)


def test_options_refused_by_fixed_datasets():
    with pytest.raises(CimnasError, match="dataset digits has no option channels; it takes none"):
        load_dataset("digits", options={"channels": 3})
    with pytest.raises(CimnasError, match="mapping"):
        load_dataset("digits", options=[("channels", 3)])
    assert len(load_dataset("digits", options={}).train) == 1438  # empty options: the old behaviour
