"""Test-wide settings."""

import torch

# CI machines have 2 cores; a second intra-op thread mostly contends with the test runner itself.
torch.set_num_threads(1)
