"""Test-wide settings: tiny models run fastest (and most reproducibly) on one intra-op thread."""

import os
import sys

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), the tests that start a local Ray cluster or a torchrun
    process group run on one worker, one after another: two local clusters on two cores would starve each other."""
    for item in items:
        if item.get_closest_marker("ray") is not None or item.module.__name__.endswith("test_distributed"):
            item.add_marker(pytest.mark.xdist_group("cluster"))


@pytest.fixture(scope="module")
def ray_cluster(request):
    """A local two-CPU Ray cluster for one test module, shut down after it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'cimnas[distributed]'")
    # the workers cannot import a test module: the task functions a test defines travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[request.module.__name__])
    if ray.is_initialized():  # a Ray left up by an earlier test (cimnas.parallel keeps it for later calls)
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
