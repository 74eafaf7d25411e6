"""Test-wide settings: tiny models run fastest (and most reproducibly) on one intra-op thread."""

import os

import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), the tests that start a local Ray cluster or a torchrun
    process group run on one worker, one after another: two local clusters on two cores would starve each other."""
    import pytest

    for item in items:
        if item.get_closest_marker("ray") is not None or item.module.__name__.endswith("test_distributed"):
            item.add_marker(pytest.mark.xdist_group("cluster"))
