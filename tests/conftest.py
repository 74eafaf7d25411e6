"""Test-wide settings: tiny models run fastest (and most reproducibly) on one intra-op thread."""

import os

import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)
