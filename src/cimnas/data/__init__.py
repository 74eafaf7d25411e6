"""Datasets: `load_dataset(name, ...) -> Splits` (train, search_train, search_eval, test).

Registered: digits (bundled default), mnist, fashion-mnist (IDX files), cifar10 (python
pickles, read with a restricted unpickler), imagenet (class folders, optional extra), synthetic
(seeded random images of any shape, options through `load_dataset(..., options=...)`).
See `cimnas datasets`.
"""

from cimnas.data import idx as _idx  # noqa: F401  (registers mnist, fashion-mnist)
from cimnas.data import imagenet as _imagenet  # noqa: F401  (registers imagenet)
from cimnas.data import small as _small  # noqa: F401  (registers digits, cifar10)
from cimnas.data import synthetic as _synthetic  # noqa: F401  (registers synthetic)
from cimnas.data.base import (
    DATASETS,
    Augmentation,
    DatasetSpec,
    DataSplit,
    Splits,
    dataset_spec,
    dataset_table,
    load_dataset,
    load_from_config,
)

__all__ = ["DATASETS", "Augmentation", "DataSplit", "DatasetSpec", "Splits", "dataset_spec", "dataset_table",
           "load_dataset", "load_from_config"]
