"""Test-session settings: no network, W&B disabled unless a test enables it, few threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network: pretrained weights must fail fast
os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Shared folder for generated datasets (generated once per parameter set)."""
    return tmp_path_factory.mktemp("data")
